"""The copy's progress: rsync's ``--info=progress2`` lines read, shown and journaled.

rsync (3.1 and later; Debian 12 has 3.2.7) writes one line per update, each begun with
``\\r`` and the last ended with ``\\n``::

    \\r     43,500,419  48%   39.03MB/s    0:00:01
    \\r     60,000,003  66%   40.01MB/s    0:00:01 (xfr#3, to-chk=1/7)

bytes copied so far (digits grouped by the locale), percent of the total (with
``--no-inc-recursive`` rsync knows the total before it copies), the recent rate
(kB/s, MB/s, GB/s, TB/s: powers of 1024) and the time left; on a line that ends a file
(``xfr#``; ``xfer#`` before 3.1) that time is the time elapsed instead. Anything else
is ignored: nothing in here ever makes a copy fail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from dockergc.render.interface import human_bytes

# rsync's own options for it: one running total over the whole copy (not per file), the
# file list built first so that the total is known from the start.
RSYNC_PROGRESS = ["--info=progress2", "--no-inc-recursive"]

SHOW_EVERY_TTY = 0.5  # seconds between rewrites of the one line at a terminal
SHOW_EVERY_LOG = 10.0  # seconds between plain lines elsewhere (logs stay small)
JOURNAL_EVERY = 10.0  # seconds between ``progress`` records in the journal

_LINE = re.compile(
    r"^\s*(?P<bytes>\d[\d,.' ]*)\s+(?P<pct>\d{1,3})%\s+"
    r"(?P<rate>\d+(?:[.,]\d+)?)(?P<unit>[kMGT]?B)/s\s+"
    r"(?P<time>\d+:\d\d:\d\d|\?+:\?+:\?+)(?P<rest>.*)$"
)
_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass(frozen=True)
class Sample:
    """One progress2 line, in bytes and seconds."""

    bytes: int
    percent: int
    rate: float  # bytes/s, rsync's recent rate
    eta: int | None  # seconds left; None when rsync gave none (it ended a file, or ??)


def parse(line: str) -> Sample | None:
    """A progress2 line's sample, or None for anything else (never raises)."""
    m = _LINE.match(line)
    if m is None:
        return None
    digits = re.sub(r"\D", "", m["bytes"])
    pct = int(m["pct"])
    if not digits or pct > 100:
        return None
    rate = float(m["rate"].replace(",", ".")) * _UNITS[m["unit"]]
    eta = None
    if rate > 0 and "?" not in m["time"] and "(xf" not in m["rest"]:  # xfr#, xfer#
        h, mi, s = (int(x) for x in m["time"].split(":"))
        eta = h * 3600 + mi * 60 + s
    return Sample(int(digits), pct, rate, eta)


def split_updates(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """Complete lines (split at ``\\r`` or ``\\n``) in ``pending + chunk``, and the rest."""
    data = pending + chunk
    parts = re.split(rb"[\r\n]", data)
    rest = parts.pop()
    if len(rest) > 4096:  # no line is this long: never hold on to endless output
        rest = b""
    return [p.decode("utf-8", "replace") for p in parts if p.strip()], rest


def estimate_total(s: Sample) -> int | None:
    """The copy's total bytes, from what rsync printed: its percent bounds the total to
    (bytes*100/(pct+1), bytes*100/pct]; its time left (whole seconds, at the printed
    rate) bounds what remains. The middle of where the two agree (of the first alone if
    they do not); None at 0% with no time left given."""
    if s.percent >= 100:
        return s.bytes
    lo, hi = s.bytes * 100 / (s.percent + 1), s.bytes * 100 / max(s.percent, 0.01)
    if s.eta is not None:
        lo2, hi2 = s.bytes + s.rate * s.eta, s.bytes + s.rate * (s.eta + 1)
        if max(lo, lo2) <= min(hi, hi2):
            lo, hi = max(lo, lo2), min(hi, hi2)
        elif s.percent == 0:
            lo, hi = lo2, hi2
    if s.percent == 0 and s.eta is None:
        return None
    return max(s.bytes, round((lo + hi) / 2))


def clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def record_of(s: Sample, label: str = "copy") -> dict[str, Any]:
    """The journal's ``progress`` record (without its type and seq); ``label`` names the
    pass ("copy", "pre-copy pass 2")."""
    total = estimate_total(s)
    return {
        "step": label,
        "bytes": s.bytes,
        "total": total,
        "percent": s.percent,
        "rate": round(s.rate),
        "eta": eta_of(s, total),
    }


def eta_of(s: Sample, total: int | None) -> int | None:
    if s.eta is not None:
        return s.eta
    if total is not None and s.rate > 0:
        return round((total - s.bytes) / s.rate)
    return None


def describe(s: Sample, label: str = "copy") -> str:
    """``copy: 1.2 GiB of 3.0 GiB (40%), 85.0 MiB/s, ETA 0:00:21``"""
    total = estimate_total(s)
    of = f" of {human_bytes(total)}" if total is not None else ""
    text = f"{label}: {human_bytes(s.bytes)}{of} ({s.percent}%), {human_bytes(round(s.rate))}/s"
    eta = eta_of(s, total)
    return text + (f", ETA {clock(eta)}" if eta is not None else "")


class Display:
    """Where the copy's progress is shown: at a terminal one line rewritten in place (at
    most every SHOW_EVERY_TTY), elsewhere a plain line at once and then at most every
    SHOW_EVERY_LOG seconds; a last line when the copy ends. Output that fails (a closed
    pipe, a hung-up terminal) silences it; it never stops the copy."""

    def __init__(self, stream: TextIO, tty: bool, every: float | None = None) -> None:
        self.stream, self.tty = stream, tty
        self.every = every if every is not None else (SHOW_EVERY_TTY if tty else SHOW_EVERY_LOG)
        self.last: float | None = None
        self.shown = False  # a terminal line is open (no newline yet)
        self.broken = False
        self.label = "copy"  # the pass shown: "copy", "pre-copy pass 2"

    def _write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.broken = True

    def begin(self, now: float) -> None:
        """Before rsync's first line: it lists every file first, which takes a while on
        a root of millions (and about 100 bytes of memory per file). Elsewhere than at a
        terminal the first progress line comes one interval later."""
        if self.tty:
            self._write(f"\r\x1b[K{self.label}: listing the files to copy")
            self.shown = True
        else:
            self.last = now
            self._write(
                f"{self.label}: listing the files to copy; then progress every {self.every:g} s\n"
            )

    def update(self, s: Sample, now: float) -> None:
        if self.last is not None and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self._write("\r\x1b[K" + describe(s, self.label))
            self.shown = True
        else:
            self._write(describe(s, self.label) + "\n")

    def finish(self, copied: int | None, seconds: float, ok: bool) -> None:
        """The copy ended (``copied``: rsync's last count; None if it printed none); a
        failed one says nothing here (its fault is reported as every step's)."""
        if self.tty and self.shown:
            self._write("\r\x1b[K")
        if copied is None or not ok:
            return
        rate = f", {human_bytes(round(copied / seconds))}/s" if seconds > 0 else ""
        self._write(f"{self.label}: {human_bytes(copied)} in {clock(seconds)}{rate}\n")


class Watcher:
    """Feeds rsync's output to a Display and, throttled, to the journal (``record``)."""

    def __init__(
        self,
        display: Display | None,
        record: Callable[[dict[str, Any]], None],
        journal_every: float = JOURNAL_EVERY,
        now: Callable[[], float] = time.monotonic,
        label: str = "copy",
    ) -> None:
        self.display, self.record, self.every, self.now = display, record, journal_every, now
        self.label = label
        if display is not None:
            display.label = label
        self.start = now()
        self.journaled = self.start  # the first record after one interval: short copies none
        self.pending = b""
        self.latest: Sample | None = None
        self.journal_broken = False
        if display is not None:
            display.begin(self.start)

    def feed(self, chunk: bytes) -> None:
        lines, self.pending = split_updates(self.pending, chunk)
        for line in lines:
            sample = parse(line)
            if sample is not None:
                self.sample(sample)

    def sample(self, s: Sample) -> None:
        self.latest = s
        now = self.now()
        if self.display is not None:
            self.display.update(s, now)
        if not self.journal_broken and now - self.journaled >= self.every:
            self.journaled = now
            try:
                self.record(record_of(s, self.label))
            except OSError:
                self.journal_broken = True  # the next step record will say so, not this

    def finish(self, ok: bool) -> None:
        if self.pending:
            self.feed(b"\n")
        if self.display is not None:
            copied = self.latest.bytes if self.latest else None
            self.display.finish(copied, self.now() - self.start, ok)
