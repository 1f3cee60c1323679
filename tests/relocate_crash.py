"""Run a relocation in a child process and SIGKILL it right after its Nth journal record
(counted after ``begin``): the kill matrix of relocation's tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from dockergc.relocate import steps as S

KILLER = """
import json, os, signal, sys
from pathlib import Path
from dockergc.execute.journal import Journal
from dockergc.relocate import executor
from dockergc.relocate import steps as S
state, run_id, old, new, steps_file, kill_after = sys.argv[1:7]
if steps_file == "rollback":  # kill the rollback of a journal that exists
    journal, act = executor.journal_for(Path(state), run_id), executor.rollback
else:
    steps = [S.step_from_dict(d) for d in json.loads(Path(steps_file).read_text())]
    journal, act = executor.begin(Path(state), run_id, Path(old), Path(new), steps), executor.run
append, count = Journal.append, [0]
def append_then_die(self, record):
    append(self, record)
    if kill_after.startswith("progress="):  # the first progress record of that pass
        if record.get("type") == "progress" and str(record.get("step")) == kill_after[9:]:
            os.kill(os.getpid(), signal.SIGKILL)
        return
    if record.get("type") == "progress":
        return  # rsync's, timed: not counted, so that a label names the same record
    count[0] += 1
    if count[0] == int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)
Journal.append = append_then_die
act(journal, executor.Context(run_id))
"""


def record_labels(steps: list[S.Step]) -> list[str]:
    """What the journal of a run of ``steps`` holds after ``begin``, one label a record
    (``progress`` records aside: they come with time, not with steps): "intent-6-copy",
    "done-6-copy-containerd" (a step run for containerd's root), ..., "end"."""
    names = [S.label(s).replace(" (", "-").replace(")", "") for s in steps]
    labels = [f"{kind}-{i}-{n}" for i, n in enumerate(names) for kind in ("intent", "done")]
    return [*labels, "end"]


def relocate_and_kill(
    state: Path, run_id: str, old: Path, new: Path, steps: list[S.Step] | None, n: int | str
) -> None:
    """Run ``steps`` in a child SIGKILLed right after journal record ``n`` (1-based, not
    counting ``progress`` records), or with ``n`` = "progress=<pass>" right after that
    pass's first progress record (e.g. "pre-copy pass 1 (containerd)": in the pre-copy);
    without ``steps``, roll back the run ``run_id`` instead, killed the same way."""
    how = "rollback"
    if steps is not None:
        state.mkdir(parents=True, exist_ok=True)
        how = str(state / f"steps-{run_id}.json")
        Path(how).write_text(json.dumps([S.step_dict(s) for s in steps]))
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(state), run_id, str(old), str(new), how, str(n)],
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
