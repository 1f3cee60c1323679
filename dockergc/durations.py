"""Parse human durations ("90s", "30m", "1h", "7d", "1h30m") into seconds, and print
them back exactly."""

from __future__ import annotations

import re

from dockergc.errors import UsageError

_PART = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, flag: str = "duration") -> float:
    value = text.strip().lower()
    if value.isdigit():
        return float(value)
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise UsageError(f"{flag}: {text!r} is not a duration like 90s, 30m, 1h, 7d or 1h30m")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(seconds: float) -> str:
    """A duration as a duration flag takes it, exactly: 5400 -> "1h30m", 90 -> "1m30s".
    For settings (grace periods, retention); ages of files are rounded elsewhere."""
    s = int(max(seconds, 0))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts) or "0s"
