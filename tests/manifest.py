"""A manifest of a tree: every path with type, mode, owner, size, link target, xattrs, device
number and content hash, so 'byte-identical' can be asserted, not assumed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

Entry = tuple[str, int, int, int, int, str, str, tuple[tuple[str, bytes], ...]]


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def manifest(root: Path, skip: tuple[str, ...] = (".dockergc",)) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            extra = ""
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    extra = hashlib.sha256(fh.read()).hexdigest()
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out[rel] = (rel, st.st_mode, st.st_uid, st.st_gid, size, extra, "", _xattrs(path))
    return out


def without(m: dict[str, Entry], removed: list[str]) -> dict[str, Entry]:
    """``m`` minus the given paths and everything below them."""
    return {k: v for k, v in m.items() if not any(k == r or k.startswith(r + "/") for r in removed)}
