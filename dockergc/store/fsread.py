"""Bounded, symlink-refusing reads of small metadata files.

Every metadata file under a data root may have been planted or truncated: open it
with O_NOFOLLOW, insist on a regular file, and cap its size before reading.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

MAX_METADATA_BYTES = 16 * 1024 * 1024


class UnreadableFile(Exception):
    """The file could not be read as a small regular file; ``kind`` says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def open_dir(path: Path | str, dir_fd: int | None = None) -> int | None:
    """An fd for a real directory (never through a symlink); None if absent or not a dir."""
    try:
        return os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def read_bytes(
    path: Path | str, limit: int = MAX_METADATA_BYTES, dir_fd: int | None = None
) -> bytes:
    """Read a regular file without following a symlink in its last component
    (relative to ``dir_fd`` when given: the cheap and race-free way inside a layer dir)."""
    try:
        fd = os.open(
            path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError as exc:
        raise UnreadableFile("missing", "file is missing") from exc
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise UnreadableFile("symlink", "is a symlink, not a file") from exc
        raise UnreadableFile("unreadable", f"cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile("not-a-file", "is not a regular file")
        size = st.st_size
        if size > limit:
            raise UnreadableFile("too-large", f"is {size} bytes, over the {limit} limit")
        # One read sized from fstat (+1 to see growth) covers the usual small file; a file
        # that grew meanwhile is read on to its end or the limit.
        data = os.read(fd, min(size + 1, limit + 1))
        if len(data) > size:
            data = _read_rest(fd, data, limit)
        return data
    except OSError as exc:
        raise UnreadableFile("unreadable", f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _read_rest(fd: int, first: bytes, limit: int) -> bytes:
    chunks = [first]
    remaining = limit + 1 - len(first)
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UnreadableFile("too-large", f"grew past the {limit} byte limit while read")
    return data


def read_text(path: Path | str, limit: int = MAX_METADATA_BYTES, dir_fd: int | None = None) -> str:
    """Read a small UTF-8 text file; bad encoding is an ``UnreadableFile``."""
    data = read_bytes(path, limit, dir_fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile("bad-encoding", "is not valid UTF-8") from exc


def list_dir(path: Path) -> list[os.DirEntry[str]]:
    """List a directory sorted by name; a missing dir is empty, a symlinked one is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(st.st_mode):
        raise UnreadableFile("symlink", "is a symlink, not a directory")
    if not stat.S_ISDIR(st.st_mode):
        raise UnreadableFile("not-a-dir", "is not a directory")
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise UnreadableFile("unreadable", f"cannot list: {exc.strerror}") from exc


def parse_json(data: bytes | str) -> object:
    """``json.loads``, with nesting too deep for Python's parser (valid JSON that Docker,
    written in Go, accepts up to 10,000 levels) a ``ValueError`` like any other bad input,
    not a ``RecursionError`` that would end the whole run."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None
