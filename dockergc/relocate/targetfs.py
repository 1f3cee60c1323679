"""Which filesystem a relocation's target is on, as a string the plan keeps.

A disk that is not mounted when a relocation resumes leaves its mount point a plain
directory on the filesystem beneath (often ``/``): ``mkdir -p`` and rsync would fill that
one instead. Preflight records the target's filesystem in the plan (the journal's begin
record); the copy and every resume compare it with what the target is on now.
"""

from __future__ import annotations

import os
from pathlib import Path

from dockergc.store.mountinfo import MountEntry, parse_mountinfo


def mount_of(path: str) -> MountEntry | None:
    """The mount ``path`` lies on: the longest mount point above it, the last one mounted
    there when several are stacked (it hides the others)."""
    with open("/proc/self/mountinfo", errors="surrogateescape") as fh:
        entries = parse_mountinfo(fh.read())
    above = [
        (len(e.mount_point), i)
        for i, e in enumerate(entries)
        if path == e.mount_point or path.startswith(e.mount_point.rstrip("/") + "/")
    ]
    return entries[max(above)[1]] if above else None


def filesystem_of(path: Path) -> str:
    """The filesystem ``path`` is on, or its nearest existing parent: type, id and mount
    point, e.g. "ext4 14360afae1a17202 at /mnt/disk". The id is statfs's f_fsid (derived
    from the superblock's UUID on ext4 and btrfs, so a remount keeps it), else the device."""
    here = Path(os.path.realpath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    st, vfs = os.stat(here), os.statvfs(here)
    dev = f"dev {os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    ident = f"{vfs.f_fsid:016x}" if vfs.f_fsid else dev
    mount = mount_of(str(here))
    return f"{mount.fstype} {ident} at {mount.mount_point}" if mount else f"{ident} at ?"
