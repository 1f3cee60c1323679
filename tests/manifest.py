"""A manifest of a tree: every path with type, mode, owner, size, link target, xattrs, device
number and content hash, so 'byte-identical' can be asserted, not assumed. Walks by fd,
iteratively: test trees go 4096 levels deep."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

Entry = tuple[str, int, int, int, int, str, str, tuple[tuple[str, bytes], ...]]
FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _xattrs(name: str, fd: int) -> tuple[tuple[str, bytes], ...]:
    path = f"/proc/self/fd/{fd}/{name}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
        return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))
    except OSError:
        return ()


def _content(name: str, fd: int, size: int) -> str:
    if size > 64 * 2**20:
        return f"size:{size}"
    h = hashlib.sha256()
    f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    try:
        while chunk := os.read(f, 1 << 20):
            h.update(chunk)
    finally:
        os.close(f)
    return h.hexdigest()


def manifest(root: Path, skip: tuple[str, ...] = (".dockergc",)) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    frames: list[tuple[int, list[str], str]] = []

    def scan(fd: int, rel_dir: str) -> list[str]:
        subdirs = []
        for e in sorted(os.scandir(fd), key=lambda x: x.name):
            if not rel_dir and e.name in skip:
                continue
            st = e.stat(follow_symlinks=False)
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            extra = ""
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(e.name, dir_fd=fd)
            elif stat.S_ISREG(st.st_mode):
                extra = _content(e.name, fd, st.st_size)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            elif stat.S_ISDIR(st.st_mode):
                subdirs.append(e.name)
            size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
            xattrs = () if stat.S_ISLNK(st.st_mode) else _xattrs(e.name, fd)
            out[rel] = (rel, st.st_mode, st.st_uid, st.st_gid, size, extra, "", xattrs)
        return subdirs

    top = os.open(root, FLAGS)
    frames.append((top, scan(top, ""), ""))
    try:
        while frames:
            fd, pending, rel_dir = frames[-1]
            if not pending:
                os.close(fd)
                frames.pop()
                continue
            name = pending.pop()
            child = os.open(name, FLAGS, dir_fd=fd)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            frames.append((child, scan(child, rel), rel))
    finally:
        for fd, _, _ in frames:
            os.close(fd)
    return out


def without(m: dict[str, Entry], removed: list[str]) -> dict[str, Entry]:
    """``m`` minus the given paths and everything below them."""
    return {k: v for k, v in m.items() if not any(k == r or k.startswith(r + "/") for r in removed)}
