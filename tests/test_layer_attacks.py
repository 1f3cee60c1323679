"""Adversarial tests for the unreferenced-layer change (review 14). Each test asserts the
SAFE behaviour; a failure is a finding."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dockergc.execute import runner
from dockergc.execute.journal import load
from dockergc.fixture.builder import Layer
from dockergc.plan import Plan
from tests.conftest import NO_MOUNTS
from tests.test_planner import World, plan_of, world
from tests.test_unreferenced_layers import crash_after_first_move

LDB = "image/overlay2/layerdb/sha256"


def rel(layer: Layer) -> str:
    return f"{LDB}/{layer.chain_id[7:]}"


def chain3(w: World) -> list[Layer]:
    a = w.b.layer({"a": b"a" * 5000}, w.base)
    b = w.b.layer({"b": b"b" * 7000}, a)
    c = w.b.layer({"c": b"c" * 9000}, b)
    return [a, b, c]


def opts() -> runner.Options:
    return runner.Options(mounts=NO_MOUNTS)


def lower_links_resolve(root: Path, layer_dir: str) -> list[str]:
    """The l/ entries a dir's lower file names that do not resolve."""
    lower = root / "overlay2" / layer_dir / "lower"
    if not lower.exists():
        return []
    return [s for s in lower.read_text().split(":") if not (root / "overlay2" / s).exists()]


# --- 1. a tampered (or hand-edited) plan: parts are not re-derived from the fresh graph ----


def test_tampered_parts_cannot_carry_a_live_dir(tmp_path: Path) -> None:
    w = world(tmp_path)
    chain3(w)
    p = plan_of(w)
    doc = p.to_dict()
    victim = f"overlay2/{w.app.cache_id}"  # app:1's top layer, used by a running container
    st = os.lstat(w.root / victim)
    doc["actions"][0]["parts"].append({"path": victim, "dev": st.st_dev, "ino": st.st_ino})
    vol = "volumes/data"
    st = os.lstat(w.root / vol)
    doc["actions"][0]["parts"].append({"path": vol, "dev": st.st_dev, "ino": st.st_ino})
    view = runner.start_run(w.root, Plan.from_dict(doc), opts())
    moved = [m.src for s in view.steps if s.status == "moved" for m in s.op.moves]
    assert victim not in moved and vol not in moved, moved
    assert (w.root / victim).is_dir() and (w.root / vol).is_dir()


def test_tampered_after_cannot_remove_a_parent_before_its_child(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)
    doc = p.to_dict()
    # keep only the parent's item, and drop its "after"
    doc["actions"] = [dict(x, after=[]) for x in doc["actions"] if x["path"] == rel(a)]
    view = runner.start_run(w.root, Plan.from_dict(doc), opts())
    # SAFE: a's child b (still on disk) names it; a must stay
    assert (w.root / rel(a)).is_dir(), [(s.path, s.status) for s in view.steps]


# --- 2. a stray second l/ link to a grouped dir is reported as "it is live" ----------------


def test_second_link_to_a_grouped_dir_reason(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = chain3(w)
    os.symlink(f"../{c.cache_id}/diff", w.root / "overlay2/l" / ("Z" * 26))
    p = plan_of(w)
    kept = {k.path: k.reason for k in p.kept}
    reason = kept.get("overlay2/l/" + "Z" * 26, "(not kept)")
    # The dir is planned (in c's group), not live.
    assert "it is live" not in reason, reason


# --- 3. rollback restores a child whose parent stays in quarantine -----------------------


def test_rollback_never_restores_a_child_over_a_missing_parent(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)
    view = runner.start_run(w.root, p, opts())
    assert [s.status for s in view.steps] == ["moved"] * 3
    # The daemon starts, pulls an image sharing layer a: a new record at a's chain path,
    # with a new dir and a new link (the old dir and link are in quarantine).
    a2 = w.b.layer({"a": b"a" * 5000}, w.base)
    assert a2.chain_id == a.chain_id and a2.cache_id != a.cache_id
    w.b.image([w.base, a2], ["pulled:1"])
    w.b.finish()
    back = runner.rollback_run(w.root, view.run_id, opts())
    restored = [s.path for s in back.steps if s.status == "restored"]
    # SAFE: b and c sit on the OLD a (their dirs' lower files list old a's link): they
    # must not come back without it, or the daemon will load b on the NEW a and any
    # image that later reuses b cannot be mounted.
    broken = {
        x.chain_id[7:19]: lower_links_resolve(w.root, x.cache_id)
        for x in (b, c)
        if (w.root / rel(x)).exists()
    }
    assert not any(broken.values()), (restored, broken)


# --- 4. rollback --live / resume --live put records back under a running daemon ----------


def test_rollback_live_puts_no_layer_record_back_under_a_running_daemon(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)
    view = runner.start_run(w.root, p, opts())  # an offline run
    # then the daemon started (it loaded none of a, b, c), and an operator rolls back with
    # --live: dockerd's layer registration checks only its in-memory map, then renames
    # its write-set onto layerdb/sha256/<chain>: a record put back now makes every later
    # pull/load/commit of that chain fail (rename: directory not empty) until a restart.
    back = runner.rollback_run(w.root, view.run_id, runner.Options(live=True, mounts=NO_MOUNTS))
    assert not (w.root / rel(c)).exists(), [(s.path, s.status) for s in back.steps]


# --- 5. settle: a half-moved group whose record path was taken again ---------------------


class Died(Exception):
    pass


def test_settle_half_moved_group_with_taken_record_path_reports_truthfully(
    tmp_path: Path,
) -> None:

    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)

    run_id = crash_after_first_move(w.root, p)
    # c's record went to quarantine; the daemon then re-registered chain c (new record, new
    # dir) before the resume.
    c2 = w.b.layer({"c": b"c" * 9000}, b)
    assert c2.chain_id == c.chain_id
    w.b.finish()
    view = runner.resume_run(w.root, run_id, opts())
    first = view.steps[0]
    still_there = [
        x for x in (f"overlay2/{c.cache_id}", f"overlay2/l/{c.link}") if os.path.lexists(w.root / x)
    ]
    # The step claims all of c's bytes were quarantined, though its dir and link are still
    # in overlay2/ (only the small record moved).
    assert not (first.status == "moved" and still_there), (first.status, first.reason, still_there)


# --- 6. a daemon that starts during an offline run (socket activation, an operator) -------

import subprocess  # noqa: E402
import time  # noqa: E402


def test_offline_run_rechecks_for_a_daemon_before_each_group(tmp_path: Path) -> None:
    from dockergc.daemon import daemons_using

    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)
    procs: list[subprocess.Popen] = []

    def start_daemon_after_first(record: dict[str, object]) -> None:
        if record.get("type") == "done" and not procs:
            # an exe whose name contains "dockerd", with --data-root R
            exe = tmp_path / "dockerd"
            shutil.copy("/bin/sleep", exe)
            procs.append(subprocess.Popen([str(exe), "300"], cwd=str(w.root)))
            time.sleep(0.3)

    try:
        view = runner.start_run(
            w.root, p, runner.Options(mounts=NO_MOUNTS, after_record=start_daemon_after_first)
        )
        users = daemons_using(w.root)
        assert users, "the fake daemon is seen by the gate"
        moved = [s.path for s in view.steps if s.status == "moved"]
        # SAFE: once a daemon is up (it loads every layerdb layer at start), no further
        # group may move.
        assert moved == [rel(c)], (moved, [u.describe() for u in users])
    finally:
        for pr in procs:
            pr.kill()
            pr.wait()


# --- 7. plan without --live while a daemon runs under another name --------------------


def test_plan_while_a_renamed_daemon_holds_the_root(tmp_path: Path) -> None:
    from dockergc.api import plan_root
    from dockergc.daemon import daemons_using
    from dockergc.plan import Policy

    w = world(tmp_path)
    chain3(w)
    w.b.finish()
    exe = tmp_path / "engine"  # a dockerd copy under another name holds its root
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "300"], cwd=str(w.root / "image/overlay2/layerdb"))
    time.sleep(0.3)
    try:
        users = daemons_using(w.root)
        assert users and all(u.kind == "process" for u in users)
        _, _, p = plan_root(w.root, Policy(min_age=0), NO_MOUNTS)
        planned = [a.path for a in p.actions if a.kind == "unreferenced-layer"]
        # the gate refuses gc/apply for this holder; the dry run still promises them
        assert planned == [], planned
    finally:
        proc.kill()
        proc.wait()


def test_resume_live_puts_no_layer_record_back_under_a_running_daemon(tmp_path: Path) -> None:
    """An offline run crashed after a group's first move (the record is in quarantine, the
    dir and link are not); the daemon was started (it did not load that layer), then the
    run is resumed with --live, as the hint of a live host suggests."""

    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)

    run_id = crash_after_first_move(w.root, p)
    runner.resume_run(w.root, run_id, runner.Options(live=True, mounts=NO_MOUNTS))
    load(w.root, run_id)
    journal = (w.root / ".dockergc/runs" / run_id / "journal.jsonl").read_text()
    assert "settle-undo" not in journal and not (w.root / rel(c)).exists(), journal[-600:]


# ======================= things that held up (these pass) ===============================


def test_held_unreadable_image_config_freezes(tmp_path: Path) -> None:
    w = world(tmp_path)
    chain3(w)
    # a legacy-builder intermediate image whose config is cut short
    iid = w.b.image([w.base, w.app], [], parent=w.app_id)
    (w.root / "image/overlay2/imagedb/content/sha256" / iid[7:]).write_text('{"rootfs": {')
    p = plan_of(w)
    assert p.frozen and not p.actions


def test_held_parent_only_in_an_image(tmp_path: Path) -> None:
    w = world(tmp_path)
    u = w.b.layer({"u": b"u"}, w.app)  # its parent file names app:1's top layer
    p = plan_of(w)
    assert [a.path for a in p.actions] == [rel(u)]


def test_held_removing_record_naming_the_same_dir(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = chain3(w)
    d = w.root / LDB / f"{'e' * 64}-abc-removing"
    d.mkdir()
    (d / "cache-id").write_text(c.cache_id)
    p = plan_of(w)
    assert not [x for x in p.actions if x.kind == "unreferenced-layer"]
    assert not any(c.cache_id in x.path for x in p.actions)


def test_held_two_records_one_dir_freezes(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = chain3(w)
    (w.root / rel(c) / "cache-id").write_text(w.app.cache_id)
    p = plan_of(w)
    assert p.frozen and not p.actions


def test_held_buildkit_db_that_does_not_parse_keeps_named_chains(tmp_path: Path) -> None:
    w = world(tmp_path)
    k1 = w.b.layer({"k1": b"1"}, w.base)
    k2 = w.b.layer({"k2": b"2"}, k1)
    w.b.finish()
    (w.root / "buildkit/metadata_v2.db").write_bytes(b"garbage " + k2.chain_id.encode() * 2)
    from dockergc.api import plan_root
    from dockergc.plan import Policy

    _, _, p = plan_root(w.root, Policy(min_age=0), NO_MOUNTS)
    assert not [x for x in p.actions if x.kind == "unreferenced-layer"]


def test_held_plan_while_dockerd_runs_keeps_them(tmp_path: Path) -> None:
    from dockergc.api import plan_root
    from dockergc.plan import Policy

    w = world(tmp_path)
    chain3(w)
    w.b.finish()
    exe = tmp_path / "dockerd"
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "300"], cwd=str(w.root))
    time.sleep(0.3)
    try:
        _, _, p = plan_root(w.root, Policy(min_age=0), NO_MOUNTS)
        assert not [x for x in p.actions if x.kind == "unreferenced-layer"]
    finally:
        proc.kill()
        proc.wait()


def test_held_purge_after_a_partial_purge_and_rollback_after_it(tmp_path: Path) -> None:
    from dockergc.execute import ops

    w = world(tmp_path)
    a, b, c = chain3(w)
    p = plan_of(w)
    view = runner.start_run(w.root, p, opts())
    real = ops.perform
    n = [0]

    def dies_on_second(root: str, op: object) -> object:
        n[0] += 1
        if n[0] == 2:
            raise KeyboardInterrupt  # killed after the first part of the first group
        return real(root, op)  # type: ignore[arg-type]

    runner.perform = dies_on_second  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.purge_runs(w.root, 0, view.run_id, opts())
    finally:
        runner.perform = real  # type: ignore[assignment]
    runner.rollback_run(w.root, view.run_id, opts())
    # c's record is gone: c stays in quarantine (not a dir without its record) ...
    assert not (w.root / f"overlay2/{c.cache_id}").exists()
    runner.purge_runs(w.root, 0, view.run_id, opts())
    assert not list((w.root / ".dockergc/runs" / view.run_id / "q").iterdir())


# --- 8. cost: "after" lists name direct children only --------


def test_after_lists_only_direct_children(tmp_path: Path) -> None:
    w = world(tmp_path)
    top = None
    for i in range(100):  # one crash-mid-rmi chain of 100 layers
        top = w.b.layer({"f": str(i).encode()}, top)
    p = plan_of(w)
    entries = sum(len(a.after) for a in p.actions)
    size = len(json.dumps(p.to_dict()))
    assert entries <= 100 and size < 500_000, (entries, size)


def test_a_fifo_planted_in_quarantine_does_not_stall_rollback(tmp_path: Path) -> None:
    """Rollback reads a quarantined layer's parent file: a FIFO put there instead must
    neither block the rollback nor let the layer back with its parent unknown."""
    w = world(tmp_path)
    a, b, c = chain3(w)
    view = runner.start_run(w.root, plan_of(w), opts())
    step = next(s for s in view.steps if s.path == rel(c))
    parent = w.root / step.op.dst / "parent"
    parent.unlink()
    os.mkfifo(parent)
    back = runner.rollback_run(w.root, view.run_id, opts())
    assert back.state == "partially-rolled-back"
    assert not (w.root / rel(c)).exists()
    assert (w.root / rel(a)).exists() and (w.root / rel(b)).exists()
