"""Filesystem moves and removals that cannot be steered out of the data root.

Paths are opened component by component from the root with O_NOFOLLOW, so a
directory swapped for a symlink between plan and apply is refused, not followed.
Moves are renameat(2) between directory fds on one filesystem: atomic, never a copy.
Removal walks by fd, never follows a symlink, and refuses to enter another mount.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from dockergc.execute.platform import open_beneath, openat2_available

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """The path cannot be reached without following a symlink or leaving the filesystem."""


def open_dir_at(dirfd: int, name: str) -> int:
    """Open a child directory: no symlink, and (where the kernel allows) no mount crossing."""
    try:
        if openat2_available():
            return open_beneath(dirfd, name)
        return os.open(name, DIR_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise UnsafePath(f"{name!r} is a mount point; not crossing into it") from exc
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{name!r} is not a real directory") from exc
        raise


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.EBUSY, errno.EAGAIN, errno.EINTR)


retry_transient = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.1, max=2),
    reraise=True,
)


@contextmanager
def open_parent(root: str, rel: str) -> Iterator[tuple[int, str]]:
    """Yield (fd of the parent dir of ``rel`` under ``root``, last component)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"{rel!r} is not a plain relative path")
    fd = os.open(root, DIR_FLAGS)
    try:
        root_dev = os.fstat(fd).st_dev
        for part in parts[:-1]:
            nxt = open_dir_at(fd, part)
            os.close(fd)
            fd = nxt
            if os.fstat(fd).st_dev != root_dev:
                raise UnsafePath(f"{rel!r} lies on another filesystem than the root")
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat_at(root: str, rel: str) -> os.stat_result | None:
    """lstat ``rel`` without following any symlink on the way; None if absent."""
    try:
        with open_parent(root, rel) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise


@retry_transient
def move(root: str, src: str, dst: str, expect: tuple[int, int] | None = None) -> None:
    """Atomically rename ``src`` to ``dst`` (both relative to ``root``); never copies.

    ``expect`` is the (dev, ino) the source must still have. The destination must not
    exist. Both parent dirs are fsynced so the move survives a power cut.
    """
    with open_parent(root, src) as (sfd, sname), open_parent(root, dst) as (dfd, dname):
        st = os.stat(sname, dir_fd=sfd, follow_symlinks=False)
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            raise UnsafePath(f"{src} is no longer the entry that was planned")
        if os.fstat(sfd).st_dev != os.fstat(dfd).st_dev:
            raise UnsafePath(f"{src} and {dst} are on different filesystems; refusing to copy")
        try:
            os.stat(dname, dir_fd=dfd, follow_symlinks=False)
            raise FileExistsError(errno.EEXIST, "destination exists", dst)
        except FileNotFoundError:
            pass
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        fsync_dir(dfd)
        fsync_dir(sfd)


def makedirs(root: str, rel: str, mode: int = 0o700) -> None:
    """Create ``rel`` under ``root`` (each component checked like open_parent)."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        with open_parent(root, sub) as (fd, name):
            try:
                os.mkdir(name, mode, dir_fd=fd)
                fsync_dir(fd)
            except FileExistsError:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafePath(f"{sub} exists and is not a directory") from None


def remove_tree(root: str, rel: str) -> int:
    """Remove ``rel`` and everything below it; return bytes (blocks) freed.

    Never follows a symlink (symlinks are unlinked as entries) and refuses to descend
    into another filesystem or mount. Depth costs neither recursion nor file
    descriptors: one directory is open at a time, and climbing back up re-opens ".."
    only after checking it is the very directory we came from (as fts(3) does).
    """
    with open_parent(root, rel) as (pfd, name):
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=pfd)
            return int(st.st_blocks) * 512
        freed = _empty_dir(pfd, name, st)
        os.rmdir(name, dir_fd=pfd)
        fsync_dir(pfd)
        return freed + int(st.st_blocks) * 512


def _empty_dir(parent_fd: int, name: str, top: os.stat_result) -> int:
    """Remove everything inside ``parent_fd/name`` (the dir itself stays)."""
    freed = 0
    fd = open_dir_at(parent_fd, name)
    # (dev, ino, name) of each directory on the way down, to verify ".." on the way up.
    path: list[tuple[int, int, str]] = [(top.st_dev, top.st_ino, name)]
    try:
        while True:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != path[-1][:2]:
                raise UnsafePath("a directory changed identity while it was removed")
            child = None
            for entry in os.scandir(fd):
                est = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(est.st_mode):
                    if est.st_dev != top.st_dev:
                        raise UnsafePath(f"{entry.name} is another filesystem; not removing it")
                    child = (entry.name, est)
                    break
                os.unlink(entry.name, dir_fd=fd)
                if est.st_nlink <= 1:
                    freed += int(est.st_blocks) * 512
            if child is not None:
                nxt = open_dir_at(fd, child[0])
                os.close(fd)
                fd = nxt
                path.append((child[1].st_dev, child[1].st_ino, child[0]))
                continue
            if len(path) == 1:
                return freed
            # This directory is empty: go up and remove it.
            up = os.open("..", DIR_FLAGS, dir_fd=fd)
            dev, ino, child_name = path.pop()
            os.close(fd)
            fd = up
            ust = os.fstat(fd)
            if (ust.st_dev, ust.st_ino) != path[-1][:2]:
                raise UnsafePath("a parent directory was moved while its tree was removed")
            est = os.stat(child_name, dir_fd=fd, follow_symlinks=False)
            if (est.st_dev, est.st_ino) != (dev, ino) or not stat.S_ISDIR(est.st_mode):
                raise UnsafePath("an emptied directory was replaced while it was removed")
            freed += int(est.st_blocks) * 512
            os.rmdir(child_name, dir_fd=fd)
    finally:
        os.close(fd)
