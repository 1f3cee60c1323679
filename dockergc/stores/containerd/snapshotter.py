"""Read the overlayfs snapshotter's own records and dirs, read-only.

``io.containerd.snapshotter.v1.overlayfs/metadata.db`` (containerd
core/snapshots/storage/bolt.go, metastore.go)::

    v1/snapshots/<backend key>/id       binary.PutUvarint: the dir snapshots/<id>
                              /kind     one byte: 1 view, 2 active, 3 committed
                              /parent   the parent's backend key (absent: none)
                              /createdat, /updatedat   Go time.MarshalBinary
                              /inodes, /size           binary.PutVarint (committed only)
                              /labels/*
    v1/parents/<uvarint parent id> 0x00 <uvarint child id> : the child's backend key

A backend key is meta.db's snapshot ``name`` ("moby/12/sha256:…"). Next to it,
``snapshots/`` holds one dir per id (``fs``, and ``work`` for snapshots that were
active) and the snapshotter's temporary ``new-*``/``rm-*`` dirs; all are listed, no
symlink followed. Anything malformed is a ``Finding``; the record stays with the field
empty.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dockergc.store import bbolt
from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, open_dir_in
from dockergc.stores.containerd.content import lstat_entries
from dockergc.stores.containerd.metadb import (
    DecodeError,
    Walk,
    read_tree,
    shown,
    uvarint,
    varint,
)
from dockergc.stores.containerd.records import SNAPSHOTTER_DIR, BackendSnapshot, SnapshotterDB

METADATA_DB = f"{SNAPSHOTTER_DIR}/metadata.db"
SNAPSHOTS = f"{SNAPSHOTTER_DIR}/snapshots"
BAD = "bad-snapshotter-record"
UNREADABLE = "unreadable-snapshotter-db"
KINDS = {1: "view", 2: "active", 3: "committed"}


def read_snapshotter(ctd_root: Path) -> SnapshotterDB:
    """The snapshotter's records and the names under ``snapshots/``. A root without the
    overlayfs snapshotter's dir has neither: empty, no finding."""
    findings: list[Finding] = []
    try:
        os.close(open_dir_in(ctd_root, SNAPSHOTTER_DIR))
    except UnreadableFile as exc:
        if exc.kind == "missing" and exc.where in (SNAPSHOTTER_DIR, None):
            return SnapshotterDB()
        findings.append(Finding(exc.where or SNAPSHOTTER_DIR, exc.kind, f"snapshotter dir {exc}"))
        return SnapshotterDB(findings=tuple(findings))
    records = _records(ctd_root, findings)
    dirs = _dirs(ctd_root, findings)
    return SnapshotterDB(records=tuple(records), dirs=tuple(dirs), findings=tuple(findings))


def _records(ctd_root: Path, findings: list[Finding]) -> list[BackendSnapshot]:
    try:
        tree = read_tree(ctd_root, SNAPSHOTTER_DIR, "metadata.db")
    except UnreadableFile as exc:
        findings.append(
            Finding(
                exc.where or METADATA_DB,
                UNREADABLE,
                f"metadata.db {exc.kind}: {exc}; no snapshot dir is known",
            )
        )
        return []
    except (ValueError, RecursionError, MemoryError) as exc:
        findings.append(Finding(METADATA_DB, UNREADABLE, f"metadata.db cannot be parsed ({exc})"))
        return []
    walk = Walk(METADATA_DB, BAD)
    for top in sorted(tree.values):
        walk.bad(shown(top), "a value at the top level of metadata.db")
    v1 = walk.sub(tree, b"v1", "")
    if v1 is None:
        if tree.buckets or tree.values:
            findings.append(
                Finding(METADATA_DB, UNREADABLE, "metadata.db has no v1 bucket (unknown schema)")
            )
        findings.extend(walk.findings)
        return []
    for other in sorted(set(v1.buckets) - {b"snapshots", b"parents"}) + sorted(v1.values):
        walk.bad(f"v1/{shown(other)}", "an entry this reader does not know")
    out: list[BackendSnapshot] = []
    ids: dict[str, int] = {}
    for key, sb in walk.records(walk.sub(v1, b"snapshots", "v1"), "v1/snapshots"):
        here = f"v1/snapshots/{key}"
        sid = walk.decoded(sb, b"id", here, uvarint)
        if sid is None:
            walk.bad(here, "snapshot has no readable id: its dir is unknown")
        else:
            ids[key] = sid
        raw_kind = walk.value(sb, b"kind", here)
        if raw_kind is not None and len(raw_kind) == 1:
            kind = KINDS.get(raw_kind[0], f"unknown({raw_kind[0]})")
        else:
            kind = "unknown()" if raw_kind is None else f"unknown({raw_kind[:16].hex()})"
        if kind not in KINDS.values():
            walk.bad(here, f"snapshot kind {kind}")
        out.append(
            BackendSnapshot(
                key=key,
                id="" if sid is None else str(sid),
                kind=kind,
                parent=walk.string(sb, b"parent", here),
                created=walk.time(sb, b"createdat", here),
                size=walk.decoded(sb, b"size", here, varint),
                inodes=walk.decoded(sb, b"inodes", here, varint),
                updated=walk.time(sb, b"updatedat", here),
                labels=walk.labels(sb, here),
            )
        )
    _check_parents(walk, walk.sub(v1, b"parents", "v1"), out, ids)
    findings.extend(walk.findings)
    return out


def _check_parents(
    walk: Walk, pbkt: bbolt.Bucket | None, records: list[BackendSnapshot], ids: dict[str, int]
) -> None:
    """The parents index must agree with the records: a disagreement is a finding."""
    if pbkt is None:
        return
    where = "v1/parents"
    for key in sorted(pbkt.buckets):
        walk.bad(f"{where}/{key.hex()}", "is a bucket where an index entry is expected")
    parent_of = {r.key: r.parent for r in records}
    for key, raw in sorted(pbkt.values.items()):
        here = f"{where}/{key.hex()}"
        head, sep, tail = key.partition(b"\0")
        # a uvarint's last byte is < 0x80 and never 0 unless it is the value 0 itself,
        # so the first zero byte after a complete varint is the separator
        try:
            if not sep:
                raise DecodeError("no separator")
            parent, child = uvarint(head), uvarint(tail)
        except DecodeError as exc:
            walk.bad(here, f"index key cannot be decoded ({exc})")
            continue
        name = walk.name(raw, where)
        if ids.get(name) != child:
            walk.bad(here, f"index names {name!r} as child {child}, records disagree")
            continue
        if ids.get(parent_of.get(name, ""), -1) != parent:
            walk.bad(here, f"index names {name!r} as a child of id {parent}, records disagree")


def _dirs(ctd_root: Path, findings: list[Finding]) -> list[str]:
    dirs = []
    for name, st in lstat_entries(ctd_root, SNAPSHOTS, findings):
        rel = f"{SNAPSHOTS}/{name}"
        if stat.S_ISDIR(st.st_mode):
            dirs.append(name)
        elif stat.S_ISLNK(st.st_mode):
            findings.append(Finding(rel, "symlink", "a symlink in snapshots/; not followed"))
        else:
            findings.append(Finding(rel, "not-a-dir", "a non-directory in snapshots/"))
    return dirs
