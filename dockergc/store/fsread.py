"""Bounded, symlink-refusing reads of small metadata files.

Every metadata file under a data root may have been planted or truncated: open it
with O_NOFOLLOW, insist on a regular file, and cap its size before reading. Paths
inside a root are opened component by component from the root (``open_dir_in``,
``list_dir_in``), each with O_NOFOLLOW: a symlinked ``imagedb``, ``layerdb`` or
``containers/<id>`` is refused where it is met, never read through (into another
root, say, whose records would then decide what this root keeps).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

MAX_METADATA_BYTES = 16 * 1024 * 1024


class UnreadableFile(Exception):
    """The file could not be read as a small regular file; ``kind`` says why.
    ``where``: the path (relative to the root) of the component that failed, when a
    walk from the root stopped before the file: a symlinked dir on the way, say."""

    def __init__(self, kind: str, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where


def open_dir(path: Path | str, dir_fd: int | None = None) -> int | None:
    """An fd for a real directory (never through a symlink); None if absent or not a dir."""
    try:
        return os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_regular(path: Path | str, dir_fd: int | None = None) -> int:
    """An fd for a regular file, never through a symlink in its last component (relative
    to ``dir_fd`` when given), non-blocking (a FIFO planted there cannot stall a read);
    ``UnreadableFile`` (missing, symlink, not-a-file, unreadable) otherwise. The caller
    closes it."""
    try:
        fd = os.open(
            path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError as exc:
        raise UnreadableFile("missing", "file is missing") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnreadableFile("symlink", "is a symlink, not a file") from exc
        raise UnreadableFile("unreadable", f"cannot open: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFile("not-a-file", "is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(
    path: Path | str, limit: int = MAX_METADATA_BYTES, dir_fd: int | None = None
) -> bytes:
    """Read a regular file without following a symlink in its last component
    (relative to ``dir_fd`` when given: the cheap and race-free way inside a layer dir)."""
    fd = open_regular(path, dir_fd)
    try:
        st = os.fstat(fd)
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
    return _decode(read_bytes(path, limit, dir_fd))


def _decode(data: bytes) -> str:
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


def _component_error(exc: OSError, name: str, dir_fd: int, where: str) -> UnreadableFile:
    """What stopped ``open(name, DIR_FLAGS, dir_fd)``, as an ``UnreadableFile``."""
    if exc.errno == errno.ENOENT:
        return UnreadableFile("missing", "is missing", where)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = exc.errno == errno.ELOOP
        if link:
            return UnreadableFile("symlink", "is a symlink, not a directory; not followed", where)
        return UnreadableFile("not-a-dir", "is not a directory", where)
    return UnreadableFile("unreadable", f"cannot open: {exc.strerror}", where)


def open_dir_at(dir_fd: int, name: str, where: str) -> int:
    """An fd for the real dir ``name`` in ``dir_fd``; else an ``UnreadableFile`` saying
    why, with ``where`` (its path relative to the root) as the place."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _component_error(exc, name, dir_fd, where) from exc


def open_dir_in(root: Path | str, rel: Path | str) -> int:
    """An fd for ``root/rel``, opened one component at a time from the root, never
    through a symlink. ``UnreadableFile.where`` names the first component that is
    missing, a symlink or not a dir. The root itself is resolved by the caller."""
    try:
        fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        raise UnreadableFile("unreadable", f"root cannot be opened: {exc.strerror}", ".") from exc
    done = ""
    try:
        for part in str(rel).split("/"):
            if part in ("", "."):
                continue
            done = f"{done}/{part}" if done else part
            nxt = open_dir_at(fd, part, done)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def lexists_at(name: str, dir_fd: int) -> bool:
    """Whether ``name`` exists in ``dir_fd`` (a symlink counts; it is not followed)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except OSError:
        return False


def scan_fd(fd: int) -> list[os.DirEntry[str]]:
    """The entries of an open dir, sorted by name (``DirEntry.path`` is the bare name)."""
    try:
        with os.scandir(fd) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise UnreadableFile("unreadable", f"cannot list: {exc.strerror}") from exc


def list_dir_in(root: Path | str, rel: Path | str) -> list[os.DirEntry[str]]:
    """``list_dir`` of ``root/rel`` reached component by component (``open_dir_in``):
    an absent dir is empty; a symlink on the way is refused, ``where`` naming it."""
    try:
        fd = open_dir_in(root, rel)
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return []
        raise
    try:
        return scan_fd(fd)
    finally:
        os.close(fd)


def read_bytes_in(root: Path | str, rel: Path | str, limit: int = MAX_METADATA_BYTES) -> bytes:
    """``read_bytes`` of ``root/rel``, its dirs opened component by component."""
    parent, _, name = str(rel).rpartition("/")
    fd = open_dir_in(root, parent)
    try:
        return read_bytes(name, limit, dir_fd=fd)
    finally:
        os.close(fd)


def read_text_in(root: Path | str, rel: Path | str, limit: int = MAX_METADATA_BYTES) -> str:
    """``read_text`` of ``root/rel``, its dirs opened component by component."""
    return _decode(read_bytes_in(root, rel, limit))


def parse_json(data: bytes | str) -> object:
    """``json.loads``, with nesting too deep for Python's parser (valid JSON that Docker,
    written in Go, accepts up to 10,000 levels) a ``ValueError`` like any other bad input,
    not a ``RecursionError`` that would end the whole run."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None
