"""Read containerd's metadata store, ``io.containerd.metadata.v1.bolt/meta.db``, read-only.

Schema (containerd core/metadata/buckets.go; value encodings from images.go,
containers.go, snapshot.go, content.go, leases.go and boltutil/helpers.go)::

    v1/version                                   varint (dbVersion)
    v1/<ns>/images/<name>/{createdat,updatedat}  Go time.MarshalBinary
                          /target/{digest,mediatype,size(varint)}
                          /labels/*, /annotations/*
    v1/<ns>/containers/<id>/{image,snapshotter,snapshotKey,createdat,updatedat,spec,...}
                          /labels/*, /runtime/{name,options}, /extensions/*
    v1/<ns>/snapshots/<snapshotter>/<key>/{name,parent,createdat,updatedat}
                                          /children/<key> : nil, /labels/*
    v1/<ns>/content/blob/<digest>/{size(varint),createdat,updatedat}/labels/*
    v1/<ns>/content/ingests/<ref>/{ref,expireat,expected}
    v1/<ns>/leases/<id>/createdat, /labels/*, /snapshots/<snapshotter>/<key> : nil,
                       /content/<digest> : nil, /ingests/<ref> : nil, /images/<name> : nil

Varints are Go's ``binary.PutVarint`` (zigzag). Nothing is trusted: a field that cannot
be decoded is a ``Finding`` naming namespace, bucket and key, and the record is kept
with that field empty; an entry of the wrong type (a value where containerd keeps a
bucket) is a finding and no record. Only a meta.db that cannot be read at all makes an
empty ``MetaDB`` (with a finding of kind ``unreadable-metadb``): then nothing is known,
and whoever plans from it must keep everything.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dockergc.store import bbolt
from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, open_dir_in, open_regular
from dockergc.stores.containerd.records import (
    METADATA_DIR,
    Blob,
    Container,
    Image,
    Ingest,
    Lease,
    MetaDB,
    SnapshotRecord,
)

META_DB = f"{METADATA_DIR}/meta.db"
BAD = "bad-metadb-record"
UNREADABLE = "unreadable-metadb"
UNKNOWN = "unknown-metadb-bucket"
# Go: time.Unix(0, 0) is this many seconds after January 1, year 1 (UTC).
UNIX_TO_INTERNAL = 62135596800
# Objects containerd keeps in a namespace (buckets.go); others are reported.
T = TypeVar("T")
KNOWN_OBJECTS = frozenset(
    {b"labels", b"images", b"containers", b"snapshots", b"content", b"leases", b"sandboxes"}
)


class DecodeError(ValueError):
    """A field's bytes are not what containerd writes there."""


# -- field decoders (shared with the snapshotter reader) --------------------------------


def go_time(raw: bytes) -> float:
    """Go ``time.Time.MarshalBinary`` -> seconds since the epoch.

    Version 1: 1 byte version, int64 seconds since year 1, int32 nanoseconds, int16
    zone offset in minutes (-1: UTC); version 2 adds an int8 of offset seconds. All
    big-endian. The instant does not depend on the zone."""
    if not raw:
        raise DecodeError("empty time")
    version = raw[0]
    want = {1: 15, 2: 16}.get(version)
    if want is None:
        raise DecodeError(f"time encoding version {version} unknown")
    if len(raw) != want:
        raise DecodeError(f"time of {len(raw)} bytes, version {version} has {want}")
    sec, nsec, _offset = struct.unpack_from(">qih", raw, 1)
    if not 0 <= nsec < 1_000_000_000:
        raise DecodeError(f"time nanoseconds {nsec} out of range")
    return float(int(sec) - UNIX_TO_INTERNAL) + int(nsec) / 1e9


def go_time_bytes(epoch: float) -> bytes:
    """The inverse of ``go_time``, as containerd writes it (UTC: version 1, offset -1)."""
    whole = int(epoch // 1)
    nsec = round((epoch - whole) * 1e9)
    if nsec >= 1_000_000_000:
        whole, nsec = whole + 1, nsec - 1_000_000_000
    return struct.pack(">Bqih", 1, whole + UNIX_TO_INTERNAL, nsec, -1)


def uvarint(raw: bytes) -> int:
    """Go ``binary.Uvarint`` of the whole value: at most 10 bytes, no more than 64 bits,
    nothing after it."""
    value = shift = 0
    for i, byte in enumerate(raw):
        if i == 10 or (i == 9 and byte > 1):
            raise DecodeError("varint overflows 64 bits")
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if i + 1 != len(raw):
                raise DecodeError(f"{len(raw) - i - 1} bytes after the varint")
            return value
        shift += 7
    raise DecodeError("varint truncated" if raw else "empty varint")


def varint(raw: bytes) -> int:
    """Go ``binary.Varint`` (zigzag) of the whole value."""
    u = uvarint(raw)
    return ~(u >> 1) if u & 1 else u >> 1


def put_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative uvarint")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def put_varint(value: int) -> bytes:
    return put_uvarint((value << 1) ^ (value >> 63) if value < 0 else value << 1)


def text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("not valid UTF-8") from exc


def shown(raw: bytes) -> str:
    """A key as a finding shows it: never fails, never hides a byte."""
    return raw.decode("utf-8", "backslashreplace")


@dataclass
class Walk:
    """Findings gathered while decoding one bbolt file; ``path`` is the file's, relative
    to the containerd root."""

    path: str
    kind: str = BAD
    findings: list[Finding] = field(default_factory=list)

    def bad(self, where: str, message: str, kind: str | None = None) -> None:
        self.findings.append(Finding(self.path, kind or self.kind, f"{where}: {message}"))

    def sub(self, bucket: bbolt.Bucket, name: bytes, where: str) -> bbolt.Bucket | None:
        """The sub-bucket ``name`` if any; a value in its place is a finding."""
        if name in bucket.values:
            self.bad(f"{where}/{shown(name)}", "is a value where a bucket is expected")
        return bucket.buckets.get(name)

    def value(self, bucket: bbolt.Bucket, name: bytes, where: str) -> bytes | None:
        """The value ``name`` if any; a bucket in its place is a finding."""
        if name in bucket.buckets:
            self.bad(f"{where}/{shown(name)}", "is a bucket where a value is expected")
        return bucket.values.get(name)

    def decoded(
        self, bucket: bbolt.Bucket, name: bytes, where: str, decode: Callable[[bytes], T]
    ) -> T | None:
        raw = self.value(bucket, name, where)
        if raw is None:
            return None
        try:
            return decode(raw)
        except DecodeError as exc:
            self.bad(f"{where}/{shown(name)}", f"cannot decode ({exc}): {raw[:64]!r}")
            return None

    def string(self, bucket: bbolt.Bucket, name: bytes, where: str) -> str:
        return self.decoded(bucket, name, where, text) or ""

    def time(self, bucket: bbolt.Bucket, name: bytes, where: str) -> float | None:
        return self.decoded(bucket, name, where, go_time)

    def name(self, raw: bytes, where: str) -> str:
        """A bucket key as text; bad UTF-8 is a finding and shown escaped."""
        try:
            return text(raw)
        except DecodeError:
            self.bad(f"{where}/{shown(raw)}", "key is not valid UTF-8")
            return shown(raw)

    def labels(self, bucket: bbolt.Bucket, where: str, name: bytes = b"labels") -> dict[str, str]:
        lbkt = self.sub(bucket, name, where)
        if lbkt is None:
            return {}
        here = f"{where}/{shown(name)}"
        for sub in lbkt.buckets:
            self.bad(f"{here}/{shown(sub)}", "is a bucket where a label value is expected")
        out = {}
        for key, raw in sorted(lbkt.values.items()):
            label = self.name(key, here)
            try:
                out[label] = text(raw)
            except DecodeError:
                self.bad(f"{here}/{label}", f"label value is not valid UTF-8: {raw[:64]!r}")
                out[label] = shown(raw)
        return out

    def records(self, bucket: bbolt.Bucket | None, where: str) -> list[tuple[str, bbolt.Bucket]]:
        """The (key, bucket) records of a bucket of records; values in it are findings."""
        if bucket is None:
            return []
        for key in sorted(bucket.values):
            self.bad(f"{where}/{shown(key)}", "is a value where a record bucket is expected")
        return [(self.name(key, where), sub) for key, sub in sorted(bucket.buckets.items())]

    def keys(self, bucket: bbolt.Bucket | None, where: str) -> list[str]:
        """The keys of a set bucket (``key : nil``); sub-buckets in it are findings."""
        if bucket is None:
            return []
        for key in sorted(bucket.buckets):
            self.bad(f"{where}/{shown(key)}", "is a bucket where a reference is expected")
        return [self.name(key, where) for key in sorted(bucket.values)]


# -- opening the file -------------------------------------------------------------------


def open_db(ctd_root: Path, rel_dir: str, name: str) -> int:
    """An fd for ``ctd_root/rel_dir/name``, a regular file reached without following any
    symlink; ``UnreadableFile`` (kind: missing, symlink, not-a-file, unreadable) if not."""
    dfd = open_dir_in(ctd_root, rel_dir)
    try:
        return open_regular(name, dfd)
    finally:
        os.close(dfd)


def read_tree(ctd_root: Path, rel_dir: str, name: str) -> bbolt.Bucket:
    """The root bucket of a bbolt file under the containerd root. Raises
    ``UnreadableFile`` (why it could not be opened) or ``ValueError`` (bad content)."""
    fd = open_db(ctd_root, rel_dir, name)
    try:
        if os.fstat(fd).st_size == 0:
            raise ValueError("file is empty")
        try:
            return bbolt.parse_fd(fd)
        except OSError as exc:
            raise UnreadableFile("unreadable", f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)


# -- meta.db ----------------------------------------------------------------------------


def read_metadb(ctd_root: Path) -> MetaDB:
    """Every namespace's images, containers, snapshots, blobs, ingests and leases."""
    try:
        tree = read_tree(ctd_root, METADATA_DIR, "meta.db")
    except UnreadableFile as exc:
        where = exc.where or META_DB
        return _unreadable(where, f"meta.db {exc.kind}: {exc}; nothing in it is known")
    except (ValueError, RecursionError, MemoryError) as exc:
        return _unreadable(META_DB, f"meta.db cannot be parsed ({exc}); nothing in it is known")
    walk = Walk(META_DB)
    for key in sorted(tree.values):
        walk.bad(shown(key), "a value at the top level of meta.db", UNKNOWN)
    v1 = tree.buckets.get(b"v1")
    if v1 is None:
        return _unreadable(META_DB, "meta.db has no v1 bucket (a schema this reader does not know)")
    version = walk.decoded(v1, b"version", "v1", varint)
    if version is not None and version > 4:
        # newer minor schema revisions stay compatible by containerd's own rule: note it
        walk.bad(
            "v1/version",
            f"schema revision {version} is newer than this reader's (4)",
            "metadb-version",
        )
    out = _Collect()
    namespaces: list[str] = []
    for key, raw in sorted(v1.values.items()):
        if key != b"version":
            walk.bad(f"v1/{shown(key)}", f"unexpected value {raw[:64]!r} in v1", UNKNOWN)
    for raw_ns, nsb in sorted(v1.buckets.items()):
        ns = walk.name(raw_ns, "v1")
        namespaces.append(ns)
        _namespace(walk, ns, nsb, out)
    return MetaDB(
        namespaces=tuple(namespaces),
        images=tuple(out.images),
        containers=tuple(out.containers),
        snapshots=tuple(out.snapshots),
        blobs=tuple(out.blobs),
        ingests=tuple(out.ingests),
        leases=tuple(out.leases),
        findings=tuple(walk.findings),
    )


def _unreadable(where: str, message: str) -> MetaDB:
    return MetaDB(namespaces=(), findings=(Finding(where, UNREADABLE, message),))


@dataclass
class _Collect:
    images: list[Image] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    snapshots: list[SnapshotRecord] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    ingests: list[Ingest] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)


def _namespace(walk: Walk, ns: str, nsb: bbolt.Bucket, out: _Collect) -> None:
    where = f"v1/{ns}"
    for key in sorted(nsb.values):
        walk.bad(f"{where}/{shown(key)}", "a value where an object bucket is expected")
    for key in sorted(set(nsb.buckets) - KNOWN_OBJECTS):
        walk.bad(f"{where}/{shown(key)}", "an object bucket this reader does not know", UNKNOWN)
    walk.labels(nsb, where)  # the namespace's own labels: checked, not kept
    _images(walk, ns, walk.sub(nsb, b"images", where), out)
    _containers(walk, ns, walk.sub(nsb, b"containers", where), out)
    _snapshots(walk, ns, walk.sub(nsb, b"snapshots", where), out)
    content = walk.sub(nsb, b"content", where)
    if content is not None:
        _content(walk, ns, content, out)
    _leases(walk, ns, walk.sub(nsb, b"leases", where), out)


def _images(walk: Walk, ns: str, bucket: bbolt.Bucket | None, out: _Collect) -> None:
    where = f"v1/{ns}/images"
    for name, ib in walk.records(bucket, where):
        here = f"{where}/{name}"
        target = walk.sub(ib, b"target", here)
        digest = media = ""
        size = 0
        if target is None:
            walk.bad(here, "image has no target bucket")
        else:
            there = f"{here}/target"
            digest = walk.string(target, b"digest", there)
            media = walk.string(target, b"mediatype", there)
            size = walk.decoded(target, b"size", there, varint) or 0
            if not digest:
                walk.bad(there, "image target has no digest")
        out.images.append(
            Image(
                namespace=ns,
                name=name,
                target=digest,
                media_type=media,
                size=size,
                labels=walk.labels(ib, here),
                created=walk.time(ib, b"createdat", here),
                updated=walk.time(ib, b"updatedat", here),
                annotations=walk.labels(ib, here, b"annotations"),
            )
        )


def _containers(walk: Walk, ns: str, bucket: bbolt.Bucket | None, out: _Collect) -> None:
    where = f"v1/{ns}/containers"
    for cid, cb in walk.records(bucket, where):
        here = f"{where}/{cid}"
        out.containers.append(
            Container(
                namespace=ns,
                id=cid,
                image=walk.string(cb, b"image", here),
                snapshotter=walk.string(cb, b"snapshotter", here),
                snapshot_key=walk.string(cb, b"snapshotKey", here),
                labels=walk.labels(cb, here),
                created=walk.time(cb, b"createdat", here),
            )
        )


def _snapshots(walk: Walk, ns: str, bucket: bbolt.Bucket | None, out: _Collect) -> None:
    where = f"v1/{ns}/snapshots"
    for snapshotter, sb in walk.records(bucket, where):
        there = f"{where}/{snapshotter}"
        for key, kb in walk.records(sb, there):
            here = f"{there}/{key}"
            name = walk.string(kb, b"name", here)
            if not name:
                walk.bad(here, "snapshot has no backend name")
            out.snapshots.append(
                SnapshotRecord(
                    namespace=ns,
                    snapshotter=snapshotter,
                    key=key,
                    name=name,
                    parent=walk.string(kb, b"parent", here),
                    labels=walk.labels(kb, here),
                    created=walk.time(kb, b"createdat", here),
                    updated=walk.time(kb, b"updatedat", here),
                    children=tuple(walk.keys(walk.sub(kb, b"children", here), f"{here}/children")),
                )
            )


def _content(walk: Walk, ns: str, content: bbolt.Bucket, out: _Collect) -> None:
    where = f"v1/{ns}/content"
    for key in sorted(content.values):
        walk.bad(f"{where}/{shown(key)}", "a value where a bucket is expected")
    for key in sorted(set(content.buckets) - {b"blob", b"ingests", b"ingest"}):
        walk.bad(f"{where}/{shown(key)}", "a content bucket this reader does not know", UNKNOWN)
    if b"ingest" in content.buckets:  # deprecated in containerd 1.2, migrated away since
        walk.bad(f"{where}/ingest", "deprecated ingest bucket (pre-1.2 schema)", UNKNOWN)
    blobs = f"{where}/blob"
    for digest, bb in walk.records(walk.sub(content, b"blob", where), blobs):
        here = f"{blobs}/{digest}"
        size = walk.decoded(bb, b"size", here, varint)
        if size is None:
            walk.bad(here, "blob has no readable size")
        out.blobs.append(
            Blob(
                namespace=ns,
                digest=digest,
                size=size or 0,
                labels=walk.labels(bb, here),
                created=walk.time(bb, b"createdat", here),
                updated=walk.time(bb, b"updatedat", here),
            )
        )
    ingests = f"{where}/ingests"
    for ref, ib in walk.records(walk.sub(content, b"ingests", where), ingests):
        here = f"{ingests}/{ref}"
        out.ingests.append(
            Ingest(
                namespace=ns,
                ref=ref,
                backend_ref=walk.string(ib, b"ref", here),
                expire_at=walk.time(ib, b"expireat", here),
                expected=walk.string(ib, b"expected", here),
            )
        )


def _leases(walk: Walk, ns: str, bucket: bbolt.Bucket | None, out: _Collect) -> None:
    where = f"v1/{ns}/leases"
    for lid, lb in walk.records(bucket, where):
        here = f"{where}/{lid}"
        snaps: list[tuple[str, str]] = []
        sbkt = walk.sub(lb, b"snapshots", here)
        for snapshotter, kb in walk.records(sbkt, f"{here}/snapshots"):
            for key in walk.keys(kb, f"{here}/snapshots/{snapshotter}"):
                snaps.append((snapshotter, key))
        known = {b"createdat", b"labels", b"snapshots", b"content", b"ingests", b"images"}
        for other in sorted((set(lb.buckets) | set(lb.values)) - known):
            walk.bad(
                f"{here}/{shown(other)}", "a lease resource this reader does not know", UNKNOWN
            )
        out.leases.append(
            Lease(
                namespace=ns,
                id=lid,
                created=walk.time(lb, b"createdat", here),
                labels=walk.labels(lb, here),
                snapshots=tuple(snaps),
                content=tuple(walk.keys(walk.sub(lb, b"content", here), f"{here}/content")),
                ingests=tuple(walk.keys(walk.sub(lb, b"ingests", here), f"{here}/ingests")),
                images=tuple(walk.keys(walk.sub(lb, b"images", here), f"{here}/images")),
            )
        )
