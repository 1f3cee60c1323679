"""Which runs ``purge`` would free, decided without changing anything (``purge --dry-run``).

The same rules ``execute.runner.purge_runs`` applies: finished runs that ended at least
``older_than`` seconds ago and still hold quarantine; ``--run`` names one run whatever
its age, and an unfinished run named that way is refused.
"""

from __future__ import annotations

import time
from pathlib import Path

from dockergc.errors import RefusedError
from dockergc.execute import runner
from dockergc.execute.journal import RunView, list_runs, load


def purgeable(
    root: Path, older_than: float, run_id: str | None, now: float | None = None
) -> list[RunView]:
    """The runs a purge with these arguments would free, oldest first."""
    now = time.time() if now is None else now
    chosen: list[RunView] = []
    for rid in [run_id] if run_id else list_runs(root):
        view = load(root, rid)
        if view.state in ("running", "interrupted") or view.in_doubt:
            if run_id:
                raise RefusedError(
                    f"run {rid} is unfinished; resume it with '{runner.resume_hint(root, view)}' "
                    f"or undo it with '{runner.command(root, 'rollback', rid)}' first"
                )
            continue
        if not run_id and (view.ended is None or now - view.ended < older_than):
            continue
        if view.quarantined:
            chosen.append(view)
    return chosen


def quarantined_bytes(view: RunView) -> int:
    return sum(s.bytes for s in view.quarantined)
