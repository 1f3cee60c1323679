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
from dataclasses import dataclass, replace
from stat import S_ISDIR

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
        self.shared: dict[tuple[int, int], int] = {}  # multi-link inodes counted here

    def scan(self, fd: int, where: str) -> list[str]:
        """Count the entries of an open dir; return its subdirs on the same filesystem."""
        subdirs: list[str] = []
        # The loop body runs once per file in every candidate: kept to locals, and only
        # inodes with more than one link go through the seen-set (dirs cannot be
        # hard-linked; a second path to one is a mount, which is never entered).
        dev, seen, total, newest = self.top.st_dev, self.seen, 0, self.newest
        entries = 0
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    entries += 1
                    if st.st_dev != dev:
                        self.other.append(f"{where}/{entry.name}")
                        continue
                    if st.st_mtime > newest:
                        newest = st.st_mtime
                    if st.st_ctime > newest:
                        newest = st.st_ctime
                    mode = st.st_mode
                    if S_ISDIR(mode):
                        subdirs.append(entry.name)
                    elif st.st_nlink > 1:
                        key = (dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                        self.shared[key] = st.st_blocks * 512
                    total += st.st_blocks
        except OSError as exc:
            self.errors.append(f"{where}: {exc.strerror}")
        self.total += total * 512
        self.newest = newest
        self.entries += entries
        return subdirs


def measure(path: str, seen_inodes: set[tuple[int, int]] | None = None) -> Usage | None:
    """Measure ``path`` (lstat); None if it no longer exists."""
    return _measure(path, seen_inodes if seen_inodes is not None else set())[0]


Shared = dict[tuple[int, int], int]


def _measure(path: str, seen: set[tuple[int, int]]) -> tuple[Usage | None, Shared]:
    try:
        top = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, {}  # vanished: kept as such by the planner
    except OSError as exc:  # kept: "could not be measured"
        return Usage(0, 0.0, 0, 0, 0, (), (f"{path}: {exc.strerror}",)), {}
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
    usage = Usage(
        walk.total,
        walk.newest,
        top.st_dev,
        top.st_ino,
        walk.entries,
        tuple(walk.other),
        tuple(walk.errors),
    )
    return usage, walk.shared


def _measure_chunk(root: str, paths: list[str]) -> list[tuple[Usage | None, Shared]]:
    seen: set[tuple[int, int]] = set()
    return [_measure(os.path.join(root, p), seen) for p in paths]


# Below this many paths a fork costs more than the walk; above, the walks are split
# between processes (both CPU-bound when cached and disk-bound when not gain from it).
PARALLEL_MIN_PATHS = 16
SHARES = 2


def measure_all(root: str, paths: list[str]) -> dict[str, Usage | None]:
    """Measure every path; an inode with several links is counted once, at the first
    path (in the given order) that holds it, whether or not the walks ran in parallel."""
    from dockergc.store import beside

    # Every n-th path to each process: plans are sorted by kind, so contiguous chunks
    # would be lopsided. Each group keeps the plan's order.
    many = len(paths) >= PARALLEL_MIN_PATHS and (os.cpu_count() or 1) > 1
    shares = SHARES if many else 1
    groups = [list(range(i, len(paths), shares)) for i in range(shares)]
    parts = beside.each(_measure_chunk, root, [[paths[i] for i in g] for g in groups])
    results: list[tuple[Usage | None, Shared]] = [(None, {})] * len(paths)
    for group, part in zip(groups, parts, strict=True):
        for index, result in zip(group, part.result(), strict=True):
            results[index] = result
    counted: set[tuple[int, int]] = set()
    out: dict[str, Usage | None] = {}
    for path, (usage, shared) in zip(paths, results, strict=True):
        twice = sum(size for key, size in shared.items() if key in counted)
        counted.update(shared)
        out[path] = replace(usage, bytes=usage.bytes - twice) if usage and twice else usage
    return out


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
