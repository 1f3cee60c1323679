"""--live re-checks, right before each move, what an in-flight operation can own, on the
filesystem's clock: a process clock two days ahead (or a tiny grace period) must not
let a dir that is being written move.

Plans here are made with ``Policy(now=+2 days)``: exactly what a wrong process clock
does to the planner, which then sees every dir as two days old.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from dockergc.api import plan_root
from dockergc.execute import runner
from dockergc.fixture.demo import write_demo_root
from dockergc.plan import Plan, Policy
from tests.conftest import NO_MOUNTS

TWO_DAYS = 2 * 86400


def wrong_clock_plan(root: Path, min_age: float = 0) -> Plan:
    _, _, plan = plan_root(root, Policy(min_age=min_age, now=time.time() + TWO_DAYS), NO_MOUNTS)
    return plan


def live(**kw: object) -> runner.Options:
    """Live options; ``live_slack`` only where the executor knows it (so that this file
    also runs, and fails on its assertions, against the code before these checks)."""
    names = {f.name for f in dataclasses.fields(runner.Options)}
    kw = {k: v for k, v in kw.items() if k in names}
    return runner.Options(live=True, mounts=NO_MOUNTS, **kw)  # type: ignore[arg-type]


def kept(view: object) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in view.skipped}  # type: ignore[attr-defined]


def orphan_layers(plan: Plan) -> list[str]:
    return [a.path for a in plan.actions if a.kind == "orphan-layer"]


def test_the_grace_period_is_rechecked_on_the_filesystems_clock(tmp_path: Path) -> None:
    """Everything was written moments ago: by the kernel's clock it is younger than an
    hour, whatever the process clock said when planning."""
    root = write_demo_root(tmp_path / "docker")
    plan = wrong_clock_plan(root, min_age=3600)
    assert len(plan.actions) == 13  # the wrong clock planned it all
    view = runner.start_run(root, plan, live())
    assert view.steps == []
    reasons = kept(view)
    assert len(reasons) == 13
    for path in orphan_layers(plan):
        assert "by the filesystem's clock" in reasons[path], reasons[path]
        assert (root / path).is_dir()


def test_a_dir_changed_during_the_run_is_kept(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    plan = wrong_clock_plan(root)
    last = orphan_layers(plan)[-1]

    def after(record: dict[str, object]) -> None:
        if record.get("type") == "done" and not (root / last / "diff" / "new").exists():
            (root / last / "diff" / "new").write_text("a build writes here")

    view = runner.start_run(root, plan, live(live_slack=0, after_record=after))
    assert kept(view)[last] == "changed during this run (by the filesystem's clock)"
    assert (root / last / "diff/new").is_file()
    assert any(s.status == "moved" for s in view.steps)  # the others went


def test_a_dir_a_process_holds_open_is_kept_until_it_lets_go(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    plan = wrong_clock_plan(root)
    first, second = orphan_layers(plan)[:2]
    deep = root / first / "diff" / "usr" / "lib"
    deep.mkdir(parents=True)
    time.sleep(0.05)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; f = open(sys.argv[1], 'a'); time.sleep(60)",
            str(deep / "being-written"),
        ]
    )
    sitter = subprocess.Popen(["sleep", "60"], cwd=root / second / "diff")
    try:
        time.sleep(0.5)  # both have opened their file / entered their cwd
        plan = wrong_clock_plan(root)
        view = runner.start_run(root, plan, live(live_slack=0))
        reasons = kept(view)
        assert reasons[first].startswith(f"in use now: pid {holder.pid} (python"), reasons
        assert f"{root}/{first}/diff/usr/lib/being-written (fd " in reasons[first]
        assert reasons[second] == (
            f"in use now: pid {sitter.pid} (sleep) holds {root}/{second}/diff (its cwd)"
        )
        assert (root / first).is_dir() and (root / second).is_dir()
    finally:
        holder.kill()
        sitter.kill()
        holder.wait()
        sitter.wait()
    # Once they are gone, the next run moves both.
    view = runner.start_run(root, wrong_clock_plan(root), live(live_slack=0))
    moved = {s.path for s in view.steps if s.status == "moved"}
    assert {first, second} <= moved


def test_a_young_write_set_keeps_every_orphan_layer(tmp_path: Path) -> None:
    """A layer registration opens layerdb/tmp/write-set-*, then creates and fills its
    overlay2 dir, unreferenced until the commit: while one is young, no orphan layer
    moves (other kinds still do)."""
    root = write_demo_root(tmp_path / "docker")
    plan = wrong_clock_plan(root)
    layers = orphan_layers(plan)

    first: list[object] = []

    def after(record: dict[str, object]) -> None:
        # After the first move: certainly after the run's start on the filesystem's clock.
        if record.get("type") == "done" and not first:
            first.append(record["seq"])
            (root / "image/overlay2/layerdb/tmp/write-set-424242").mkdir()

    view = runner.start_run(root, plan, live(live_slack=0, after_record=after))
    reasons = kept(view)
    already = {s.path for s in view.steps if s.seq == first[0]}
    assert len(set(layers) - already) >= 2
    for path in set(layers) - already:
        assert reasons[path].startswith(
            "a layer registration is in flight (image/overlay2/layerdb/tmp/write-set-424242"
        ), reasons.get(path)
        assert (root / path).is_dir()
    moved_kinds = {s.kind for s in view.steps if s.status == "moved" and s.path not in already}
    assert "orphan-layer" not in moved_kinds and "dangling-link" in moved_kinds


def test_daemon_activity_during_the_run_keeps_what_it_may_be_creating(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    plan = wrong_clock_plan(root)
    ordered = [a.path for a in plan.actions if a.kind in ("orphan-layer", "stale-init")]
    moved_once = [0]

    def after(record: dict[str, object]) -> None:
        if record.get("type") == "done":
            moved_once[0] += 1
            if moved_once[0] == 1:  # BuildKit records something between two checks
                os.utime(root / "buildkit/cache.db")

    view = runner.start_run(root, plan, live(live_slack=0, after_record=after))
    reasons = kept(view)
    active = [p for p in ordered if "during this run" in reasons.get(p, "")]
    assert active, reasons
    assert "the daemon is changing buildkit/cache.db during this run" in reasons[active[0]]
    # Only the check right after the change says so: activity is not a permanent veto.
    assert len(active) == 1, reasons


def test_apply_live_refuses_a_plan_made_with_a_short_grace(tmp_path: Path) -> None:
    """The 1h floor of --live holds for saved plans too, before anything changes."""
    from tests.conftest import run_cli
    from tests.manifest import manifest

    root = write_demo_root(tmp_path / "docker")
    saved = tmp_path / "plan.json"
    run_cli(
        "plan", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--out", str(saved)
    )
    before = manifest(root)
    proc = run_cli("apply", str(saved), "--live", "--yes", check=2)
    assert "--live needs a plan made with --min-age of at least 1h" in proc.stderr
    assert manifest(root) == before and not (root / ".dockergc").exists()
