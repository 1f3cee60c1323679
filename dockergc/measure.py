"""Measure what a plan would free: bytes and the newest change in a tree.

Walks only candidate paths, by file descriptor (so depth is not limited by PATH_MAX),
never follows a symlink, never crosses into another filesystem or mount (openat2
RESOLVE_NO_XDEV where the kernel has it), and counts a hard-linked inode once across
the whole plan. Bytes are allocated blocks (what ``du`` reports and deletion frees).
The newest change is max(mtime, ctime): pulled files keep the image's old mtimes, but
their ctime is the moment of extraction, which is what an in-flight pull looks like.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from dataclasses import dataclass

from dockergc.execute.platform import open_beneath, openat2_available

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Usage:
    bytes: int
    newest_change: float
    dev: int
    ino: int
    entries: int
    other_mounts: tuple[str, ...]  # paths inside that lie on another filesystem or mount
    errors: tuple[str, ...]  # what could not be read (kept, never guessed)


def raise_fd_limit() -> None:
    """Deep trees hold one fd per level while walked: use the hard limit we are allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _open_child(fd: int, name: str) -> int:
    if openat2_available():
        return open_beneath(fd, name)
    return os.open(name, DIR_FLAGS, dir_fd=fd)


class _Walk:
    def __init__(self, top: os.stat_result, seen: set[tuple[int, int]]) -> None:
        self.top = top
        self.seen = seen
        self.total = 0
        self.newest = max(top.st_mtime, top.st_ctime)
        self.entries = 1
        self.other: list[str] = []
        self.errors: list[str] = []

    def count(self, st: os.stat_result) -> None:
        self.newest = max(self.newest, st.st_mtime, st.st_ctime)
        key = (st.st_dev, st.st_ino)
        if key not in self.seen:
            self.seen.add(key)
            self.total += st.st_blocks * 512

    def scan(self, fd: int, where: str) -> list[str]:
        """Count the entries of an open dir; return its subdirs on the same filesystem."""
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    self.entries += 1
                    if st.st_dev != self.top.st_dev:
                        self.other.append(f"{where}/{entry.name}")
                        continue
                    self.count(st)
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append(entry.name)
        except OSError as exc:
            self.errors.append(f"{where}: {exc.strerror}")
        return subdirs


def measure(path: str, seen_inodes: set[tuple[int, int]] | None = None) -> Usage | None:
    """Measure ``path`` (lstat); None if it no longer exists."""
    seen = seen_inodes if seen_inodes is not None else set()
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return None
    walk = _Walk(top, seen)
    if (top.st_dev, top.st_ino) not in seen:
        seen.add((top.st_dev, top.st_ino))
        walk.total += top.st_blocks * 512
    if stat.S_ISDIR(top.st_mode):
        try:
            fd = os.open(path, DIR_FLAGS)
        except OSError as exc:
            walk.errors.append(f"{path}: {exc.strerror}")
        else:
            _descend(walk, fd, path)
    return Usage(
        walk.total,
        walk.newest,
        top.st_dev,
        top.st_ino,
        walk.entries,
        tuple(walk.other),
        tuple(walk.errors),
    )


def _descend(walk: _Walk, fd: int, path: str) -> None:
    # Depth-first, one open fd per level of the current branch.
    frames: list[tuple[int, list[str], str]] = [(fd, walk.scan(fd, path), path)]
    try:
        while frames:
            fd, pending, where = frames[-1]
            if not pending:
                os.close(fd)
                frames.pop()
                continue
            name = pending.pop()
            try:
                child = _open_child(fd, name)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    walk.other.append(f"{where}/{name}")
                else:
                    walk.errors.append(f"{where}/{name}: {exc.strerror}")
                continue
            sub = f"{where}/{name}"
            frames.append((child, walk.scan(child, sub), sub))
    finally:
        for fd, _, _ in frames:
            os.close(fd)
