"""Read BuildKit's cache records (buildkit/*.db) for the overlay2 dirs they own.

BuildKit (graphdriver mode) creates overlay2/<key> dirs itself and records them only
in buildkit/snapshots.db: one bucket per key with fields parent, committed, chainid,
size. Hand-deleting those dirs breaks builds. Two readers, both kept:
- a structural one (bbolt) for snapshots.db: bucket names and "committed" values are
  dir names, "chainid"/"parent" digests pin layers;
- a safety net over every *.db: any 64-hex id that occurs in the bytes at all is kept,
  so a format we misread can only make us keep more.
Both read through an fd in bounded pieces (bbolt by page, the safety net by 1 MiB chunk,
skipping a sparse file's holes): memory never follows a file's size, and a file that
shrinks while read is an error, not a SIGBUS as it would be through mmap.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dockergc.store import bbolt
from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, open_dir_in, open_regular, scan_fd
from dockergc.store.ids import is_digest

BUILDKIT = Path("buildkit")
HEX_RUN = re.compile(rb"[0-9a-f]{64,}")


@dataclass(frozen=True)
class BuildkitStore:
    snapshot_keys: frozenset[str]  # overlay2 dir names BuildKit owns
    chain_ids: frozenset[str]  # layer chains its records name
    hex_ids: frozenset[str]  # every 64-hex id occurring in any *.db (safety net)
    files: tuple[str, ...]
    unreadable: tuple[str, ...]  # db files we could not read: keep everything
    findings: tuple[Finding, ...]


# Bytes that can be part of a 64-hex run map to "h", the rest to ".": a chunk with no
# run of 64 "h" is skipped at C speed (the regex is slow on long runs of anything).
_HEX_MASK = bytes(ord("h") if chr(b) in "0123456789abcdef" else ord(".") for b in range(256))
_HEX_WINDOW = b"h" * 64
CHUNK = 1 << 20


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the parts of the file that hold data: holes of a sparse file
    (zeros, so no id) are skipped without being read."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past offset
                return
            yield offset, size  # no SEEK_DATA here: read everything
            return
        yield start, min(end, size)
        offset = end


def _hex_ids(fd: int) -> set[str]:
    """Every 64-hex window of every hex run in the file, read in chunks: memory stays
    at one chunk whatever the file's size."""
    ids: set[str] = set()
    size = os.fstat(fd).st_size
    for start, end in _data_extents(fd, size):
        tail = b""  # the last 63 bytes before this chunk: runs that cross a boundary
        for offset in range(start, end, CHUNK):
            chunk = os.pread(fd, min(CHUNK, end - offset), offset)
            if not chunk:
                break
            data = tail + chunk
            tail = data[-63:]
            if _HEX_WINDOW not in data.translate(_HEX_MASK):
                continue
            for match in HEX_RUN.finditer(data):
                run = match.group(0).decode()
                for at in range(len(run) - 63):
                    ids.add(run[at : at + 64])
    return ids


def _snapshot_refs(tree: bbolt.Bucket) -> tuple[set[str], set[str]]:
    keys: set[str] = set()
    chains: set[str] = set()
    for raw_key, bucket in tree.buckets.items():
        name = raw_key.decode("utf-8", "replace")
        (chains if is_digest(name) else keys).add(name)
        for field in (b"committed", b"parent", b"chainid"):
            value = bucket.values.get(field, b"").decode("utf-8", "replace")
            if not value:
                continue
            if is_digest(value):
                chains.add(value)
            elif field != b"chainid":
                keys.add(value)
    return keys, chains


def read_buildkit(root: Path) -> BuildkitStore:
    findings: list[Finding] = []
    keys: set[str] = set()
    chains: set[str] = set()
    hex_ids: set[str] = set()
    files: list[str] = []
    unreadable: list[str] = []
    try:
        bfd = open_dir_in(root, BUILDKIT)
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return BuildkitStore(frozenset(), frozenset(), frozenset(), (), (), ())
        findings.append(Finding(exc.where or str(BUILDKIT), exc.kind, f"BuildKit dir {exc}"))
        return BuildkitStore(
            frozenset(), frozenset(), frozenset(), (), ("buildkit",), tuple(findings)
        )
    try:
        _read_files(bfd, keys, chains, hex_ids, files, unreadable, findings)
    except UnreadableFile as exc:  # buildkit/ could not be listed
        findings.append(Finding(str(BUILDKIT), exc.kind, f"BuildKit dir {exc}"))
        unreadable.append("buildkit")
    finally:
        os.close(bfd)
    return BuildkitStore(
        frozenset(keys),
        frozenset(chains),
        frozenset(hex_ids),
        tuple(files),
        tuple(unreadable),
        tuple(findings),
    )


def _read_files(
    bfd: int,
    keys: set[str],
    chains: set[str],
    hex_ids: set[str],
    files: list[str],
    unreadable: list[str],
    findings: list[Finding],
) -> None:
    for entry in scan_fd(bfd):
        if not entry.name.endswith(".db"):
            continue
        rel = BUILDKIT / entry.name
        try:
            fd = open_regular(entry.name, bfd)
        except (UnreadableFile, OSError) as exc:
            unreadable.append(str(rel))
            findings.append(Finding(str(rel), "unreadable", f"BuildKit records unreadable: {exc}"))
            continue
        try:
            files.append(str(rel))
            empty = os.fstat(fd).st_size == 0
            if empty:
                findings.append(Finding(str(rel), "empty", "BuildKit records file is empty"))
            hex_ids |= _hex_ids(fd)
            if entry.name == "snapshots.db" and not empty:
                try:
                    k, c = _snapshot_refs(bbolt.parse_fd(fd))
                    keys |= k
                    chains |= c
                except bbolt.BboltError as exc:
                    findings.append(
                        Finding(
                            str(rel),
                            "bad-bbolt",
                            f"cannot parse ({exc}); every id named in it is kept",
                        )
                    )
        except OSError as exc:
            unreadable.append(str(rel))
            findings.append(Finding(str(rel), "unreadable", f"BuildKit records unreadable: {exc}"))
        finally:
            os.close(fd)
