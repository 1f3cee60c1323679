"""Whether the running daemons will take the configs a relocation switches.

The move switches daemon.json's ``data-root`` (and containerd's config.toml ``root``).
A daemon that takes its root from its command line, or reads another file, would come
back on the old root after the start: the relocation would wait out its start timeout
and roll back, the daemon down all along. These checks say so before anything changes.
They read each daemon's command line and resolve its paths in its own mount namespace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dockergc.host.detect import DEFAULT_CONFIG, DOCKERD_FLAGS, PROC, daemons_using
from dockergc.host.procfs import GONE, Proc
from dockergc.stores.containerd.locate import containerd_serving

if TYPE_CHECKING:
    from dockergc.relocate.preflight import ContainerdPlan, Preflight


def check_dockerd(pf: Preflight, old: Path, config: Path) -> None:
    """The dockerd running on ``old`` must take its root from ``config``: no --data-root
    (or --graph) on its command line, which dockerd refuses beside a data-root in the
    file; and ``config`` must be the file it reads (--config-file, else the default)."""
    for d in daemons_using(old):
        if d.kind != "dockerd":
            continue
        try:
            p = Proc(PROC, d.pid)
            args = p.cmdline()[1:]
            named = DOCKERD_FLAGS.last(args, "--config-file")
            reads = named[0] if named and named[0] else DEFAULT_CONFIG
            here = Path(p.where(p.resolve(reads)))
        except GONE:
            continue
        flagged = [
            f for f in (DOCKERD_FLAGS.last(args, n) for n in ("--data-root", "--graph")) if f
        ]
        if flagged:
            value, typed = flagged[0]
            pf.add(
                "dockerd takes its root from daemon.json",
                False,
                f"dockerd {d.pid} has {typed} {value} on its command line: dockerd refuses "
                "a data-root given both there and in daemon.json; remove it from the "
                "service's command line first, or keep the path with --bind",
            )
        elif not same_file(here, config):
            pf.add(
                "dockerd takes its root from daemon.json",
                False,
                f"dockerd {d.pid} reads {reads}, not {config}: pass --config-file {reads}",
            )
        else:
            pf.add("dockerd takes its root from daemon.json", True, f"dockerd {d.pid}: {config}")
        return


def check_containerd_serving(pf: Preflight, ctd: ContainerdPlan) -> None:
    """The running containerd at the socket dockerd uses must run on the root that moves
    (else config.toml and the root are not the pair dockerd uses), and, when its root
    moves, take that root from the config.toml that is switched: not from --root on its
    command line, not from another config file."""
    serving = containerd_serving(ctd.address)
    if serving is None:
        pf.add(
            "containerd runs on the root",
            False,
            f"no running containerd found at {ctd.address}; moving {ctd.old} as located",
            blocking=False,
        )
        return
    same = os.path.realpath(serving.root) == str(ctd.old)
    pf.add(
        "containerd runs on the root",
        same,
        f"{serving.how}: {serving.root}"
        + ("" if same else f", not {ctd.old}: pass --containerd-config FILE"),
    )
    if ctd.new is None:
        return
    if serving.root_flag:
        pf.add(
            "containerd takes its root from config.toml",
            False,
            f"{serving.how}: --root on its command line wins over {ctd.config}'s root; "
            "remove it from the service's command line first",
        )
    elif not same_file(serving.config_here, ctd.config):
        pf.add(
            "containerd takes its root from config.toml",
            False,
            f"{serving.how} reads {serving.config}, not {ctd.config}: "
            f"pass --containerd-config {serving.config}",
        )


def same_file(a: Path, b: Path) -> bool:
    """The same file by device and inode; two absent files are the same path."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:  # one (or both) absent: the same only if the same path
        return os.path.realpath(a) == os.path.realpath(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
