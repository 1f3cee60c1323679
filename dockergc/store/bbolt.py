"""A small read-only reader of bbolt files (BuildKit's cache records).

Format (go.etcd.io/bbolt): pages of ``page_size`` bytes; a 16-byte page header
(id u64, flags u16, count u16, overflow u32); pages 0 and 1 are meta pages (the
valid one with the higher txid wins); branch elements (pos u32, ksize u32, pgid u64)
and leaf elements (flags u32, pos u32, ksize u32, vsize u32) with ``pos`` relative
to the element. A leaf value flagged 0x01 is a bucket: root pgid u64 + sequence u64,
and when the root is 0 the bucket's page follows inline in the value.

The file is read page by page (``pread``), and only the pages reachable from the meta
page's root: memory follows the records, never the file's size (a file padded with
gigabytes of zeros costs what its records cost). Hostile input is expected: every page
id must lie inside the file, every offset inside its page, no page may be reached twice
(which also rules out cycles), page spans and the depth of the walk are capped. Any
inconsistency raises ``BboltError``.
"""

from __future__ import annotations

import os
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
# Levels of the walk, branch pages and nested buckets together. A B+tree of a million
# keys is 4-5 branch levels deep; BuildKit nests buckets 2-3 deep. The cap also keeps the
# (recursive) walk far from Python's recursion limit.
MAX_DEPTH = 64
MAX_PAGES = 1_000_000
MAX_PAGE_SPAN = 64 * 1024 * 1024  # one page with its overflow pages


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


class _Source:
    """Bytes at an offset: from a buffer (tests, small files) or an fd (``pread``)."""

    def __init__(self, data: bytes | None = None, fd: int | None = None) -> None:
        self.data, self.fd = data, fd
        if data is not None:
            self.size = len(data)
        else:
            assert fd is not None
            self.size = os.fstat(fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise BboltError(f"read of {size} bytes at {offset} is outside the file")
        if self.data is not None:
            return self.data[offset : offset + size]
        assert self.fd is not None
        chunks = []
        while size > 0:
            chunk = os.pread(self.fd, size, offset)
            if not chunk:
                raise BboltError("file shrank while read")
            chunks.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)


@dataclass(frozen=True)
class _Meta:
    page_size: int
    root: int
    txid: int


def _read_meta(src: _Source, offset: int) -> _Meta | None:
    if offset + PAGE_HEADER.size + META.size > src.size:
        return None
    raw = src.read(offset, PAGE_HEADER.size + META.size)
    _, flags, _, _ = PAGE_HEADER.unpack_from(raw, 0)
    if not flags & META_FLAG:
        return None
    fields = META.unpack_from(raw, PAGE_HEADER.size)
    magic, version, page_size, _, root, _, _, _, txid, checksum = fields
    if magic != MAGIC or version != 2:
        return None
    if _fnv64a(raw[PAGE_HEADER.size : -8]) != checksum:
        return None
    if page_size < 512 or page_size > 1 << 20 or page_size & (page_size - 1):
        return None
    return _Meta(page_size, root, txid)


class _Reader:
    def __init__(self, src: _Source) -> None:
        self.src = src
        first = _read_meta(src, 0)
        metas = [first] if first else []
        size = first.page_size if first else 4096
        for candidate in sorted({size, 4096, 8192, 16384, 65536}):
            second = _read_meta(src, candidate)
            if second and second.page_size == candidate:
                metas.append(second)
        if not metas:
            raise BboltError("no valid meta page")
        self.meta = max(metas, key=lambda m: m.txid)
        self.pages = src.size // self.meta.page_size
        self.seen: set[int] = set()

    def _page(self, pgid: int) -> bytes:
        """A page with its overflow pages; each page id may be reached once only."""
        size = self.meta.page_size
        if pgid < 2 or pgid >= self.pages:
            raise BboltError(f"page {pgid} out of range")
        if pgid in self.seen:
            raise BboltError(f"page {pgid} reached twice (cycle or shared page)")
        if len(self.seen) >= MAX_PAGES:
            raise BboltError("too many pages")
        header = self.src.read(pgid * size, PAGE_HEADER.size)
        _, _, _, overflow = PAGE_HEADER.unpack(header)
        span = (overflow + 1) * size
        if span > MAX_PAGE_SPAN or pgid + overflow >= self.pages:
            raise BboltError(f"page {pgid} spans {overflow + 1} pages, past the limit or file")
        self.seen.update(range(pgid, pgid + overflow + 1))
        return self.src.read(pgid * size, span)

    def bucket_at(self, pgid: int, depth: int) -> Bucket:
        bucket = Bucket()
        self._walk(pgid, bucket, depth)
        return bucket

    def _walk(self, pgid: int, bucket: Bucket, depth: int) -> None:
        self._walk_page(self._page(pgid), bucket, depth)

    def _walk_page(self, page: bytes, bucket: Bucket, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise BboltError("pages or buckets nested too deep")
        _check(page, 0, PAGE_HEADER.size)
        _, flags, count, _ = PAGE_HEADER.unpack_from(page, 0)
        elems = PAGE_HEADER.size
        if flags & BRANCH:
            children = []
            for i in range(count):
                at = elems + i * BRANCH_ELEM.size
                _check(page, at, BRANCH_ELEM.size)
                children.append(BRANCH_ELEM.unpack_from(page, at)[2])
            for child in children:
                self._walk(child, bucket, depth + 1)
        elif flags & LEAF:
            for key, value, elem_flags in _leaf_items(page, elems, count):
                if elem_flags & BUCKET_LEAF:
                    bucket.buckets[key] = self._child_bucket(value, depth)
                else:
                    bucket.values[key] = value
        else:
            raise BboltError(f"unexpected page flags {flags:#x}")

    def _child_bucket(self, value: bytes, depth: int) -> Bucket:
        if len(value) < 16:
            raise BboltError("bucket header truncated")
        root, _ = struct.unpack_from("<QQ", value, 0)
        if root:
            return self.bucket_at(root, depth + 1)
        child = Bucket()
        self._walk_page(value[16:], child, depth + 1)
        return child


def _leaf_items(page: bytes, elems: int, count: int) -> Iterator[tuple[bytes, bytes, int]]:
    # bbolt writes each element's key and value after the element headers, in element
    # order, never overlapping (node.write). Holding a file to that keeps what one page can
    # yield within the page's own bytes: overlapping elements could otherwise copy the same
    # 64 MiB span 65,535 times.
    floor = elems + count * LEAF_ELEM.size
    for i in range(count):
        at = elems + i * LEAF_ELEM.size
        _check(page, at, LEAF_ELEM.size)
        elem_flags, pos, ksize, vsize = LEAF_ELEM.unpack_from(page, at)
        start = at + pos
        _check(page, start, ksize + vsize)
        if start < floor:
            raise BboltError("leaf elements overlap or go backwards")
        floor = start + ksize + vsize
        yield page[start : start + ksize], page[start + ksize : start + ksize + vsize], elem_flags


def _check(page: bytes, start: int, size: int) -> None:
    if start < 0 or start + size > len(page):
        raise BboltError("element points outside its page")


def _parse(src: _Source) -> Bucket:
    try:
        reader = _Reader(src)
        return reader.bucket_at(reader.meta.root, 0)
    except struct.error as exc:
        raise BboltError(f"truncated structure: {exc}") from exc


def parse(data: bytes) -> Bucket:
    """Return the root bucket of a bbolt file held in ``data``."""
    return _parse(_Source(data=bytes(data)))


def parse_fd(fd: int) -> Bucket:
    """Return the root bucket of the bbolt file open as ``fd``, reading only the pages
    reachable from its root. A read error is an ``OSError``; bad content a ``BboltError``."""
    return _parse(_Source(fd=fd))
