"""Has the system clock been stepped? A containerd lease carries only a wall-clock
creation time, and "made before the running dockerd started" compares it with the
dockerd's start, which the kernel keeps in ticks since boot and reports through the boot
time (``btime`` in /proc/stat). A step of the clock moves ``btime`` and so every process
start as seen now, but not the times already written into leases: a clock stepped forward
could make an in-flight pull's lease look older than the dockerd running it.

So each ``--live`` run records ``btime`` with the boot's id, and a later run of the same
boot that finds ``btime`` moved knows the clock was stepped in between and keeps every
operation lease (the next run, with a fresh baseline, decides again)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from dockergc.lock import STATE_DIR

BASELINE = "clock.json"
TOLERANCE = 2.0  # seconds: btime is whole seconds and slews by fractions


def boot_time() -> tuple[str, int] | None:
    """(this boot's id, /proc/stat btime), or None if either cannot be read."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        with open("/proc/stat", "rb") as fh:
            btime = next(int(ln.split()[1]) for ln in fh if ln.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot_id, btime


def stepped_since_last_run(root: Path) -> str | None:
    """Why operation leases must be kept this run (the clock was stepped, or there is no
    baseline yet to tell); None when the clock is as the last run left it. Records the
    current baseline either way."""
    now = boot_time()
    if now is None:
        return "the boot time cannot be read, so a stepped clock cannot be ruled out"
    path = root / STATE_DIR / BASELINE
    prev = _read_baseline(path)
    why = _write_baseline(path, {"boot_id": now[0], "btime": now[1]})
    if why:
        return why
    if not isinstance(prev, dict) or prev.get("boot_id") != now[0]:
        return (
            "no clock baseline of this boot yet (the first --live run after a boot only "
            "records it): kept until the next run"
        )
    last = prev.get("btime")
    if type(last) is not int:
        return (
            f"the clock baseline {path} is malformed (btime {last!r}), so a stepped clock "
            "cannot be ruled out: kept until the next run"
        )
    moved = now[1] - last
    if abs(moved) > TOLERANCE:
        return (
            f"the system clock was stepped by {moved:+d}s since the last run, so lease "
            "times cannot be compared with the dockerd's start: kept until the next run"
        )
    return None


def _read_baseline(path: Path) -> object:
    """The last run's baseline; None if missing, a symlink, not a file or not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return json.loads(os.read(fd, 4096).decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _write_baseline(path: Path, doc: dict[str, object]) -> str | None:
    """Write the baseline atomically, following no symlink a hand planted (the temp file
    is created afresh, the rename replaces a link, never writes through it)."""
    tmp = path.with_suffix(".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644)
        try:
            os.write(fd, (json.dumps(doc) + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        return f"the clock baseline cannot be recorded ({exc.strerror})"
    return None
