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

import json
import os
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
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        prev = None
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"boot_id": now[0], "btime": now[1]}) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        return f"the clock baseline cannot be recorded ({exc.strerror})"
    if not isinstance(prev, dict) or prev.get("boot_id") != now[0]:
        return (
            "no clock baseline of this boot yet (the first --live run after a boot only "
            "records it): kept until the next run"
        )
    moved = now[1] - int(prev.get("btime", now[1]))
    if abs(moved) > TOLERANCE:
        return (
            f"the system clock was stepped by {moved:+d}s since the last run, so lease "
            "times cannot be compared with the dockerd's start: kept until the next run"
        )
    return None
