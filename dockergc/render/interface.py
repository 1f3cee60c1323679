"""What every plan renderer provides; add a format by adding a small implementation."""

from __future__ import annotations

from typing import Protocol

from dockergc.plan import Plan


class PlanRenderer(Protocol):
    name: str

    def render(self, plan: Plan) -> str:
        """Return the whole report as text."""
        ...


def display(text: str) -> str:
    """Make a path printable whatever bytes its name holds (newlines, invalid UTF-8)."""
    raw = text.encode("utf-8", "surrogateescape")
    shown = raw.decode("utf-8", "backslashreplace")
    return shown.encode("unicode_escape").decode("ascii") if not shown.isprintable() else shown


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(seconds: float) -> str:
    s = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
