"""Read the daemon's volumes and measure the ones a prune could remove.

Bytes are what ``du -sxB1 <mountpoint>`` says: allocated blocks (a sparse file counts
what it holds, not its length), each inode once (hard links), symlinks not followed,
no other filesystem or mount entered (dockergc.measure does the walk). The daemon's own
figure (system df's UsageData) adds up apparent sizes instead, and costs a walk of
every volume; only volumes no running container uses are measured here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dockergc.measure import measure
from dockergc.prune.facts import (
    LOCAL_DRIVER,
    EngineContainer,
    EngineVolume,
    parse_volume,
)
from dockergc.prune.plan import REMOVABLE_STATES
from dockergc.store.fsread import UnreadableFile, open_dir_at, open_dir_in

# What the daemon accepts as a volume name (moby volume/local: validateName); anything
# else cannot be a local volume's directory name and is never measured as one.
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def read_volumes(
    client: Any,
    where: Path,
    daemon_root: str,
    containers: Sequence[EngineContainer],
    named: bool = True,
) -> tuple[EngineVolume, ...]:
    """Every volume, with bytes for the local ones no running container holds (and, unless
    ``named``, only the anonymous ones: no rule could remove the others).
    ``where``: the data root as seen here; ``daemon_root``: as the daemon sees it."""
    listed = (client.volumes() or {}).get("Volumes") or []
    dangling_docs = (client.volumes(filters={"dangling": True}) or {}).get("Volumes") or []
    dangling = {str(v["Name"]) for v in dangling_docs}
    busy = {n for c in containers if c.state not in REMOVABLE_STATES for n in c.volumes}
    out = []
    for doc in listed:
        volume = parse_volume(doc, str(doc["Name"]) in dangling)
        wanted = named or volume.anonymous() is not None
        if (
            wanted
            and volume.driver == LOCAL_DRIVER
            and not volume.options
            and volume.name not in busy
        ):
            volume = _measured(volume, where, daemon_root)
        out.append(volume)
    return tuple(out)


def _measured(volume: EngineVolume, where: Path, daemon_root: str) -> EngineVolume:
    if not VOLUME_NAME.fullmatch(volume.name):
        return replace(volume, unmeasured=f"{volume.name!r} is not a local volume name")
    expected = f"{daemon_root.rstrip('/')}/volumes/{volume.name}/_data"
    if volume.mountpoint != expected:
        return replace(volume, unmeasured=f"its mountpoint {volume.mountpoint} is not {expected}")
    size, why = measure_volume(where, volume.name)
    return replace(volume, bytes=size, unmeasured=why)


def measure_volume(root: Path, name: str) -> tuple[int | None, str | None]:
    """(bytes, None), or (None, why not) for ``root/volumes/<name>/_data``."""
    rel = f"volumes/{name}"
    try:
        # Component by component, never through a symlink: the path we walk is the one
        # the daemon would delete.
        fd = open_dir_in(root, rel)
    except UnreadableFile as exc:
        return None, f"{exc.where or rel} {exc}"
    try:
        data = open_dir_at(fd, "_data", f"{rel}/_data")
    except UnreadableFile as exc:
        os.close(fd)
        return None, f"{exc.where} {exc}"
    try:
        if os.fstat(data).st_dev != os.fstat(fd).st_dev:
            return None, f"{rel}/_data is a mount point (something has it mounted)"
    finally:
        os.close(data)
        os.close(fd)
    usage = measure(str(root / rel / "_data"))
    if usage is None:
        return None, f"{rel}/_data vanished while measured"
    if usage.other_mounts:
        return None, f"a mount lies inside it: {usage.other_mounts[0]}"
    if usage.errors:
        return None, f"could not be measured: {usage.errors[0]}"
    return usage.bytes, None
