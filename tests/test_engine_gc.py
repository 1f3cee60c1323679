"""The executor against roots the real dockerd wrote, judged by the daemon itself.

gc moves exactly the planned leftovers into quarantine and the daemon still runs every
image and starts every container; rollback gives back a byte-identical tree; purge frees
the space on a real (loop-mounted ext4) disk; a running daemon makes gc refuse; a kill
at any journal record ends, after resume or rollback, in a root the daemon accepts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.execute import runner
from dockergc.plan import Policy
from tests.conftest import run_cli
from tests.crash import apply_and_kill
from tests.engine import Engine, loop_fs
from tests.manifest import manifest, without
from tests.realstate import assert_everything_works, copy_root, inject_crash_leftovers

pytestmark = pytest.mark.engine

Ctx = tuple[Engine, dict[str, str]]


def crashed_copy(engine: Ctx, base: Path | None = None) -> tuple[Engine, set[tuple[str, str]]]:
    """A stopped copy of the populated root, broken the way crashes break it."""
    e, ids = engine
    e.stop()
    try:
        twin = copy_root(e, base)
    finally:
        e.start()
    return twin, inject_crash_leftovers(twin.root, ids)


def gc(root: Path, *extra: str, check: int = 0) -> dict:
    out = run_cli(
        "gc",
        "--root",
        str(root),
        "--config-file",
        "/nonexistent",
        "--min-age",
        "0",
        "--yes",
        "--json",
        *extra,
        check=check,
    )
    return json.loads(out.stdout) if check == 0 else {"stderr": out.stderr}


def test_gc_rollback_purge_on_a_real_disk(engine: Ctx) -> None:
    with loop_fs(600) as disk:
        twin, expected = crashed_copy(engine, disk / "engine")
        try:
            outside = disk / "precious.txt"
            outside.write_text("outside the root")
            orphan = next(p for k, p in expected if k == "orphan-layer")
            os.symlink(outside, twin.root / orphan / "diff" / "planted")
            before = manifest(twin.root)

            run = gc(twin.root)
            assert run["state"] == "applied"
            moved = {(a["kind"], a["path"]) for a in run["actions"] if a["outcome"] == "moved"}
            assert moved == expected
            assert manifest(twin.root) == without(before, [p for _, p in expected])

            # Rollback: byte-identical (paths, types, modes, owners, sizes, xattrs, links).
            run_cli(
                "rollback", run["run_id"], "--root", str(twin.root), "--config-file", "/x", "--yes"
            )
            assert manifest(twin.root) == before

            # Again, then let the daemon judge, then purge and watch df.
            run = gc(twin.root)
            assert {(a["kind"], a["path"]) for a in run["actions"]} == expected
            twin.start()
            assert_everything_works(twin)
            twin.stop()
            free_before = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            out = json.loads(
                run_cli(
                    "purge",
                    "--root",
                    str(twin.root),
                    "--config-file",
                    "/x",
                    "--run",
                    run["run_id"],
                    "--yes",
                    "--json",
                ).stdout
            )
            free_after = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            assert out["bytes"] >= 16 * 2**20
            assert free_after - free_before >= 0.9 * out["bytes"]
            assert outside.read_text() == "outside the root"
            views = json.loads(
                run_cli("runs", "--root", str(twin.root), "--config-file", "/x", "--json").stdout
            )["runs"]
            assert [v["state"] for v in views] == ["rolled-back", "purged"]
        finally:
            twin.destroy()


def test_gc_refuses_a_root_the_running_daemon_uses(engine: Ctx) -> None:
    e, _ = engine
    refused = gc(e.root, check=3)
    assert "dockerd (pid" in refused["stderr"] and "--live" in refused["stderr"]
    assert not (e.root / ".dockergc/runs").exists()
    # --live is the documented way in; it demands a long grace period.
    run_cli(
        "gc",
        "--root",
        str(e.root),
        "--config-file",
        "/x",
        "--live",
        "--min-age",
        "5m",
        "--yes",
        check=2,
    )
    live = json.loads(
        run_cli(
            "gc", "--root", str(e.root), "--config-file", "/x", "--live", "--yes", "--json"
        ).stdout
    )
    assert live["state"] == "nothing-to-do"


def test_live_gc_keeps_what_the_running_daemon_uses(engine: Ctx) -> None:
    """On a live root with real mounts, only unreferenced leftovers move, and the daemon
    (running all along) keeps working."""
    e, _ = engine
    e.run("start", "c_running")  # earlier tests restart the daemon, which stops it
    stray = e.root / "overlay2" / ("ab" * 32)
    (stray / "diff").mkdir(parents=True)
    (stray / "diff" / "junk").write_bytes(b"j" * 4096)
    old = 3 * 86400
    for p in (stray / "diff" / "junk", stray / "diff", stray):
        os.utime(p, (os.stat(p).st_mtime - old,) * 2)
    # ctime cannot be set back; the plan uses min-age 0 in-process to reach the executor.
    _, _, plan = plan_root(e.root, Policy(min_age=0))
    assert {a.path for a in plan.actions} == {stray.relative_to(e.root).as_posix()}
    # Written just now: without slack, or it is "changed during this run".
    view = runner.start_run(e.root, plan, runner.Options(live=True, live_slack=0))
    assert [s.status for s in view.steps] == ["moved"]
    assert "true" in e.run("inspect", "-f", "{{.State.Running}}", "c_running").stdout
    e.run("run", "--rm", "--network", "none", "app:1", "cat", "/data/new")
    runner.purge_runs(e.root, 0, view.run_id, runner.Options())


def test_sigkill_at_every_journal_record_then_resume_or_rollback(engine: Ctx) -> None:
    """Each kill point, on its own crashed copy: resume ends fully applied, rollback ends
    as before; both trees are compared whole, and the daemon judges both outcomes."""
    reference, expected = crashed_copy(engine)
    try:
        before = manifest(reference.root)
        applied = without(before, [p for _, p in expected])
        _, _, plan = plan_root(reference.root, Policy(min_age=0))
        total = 1 + 2 * len(plan.actions) + 1
        checked_by_daemon = {2, total // 2, total - 1}
        for n in range(1, total):
            for mode in ("resume", "rollback"):
                twin = copy_root(reference)
                try:
                    _, _, plan_n = plan_root(twin.root, Policy(min_age=0))
                    run_id = apply_and_kill(twin.root, plan_n, n, real_mounts=True)
                    assert runner.unfinished_runs(twin.root), (n, mode)
                    if mode == "resume":
                        view = runner.resume_run(twin.root, run_id, runner.Options())
                        assert view.state == "applied", (n, mode)
                        assert manifest(twin.root) == applied, (n, mode)
                    else:
                        view = runner.rollback_run(twin.root, run_id, runner.Options())
                        assert view.state == "rolled-back", (n, mode)
                        assert manifest(twin.root) == before, (n, mode)
                    if n in checked_by_daemon:
                        twin.start()
                        assert_everything_works(twin)
                finally:
                    twin.destroy()
    finally:
        reference.destroy()
