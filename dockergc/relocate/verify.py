"""Compare two trees in one walk: what a copy must have kept for Docker to work.

Paths, types, modes, owners, sizes, link targets, xattrs (opaque/redirect dirs),
device numbers (whiteouts), hard-link counts, and content hashes of the metadata
files Docker parses. Layer file contents are compared by size, except files the old root
changed since a given time (``since``: when a pre-copy began): those are hashed in both
trees. What did not change since the pre-copy was copied whole by rsync, which checksums
what it transfers; hashing it again would double the downtime for little more certainty.
Hashes run in a few threads (reads and hashlib release the GIL).
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from dockergc.relocate.steps import MARKER_PREFIX

METADATA_PREFIXES = (
    "image/",
    "containers/",
    "buildkit/",
    "volumes/metadata.db",
    "network/",  # libnetwork's bbolt store
    # containerd's root (moved with the data root on a containerd image store host)
    "io.containerd.metadata.v1.bolt/",
    "io.containerd.snapshotter.v1.overlayfs/metadata.db",
    "io.containerd.grpc.v1.introspection/",
)
METADATA_MAX = 64 * 2**20  # larger metadata files are compared by size, as layer files
HASH_WORKERS = 4  # a disk serves a few reads at once better than one
SKIP_TOP = (".dockergc",)  # and a relocation's marker (MARKER_PREFIX): not the daemon's


def is_metadata(rel: str, size: int) -> bool:
    """A metadata file the daemons parse (or keep in bbolt): hashed by the verification,
    rewritten by the final pass after a pre-copy."""
    return rel.startswith(METADATA_PREFIXES) and size <= METADATA_MAX


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


def _entry(path: str, st: os.stat_result, extra: str = "") -> Entry:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        kind, extra = "l", os.readlink(path)
    elif stat.S_ISDIR(mode):
        kind = "d"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "c" if stat.S_ISCHR(mode) else "b"
        extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    elif stat.S_ISREG(mode):
        kind = "f"
    else:
        kind = "p" if stat.S_ISFIFO(mode) else "s"
    size = st.st_size if kind in ("f", "l") else 0
    nlink = st.st_nlink if kind == "f" else 0
    return Entry(kind, stat.S_IMODE(mode), st.st_uid, st.st_gid, size, nlink, extra, _xattrs(path))


def _listing(root: str, rel_dir: str) -> dict[str, os.DirEntry[str]]:
    with os.scandir(os.path.join(root, rel_dir)) as it:
        found = {e.name: e for e in it}
    if not rel_dir:
        for name in [n for n in found if n in SKIP_TOP or n.startswith(MARKER_PREFIX)]:
            del found[name]
    return found


@dataclass(frozen=True)
class Difference:
    path: str
    what: str


def _same_content(a: str, b: str) -> bool:
    return _hash(a) == _hash(b)


def compare(
    old: str,
    new: str,
    limit: int = 20,
    since: float | None = None,
    workers: int = HASH_WORKERS,
) -> tuple[int, list[Difference]]:
    """(entries compared, first ``limit`` differences), both trees walked together: each
    directory listed once on either side, each entry lstat'ed once. Metadata files, and
    with ``since`` every regular file whose ctime in the old root is at or after it, are
    hashed in both trees (``workers`` threads)."""
    old_dev, new_dev = os.lstat(old).st_dev, os.lstat(new).st_dev
    diffs: list[Difference] = []
    hashes: list[tuple[str, Future[bool]]] = []
    count = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        stack = [""]
        while stack and len(diffs) < limit:
            rel_dir = stack.pop()
            a, b = _listing(old, rel_dir), _listing(new, rel_dir)
            for name in sorted(a.keys() | b.keys()):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if name not in b:
                    diffs.append(Difference(rel, "missing from the copy"))
                    continue
                count += 1
                if name not in a:
                    diffs.append(Difference(rel, "only in the copy"))
                    continue
                ea, eb = a[name], b[name]
                sa, sb = ea.stat(follow_symlinks=False), eb.stat(follow_symlinks=False)
                before, after = _entry(ea.path, sa), _entry(eb.path, sb)
                hashed = before.kind == "f" and (
                    is_metadata(rel, sa.st_size) or (since is not None and sa.st_ctime >= since)
                )
                if before != after:
                    fields = [
                        f
                        for f in Entry.__dataclass_fields__
                        if getattr(before, f) != getattr(after, f)
                    ]
                    if hashed and after.kind == "f" and not _same_content(ea.path, eb.path):
                        fields.append("extra")
                    diffs.append(Difference(rel, "differs in " + ", ".join(fields)))
                elif before.kind == "d":
                    if sa.st_dev == old_dev and sb.st_dev == new_dev:
                        stack.append(rel)
                elif hashed:
                    hashes.append((rel, pool.submit(_same_content, ea.path, eb.path)))
        for rel, same in hashes:
            if len(diffs) >= limit:
                same.cancel()
            elif not same.result():
                diffs.append(Difference(rel, "differs in extra (content sha256)"))
    return count, diffs[:limit]
