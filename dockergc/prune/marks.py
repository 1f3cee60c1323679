"""Disk-pressure marks for prune: a percentage of the root's filesystem ("90%"), or an
absolute size of images + build cache ("200GB", docuum's form).

The two forms measure different things (how full the disk is; how much the daemon's
images and build cache take), so a high and a low mark must use the same form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockergc.config import percent
from dockergc.errors import UsageError

# Decimal units as disks are sold (docuum's "10 GB"), binary ones as du -h counts.
UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


@dataclass(frozen=True)
class Mark:
    value: float  # percent (0-100] or bytes
    absolute: bool  # bytes of images + build cache, not percent of the filesystem
    text: str  # as given: for messages
    what: str  # where it came from ("--high-watermark", "prune_high_watermark in FILE")

    def show(self) -> str:
        """As the user wrote it: '--high-watermark 200GB', or the config file's line."""
        if self.what.startswith("--"):
            return f"{self.what} {self.text}"
        key, _, where = self.what.partition(" in ")
        return f'{key} = "{self.text}" in {where}'


def parse_mark(value: object, what: str) -> Mark | None:
    """'90%', '90' or 90 (percent, as gc's marks) or '200GB', '150 GiB' (bytes)."""
    if value is None:
        return None
    text = str(value).strip()
    size = _SIZE.fullmatch(text.lower())
    if size and size.group(2) in UNITS:
        amount = float(size.group(1)) * UNITS[size.group(2)]
        if amount < 1:
            raise UsageError(f"{what} {text!r} must be at least 1 byte")
        return Mark(float(int(amount)), True, text, what)
    if size:  # a number with a word we do not know: not a percentage either
        raise UsageError(
            f"{what} {text!r}: unknown unit {size.group(2)!r} "
            "(B, KB, MB, GB, TB decimal; KiB, MiB, GiB, TiB binary)"
        )
    if not re.fullmatch(r"\d+(?:\.\d+)?\s*%?", text):
        raise UsageError(f"{what} {text!r} is neither a percentage like 90% nor a size like 200GB")
    pct = percent(text, what)
    assert pct is not None
    return Mark(pct, False, text if text.endswith("%") else f"{text}%", what)


def check_marks(high: Mark | None, low: Mark | None) -> None:
    """Both or neither, the same form, low below high; else a usage error."""
    if (high is None) != (low is None):
        given = high or low
        assert given is not None
        raise UsageError(
            f"disk-pressure mode needs both --high-watermark and --low-watermark "
            f"(only {given.show()} was given)"
        )
    if high is None or low is None:
        return
    if high.absolute != low.absolute:
        raise UsageError(
            f"{high.show()} and {low.show()} mix a percentage with a size: a percentage is of "
            "the root's filesystem, a size is of images + build cache; give both one way"
        )
    if not 0 < low.value < high.value:
        raise UsageError(
            f"{low.show()} must be below {high.show()}"
            + ("" if high.absolute else " (watermarks must satisfy 0 < low < high <= 100)")
        )


def show_bytes(n: float) -> str:
    """Decimal, like the marks people write ('200GB')."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}B"
