"""The executor on real temp roots: moves, re-checks, rollback, purge, lock, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.execute import runner
from dockergc.execute.journal import Journal, load
from dockergc.fixture.demo import write_demo_root
from dockergc.lock import exclusive
from dockergc.plan import Plan, Policy
from dockergc.store.mountinfo import MountEntry, MountTable
from tests.conftest import NO_MOUNTS, run_cli
from tests.crash import apply_and_kill
from tests.manifest import manifest, without


def demo(tmp_path: Path) -> tuple[Path, Plan]:
    root = write_demo_root(tmp_path / "docker")
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    assert len(plan.actions) == 13
    return root, plan


def opts(**kw: object) -> runner.Options:
    return runner.Options(mounts=NO_MOUNTS, **kw)  # type: ignore[arg-type]


def test_apply_moves_exactly_the_plan_and_rollback_restores_it(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    before = manifest(root)
    view = runner.start_run(root, plan, opts())
    assert view.state == "applied"
    assert [s.path for s in view.steps] == [a.path for a in plan.actions]
    assert all(s.status == "moved" for s in view.steps)
    assert manifest(root) == without(before, [p for a in plan.actions for p in a.paths])
    # Everything is in the run's quarantine, on the same filesystem.
    for s in view.steps:
        assert os.path.lexists(root / s.op.dst)
    back = runner.rollback_run(root, view.run_id, opts())
    assert back.state == "rolled-back"
    assert manifest(root) == before


def test_purge_removes_quarantine_and_refuses_unfinished(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    view = runner.start_run(root, plan, opts())
    # Not old enough yet: nothing purged.
    assert runner.purge_runs(root, 7 * 86400, None, opts()) == []
    purged = runner.purge_runs(root, 0, None, opts())
    assert [v.state for v in purged] == ["purged"]
    assert purged[0].purged_bytes >= sum(a.bytes for a in plan.actions) * 0.5
    assert not any(os.path.lexists(root / s.op.dst) for s in view.steps)
    rolled = runner.rollback_run(root, view.run_id, opts())
    assert not any(os.path.lexists(root / a.path) for a in plan.actions)
    assert rolled.state == "rolled-back" or rolled.state == "purged"


def test_planted_symlink_to_outside_file_survives_gc_and_purge(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    precious = tmp_path / "precious.txt"
    precious.write_text("do not touch")
    _, _, plan0 = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    orphan = next(a.path for a in plan0.actions if a.kind == "orphan-layer")
    os.symlink(precious, root / orphan / "diff" / "evil")
    os.symlink(tmp_path, root / orphan / "diff" / "evil-dir")
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    view = runner.start_run(root, plan, opts())
    assert orphan in {s.path for s in view.steps if s.status == "moved"}
    runner.purge_runs(root, 0, None, opts())
    assert precious.read_text() == "do not touch"
    assert tmp_path.is_dir()


def test_dir_swapped_for_symlink_after_planning_is_skipped(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    orphan = next(a.path for a in plan.actions if a.kind == "orphan-layer")
    os.rename(root / orphan, tmp_path / "moved-away")
    os.symlink(outside, root / orphan)
    view = runner.start_run(root, plan, opts())
    skipped = {k["path"]: k["reason"] for k in view.skipped}
    assert orphan in skipped
    assert (outside / "keep").read_text() == "x"
    assert os.path.islink(root / orphan)


def test_reference_appearing_after_planning_skips_the_item(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    orphan = next(
        a for a in plan.actions if a.kind == "orphan-layer" and "interrupted" not in a.reason
    )
    name = orphan.path.split("/")[1]
    ldb = root / "image/overlay2/layerdb/sha256" / ("f" * 64)
    ldb.mkdir()
    (ldb / "cache-id").write_text(name)
    (ldb / "diff").write_text("sha256:" + "f" * 64)
    (ldb / "size").write_text("1")
    view = runner.start_run(root, plan, opts())
    skipped = {k["path"]: k["reason"] for k in view.skipped}
    assert skipped[orphan.path].startswith("no longer unreferenced")
    assert (root / orphan.path).is_dir()


def test_tampered_plan_naming_live_paths_is_skipped(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    live_dir = next(
        d.name
        for d in (root / "overlay2").iterdir()
        if len(d.name) == 64 and d.name not in {a.path[9:] for a in plan.actions}
    )
    st = os.lstat(root / "overlay2" / live_dir)
    doc = plan.to_dict()
    forged = dict(
        doc["actions"][0],
        id="forged",
        kind="orphan-layer",
        path=f"overlay2/{live_dir}",
        dev=st.st_dev,
        ino=st.st_ino,
        depends_on=None,
    )
    doc["actions"] = [forged] + [
        dict(a, path="volumes/pgdata", id="vol") for a in doc["actions"][:1]
    ]
    view = runner.start_run(root, Plan.from_dict(doc), opts())
    assert view.steps == []
    assert {k["path"] for k in view.skipped} == {f"overlay2/{live_dir}", "volumes/pgdata"}
    assert (root / "overlay2" / live_dir).is_dir() and (root / "volumes/pgdata").is_dir()


def test_mount_appearing_after_planning_skips_the_item(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    orphan = next(a for a in plan.actions if a.kind == "stale-init")
    point = MountEntry(7, "0:77", "/", f"{root}/{orphan.path}/merged", "overlay", "overlay", "")
    view = runner.start_run(root, plan, runner.Options(mounts=MountTable((point,), 2, 0)))
    skipped = {k["path"]: k["reason"] for k in view.skipped}
    assert "mount" in skipped[orphan.path]
    assert (root / orphan.path).is_dir()


def test_rollback_refuses_where_the_path_is_taken_again(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    view = runner.start_run(root, plan, opts())
    first = view.steps[0]
    (root / first.path).mkdir()
    back = runner.rollback_run(root, view.run_id, opts())
    assert back.state == "partially-rolled-back"
    assert os.path.lexists(root / first.op.dst)  # still safe in quarantine
    assert (root / view.steps[1].path).exists()


def test_second_run_refuses_while_the_lock_is_held(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    with exclusive(root):
        proc = run_cli(
            "gc", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--yes", check=3
        )
    assert "holds" in proc.stderr
    assert all((root / a.path).exists() or os.path.islink(root / a.path) for a in plan.actions)


def test_non_interactive_without_yes_refuses(tmp_path: Path) -> None:
    root, _ = demo(tmp_path)
    proc = run_cli("gc", "--root", str(root), "--config-file", "/x", "--min-age", "0", check=3)
    assert "--yes" in proc.stderr
    assert not (root / ".dockergc/runs").exists()


def test_cli_apply_saved_plan_runs_and_rollback(tmp_path: Path) -> None:
    root, _ = demo(tmp_path)
    saved = tmp_path / "plan.json"
    run_cli(
        "plan", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--out", str(saved)
    )
    before = manifest(root)
    out = json.loads(run_cli("apply", str(saved), "--yes", "--json").stdout)
    assert out["state"] == "applied" and out["bytes"] > 0
    assert {a["outcome"] for a in out["actions"]} == {"moved"}
    listed = json.loads(
        run_cli("runs", "--root", str(root), "--config-file", "/x", "--json").stdout
    )
    assert [r["run_id"] for r in listed["runs"]] == [out["run_id"]]
    run_cli("rollback", out["run_id"], "--root", str(root), "--config-file", "/x", "--yes")
    assert manifest(root) == before
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "root": "/", "created": "x", "actions": [{"path": "../etc"}]}')
    assert "not a dockergc plan" in run_cli("apply", str(bad), "--yes", check=2).stderr


def records_of_full_run(tmp_path: Path) -> int:
    root, plan = demo(tmp_path / "count")
    view = runner.start_run(root, plan, opts())
    return len(Journal(root, view.run_id).records())


def kill_at(tmp_path: Path, n: int) -> tuple[Path, Plan, dict[str, object], str]:
    root, plan = demo(tmp_path)
    before = manifest(root)
    return root, plan, before, apply_and_kill(root, plan, n)  # type: ignore[return-value]


def test_sigkill_after_every_journal_record_then_resume_or_rollback(tmp_path: Path) -> None:
    total = records_of_full_run(tmp_path)
    assert total == 1 + 2 * 13 + 1  # begin, intent+done per action, end
    for n in range(1, total):
        # Resume: ends applied, every planned path gone, nothing else touched.
        root, plan, before, run_id = kill_at(tmp_path / f"resume{n}", n)
        assert runner.unfinished_runs(root), n
        with pytest.raises(Exception, match="did not finish"):
            runner.refuse_if_unfinished(root)
        done = runner.resume_run(root, run_id, opts())
        assert done.state == "applied", n
        assert manifest(root) == without(before, [p for a in plan.actions for p in a.paths]), n
        assert not runner.unfinished_runs(root)
        # Rollback of the same crash point: ends as if nothing had happened.
        root, plan, before, run_id = kill_at(tmp_path / f"rollback{n}", n)
        back = runner.rollback_run(root, run_id, opts())
        assert back.state == "rolled-back", n
        assert manifest(root) == before, n
        assert not runner.unfinished_runs(root)


def test_sigterm_stops_between_steps(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    seen = [0]

    def after(record: dict[str, object]) -> None:
        seen[0] += 1
        if seen[0] == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    view = runner.start_run(root, plan, runner.Options(mounts=NO_MOUNTS, after_record=after))
    assert view.state == "interrupted"
    assert 0 < len([s for s in view.steps if s.status == "moved"]) < 13
    assert not view.in_doubt
    assert load(root, view.run_id).state == "interrupted"
    assert runner.resume_run(root, view.run_id, opts()).state == "applied"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_purge_never_enters_a_mount_inside_quarantine(tmp_path: Path) -> None:
    root, plan = demo(tmp_path)
    view = runner.start_run(root, plan, opts())
    target = next(s for s in view.steps if s.kind == "orphan-layer")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data").write_text("mounted, not ours")
    point = root / target.op.dst / "diff" / "mnt"
    point.mkdir()
    subprocess.run(["mount", "--bind", str(elsewhere), str(point)], check=True)
    try:
        subprocess.run(["mount", "--make-private", str(point)], check=True)
        # The mount table check keeps the whole item; openat2 alone would stop at the mount.
        purged = runner.purge_runs(root, 0, view.run_id, runner.Options())
        assert (elsewhere / "data").read_text() == "mounted, not ours"
        assert (root / target.op.dst / "link").exists()
        (left,) = [s for s in purged[0].steps if s.seq == target.seq]
        assert left.status != "purged"
        assert point.is_dir()
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_remove_tree_stops_at_a_same_filesystem_bind_mount(tmp_path: Path) -> None:
    from dockergc.execute import safefs

    tree = tmp_path / "root" / "victim"
    (tree / "sub").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data").write_text("keep")
    subprocess.run(["mount", "--bind", str(elsewhere), str(tree / "sub")], check=True)
    try:
        with pytest.raises(safefs.UnsafePath, match="mount point"):
            safefs.remove_tree(str(tmp_path / "root"), "victim")
        assert (elsewhere / "data").read_text() == "keep"
    finally:
        subprocess.run(["umount", "-l", str(tree / "sub")], check=True)


def test_live_run_rereads_the_graph_only_when_references_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--live re-reads the graph before an action when layerdb (or another source of
    references) changed: a dir claimed mid-run is kept. Otherwise the last read stands."""
    from dockergc.execute import verify

    root, plan = demo(tmp_path)
    layers = [a for a in plan.actions if a.kind == "orphan-layer"]
    claimed = layers[-1].path.split("/")[1]
    reads = [0]
    real_gather = verify.gather

    def counting_gather(*a: object, **k: object) -> object:
        reads[0] += 1
        return real_gather(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "gather", counting_gather)
    done = [0]

    def after(record: dict[str, object]) -> None:
        if record.get("type") == "done":
            done[0] += 1
            if done[0] == 3:  # a pull commits a layer naming a planned dir
                entry = root / "image/overlay2/layerdb/sha256" / ("ab" * 32)
                entry.mkdir()
                (entry / "cache-id").write_text(claimed)

    # The fixture was written just now: no slack, or every dir is "changed during this run".
    view = runner.start_run(root, plan, opts(live=True, live_slack=0, after_record=after))
    skipped = {s["path"]: s["reason"] for s in view.skipped}
    assert "no longer unreferenced" in skipped[f"overlay2/{claimed}"]
    assert (root / "overlay2" / claimed).is_dir()
    # One read at the start, one after the change, one after each move of gc's own that
    # touched layerdb (a -removing record): not one per action.
    own = sum(a.path.startswith("image/overlay2/layerdb/sha256/") for a in plan.actions)
    assert 2 <= reads[0] <= 2 + own < len(plan.actions), (reads, own)
