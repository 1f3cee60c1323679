"""Ctrl-C, SIGTERM and a closed pipe during gc, through the CLI in a child process.

A signal finishes the current step, closes the journal with an ``end`` record (state
interrupted), prints one line with the command that resumes the run, and exits 128 +
the signal. No signal at any moment leaves a ``running`` run behind, and a reader that
goes away (``| head -1``) neither stops a step nor leaves a run unfinished.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.execute import runner
from dockergc.execute.journal import Journal, list_runs, load
from dockergc.fixture.demo import write_demo_root
from dockergc.plan import Policy
from tests.conftest import NO_MOUNTS, on_root, run_cli
from tests.crash import apply_and_kill
from tests.manifest import manifest

# The CLI, with a signal sent to itself right after its Nth journal record (0: while
# planning): the moment is exact, with no sleeps to tune.
SIGNAL_AFTER = """
import os, signal, sys
from dockergc.cli.main import main
from dockergc.execute import journal
after, signame = int(sys.argv[1]), sys.argv[2]
append, count = journal.Journal.append, [0]
def counting(self, record):
    append(self, record)
    count[0] += 1
    if count[0] == after:
        os.kill(os.getpid(), getattr(signal, signame))
journal.Journal.append = counting
if after == 0:  # while planning, before any run exists
    from dockergc.stores.overlay2 import Overlay2Store
    plan = Overlay2Store.plan
    def signalled(*a, **k):
        os.kill(os.getpid(), getattr(signal, signame))
        return plan(*a, **k)
    Overlay2Store.plan = signalled
sys.exit(main(sys.argv[3:]))
"""


def gc_signalled(root: Path, after: int, signame: str) -> subprocess.CompletedProcess[str]:
    args = ["gc", *on_root(root), "--yes"]
    return subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER, str(after), signame, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def only_run(root: Path) -> str:
    (run_id,) = list_runs(root)
    return run_id


@pytest.mark.parametrize(
    "after,signame,code,handled",
    [
        (1, "SIGINT", 130, 0),  # right after 'begin', before the first move
        (5, "SIGINT", 130, 2),  # begin, 2 x (intent, done): stops after the 2nd move
        (2, "SIGINT", 130, 1),  # between an intent and its done: that step is finished
        (3, "SIGTERM", 143, 1),
    ],
)
def test_signal_finishes_the_step_closes_the_run_and_says_how_to_resume(
    tmp_path: Path, after: int, signame: str, code: int, handled: int
) -> None:
    root = write_demo_root(tmp_path / "docker")
    proc = gc_signalled(root, after, signame)
    assert proc.returncode == code, proc.stderr
    run_id = only_run(root)
    resume = f"dockergc apply --resume {run_id} --root {root}"
    said = [line for line in proc.stderr.splitlines() if not line.startswith("[")]  # progress
    assert said == [f"dockergc: interrupted after {handled} of 13; resume with: {resume}"], said
    records = Journal(root, run_id).records()
    assert records[-1]["type"] == "end" and records[-1]["state"] == "interrupted"
    assert records[-1]["signal"] == signame
    view = load(root, run_id)
    assert view.state == "interrupted" and not view.in_doubt
    assert len([s for s in view.steps if s.status == "moved"]) == handled
    # Until it is resumed or rolled back, every gc says its quarantine is kept.
    dry = run_cli("gc", *on_root(root), "--dry-run")
    note = f"note: run {run_id} was interrupted; its quarantine ({handled} item(s)) stays"
    assert (note in dry.stderr) == (handled > 0), dry.stderr
    # The hint works as printed, and then gc is not blocked.
    done = run_cli(*shlex.split(resume)[1:], "--yes", "--config-file", "/x")
    assert f"run {run_id}: applied" in done.stdout
    again = json.loads(run_cli("gc", *on_root(root), "--yes", "--json").stdout)
    assert again["state"] == "nothing-to-do"
    # Rolled back instead, the root is as it was, and gc runs again.
    root2 = write_demo_root(tmp_path / "again")
    before = manifest(root2)
    assert gc_signalled(root2, after, signame).returncode == code
    run_cli("rollback", only_run(root2), "--root", str(root2), "--config-file", "/x", "--yes")
    assert manifest(root2) == before
    again = json.loads(run_cli("gc", *on_root(root2), "--yes", "--json").stdout)
    assert again["state"] == "applied"


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_while_planning_stops_at_once_and_changes_nothing(
    tmp_path: Path, signame: str, code: int
) -> None:
    root = write_demo_root(tmp_path / "docker")
    before = manifest(root)
    proc = gc_signalled(root, 0, signame)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.splitlines() == ["dockergc: interrupted"], proc.stderr
    assert manifest(root) == before and not (root / ".dockergc/runs").exists()


def test_unfinished_run_hint_names_the_root_and_the_lost_outcome_names_both_paths(
    tmp_path: Path,
) -> None:
    root = write_demo_root(tmp_path / "docker")
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    run_id = apply_and_kill(root, plan, 2)  # killed between 'intent' and the move
    proc = run_cli("gc", *on_root(root), "--yes", check=3)
    assert f"'dockergc apply --resume {run_id} --root {root}'" in proc.stderr, proc.stderr
    assert f"'dockergc rollback {run_id} --root {root}'" in proc.stderr
    # The planned dir vanishes meanwhile: settling says where it looked.
    step = load(root, run_id).in_doubt[0]
    os.rename(root / step.op.src, tmp_path / "elsewhere")
    view = runner.resume_run(root, run_id, runner.Options(mounts=NO_MOUNTS))
    (lost,) = [s for s in view.steps if s.status == "lost"]
    assert step.op.src in lost.reason and step.op.dst in lost.reason, lost.reason


@pytest.mark.parametrize("dangling", [False, True])
@pytest.mark.parametrize("link", [".dockergc", ".dockergc/runs"])
@pytest.mark.parametrize("command", [["gc", "--yes"], ["runs"], ["purge", "--yes"]])
def test_symlinked_state_dir_is_refused(
    tmp_path: Path, link: str, command: list[str], dangling: bool
) -> None:
    root = write_demo_root(tmp_path / "docker")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "runs").mkdir(parents=True)
    target = tmp_path / "nowhere" if dangling else elsewhere
    if link.endswith("runs"):
        (root / ".dockergc").mkdir()
        os.symlink(target / "runs", root / link)
    else:
        os.symlink(target, root / link)
    before = manifest(root)
    args = ["--root", str(root), "--config-file", "/x"]
    proc = run_cli(*command, *args, *(["--min-age", "0"] if command[0] == "gc" else []), check=3)
    assert "refusing" in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert manifest(root) == before
    assert not any(elsewhere.rglob("journal.jsonl")) and not (tmp_path / "nowhere").exists()


def many_orphans(tmp_path: Path, n: int = 300) -> Path:
    """The demo root plus ``n`` more orphan layer dirs: a run long enough to outlive the
    reader at the other end of a pipe."""
    from dockergc.fixture.builder import RootBuilder

    root = write_demo_root(tmp_path / "docker")
    b = RootBuilder(root)
    for i in range(n):
        b.interrupted_pull(None, {"f": str(i).encode()})
    return root


@pytest.mark.parametrize("redirect", ["2>&1 | head -1", "2>&1 | true", "2>err | head -1"])
def test_a_closed_pipe_neither_stops_a_step_nor_leaves_a_run_unfinished(
    tmp_path: Path, redirect: str
) -> None:
    root = many_orphans(tmp_path)
    cmd = shlex.join([sys.executable, "-m", "dockergc", "gc", *on_root(root), "--yes"])
    shell = subprocess.run(
        ["bash", "-c", f"{cmd} {redirect}; echo rc=${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert shell.stdout.splitlines()[-1] == "rc=0", shell.stdout
    (run_id,) = list_runs(root)
    view = load(root, run_id)
    assert view.state == "applied" and not view.in_doubt
    assert len(view.steps) == view.total == 13 + 2 * 300  # each dir with its l/ link
    if (tmp_path / "err").exists():
        assert "Traceback" not in (tmp_path / "err").read_text()
    again = json.loads(run_cli("gc", *on_root(root), "--yes", "--json").stdout)
    assert again["state"] == "nothing-to-do"


def test_rollback_and_purge_stop_after_the_current_item_and_go_on_when_run_again(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import signal

    root = write_demo_root(tmp_path / "docker")
    before = manifest(root)
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    view = runner.start_run(root, plan, runner.Options(mounts=NO_MOUNTS))

    def interrupt_at(kind: str) -> runner.Options:
        def after(record: dict[str, object]) -> None:
            if record.get("type") == kind:
                os.kill(os.getpid(), signal.SIGINT)

        return runner.Options(mounts=NO_MOUNTS, after_record=after)

    def unhandled(signum: int, frame: object) -> None:
        raise AssertionError("SIGINT reached the caller: no handler around the steps")

    # Where the runner has no handler, fail this test, not the whole pytest session.
    old_handler = signal.signal(signal.SIGINT, unhandled)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, old_handler))

    # Ctrl-C right after the first item is restored: stop there, nothing half-done.
    back = runner.rollback_run(root, view.run_id, interrupt_at("undo-done"))
    assert back.state == "partially-rolled-back" and back.signal == "SIGINT"
    assert len([s for s in back.steps if s.status == "restored"]) == 1
    assert runner.rollback_run(root, view.run_id, runner.Options(mounts=NO_MOUNTS)).state == (
        "rolled-back"
    )
    assert manifest(root) == before
    # The same for purge, on a new run.
    view = runner.start_run(
        root, plan_root(root, Policy(min_age=0), NO_MOUNTS)[2], runner.Options(mounts=NO_MOUNTS)
    )
    (first,) = runner.purge_runs(root, 0, None, interrupt_at("purge-done"))
    assert first.signal == "SIGINT"
    assert len([s for s in first.steps if s.status == "purged"]) == 1
    (again,) = runner.purge_runs(root, 0, view.run_id, runner.Options(mounts=NO_MOUNTS))
    assert again.state == "purged" and again.signal is None
