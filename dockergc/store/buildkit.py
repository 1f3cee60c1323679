"""Read BuildKit's cache records (buildkit/*.db) for the overlay2 dirs they own.

BuildKit (graphdriver mode) creates overlay2/<key> dirs itself and records them only
in buildkit/snapshots.db: one bucket per key with fields parent, committed, chainid,
size. Hand-deleting those dirs breaks builds. Two readers, both kept:
- a structural one (bbolt) for snapshots.db: bucket names and "committed" values are
  dir names, "chainid"/"parent" digests pin layers;
- a safety net over every *.db: any 64-hex id that occurs in the bytes at all is kept,
  so a format we misread can only make us keep more.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from dockergc.store import bbolt
from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, list_dir
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


def _map(path: Path) -> mmap.mmap | bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile("not-a-file", "is not a regular file")
        if st.st_size == 0:
            return b""
        return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def _hex_ids(data: mmap.mmap | bytes) -> set[str]:
    ids: set[str] = set()
    for match in HEX_RUN.finditer(data):
        run = match.group(0).decode()
        for start in range(len(run) - 63):
            ids.add(run[start : start + 64])
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
        entries = list_dir(root / BUILDKIT)
    except UnreadableFile as exc:
        findings.append(Finding(str(BUILDKIT), exc.kind, f"BuildKit dir {exc}"))
        return BuildkitStore(
            frozenset(), frozenset(), frozenset(), (), ("buildkit",), tuple(findings)
        )
    for entry in entries:
        if not entry.name.endswith(".db"):
            continue
        rel = BUILDKIT / entry.name
        try:
            data = _map(root / rel)
        except (UnreadableFile, OSError) as exc:
            unreadable.append(str(rel))
            findings.append(Finding(str(rel), "unreadable", f"BuildKit records unreadable: {exc}"))
            continue
        files.append(str(rel))
        if not len(data):
            findings.append(Finding(str(rel), "empty", "BuildKit records file is empty"))
        try:
            hex_ids |= _hex_ids(data)
            if entry.name == "snapshots.db" and len(data):
                try:
                    k, c = _snapshot_refs(bbolt.parse(data))
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
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    return BuildkitStore(
        frozenset(keys),
        frozenset(chains),
        frozenset(hex_ids),
        tuple(files),
        tuple(unreadable),
        tuple(findings),
    )
