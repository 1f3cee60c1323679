"""Measure what a plan would free: bytes and the newest change in a tree.

Walks only candidate paths, never follows a symlink, never crosses into another
filesystem, and counts a hard-linked inode once across the whole plan. Bytes are
allocated blocks (what ``du`` reports and what deletion frees). The newest change
is max(mtime, ctime): pulled files keep the image's old mtimes, but their ctime
is the moment of extraction, which is what an in-flight pull looks like.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    bytes: int
    newest_change: float
    dev: int
    ino: int
    entries: int
    other_mounts: tuple[str, ...]  # paths inside that lie on another filesystem
    errors: tuple[str, ...]  # what could not be read (kept, never guessed)


def measure(path: str, seen_inodes: set[tuple[int, int]] | None = None) -> Usage | None:
    """Measure ``path`` (lstat); None if it no longer exists."""
    seen = seen_inodes if seen_inodes is not None else set()
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return None
    total = 0
    newest = max(top.st_mtime, top.st_ctime)
    entries = 1
    other: list[str] = []
    errors: list[str] = []
    if (top.st_dev, top.st_ino) not in seen:
        seen.add((top.st_dev, top.st_ino))
        total += top.st_blocks * 512
    if stat.S_ISDIR(top.st_mode):
        stack = [path]
        while stack:
            current = stack.pop()
            try:
                it = os.scandir(current)
            except OSError as exc:
                errors.append(f"{current}: {exc.strerror}")
                continue
            with it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError as exc:
                        errors.append(f"{entry.path}: {exc.strerror}")
                        continue
                    entries += 1
                    if st.st_dev != top.st_dev:
                        other.append(entry.path)
                        continue
                    newest = max(newest, st.st_mtime, st.st_ctime)
                    key = (st.st_dev, st.st_ino)
                    if key not in seen:
                        seen.add(key)
                        total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
    return Usage(total, newest, top.st_dev, top.st_ino, entries, tuple(other), tuple(errors))
