"""Run the executor in a child process and SIGKILL it right after its Nth journal record."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from dockergc.plan import Plan
from dockergc.render.jsonfmt import dumps

KILLER = """
import json, os, signal, sys
from pathlib import Path
from dockergc.execute import runner
from dockergc.plan import Plan
from dockergc.store.mountinfo import MountTable
root, plan_file, kill_after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
plan = Plan.from_dict(json.loads(open(plan_file).read()))
count = [0]
def after(record):
    count[0] += 1
    if count[0] == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
mounts = None if os.environ.get("DGC_REAL_MOUNTS") else MountTable((), 1, 0)
runner.start_run(root, plan, runner.Options(mounts=mounts, after_record=after))
"""


def apply_and_kill(root: Path, plan: Plan, n: int, real_mounts: bool = False) -> str:
    """Apply ``plan`` in a child killed after record ``n``; return the run id it left."""
    plan_file = root.parent / f"plan-kill-{n}.json"
    plan_file.write_text(dumps(plan.to_dict()))
    env = {"DGC_REAL_MOUNTS": "1"} if real_mounts else {}
    import os

    runs = root / ".dockergc/runs"
    before = set(os.listdir(runs)) if runs.is_dir() else set()
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(root), str(plan_file), str(n)],
        capture_output=True,
        env={**os.environ, **env},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    (run_id,) = set(os.listdir(runs)) - before
    return run_id
