"""What ``purge`` would free, decided without changing anything (``purge --dry-run``):
the same selection ``execute.runner.purge_runs`` acts on (``runner.purgeable``)."""

from __future__ import annotations

from dockergc.execute.journal import RunView
from dockergc.execute.runner import purgeable

__all__ = ["purgeable", "quarantined_bytes"]


def quarantined_bytes(view: RunView) -> int:
    return sum(s.bytes for s in view.quarantined)
