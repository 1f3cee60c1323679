"""Plan: graph + measurements + policy -> actions. Pure; nothing here touches disk.

A dry run renders the plan; only the executor ever acts on one. Every candidate
that is not acted on is listed in ``kept`` with its reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockergc.durations import format_duration
from dockergc.errors import PlanFileError
from dockergc.graph import Graph, is_layer_dir_name
from dockergc.measure import Usage
from dockergc.store.snapshot import Snapshot

PLAN_VERSION = 1

# Execution order: dirs first, then what goes with them (their l/ links, the -removing
# record), so a step that fails never leaves a dir behind without its link.
KINDS = (
    "stale-init",
    "orphan-layer",
    "unreferenced-layer",  # one item: the layerdb record, its dir and its l/ link
    "orphan-link",
    "dangling-link",
    "removing-layer",
    "write-set",
    # The containerd image store (dockergc.stores.containerd): leases first, then
    # containerd's own GC frees what they held, then what no record names.
    "stale-lease",  # deleted through containerd (irreversible; journaled with what it held)
    "containerd-gc",  # records containerd's GC would free but has not yet: run its GC
    "orphan-snapshot",  # a snapshots/<N> dir with no record in the snapshotter's metadata.db
    "stale-ingest",  # an unfinished upload older than the grace period
    "orphan-rootfs",  # rootfs/overlayfs/<id> of a container dockerd no longer has
    "gone-container",  # containers/<id> without its config.v2.json: dockerd cannot load it
)
# Kinds whose ``path`` names a containerd record, not a file: nothing to measure or move.
RECORD_KINDS = frozenset({"stale-lease", "containerd-gc"})
BASES = ("", "containerd")  # "" the data root; "containerd" containerd's root
KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Policy:
    min_age: float = 3600.0  # seconds; younger candidates may belong to an in-flight pull/build
    excludes: tuple[str, ...] = ()
    now: float = field(default_factory=time.time)
    # Who runs on the root, if anyone (``--live``, or found running): a running daemon
    # holds every layerdb layer in memory, so unreferenced layers are then only reported.
    daemon: str | None = None

    def excluded(self, rel_path: str) -> str | None:
        name = rel_path.rsplit("/", 1)[-1]
        for pattern in self.excludes:
            if fnmatch.fnmatchcase(rel_path, pattern) or fnmatch.fnmatchcase(name, pattern):
                return pattern
        return None


@dataclass(frozen=True)
class Part:
    """A path that goes with an action's own, in the same step (a layer's dir, its link)."""

    path: str
    dev: int
    ino: int


@dataclass(frozen=True)
class Action:
    id: str
    kind: str
    path: str  # relative to the root
    bytes: int
    age_seconds: int
    reason: str
    evidence: tuple[str, ...]
    dev: int  # identity when planned: the executor refuses a path that changed
    ino: int
    depends_on: str | None = None  # removed only if this path was removed in the same run
    parts: tuple[Part, ...] = ()  # moved with ``path`` in one step, put back with it
    after: tuple[str, ...] = ()  # removed only if all these were removed before it (children)
    base: str = ""  # which root ``path`` is under: "" the data root, "containerd" its root

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *(p.path for p in self.parts))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        d["parts"] = [asdict(p) for p in self.parts]
        d["after"] = list(self.after)
        return d


@dataclass(frozen=True)
class Kept:
    path: str
    kind: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class Candidate:
    """Something the graph does not reach; the planner decides whether to act."""

    kind: str
    path: str
    reason: str
    evidence: tuple[str, ...]
    depends_on: str | None = None  # e.g. an orphan link waits on its dir's verdict
    parts: tuple[str, ...] = ()  # paths that go with ``path`` as one item
    after: tuple[str, ...] = ()  # candidates that must go first (a layer's children)
    rank: int = 0  # order within its kind: children before parents

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.parts)


@dataclass(frozen=True)
class Plan:
    version: int
    root: str
    created: str
    min_age_seconds: float
    excludes: tuple[str, ...]
    actions: tuple[Action, ...]
    kept: tuple[Kept, ...]
    frozen: tuple[str, ...]
    notes: tuple[str, ...] = ()  # what a reader needs to know about the plan as a whole
    store: str = "overlay2"  # which store family made it (dockergc.stores)
    containerd_root: str = ""  # the containerd store's root, for actions with base "containerd"

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.actions)

    def totals(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, int]] = {}
        for a in self.actions:
            slot = by_kind.setdefault(a.kind, {"count": 0, "bytes": 0})
            slot["count"] += 1
            slot["bytes"] += a.bytes
        return {
            "actions": len(self.actions),
            "bytes": self.bytes,
            "kept": len(self.kept),
            "by_kind": dict(sorted(by_kind.items())),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "root": self.root,
            "store": self.store,
            "containerd_root": self.containerd_root,
            "created": self.created,
            "policy": {"min_age_seconds": self.min_age_seconds, "excludes": list(self.excludes)},
            "frozen": list(self.frozen),
            "notes": list(self.notes),
            "actions": [a.as_dict() for a in self.actions],
            "kept": [k.as_dict() for k in self.kept],
            "totals": self.totals(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Plan:
        """Rebuild a saved plan; anything not of the expected shape is a PlanFileError
        naming the field ("actions[0].bytes must be an integer, not a string")."""
        if not isinstance(doc, Mapping):
            raise PlanFileError(f"a plan is a JSON object, not {_json_kind(doc)}")
        if doc.get("version") != PLAN_VERSION:
            raise PlanFileError(f"plan version {doc.get('version')!r} is not {PLAN_VERSION}")
        policy = _field(doc, "policy", dict, "", {})
        return cls(
            version=PLAN_VERSION,
            root=_field(doc, "root", str, ""),
            created=_field(doc, "created", str, ""),
            min_age_seconds=float(_field(policy, "min_age_seconds", float, "policy", 0)),
            excludes=_strings(policy, "excludes", "policy"),
            actions=tuple(
                _action(a, f"actions[{i}]") for i, a in enumerate(_field(doc, "actions", list, ""))
            ),
            kept=tuple(
                Kept(*(_field(k, key, str, f"kept[{i}]") for key in ("path", "kind", "reason")))
                for i, k in enumerate(_field(doc, "kept", list, "", []))
            ),
            frozen=_strings(doc, "frozen", ""),
            notes=_strings(doc, "notes", ""),
            store=_store(_field(doc, "store", str, "", "overlay2")),
            containerd_root=_field(doc, "containerd_root", str, "", ""),
        )


_REQUIRED: Any = object()
_WANTED = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}


def _json_kind(value: object) -> str:
    """What a JSON value is, in the words of the message that rejects it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    for kind in (str, int, float, list, dict):
        if isinstance(value, kind):
            return _WANTED[kind]
    return type(value).__name__


def _field(doc: object, key: str, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    """``doc[key]``, checked to be a ``kind``; errors name the field as ``where.key``."""
    name = f"{where}.{key}" if where else key
    if not isinstance(doc, Mapping):
        raise PlanFileError(f"{where or 'the plan'} must be an object, not {_json_kind(doc)}")
    value = doc.get(key)
    if value is None:
        if default is _REQUIRED:
            raise PlanFileError(f"{name} is missing")
        return default
    number = kind in (int, float) and not isinstance(value, bool)
    fits = isinstance(value, (int, float) if kind is float else kind)
    if not fits or (kind in (int, float) and not number):
        raise PlanFileError(f"{name} must be {_WANTED[kind]}, not {_json_kind(value)}")
    if kind is int and value < 0:
        raise PlanFileError(f"{name} must not be negative")
    return value


def _strings(doc: object, key: str, where: str) -> tuple[str, ...]:
    items = _field(doc, key, list, where, [])
    name = f"{where}.{key}" if where else key
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise PlanFileError(f"{name}[{i}] must be a string, not {_json_kind(item)}")
    return tuple(items)


def _action(a: object, where: str) -> Action:
    depends_on = _field(a, "depends_on", str, where, None)
    action = _action_fields(a, where, depends_on)
    if (action.parts or action.after) and action.kind != "unreferenced-layer":
        raise PlanFileError(f"{where}: only an unreferenced-layer item has parts or after")
    return action


def _action_fields(a: object, where: str, depends_on: str | None) -> Action:
    return Action(
        id=_field(a, "id", str, where),
        kind=_known_kind(_field(a, "kind", str, where)),
        path=_safe_rel(_field(a, "path", str, where)),
        bytes=_field(a, "bytes", int, where),
        age_seconds=_field(a, "age_seconds", int, where),
        reason=_field(a, "reason", str, where),
        evidence=_strings(a, "evidence", where),
        dev=_field(a, "dev", int, where),
        ino=_field(a, "ino", int, where),
        depends_on=_safe_rel(depends_on) if depends_on else None,
        parts=tuple(
            Part(
                _safe_rel(_field(p, "path", str, f"{where}.parts[{j}]")),
                _field(p, "dev", int, f"{where}.parts[{j}]"),
                _field(p, "ino", int, f"{where}.parts[{j}]"),
            )
            for j, p in enumerate(_field(a, "parts", list, where, []))
        ),
        after=tuple(_safe_rel(x) for x in _strings(a, "after", where)),
        base=_base(_field(a, "base", str, where, ""), where),
    )


def _store(name: str) -> str:
    if name not in ("overlay2", "containerd"):
        raise PlanFileError(f"unknown store {name!r} (overlay2 or containerd)")
    return name


def _base(base: str, where: str) -> str:
    if base not in BASES:
        raise PlanFileError(f"{where}.base must be one of {list(BASES)}, not {base!r}")
    return base


def _known_kind(kind: object) -> str:
    if kind not in KIND_ORDER:
        raise PlanFileError(f"unknown action kind {kind!r}")
    return str(kind)


def _safe_rel(path: object) -> str:
    text = str(path)
    parts = text.split("/")
    if text.startswith("/") or ".." in parts or "" in parts or "." in parts:
        raise PlanFileError(f"action path {text!r} is not a plain path inside the root")
    return text


def action_id(kind: str, path: str) -> str:
    return hashlib.sha256(f"{kind}\0{path}".encode("utf-8", "surrogateescape")).hexdigest()[:12]


def candidates(snap: Snapshot, graph: Graph) -> list[Candidate]:
    """What nothing references, with the evidence of each check made."""
    out: list[Candidate] = []
    namespaces = f"not mounted in any of {snap.mount_namespaces} mount namespaces"
    dir_names = {d.name: d for d in snap.overlay.dirs}
    layers = layer_candidates(snap, graph, namespaces)
    grouped = {p for c in layers for p in c.parts}  # a layer's dir and link go with it
    # Another l/ link to a grouped dir goes (or stays) with the group's item.
    group_of = {p: c.path for c in layers for p in c.parts}
    out += layers
    for d in snap.overlay.dirs:
        if d.name in graph.live or not is_layer_dir_name(d.name):
            continue
        if f"overlay2/{d.name}" in grouped:
            continue
        rel = f"overlay2/{d.name}"
        link_note = f"its link l/{d.link} is in no live lower file" if d.link else "has no link"
        if d.name.endswith("-init"):
            out.append(
                Candidate(
                    "stale-init",
                    rel,
                    "init layer of a container that is gone",
                    (
                        f"no layerdb mount record has init-id {d.name}",
                        link_note,
                        "not named in BuildKit's records",
                        namespaces,
                    ),
                )
            )
        elif d.name in graph.pending:
            out.append(
                Candidate(
                    "orphan-layer",
                    rel,
                    "layer whose deletion was interrupted",
                    (
                        f"only layerdb/sha256/{graph.pending[d.name]} names it (pending removal)",
                        "no mount record names it",
                        link_note,
                        namespaces,
                    ),
                )
            )
        else:
            out.append(
                Candidate(
                    "orphan-layer",
                    rel,
                    "layer dir no metadata references",
                    (
                        f"no layerdb entry has cache-id {d.name}",
                        "no layerdb mount record names it",
                        link_note,
                        "not named in BuildKit's records",
                        namespaces,
                    ),
                )
            )
    for link in snap.overlay.links:
        rel = f"overlay2/l/{link.short}"
        if link.short in graph.live_links or link.target_dir is None:
            continue
        if link.target_dir in graph.live or rel in grouped:
            continue
        if link.target_dir not in dir_names:
            out.append(
                Candidate(
                    "dangling-link",
                    rel,
                    "short link to a dir that is gone",
                    (
                        f"target {link.target} does not exist",
                        "no live lower file lists it",
                    ),
                )
            )
        elif link.target_dir in dir_names and is_layer_dir_name(link.target_dir):
            out.append(
                Candidate(
                    "orphan-link",
                    rel,
                    "short link of an orphaned layer dir",
                    (
                        f"target {link.target} is itself unreferenced",
                        "no live lower file lists it",
                    ),
                    depends_on=group_of.get(
                        f"overlay2/{link.target_dir}", f"overlay2/{link.target_dir}"
                    ),
                )
            )
    for r in snap.layers.removing:
        out.append(
            Candidate(
                "removing-layer",
                f"image/overlay2/layerdb/sha256/{r.name}",
                "layerdb entry left mid-deletion",
                (
                    "named *-removing: the daemon was deleting this layer when it stopped",
                    f"its cache-id dir {'overlay2/' + r.cache_id if r.cache_id else '(none)'} is "
                    + (
                        "kept live by another reference" if r.cache_id in graph.live else "not live"
                    ),
                ),
                depends_on=f"overlay2/{r.cache_id}" if r.cache_id in dir_names else None,
            )
        )
    for rel in snap.layers.write_sets:
        out.append(
            Candidate(
                "write-set",
                rel,
                "temp dir of an interrupted layer registration",
                ("layerdb/tmp/write-set-* is never cleaned by the daemon",),
            )
        )
    return out


def layer_candidates(snap: Snapshot, graph: Graph, namespaces: str) -> list[Candidate]:
    """Layerdb layers nothing reaches: each one item with its dir and its l/ link, in
    the graph's order (children first), each after the children that name it."""
    by_chain = {layer.chain_id: layer for layer in snap.layers.layers}
    dirs = {d.name: d for d in snap.overlay.dirs}
    links = {link.short: link for link in snap.overlay.links}

    def rel(chain: str) -> str:
        return f"image/overlay2/layerdb/sha256/{chain[7:]}"

    out = []
    for rank, chain in enumerate(graph.layers_unreferenced):
        layer = by_chain[chain]
        d = dirs[layer.cache_id]  # the graph keeps a layer whose dir is missing
        parts = [f"overlay2/{d.name}"]
        link = links.get(d.link or "")
        link_note = ", no l/ link"
        if link is not None and link.target_dir == d.name:
            parts.append(f"overlay2/l/{link.short}")
            link_note = f", link l/{link.short}"
        size = f"{layer.size:,} bytes" if layer.size is not None else "size unrecorded"
        out.append(
            Candidate(
                "unreferenced-layer",
                rel(chain),
                "layer no image, container or build cache uses: a crash mid-rmi or "
                "mid-load leaves these",
                (
                    f"layer {chain} (diff {layer.diff_id or 'unrecorded'}, {size} by "
                    f"layerdb), dir overlay2/{d.name}{link_note}",
                    *graph.layer_roots,
                    "no live layer's lower file lists its link",
                    namespaces,
                ),
                parts=tuple(parts),
                after=tuple(rel(c) for c in graph.layer_after.get(chain, ())),
                rank=rank,
            )
        )
    return out


def pin_reason(snap: Snapshot, rel: str) -> str | None:
    absolute = f"{snap.root}/{rel}"
    for path, why in snap.pinned.items():
        if path == absolute or path.startswith(absolute + "/"):
            return why
    return None


def make_plan(
    snap: Snapshot,
    graph: Graph,
    cands: list[Candidate],
    usage: Mapping[str, Usage | None],
    policy: Policy,
) -> Plan:
    """Decide each candidate: act, or keep with a reason."""
    actions: list[Action] = []
    kept: list[Kept] = [Kept(f.path, f.kind, f.message) for f in snap.findings]
    kept += [
        Kept(f"overlay2/{d.name}", "unknown-dir", "name is not a Docker layer id; never deleted")
        for d in snap.overlay.dirs
        if d.name not in graph.live and not is_layer_dir_name(d.name)
    ]
    kept += [Kept("", "broken-reference", b) for b in graph.broken]
    # Reached only through a live mount: no metadata names it, yet something uses it.
    kept += [
        Kept(f"overlay2/{name}", "mounted", why)
        for name, why in graph.live.items()
        if why.startswith("mounted: ")
    ]
    # Named by no record, yet maybe the rw dir of a mount record whose id names no dir.
    kept += [
        Kept(f"overlay2/{name}", "maybe-referenced", why) for name, why in graph.guarded.items()
    ]
    # No root reaches these layers, yet their dirs are in use: kept, and said so.
    kept += [
        Kept(f"image/overlay2/layerdb/sha256/{chain[7:]}", "unreferenced-layer", f"in use: {why}")
        for chain, why in graph.layers_kept.items()
    ]
    acted: set[str] = set()
    held: dict[str, str] = {}  # candidate path -> why it is kept
    # A -removing record younger than the grace period: the daemon may be deleting that
    # layer right now, while its dir (not yet touched) still looks old. Keep the dir.
    for cand in cands:
        u = usage.get(cand.path)
        if (
            cand.kind == "removing-layer"
            and cand.depends_on
            and u is not None
            and (policy.now - u.newest_change < policy.min_age)
        ):
            held[cand.depends_on] = (
                f"its layerdb record {cand.path.rsplit('/', 1)[-1][:20]}…-removing is younger "
                "than the grace period: the daemon may be deleting it now"
            )
    rank = {c.path: c.rank for c in cands}
    for cand in sorted(cands, key=lambda c: (c.depends_on is not None, c.rank, c.path)):
        u = _usage_of(cand, usage)
        reason = held.get(cand.path) or _keep_reason(snap, graph, cand, u, policy, acted, held)
        if reason:
            held[cand.path] = reason
            kept.append(Kept(cand.path, cand.kind, reason))
            continue
        assert u is not None
        age = max(0, int(policy.now - u.newest_change))
        acted.add(cand.path)
        actions.append(
            Action(
                id=action_id(cand.kind, cand.path),
                kind=cand.kind,
                path=cand.path,
                bytes=u.bytes,
                age_seconds=age,
                reason=cand.reason,
                evidence=cand.evidence + (f"newest change {_ago(age)} ago",),
                dev=u.dev,
                ino=u.ino,
                depends_on=cand.depends_on,
                parts=tuple(_part(p, usage[p]) for p in cand.parts),
                after=cand.after,
            )
        )
    actions.sort(key=lambda a: (KIND_ORDER[a.kind], rank.get(a.path, 0), a.path))
    kept.sort(key=lambda k: (k.path, k.kind))
    return Plan(
        version=PLAN_VERSION,
        root=snap.root,
        created=datetime.fromtimestamp(policy.now, UTC).isoformat(timespec="seconds"),
        min_age_seconds=policy.min_age,
        excludes=policy.excludes,
        actions=tuple(actions),
        kept=tuple(kept),
        frozen=graph.freeze,
    )


def _usage_of(cand: Candidate, usage: Mapping[str, Usage | None]) -> Usage | None:
    """The candidate's usage; for one of several paths, theirs together (None if any
    vanished): bytes summed, the newest change of any, the first path's identity."""
    if not cand.parts:
        return usage.get(cand.path)
    each = [usage.get(p) for p in cand.paths]
    if any(u is None for u in each):
        return None
    us = [u for u in each if u is not None]
    return Usage(
        bytes=sum(u.bytes for u in us),
        newest_change=max(u.newest_change for u in us),
        dev=us[0].dev,
        ino=us[0].ino,
        entries=sum(u.entries for u in us),
        other_mounts=tuple(m for u in us for m in u.other_mounts),
        errors=tuple(e for u in us for e in u.errors),
    )


def _part(path: str, u: Usage | None) -> Part:
    assert u is not None  # _usage_of kept the candidate otherwise
    return Part(path, u.dev, u.ino)


def _keep_reason(
    snap: Snapshot,
    graph: Graph,
    cand: Candidate,
    u: Usage | None,
    policy: Policy,
    acted: set[str],
    held: Mapping[str, str],
) -> str | None:
    if graph.freeze:
        return (
            "frozen: "
            + graph.freeze[0]
            + (f" (+{len(graph.freeze) - 1} more)" if len(graph.freeze) > 1 else "")
        )
    for path in cand.paths:
        pattern = policy.excluded(path)
        if pattern:
            return f"excluded by --exclude {pattern}"
    if cand.depends_on and cand.depends_on not in acted:
        why = held.get(cand.depends_on, "it is live")
        return f"kept with {cand.depends_on}: {why}"
    for child in cand.after:
        if child not in acted:
            why = held.get(child, "kept")
            return f"kept with its child layer {child.rsplit('/', 1)[-1][:12]}: {why}"
    if cand.kind == "unreferenced-layer" and policy.daemon:
        return (
            f"{policy.daemon} holds every layerdb layer in memory and would reuse this "
            "one for a pull: only a gc while the daemon is stopped removes it"
        )
    for path in cand.paths:
        pin = pin_reason(snap, path)
        if pin:
            return f"mounted: {pin}"
    if u is None:
        return "vanished while measured"
    if u.other_mounts:
        return f"contains another filesystem at {u.other_mounts[0]}"
    if u.errors:
        return f"could not be measured: {u.errors[0]}"
    age = policy.now - u.newest_change
    if age < policy.min_age:
        return (
            f"{YOUNG} ({_ago(age)} < {format_duration(policy.min_age)}): "
            "an in-flight pull, build or create may own it"
        )
    return None


YOUNG = "younger than the grace period"


def grace_note(plan: Plan, now: float, written_at: float | None) -> str | None:
    """When every candidate is younger than the grace period, say so rather than plan
    nothing in silence; and when the root itself looks written within the grace period
    (``written_at``: its oldest layer record's change time), that it was copied then: a
    copy or a relocation makes every file look new, so a day's grace plans nothing for
    a day."""
    young = [k for k in plan.kept if YOUNG in k.reason]  # or kept with a young one
    if plan.actions or not young:
        return None
    grace = plan.min_age_seconds
    note = f"all {len(young)} candidate(s) are {YOUNG} ({format_duration(grace)})"
    if written_at is not None and now - written_at < grace:
        copied = datetime.fromtimestamp(written_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        ready = datetime.fromtimestamp(written_at + grace, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"{note}: the root was copied (or created) at {copied} (its oldest layer record "
            "changed then; a copy or relocation makes every file look new), so nothing is planned "
            f"before {ready}; a shorter --min-age plans them sooner if nothing else runs"
        )
    return f"{note}: they are planned once older, if nothing claims them"


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
