"""A small read-only reader of bbolt files (BuildKit's cache records).

Format (go.etcd.io/bbolt): pages of ``page_size`` bytes; a 16-byte page header
(id u64, flags u16, count u16, overflow u32); pages 0 and 1 are meta pages (the
valid one with the higher txid wins); branch elements (pos u32, ksize u32, pgid u64)
and leaf elements (flags u32, pos u32, ksize u32, vsize u32) with ``pos`` relative
to the element. A leaf value flagged 0x01 is a bucket: root pgid u64 + sequence u64,
and when the root is 0 the bucket's page follows inline in the value.

Hostile input is expected: every offset is bounds-checked, page visits are capped
and cycles rejected. Any inconsistency raises ``BboltError``.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

MAGIC = 0xED0CDAED
PAGE_HEADER = struct.Struct("<QHHI")
META = struct.Struct("<IIIIQQQQQQ")
BRANCH_ELEM = struct.Struct("<IIQ")
LEAF_ELEM = struct.Struct("<IIII")
BRANCH, LEAF, META_FLAG = 0x01, 0x02, 0x04
BUCKET_LEAF = 0x01
MAX_DEPTH = 16
MAX_PAGES = 1_000_000


Buf = bytes | mmap.mmap


class BboltError(ValueError):
    """The bytes are not a bbolt file we can read safely."""


@dataclass
class Bucket:
    values: dict[bytes, bytes] = field(default_factory=dict)
    buckets: dict[bytes, Bucket] = field(default_factory=dict)


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class _Meta:
    page_size: int
    root: int
    txid: int


def _read_meta(data: Buf, offset: int) -> _Meta | None:
    end = offset + PAGE_HEADER.size + META.size
    if end > len(data):
        return None
    _, flags, _, _ = PAGE_HEADER.unpack_from(data, offset)
    if not flags & META_FLAG:
        return None
    fields = META.unpack_from(data, offset + PAGE_HEADER.size)
    magic, version, page_size, _, root, _, _, _, txid, checksum = fields
    if magic != MAGIC or version != 2:
        return None
    body = data[offset + PAGE_HEADER.size : end - 8]
    if _fnv64a(body) != checksum:
        return None
    if page_size < 512 or page_size > 1 << 20 or page_size & (page_size - 1):
        return None
    return _Meta(page_size, root, txid)


class _Reader:
    def __init__(self, data: Buf) -> None:
        self.data = data
        first = _read_meta(data, 0)
        metas = [first] if first else []
        size = first.page_size if first else 4096
        for candidate in {size, 4096, 8192, 16384, 65536}:
            second = _read_meta(data, candidate)
            if second and second.page_size == candidate:
                metas.append(second)
        if not metas:
            raise BboltError("no valid meta page")
        self.meta = max(metas, key=lambda m: m.txid)
        self.visited = 0

    def _page(self, pgid: int) -> tuple[Buf, int]:
        offset = pgid * self.meta.page_size
        if pgid < 2 or offset + PAGE_HEADER.size > len(self.data):
            raise BboltError(f"page {pgid} out of range")
        self.visited += 1
        if self.visited > MAX_PAGES:
            raise BboltError("too many pages")
        return self.data, offset

    def bucket_at(self, pgid: int, depth: int, path: frozenset[int]) -> Bucket:
        bucket = Bucket()
        self._walk(pgid, bucket, depth, path)
        return bucket

    def _walk(self, pgid: int, bucket: Bucket, depth: int, path: frozenset[int]) -> None:
        if pgid in path:
            raise BboltError(f"page cycle at {pgid}")
        buf, offset = self._page(pgid)
        self._walk_page(buf, offset, bucket, depth, path | {pgid})

    def _walk_page(
        self, buf: Buf, offset: int, bucket: Bucket, depth: int, path: frozenset[int]
    ) -> None:
        if depth > MAX_DEPTH:
            raise BboltError("buckets nested too deep")
        _, flags, count, _ = PAGE_HEADER.unpack_from(buf, offset)
        elems = offset + PAGE_HEADER.size
        if flags & BRANCH:
            for i in range(count):
                at = elems + i * BRANCH_ELEM.size
                self._check(buf, at, BRANCH_ELEM.size)
                _, _, child = BRANCH_ELEM.unpack_from(buf, at)
                self._walk(child, bucket, depth, path)
        elif flags & LEAF:
            for key, value, elem_flags in self._leaf_items(buf, elems, count):
                if elem_flags & BUCKET_LEAF:
                    bucket.buckets[key] = self._child_bucket(value, depth, path)
                else:
                    bucket.values[key] = value
        else:
            raise BboltError(f"unexpected page flags {flags:#x}")

    def _leaf_items(self, buf: Buf, elems: int, count: int) -> Iterator[tuple[bytes, bytes, int]]:
        for i in range(count):
            at = elems + i * LEAF_ELEM.size
            self._check(buf, at, LEAF_ELEM.size)
            elem_flags, pos, ksize, vsize = LEAF_ELEM.unpack_from(buf, at)
            start = at + pos
            self._check(buf, start, ksize + vsize)
            yield buf[start : start + ksize], buf[start + ksize : start + ksize + vsize], elem_flags

    def _child_bucket(self, value: bytes, depth: int, path: frozenset[int]) -> Bucket:
        if len(value) < 16:
            raise BboltError("bucket header truncated")
        root, _ = struct.unpack_from("<QQ", value, 0)
        if root:
            return self.bucket_at(root, depth + 1, path)
        child = Bucket()
        inline = bytes(value[16:])
        self._check(inline, 0, PAGE_HEADER.size)
        self._walk_page(inline, 0, child, depth + 1, path)
        return child

    @staticmethod
    def _check(buf: Buf, start: int, size: int) -> None:
        if start < 0 or start + size > len(buf):
            raise BboltError("element points outside its page")


def parse(data: Buf) -> Bucket:
    """Return the root bucket of a bbolt file held in ``data``."""
    try:
        reader = _Reader(data)
        return reader.bucket_at(reader.meta.root, 0, frozenset())
    except struct.error as exc:
        raise BboltError(f"truncated structure: {exc}") from exc
