"""daemon.json as relocation sees it: content hashes, the switched content, atomic writes.

A relocation identifies daemon.json's states by the sha256 of its bytes: the original
(journaled with the plan; ``None`` when there was no file), and the switched version,
which is a pure function of the original and the new root. Every write is a temp file in
the same directory, fsync'd, renamed over the target, then the directory fsync'd: a kill
at any instant leaves the old bytes or the new ones, never a torn or missing file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644


def read(path: Path) -> bytes | None:
    """The file's bytes, or None if there is no file."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str | None:
    return digest(read(path))


def switched(original: bytes | None, new_root: str) -> bytes:
    """The config that names ``new_root``: ``data-root`` set, the old ``graph`` dropped."""
    doc = json.loads(original or b"{}") if original is not None else {}
    if not isinstance(doc, dict):
        raise ValueError("daemon config is not a JSON object")
    doc.pop("graph", None)
    doc["data-root"] = new_root
    return (json.dumps(doc, indent=2) + "\n").encode()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, like: os.stat_result | None = None) -> None:
    """Replace ``path`` with ``data`` durably; mode and owner from ``like`` when given."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.dockergc-", dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if like is not None:
                os.fchown(fd, like.st_uid, like.st_gid)
                os.fchmod(fd, like.st_mode & 0o7777)
            else:
                os.fchmod(fd, NEW_FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove(path: Path) -> None:
    """Unlink ``path`` durably (the directory entry's removal is fsync'd)."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
