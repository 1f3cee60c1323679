"""One dockergc run at a time per data root: an flock held for the whole command."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dockergc.errors import RefusedError

STATE_DIR = ".dockergc"


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold ``<root>/.dockergc/lock``; refuse (exit 3) if another run holds it."""
    state = root / STATE_DIR
    state.mkdir(mode=0o700, exist_ok=True)
    if state.is_symlink() or not state.is_dir():
        raise RefusedError(f"{state} is not a plain directory; refusing to use it")
    path = state / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise RefusedError(
                    f"another dockergc run (pid {holder}) holds {path}; try again when it ends"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
