"""What is on disk in containerd's content store, read-only.

``io.containerd.content.v1.content/blobs/sha256/<hex>`` holds committed blobs, named by
their digest; ``ingest/<dir>`` one dir per write in progress (``ref``, ``data``,
``startedat``, ``updatedat``, ``total``). Sizes are allocated bytes (``st_blocks`` *
512): what removing a blob frees. No symlink is followed; an entry that is not what
containerd writes there is a ``Finding`` and is not listed.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, open_dir_in
from dockergc.stores.containerd.records import CONTENT_DIR, ContentStore

BLOBS = f"{CONTENT_DIR}/blobs"
SHA256 = f"{BLOBS}/sha256"
INGEST = f"{CONTENT_DIR}/ingest"
HEX64 = re.compile(r"[0-9a-f]{64}")


def read_content(ctd_root: Path) -> ContentStore:
    findings: list[Finding] = []
    blobs: dict[str, int] = {}
    for name, _mode, _blocks in _entries(ctd_root, BLOBS, findings):
        if name != "sha256":
            findings.append(
                Finding(f"{BLOBS}/{name}", "unexpected-content-entry", "not a sha256 blob dir")
            )
    for name, mode, st_blocks in _entries(ctd_root, SHA256, findings):
        rel = f"{SHA256}/{name}"
        if stat.S_ISLNK(mode):
            findings.append(Finding(rel, "symlink", "a symlink among the blobs; not followed"))
        elif not stat.S_ISREG(mode):
            findings.append(Finding(rel, "not-a-file", "a non-file among the blobs"))
        elif not HEX64.fullmatch(name):
            findings.append(Finding(rel, "bad-blob-name", "blob name is not a sha256 digest"))
        else:
            blobs[f"sha256:{name}"] = st_blocks * 512
    ingests = []
    for name, mode, _ in _entries(ctd_root, INGEST, findings):
        rel = f"{INGEST}/{name}"
        if stat.S_ISDIR(mode):
            ingests.append(name)
        elif stat.S_ISLNK(mode):
            findings.append(Finding(rel, "symlink", "a symlink among the ingests; not followed"))
        else:
            findings.append(Finding(rel, "not-a-dir", "a non-directory among the ingests"))
    return ContentStore(blobs=blobs, ingests=tuple(ingests), findings=tuple(findings))


def lstat_entries(
    ctd_root: Path, rel: str, findings: list[Finding]
) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of ``ctd_root/rel``, sorted, its dirs opened one by one
    from the root without following a symlink; an absent dir has none, one that cannot be
    listed is a finding, an entry gone before its lstat is a ``vanished`` finding."""
    try:
        fd = open_dir_in(ctd_root, rel)
    except UnreadableFile as exc:
        if exc.kind != "missing":
            findings.append(Finding(exc.where or rel, exc.kind, f"dir {exc}"))
        return []
    out = []
    try:
        try:
            names = sorted(os.listdir(fd))
        except OSError as exc:
            findings.append(Finding(rel, "unreadable", f"cannot list: {exc.strerror}"))
            return []
        for name in names:
            try:
                out.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
            except OSError:
                findings.append(Finding(f"{rel}/{name}", "vanished", "removed while listed"))
    finally:
        os.close(fd)
    return out


def _entries(ctd_root: Path, rel: str, findings: list[Finding]) -> list[tuple[str, int, int]]:
    """(name, mode, st_blocks) of each entry of ``rel``."""
    return [(n, st.st_mode, st.st_blocks) for n, st in lstat_entries(ctd_root, rel, findings)]
