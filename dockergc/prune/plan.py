"""Pure: engine facts + prune policy -> the items a prune removes, in a safe order, each
with the rule that selected it and the bytes removing it frees (shared layers once).

Order: containers, then images children first (a parent only after every image built
on it), then build cache. Images are removed one by one without the daemon's automatic
parent pruning, so exactly the listed images go: an untagged parent left with no
children is listed itself (rule "parent").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dockergc.prune.facts import EngineContainer, EngineFacts, EngineImage
from dockergc.prune.policy import PrunePolicy

REMOVABLE_STATES = ("exited", "created", "dead")
PLAN_VERSION = 1


@dataclass(frozen=True)
class PruneItem:
    kind: str  # container | image | build-cache
    id: str
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
        }


def _image_name(image: EngineImage) -> str:
    return image.tags[0] if image.tags else image.id[7:19]


def _last_used(image: EngineImage, containers: list[EngineContainer]) -> float:
    times = [image.created, image.last_tagged or 0.0]
    for c in containers:
        times += [c.created, c.started or 0.0, c.finished or 0.0]
    return max(times)


class _Images:
    """Which images go, tracked incrementally: layer refcounts give each removal's bytes,
    and an untagged parent left without children goes with its last child."""

    def __init__(self, facts: EngineFacts, in_use: set[str], kept: dict[str, str]) -> None:
        self.by_id = {i.id: i for i in facts.images}
        self.children: dict[str, set[str]] = {}
        for image in facts.images:
            if image.parent:
                self.children.setdefault(image.parent, set()).add(image.id)
        self.refs: Counter[str] = Counter(c for i in facts.images for c in i.chains)
        self.sizes = facts.layer_sizes
        self.in_use, self.kept = in_use, kept
        self.removed: dict[str, tuple[str, int]] = {}  # id -> (rule, bytes), in order

    def blocked(self, image_id: str) -> str | None:
        if image_id in self.in_use:
            return "used by a container"
        if image_id in self.kept:
            return self.kept[image_id]
        staying = self.children.get(image_id, set()) - set(self.removed)
        if staying:
            return f"{len(staying)} image(s) are built on it"
        return None

    def remove(self, image_id: str, rule: str) -> int:
        """Remove one image (and parents it leaves childless); the bytes it frees."""
        freed = 0
        for chain in self.by_id[image_id].chains:
            self.refs[chain] -= 1
            if self.refs[chain] == 0:
                freed += self.sizes.get(chain, 0)
        self.removed[image_id] = (rule, freed)
        parent = self.by_id[image_id].parent
        if parent in self.by_id and parent not in self.removed:
            p = self.by_id[parent]
            if not p.tags and self.blocked(parent) is None:
                freed += self.remove(parent, f"parent of {_image_name(self.by_id[image_id])}")
        return freed


def make_prune_plan(facts: EngineFacts, policy: PrunePolicy) -> PrunePlan:
    now = policy.now
    kept: list[tuple[str, str, str]] = []
    items: list[PruneItem] = []
    notes: list[str] = []

    # Containers.
    gone: set[str] = set()
    if policy.containers_older_than is not None:
        for c in sorted(facts.containers, key=lambda c: c.created):
            if c.state not in REMOVABLE_STATES:
                continue
            age = now - (c.finished or c.created)
            why = policy.kept_by_label(c.labels)
            if why:
                kept.append(("container", c.name, why))
            elif age >= policy.containers_older_than:
                gone.add(c.id)
                rule = f"{c.state} container older than {_span(policy.containers_older_than)}"
                items.append(PruneItem("container", c.id, (c.name,), int(age), c.size_rw, rule))
    staying = [c for c in facts.containers if c.id not in gone]
    users: dict[str, list[EngineContainer]] = {}
    for c in facts.containers:
        users.setdefault(c.image_id, []).append(c)
    in_use = {c.image_id for c in staying}

    # Keep rules on images.
    kept_images: dict[str, str] = {}
    for image in facts.images:
        why = policy.kept_by_reference(image.tags) or policy.kept_by_label(image.labels)
        if why:
            kept_images[image.id] = why
    if policy.keep_newest:
        repos: dict[str, list[EngineImage]] = {}
        for image in facts.images:
            for repo in {t.rsplit(":", 1)[0] for t in image.tags}:
                repos.setdefault(repo, []).append(image)
        for repo, members in repos.items():
            for image in sorted(members, key=lambda i: -i.created)[: policy.keep_newest]:
                kept_images.setdefault(image.id, f"one of the {policy.keep_newest} newest {repo}")

    state = _Images(facts, in_use, kept_images)
    last_used = {i.id: _last_used(i, users.get(i.id, [])) for i in facts.images}

    def consider(image: EngineImage, rule: str) -> None:
        why = state.blocked(image.id)
        if why:
            if image.tags:
                kept.append(("image", _image_name(image), why))
            return
        state.remove(image.id, rule)

    # Leaves first, so that a parent selected by the same rule is free of children.
    order = sorted(facts.images, key=lambda i: (-_depth(i, state.by_id), last_used[i.id]))
    for image in order:
        if image.id in state.removed:
            continue
        leaf = not state.children.get(image.id)
        limit = policy.images_older_than
        if policy.dangling and not image.tags and leaf:
            consider(image, "dangling image (untagged, nothing built on it)")
        elif limit is not None and (image.tags or leaf) and now - last_used[image.id] >= limit:
            consider(image, f"unused image, last used over {_span(limit)} ago")

    # Disk pressure: least recently used first, until the projection is under the mark.
    if policy.high_watermark is not None and policy.low_watermark is not None and facts.disk_total:
        used_pct = 100.0 * facts.disk_used / facts.disk_total
        if used_pct > policy.high_watermark:
            target = facts.disk_total * policy.low_watermark / 100.0
            projected = (
                facts.disk_used
                - sum(i.bytes for i in items)
                - sum(b for _, b in state.removed.values())
            )
            for image in sorted(facts.images, key=lambda i: last_used[i.id]):
                if projected <= target:
                    break
                if image.id in state.removed or (not image.tags and state.children.get(image.id)):
                    continue
                if state.blocked(image.id) is None:
                    projected -= state.remove(image.id, "disk pressure: least recently used")
            if projected > target:
                notes.append(
                    f"disk pressure: {used_pct:.0f}% used; evicting every unused image leaves "
                    f"~{100.0 * projected / facts.disk_total:.0f}%, over the low watermark"
                )

    for image_id, (rule, freed) in _children_first(state):
        image = state.by_id[image_id]
        age = int(now - last_used[image_id])
        names = image.tags or (image.id[7:19],)
        items.append(PruneItem("image", image.id, names, age, freed, rule, image.parent))

    # Build cache.
    if policy.cache_older_than is not None:
        for r in sorted(facts.cache, key=lambda r: r.last_used or r.created):
            age = now - (r.last_used or r.created)
            if r.in_use or age < policy.cache_older_than:
                continue
            rule = f"build cache unused for over {_span(policy.cache_older_than)}"
            freed = 0 if r.shared else r.size
            items.append(
                PruneItem("build-cache", r.id, (r.description or r.kind,), int(age), freed, rule)
            )

    return PrunePlan(
        created=now,
        root=facts.root,
        items=tuple(items),
        kept=tuple(kept),
        disk_total=facts.disk_total,
        disk_used=facts.disk_used,
        notes=tuple(notes),
    )


def _depth(image: EngineImage, by_id: dict[str, EngineImage]) -> int:
    depth, seen, parent = 0, {image.id}, image.parent
    while parent in by_id and parent not in seen:
        seen.add(parent)
        depth += 1
        parent = by_id[parent].parent
    return depth


def _children_first(state: _Images) -> list[tuple[str, tuple[str, int]]]:
    """The removed images, each after every removed image built on it."""
    removed = state.removed
    return sorted(removed.items(), key=lambda kv: -_depth(state.by_id[kv[0]], state.by_id))


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
