"""Live mounts from every mount namespace (/proc/*/mountinfo), as paths they pin.

dockerd often runs in a mount namespace of its own, and agents such as cAdvisor
bind-mount the data root: /proc/self/mountinfo alone would miss both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    device: str  # "major:minor"
    root: str  # path inside the mounted filesystem
    mount_point: str
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    return ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse proc(5) mountinfo lines; a malformed line is skipped (nothing to pin)."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        try:
            mount_id = int(fields[0])
        except ValueError:
            continue
        entries.append(
            MountEntry(
                mount_id=mount_id,
                device=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=tail[0],
                source=_unescape(tail[1]),
                super_options=_unescape(tail[2]) if len(tail) > 2 else "",
            )
        )
    return entries


@dataclass(frozen=True)
class MountTable:
    """Mounts seen across namespaces; ``namespaces`` counts the distinct ones read."""

    entries: tuple[MountEntry, ...]
    namespaces: int
    unreadable: int


def read_all_namespaces(proc: Path = Path("/proc")) -> MountTable:
    """Read one mountinfo per distinct mount namespace."""
    seen_ns: set[str] = set()
    entries: list[MountEntry] = []
    unreadable = 0
    pids = [p for p in os.listdir(proc) if p.isdigit()] if proc.is_dir() else []
    for pid in ["self", *sorted(pids, key=int)]:
        try:
            ns = os.readlink(proc / pid / "ns" / "mnt")
        except OSError:
            ns = f"pid:{pid}"
        if ns in seen_ns:
            continue
        try:
            text = (proc / pid / "mountinfo").read_text(errors="surrogateescape")
        except OSError:
            # The process ended between listing and reading, or we lack the right.
            unreadable += 1
            continue
        seen_ns.add(ns)
        entries.extend(parse_mountinfo(text))
    return MountTable(tuple(entries), len(seen_ns), unreadable)


def _overlay_dirs(options: str, overlay_root: str) -> Iterable[str]:
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key not in ("lowerdir", "upperdir", "workdir"):
            continue
        for part in value.split(":"):
            if part:
                yield part if part.startswith("/") else os.path.join(overlay_root, part)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def root_fs_path(self_entries: Iterable[MountEntry], root: str) -> tuple[str, str] | None:
    """(device, path of ``root`` inside its filesystem), from our own namespace's table."""
    best: MountEntry | None = None
    for entry in self_entries:
        if _under(root, entry.mount_point) and (
            best is None or len(entry.mount_point) > len(best.mount_point)
        ):
            best = entry
    if best is None:
        return None
    rest = root[len(best.mount_point.rstrip("/")) :]
    return best.device, os.path.normpath(best.root.rstrip("/") + "/" + rest.lstrip("/"))


def pinned_paths(table: MountTable, root: str, root_fs: tuple[str, str] | None) -> dict[str, str]:
    """Absolute paths under ``root`` that a mount uses, with the reason.

    A path is pinned when it is a mount point, an overlay lower/upper/work dir, or the
    source of a bind mount (same device, filesystem path under the root's).
    """
    pinned: dict[str, str] = {}
    overlay_root = os.path.join(root, "overlay2")
    for entry in table.entries:
        if _under(entry.mount_point, root):
            pinned.setdefault(entry.mount_point, f"mount point ({entry.fstype})")
        if entry.fstype == "overlay":
            for path in _overlay_dirs(entry.super_options, overlay_root):
                if _under(path, root):
                    pinned.setdefault(path, f"overlay layer of mount at {entry.mount_point}")
        if root_fs and entry.device == root_fs[0] and _under(entry.root, root_fs[1]):
            if entry.root == root_fs[1]:
                continue  # the whole root bind-mounted elsewhere pins nothing inside it
            host = os.path.join(root, os.path.relpath(entry.root, root_fs[1]))
            pinned.setdefault(host, f"bind-mounted at {entry.mount_point}")
    return pinned
