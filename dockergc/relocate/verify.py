"""Compare two trees entry by entry: what a copy must have kept for Docker to work.

Paths, types, modes, owners, sizes, link targets, xattrs (opaque/redirect dirs),
device numbers (whiteouts), hard-link counts, and content hashes of the metadata
files Docker parses. Layer file contents are compared by size: hashing every byte of
every layer would double the time of a move for little more certainty (rsync already
checksums what it transfers).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from dockergc.relocate.steps import MARKER_PREFIX

METADATA_PREFIXES = ("image/", "containers/", "buildkit/", "volumes/metadata.db")
SKIP_TOP = (".dockergc",)  # and a relocation's marker (MARKER_PREFIX): not the daemon's


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    extra: str  # link target, device numbers, or content hash
    xattrs: tuple[tuple[str, bytes], ...]


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        if name.startswith("security.selinux"):
            continue  # relabelled on the target by design
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def _hash(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def walk(root: str) -> Iterator[tuple[str, Entry]]:
    """(relative path, Entry) for everything under ``root`` on its filesystem."""
    top_dev = os.lstat(root).st_dev
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if not rel_dir and (e.name in SKIP_TOP or e.name.startswith(MARKER_PREFIX)):
                continue
            st = e.stat(follow_symlinks=False)
            mode = st.st_mode
            extra = ""
            if stat.S_ISLNK(mode):
                kind, extra = "l", os.readlink(e.path)
            elif stat.S_ISDIR(mode):
                kind = "d"
                if st.st_dev == top_dev:
                    stack.append(rel)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = "c" if stat.S_ISCHR(mode) else "b"
                extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            elif stat.S_ISREG(mode):
                kind = "f"
                if rel.startswith(METADATA_PREFIXES) and st.st_size <= 64 * 2**20:
                    extra = _hash(e.path)
            else:
                kind = "p" if stat.S_ISFIFO(mode) else "s"
            size = st.st_size if kind in ("f", "l") else 0
            nlink = st.st_nlink if kind == "f" else 0
            yield (
                rel,
                Entry(
                    kind,
                    stat.S_IMODE(mode),
                    st.st_uid,
                    st.st_gid,
                    size,
                    nlink,
                    extra,
                    _xattrs(e.path),
                ),
            )


@dataclass(frozen=True)
class Difference:
    path: str
    what: str


def compare(old: str, new: str, limit: int = 20) -> tuple[int, list[Difference]]:
    """(entries compared, first ``limit`` differences)."""
    a = dict(walk(old))
    diffs: list[Difference] = []
    count = 0
    seen: set[str] = set()
    for rel, entry in walk(new):
        count += 1
        seen.add(rel)
        before = a.get(rel)
        if before is None:
            diffs.append(Difference(rel, "only in the copy"))
        elif before != entry:
            fields = [
                f for f in Entry.__dataclass_fields__ if getattr(before, f) != getattr(entry, f)
            ]
            diffs.append(Difference(rel, "differs in " + ", ".join(fields)))
        if len(diffs) >= limit:
            return count, diffs
    for rel in sorted(set(a) - seen)[: max(0, limit - len(diffs))]:
        diffs.append(Difference(rel, "missing from the copy"))
    return count, diffs
