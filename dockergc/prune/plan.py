"""Pure: engine facts + prune policy -> the items a prune removes, in a safe order, each
with the rule that selected it and the bytes removing it frees (shared layers once).

Order: containers, then images children first (a parent only after every image built
on it), then build cache children first, then volumes (after the containers that used
them). Images are removed one by one without the daemon's automatic parent pruning, so
exactly the listed images go: an untagged parent left with no children is listed itself
(rule "parent"). The selection per kind lives in images.py, cache.py, volplan.py and
pressure.py; this module puts it together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from dockergc.prune.cache import CacheSet, cache_name
from dockergc.prune.ctdgraph import CtdGraph, Ledger
from dockergc.prune.facts import EngineContainer, EngineFacts, EngineImage
from dockergc.prune.images import ImageSet, depth, last_used
from dockergc.prune.policy import PrunePolicy
from dockergc.prune.pressure import relieve
from dockergc.prune.volplan import plan_volumes

REMOVABLE_STATES = ("exited", "created", "dead")
PLAN_VERSION = 1


@dataclass(frozen=True)
class PruneItem:
    kind: str  # container | image | build-cache | volume
    id: str  # a volume's id is its name
    names: tuple[str, ...]
    age_seconds: int
    bytes: int  # freed by removing it, given everything before it in the plan
    rule: str
    parent: str | None = None  # images: removed after the items built on it

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "names": list(self.names),
            "age_seconds": self.age_seconds,
            "bytes": self.bytes,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class PrunePlan:
    created: float
    root: str
    items: tuple[PruneItem, ...]
    kept: tuple[tuple[str, str, str], ...]  # (kind, name, why) for what a rule spared
    disk_total: int
    disk_used: int
    notes: tuple[str, ...] = field(default=())
    ctd_root: str | None = None  # the containerd image store: containerd's root

    @property
    def store(self) -> str:
        return "containerd" if self.ctd_root else "overlay2"

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for item in self.items:
            slot = out.setdefault(item.kind, {"count": 0, "bytes": 0})
            slot["count"] += 1
            slot["bytes"] += item.bytes
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "created": self.created,
            "root": self.root,
            "items": [i.as_dict() for i in self.items],
            "kept": [{"kind": k, "name": n, "why": w} for k, n, w in self.kept],
            "totals": {"items": len(self.items), "bytes": self.bytes, "by_kind": self.totals()},
            "disk": {"total": self.disk_total, "used": self.disk_used},
            "notes": list(self.notes),
            **({"store": self.store, "containerd_root": self.ctd_root} if self.ctd_root else {}),
        }


Kept = tuple[str, str, str]  # (kind, name, why)


def _containers(facts: EngineFacts, policy: PrunePolicy, kept: list[Kept]) -> list[PruneItem]:
    limit = policy.containers_older_than
    if limit is None:
        return []
    items = []
    for c in sorted(facts.containers, key=lambda c: c.created):
        if c.state not in REMOVABLE_STATES:
            continue
        age = policy.now - (c.finished or c.created)
        why = policy.kept_container(c.name) or policy.kept_by_label(c.labels)
        if why:
            kept.append(("container", c.name, why))
        elif age >= limit:
            rule = f"{c.state} container older than {_span(limit)}"
            items.append(PruneItem("container", c.id, (c.name,), int(age), c.size_rw, rule))
    return items


def _images_in_use(facts: EngineFacts, policy: PrunePolicy, gone: set[str]) -> dict[str, str]:
    """Image id -> why it stays: a container that is not removed uses it."""
    in_use: dict[str, str] = {}
    for c in facts.containers:
        if c.id not in gone:
            kept_by = policy.kept_container(c.name)
            why = f"used by container {c.name} ({kept_by})" if kept_by else "used by a container"
            in_use.setdefault(c.image_id, why)
    return in_use


def make_prune_plan(facts: EngineFacts, policy: PrunePolicy) -> PrunePlan:
    now = policy.now
    kept: list[Kept] = []
    containers = _containers(facts, policy, kept)
    gone = {i.id for i in containers}
    users: dict[str, list[EngineContainer]] = {}
    for c in facts.containers:
        users.setdefault(c.image_id, []).append(c)

    # On the containerd store every byte comes from containerd's references: the
    # containers go first, then what only they held can go with the images.
    ledger = Ledger(facts.ctd) if facts.ctd else None
    if ledger:
        for gone_id in gone:
            ledger.release_item("container", gone_id)

    # Images by the age rules.
    images = ImageSet(
        facts,
        in_use=_images_in_use(facts, policy, gone),
        kept=_kept_images(facts, policy),
        ledger=ledger,
    )
    used_at = {i.id: last_used(i, users.get(i.id, [])) for i in facts.images}

    def consider(image: EngineImage, rule: str) -> None:
        why = images.blocked(image.id)
        if why:
            if image.tags:
                kept.append(("image", image.tags[0], why))
            return
        images.remove(image.id, rule)

    # Leaves first, so that a parent selected by the same rule is free of children.
    order = sorted(facts.images, key=lambda i: (-depth(i, images.by_id), used_at[i.id]))
    for image in order:
        if image.id in images.removed:
            continue
        leaf = not images.children.get(image.id)
        limit = policy.images_older_than
        if policy.dangling and not image.tags and leaf:
            consider(image, "dangling image (untagged, nothing built on it)")
        elif limit is not None and (image.tags or leaf) and now - used_at[image.id] >= limit:
            consider(image, f"unused image, last used over {_span(limit)} ago")

    # Build cache by age; volumes; then disk pressure on top of all that.
    cache = CacheSet(facts, ledger)
    kept_cache: list[tuple[str, str]] = []
    if policy.cache_older_than is not None:
        rule = f"build cache unused for over {_span(policy.cache_older_than)}"
        kept_cache = cache.select_older_than(policy.cache_older_than, now, rule)
    volumes, kept_volumes = plan_volumes(facts, policy, gone, now)
    other = sum(i.bytes for i in containers) + sum(v.bytes or 0 for v, _, _ in volumes)
    notes = relieve(facts, policy, images, cache, used_at, other)
    if facts.ctd:
        notes = [*facts.ctd.findings, *notes]
    for rid, why in kept_cache:  # unless pressure took it after all that it carried
        if rid not in cache.removed:
            kept.append(("build-cache", cache_name(cache.by_id[rid]), why))
    kept += kept_volumes

    items = list(containers)
    for image_id, (rule, freed) in images.children_first():
        image = images.by_id[image_id]
        names = image.tags or (image.id[7:19],)
        age = int(now - used_at[image_id])
        items.append(PruneItem("image", image.id, names, age, freed, rule, image.parent))
    for record, rule in cache.children_first():
        age = int(now - (record.last_used or record.created))
        if record.shared and not ledger:
            rule += " (its data is shared with an image: frees nothing)"
        name = cache_name(record)
        items.append(PruneItem("build-cache", record.id, (name,), age, cache.frees(record), rule))
    for volume, rule, age in volumes:
        items.append(PruneItem("volume", volume.name, (volume.name,), age, volume.bytes or 0, rule))

    if facts.ctd:
        items = _in_plan_order(facts.ctd, items)
    return PrunePlan(
        created=now,
        root=facts.root,
        ctd_root=facts.ctd_root,
        items=tuple(items),
        kept=tuple(kept),
        disk_total=facts.disk_total,
        disk_used=facts.disk_used,
        notes=tuple(notes),
    )


def _in_plan_order(graph: CtdGraph, items: list[PruneItem]) -> list[PruneItem]:
    """Each item's bytes as the daemon will free them, removed in the plan's order: a
    blob or snapshot two items hold is counted for the one that goes last."""
    ledger = Ledger(graph)
    out = []
    for item in items:
        if item.kind == "volume":
            out.append(item)
        elif item.kind == "container":  # its own snapshots and dir: measured already
            ledger.release_item(item.kind, item.id)
            out.append(item)
        else:
            out.append(replace(item, bytes=ledger.release_item(item.kind, item.id)))
    return out


def _kept_images(facts: EngineFacts, policy: PrunePolicy) -> dict[str, str]:
    """Image id -> the keep rule that spares it."""
    kept: dict[str, str] = {}
    for image in facts.images:
        why = policy.kept_by_reference(image.tags) or policy.kept_by_label(image.labels)
        if why:
            kept[image.id] = why
    if policy.keep_newest:
        repos: dict[str, list[EngineImage]] = {}
        for image in facts.images:
            for repo in {t.rsplit(":", 1)[0] for t in image.tags}:
                repos.setdefault(repo, []).append(image)
        for repo, members in repos.items():
            for image in sorted(members, key=lambda i: -i.created)[: policy.keep_newest]:
                kept.setdefault(image.id, f"one of the {policy.keep_newest} newest {repo}")
    return kept


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
