"""One dockergc run at a time per data root: an flock held for the whole command."""

from __future__ import annotations

import contextlib
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
    with exclusive_file(root / STATE_DIR / "lock"):
        yield


@contextmanager
def exclusive_file(path: Path, holder: str = "") -> Iterator[None]:
    """Hold the flock ``path`` (its directory made if absent, never followed if a symlink);
    refuse (exit 3) if another process holds it. ``holder`` (e.g. "relocation RUN") is
    written after the pid, and named in the refusal the next one gets."""
    state = path.parent
    with contextlib.suppress(FileExistsError):  # a dangling symlink or a file: refused below
        state.mkdir(mode=0o700, exist_ok=True)
    if state.is_symlink() or not state.is_dir():
        raise RefusedError(f"{state} is not a plain directory; refusing to use it")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid, _, what = os.pread(fd, 256, 0).decode(errors="replace").partition("\n")
                who = ", ".join(w for w in (f"pid {pid.strip() or '?'}", what.strip()) if w)
                raise RefusedError(
                    f"another dockergc run ({who}) holds {path}; try again when it ends"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"{os.getpid()}\n" + (f"{holder}\n" if holder else "")).encode(), 0)
        yield
    finally:
        os.close(fd)
