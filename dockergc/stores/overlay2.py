"""The overlay2 graphdriver's family behind ``dockergc.stores.interface.Store``: the
readers of ``dockergc.store``, the marker of ``dockergc.graph`` and the candidate rules
of ``dockergc.plan``, unchanged; this module is where they meet."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from dockergc.execute.checks import Overlay2Checks, RunChecks
from dockergc.graph import Graph, mark
from dockergc.measure import Usage, measure_all
from dockergc.plan import Plan, Policy, candidates, grace_note, make_plan, pin_reason
from dockergc.store.layers import oldest_record_change
from dockergc.store.mountinfo import MountTable
from dockergc.store.snapshot import Snapshot, gather


@contextmanager
def _bulk() -> Iterator[None]:
    # Reading a large root creates a few hundred thousand records that all live on;
    # the cyclic collector would scan them again and again while they are made.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def scan_root(root: Path, mounts: MountTable | None = None) -> tuple[Snapshot, Graph]:
    """Read every metadata file and mark; no walk of any layer's contents (what scan needs)."""
    with _bulk():
        snap = gather(root, mounts, detail=True)
        return snap, mark(snap)


def plan_root(
    root: Path, policy: Policy, mounts: MountTable | None = None
) -> tuple[Snapshot, Graph, Plan]:
    """Read, mark, measure the unreferenced, and plan."""
    with _bulk():
        snap = gather(root, mounts)
        graph = mark(snap)
    cands = candidates(snap, graph)
    usage: dict[str, Usage | None] = {}
    if not graph.freeze:
        # Never walk into a mount (a bind mount may bring in files from outside).
        paths = [p for c in cands for p in c.paths]
        usage = measure_all(str(root), [p for p in paths if pin_reason(snap, p) is None])
    if policy.daemon is None and graph.layers_unreferenced:
        policy = replace(policy, daemon=daemon_on(root))
    plan = make_plan(snap, graph, cands, usage, policy)
    note = grace_note(plan, policy.now, oldest_record_change(root)) if not plan.actions else None
    return snap, graph, replace(plan, notes=(*plan.notes, note)) if note else plan


def daemon_on(root: Path) -> str | None:
    """Who runs on ``root`` now, if anyone: a plan made while a daemon runs reports the
    unreferenced layers it holds in memory instead of planning them."""
    from dockergc.daemon import daemons_using

    users = daemons_using(root)  # a daemon under any name: found by what it holds
    return users[0].describe() if users else None


def inventory(snap: Snapshot, graph: Graph) -> dict[str, Any]:
    """What a data root holds, from metadata alone (no walk of layer contents)."""
    layer_bytes = sum(layer.size or 0 for layer in snap.layers.layers)
    return {
        "root": snap.root,
        "images": len(snap.images.images),
        "tags": len(snap.images.tags),
        "layers": len(snap.layers.layers),
        "layer_bytes": layer_bytes,
        "containers": len(snap.containers.containers),
        "running_containers": sum(1 for c in snap.containers.containers if c.running),
        "layer_mounts": len(snap.layers.mounts),
        "overlay2_dirs": len(snap.overlay.dirs),
        "short_links": len(snap.overlay.links),
        "buildkit_snapshots": len(snap.buildkit.snapshot_keys),
        "live_dirs": len(graph.live),
        "unreferenced_dirs": len({d.name for d in snap.overlay.dirs} - set(graph.live)),
        "unreferenced_layers": len(graph.layers_unreferenced),
        "mount_namespaces": snap.mount_namespaces,
        "pinned_paths": len(snap.pinned),
        "frozen": list(graph.freeze),
        "findings": [f.as_dict() for f in snap.findings],
    }


class Overlay2Store:
    name = "overlay2"

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"overlay2 graphdriver: data root {self.root}"

    def other_roots(self) -> tuple[Path, ...]:
        return ()

    def inventory(self) -> dict[str, Any]:
        return {"store": self.name, **inventory(*scan_root(self.root))}

    def plan(self, policy: Policy, mounts: MountTable | None = None) -> Plan:
        return plan_root(self.root, policy, mounts)[2]

    def checks(self, live: bool, mounts: MountTable | None, slack: float) -> RunChecks:
        return Overlay2Checks(self.root, live, mounts, slack)

    def refuse_unsafe(self, live: bool) -> None:
        from dockergc import api

        api.refuse_if_daemon(self.root, live)
