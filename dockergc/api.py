"""The library's entry points: what the CLI calls, usable without typer.

Facts are gathered first (read-only), then marked, then planned; nothing here
changes disk.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dockergc.graph import Graph, mark
from dockergc.measure import Usage, measure_all
from dockergc.plan import Plan, Policy, candidates, grace_note, make_plan, pin_reason
from dockergc.store.layers import oldest_record_change
from dockergc.store.mountinfo import MountTable
from dockergc.store.rootinfo import (
    DaemonConfig,
    RootInfo,
    check_overlay2_root,
    locate_root,
    read_daemon_config,
)
from dockergc.store.snapshot import Snapshot, gather


@dataclass(frozen=True)
class Target:
    root: RootInfo
    config: DaemonConfig | None


def resolve_target(root: Path | None, config_file: Path) -> Target:
    """Locate the root and refuse anything but an overlay2 root we understand."""
    config = read_daemon_config(config_file)
    info = locate_root(root, config)
    check_overlay2_root(info.path, config)
    return Target(info, config)


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
        policy = replace(policy, daemon=_daemon_on(root))
    plan = make_plan(snap, graph, cands, usage, policy)
    note = grace_note(plan, policy.now, oldest_record_change(root)) if not plan.actions else None
    return snap, graph, replace(plan, notes=(*plan.notes, note)) if note else plan


def _daemon_on(root: Path) -> str | None:
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


LIVE_HINT = (
    "stop what uses the root first, or, for a running daemon, pass --live (the nightly "
    "timer's mode: long grace period, every step re-checked against a fresh graph, every "
    "mount and every open file)"
)
PROCESS_HINT = (
    "not a Docker daemon by name: stop it, or have it close what it holds in the root "
    "(leave the directory), then run again; if it is a dockerd under another name, stop it "
    "or pass --live"
)
BLIND_HINT = (
    "dockergc must see every process's cwd, root and open files to know the root is unused: "
    "run it as root with CAP_SYS_PTRACE (the packaged unit keeps it); --live would keep "
    "every item for the same reason"
)
PURGE_HINT = (
    "quarantine is never the daemon's: pass --live to purge while it runs (every item is "
    "still checked against every mount namespace first)"
)


def refuse_if_daemon(root: Path, live: bool, hint: str = LIVE_HINT) -> None:
    """Refuse to change a root a running dockerd/containerd uses, unless ``live``: the one
    gate of every command that changes disk (gc, apply, apply --resume, rollback, purge).
    The root is matched by (st_dev, st_ino) in each daemon's own mount namespace, so bind
    mounts, symlinks and relative paths are seen through (dockergc.host.detect)."""
    from dockergc.daemon import daemons_using
    from dockergc.errors import RefusedError

    if live:
        return
    users = daemons_using(root)
    if users:
        who = "; ".join(d.describe() for d in users)
        if any(d.held == "?" for d in users):  # dockergc may not look into processes
            hint = BLIND_HINT
        elif all(d.kind == "process" for d in users):
            hint = PROCESS_HINT
        raise RefusedError(
            f"refusing to change {root}: {who}",
            hint=hint,
        )


def refuse_if_unwritable(root: Path) -> None:
    """Changing a root needs root: refuse otherwise, and refuse a root root does not own
    (someone else's directory, or a path an attacker could have prepared)."""
    from dockergc.errors import RefusedError

    if os.geteuid() != 0:
        raise RefusedError("refusing: changing a Docker data root needs root (run with sudo)")
    for path in (root, root / "overlay2"):
        owner = os.lstat(path).st_uid
        if owner != 0:
            raise RefusedError(f"refusing: {path} is owned by uid {owner}, not root")
    if not os.access(root, os.W_OK) or not os.access(root / "overlay2", os.W_OK):
        raise RefusedError(f"refusing: {root} is not writable by this user (run as root)")


def relocation_facts(root: Path, new: Path, config: Path, host: str) -> tuple[Any, int, int]:
    """Preflight for moving ``root`` to ``new``, with the image and container counts the
    daemon must report afterwards (read from the metadata, not from the daemon)."""
    from dockergc import daemon
    from dockergc.relocate.preflight import preflight

    snap = gather(root)
    try:
        state = daemon.engine_state(host)
        running = list(state.running) if os.path.realpath(state.root) == str(root) else []
    except daemon.EngineUnavailable:
        running = sorted(c.name for c in snap.containers.containers if c.running)
    pf = preflight(root, new, config, running)
    return pf, len(snap.images.images), len(snap.containers.containers)


def disk_used_percent(root: Path) -> float:
    """How full the root's filesystem is, as df shows it (psutil)."""
    import psutil

    return float(psutil.disk_usage(str(root)).percent)
