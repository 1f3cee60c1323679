"""The library's entry points: what the CLI calls, usable without typer.

Facts are gathered first (read-only), then marked, then planned; nothing here
changes disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockergc.store.rootinfo import (
    DaemonConfig,
    RootInfo,
    detect_store,
    locate_root,
    read_daemon_config,
)
from dockergc.store.snapshot import gather
from dockergc.stores.interface import Store
from dockergc.stores.overlay2 import Overlay2Store, daemon_on, inventory, plan_root, scan_root

__all__ = ["daemon_on", "inventory", "plan_root", "scan_root"]  # the overlay2 family's


@dataclass(frozen=True)
class Target:
    root: RootInfo
    config: DaemonConfig | None
    store: str = "overlay2"  # which family reads it (dockergc.stores)
    store_why: str = ""
    dockerd_args: tuple[str, ...] = ()  # the running dockerd's command line, if one runs


@dataclass(frozen=True)
class ContainerdFlags:
    """Where the containerd of a containerd-store root is (flags or config file)."""

    address: str | None = None
    root: Path | None = None
    config: Path | None = None


def resolve_target(root: Path | None, config_file: Path) -> Target:
    """Locate the root and tell which store it is; refuse anything dockergc does not
    understand (aufs, devicemapper, ... or no Docker root at all)."""
    config = read_daemon_config(config_file)
    info = locate_root(root, config)
    args = _dockerd_args(info.path)
    store, why = detect_store(info.path, config, list(args))
    return Target(info, config, store, why, args)


def _dockerd_args(root: Path) -> tuple[str, ...]:
    """The command line of the dockerd running on ``root`` (read in its own /proc)."""
    from dockergc.daemon import daemons_using
    from dockergc.host.detect import PROC
    from dockergc.host.procfs import GONE, Proc

    for d in daemons_using(root):
        if d.kind == "dockerd":
            try:
                return tuple(Proc(PROC, d.pid).cmdline()[1:])
            except GONE:
                continue
    return ()


def open_store(target: Target, ctd: ContainerdFlags | None = None) -> Store:
    """The store family that reads the target's root: the one place that picks it."""
    if target.store == "overlay2":
        return Overlay2Store(target.root.path)
    from dockergc.stores.containerd.family import ContainerdStore
    from dockergc.stores.containerd.locate import locate_containerd

    ctd = ctd or ContainerdFlags()
    located = locate_containerd(
        address=ctd.address,
        root=ctd.root,
        config=ctd.config,
        ctr=None,
        dockerd_args=list(target.dockerd_args),
        daemon_json={"containerd": target.config.containerd}
        if target.config and target.config.containerd
        else None,
    )
    return ContainerdStore(target.root.path, located)


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


def refuse_if_unwritable(root: Path, *others: Path) -> None:
    """Changing a root needs root: refuse otherwise, and refuse a root root does not own
    (someone else's directory, or a path an attacker could have prepared). ``others``:
    further dirs a run changes (containerd's root); overlay2/ is checked when present."""
    from dockergc.errors import RefusedError

    if os.geteuid() != 0:
        raise RefusedError("refusing: changing a Docker data root needs root (run with sudo)")
    paths = [root, *([root / "overlay2"] if (root / "overlay2").is_dir() else []), *others]
    for path in paths:
        owner = os.lstat(path).st_uid
        if owner != 0:
            raise RefusedError(f"refusing: {path} is owned by uid {owner}, not root")
    for path in paths:
        if not os.access(path, os.W_OK):
            raise RefusedError(f"refusing: {path} is not writable by this user (run as root)")


def relocation_facts(
    root: Path,
    new: Path,
    config: Path,
    host: str,
    store: str = "overlay2",
    containerd: Any = None,
    bind: bool = False,
) -> tuple[Any, int, int]:
    """Preflight for moving ``root`` to ``new``, with the image and container counts of
    now (read from the metadata, not from the daemon; post-verify counts them again from
    the old root once the daemon has stopped on it). On the containerd image store
    (``store``) images are containerd's: -1, not counted (containerd's root is verified
    byte for byte and must be the one containerd serves after the start);
    ``containerd`` (relocate.preflight.ContainerdPlan) is containerd's side."""
    from dockergc import daemon
    from dockergc.relocate.preflight import preflight

    snap = gather(root)
    images = len(snap.images.images) if store == "overlay2" else -1
    try:
        state = daemon.engine_state(host)
        here = os.path.realpath(state.root) == str(root)
        running = list(state.running) if here else []
    except daemon.EngineUnavailable:
        running = sorted(c.name for c in snap.containers.containers if c.running)
    pf = preflight(root, new, config, running, store=store, containerd=containerd, bind=bind)
    return pf, images, len(snap.containers.containers)


def disk_used_percent(root: Path) -> float:
    """How full the root's filesystem is, as df shows it (psutil)."""
    import psutil

    return float(psutil.disk_usage(str(root)).percent)
