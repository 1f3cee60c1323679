"""Writing results: stdout, and files replaced atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dockergc.errors import UsageError


def write_atomic(path: Path, text: str | Iterable[str], mode: int = 0o644) -> None:
    """Write ``text`` (or its chunks, streamed) to ``path`` via a temp file and rename,
    so readers never see half. ``mode``: mkstemp's 0600 would hide a metrics file from
    node_exporter, which does not run as root."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.writelines([text] if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
