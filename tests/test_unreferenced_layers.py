"""Layerdb layers nothing reaches: planned as one item each (record, dir, l/ link),
children before parents, kept whenever anything still reaches them; moved, put back
and purged together. The real-engine proof is in tests/test_engine_layers.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockergc.errors import PlanFileError
from dockergc.execute import impl, runner
from dockergc.execute.journal import load
from dockergc.fixture.builder import Layer
from dockergc.plan import Plan
from dockergc.store.mountinfo import MountEntry, MountTable
from tests.conftest import NO_MOUNTS
from tests.manifest import manifest, without
from tests.test_planner import World, plan_of, world

LDB = "image/overlay2/layerdb/sha256"


def rel(layer: Layer) -> str:
    return f"{LDB}/{layer.chain_id[7:]}"


def parts_of(w: World, layer: Layer) -> tuple[str, ...]:
    return (f"overlay2/{layer.cache_id}", f"overlay2/l/{layer.link}")


def crash_mid_rmi(w: World) -> list[Layer]:
    """Three layers on base:1 whose image record a crash removed (child last)."""
    a = w.b.layer({"a": b"a" * 5000}, w.base)
    b = w.b.layer({"b": b"b" * 7000}, a)
    c = w.b.layer({"c": b"c" * 9000}, b)
    return [a, b, c]


def layer_actions(p: Plan) -> list[str]:
    return [a.path for a in p.actions if a.kind == "unreferenced-layer"]


def test_a_chain_is_planned_child_first_each_with_its_dir_and_link(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = crash_mid_rmi(w)
    p = plan_of(w)
    assert p.frozen == ()
    assert layer_actions(p) == [rel(c), rel(b), rel(a)]  # children first
    by_path = {x.path: x for x in p.actions}
    for layer in (a, b, c):
        action = by_path[rel(layer)]
        assert tuple(part.path for part in action.parts) == parts_of(w, layer)
        # The dir and link are in this item only: never also an orphan-layer/-link item.
        assert not {x.path for x in p.actions if x.kind != "unreferenced-layer"} & set(action.paths)
        text = " ".join(action.evidence)
        assert layer.chain_id in text and layer.diff_id in text and "no image's layer" in text
        assert "BuildKit" in text and "mount record" in text
        # bytes cover the record, the dir (its files) and the link
        assert action.bytes >= 4096 * 3
    assert by_path[rel(a)].after == (rel(b),)  # direct children; c goes before b
    assert by_path[rel(b)].after == (rel(c),)
    assert by_path[rel(c)].after == ()
    # Nothing else moved: base:1, app:1 and the container's layers stay.
    assert {x.kind for x in p.actions} == {"unreferenced-layer"}


def test_a_kept_child_keeps_every_ancestor(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = crash_mid_rmi(w)
    p = plan_of(w, excludes=(f"overlay2/{c.cache_id}",))
    assert layer_actions(p) == []
    kept = {k.path: k.reason for k in p.kept}
    assert kept[rel(c)].startswith("excluded by --exclude")
    assert kept[rel(b)].startswith(f"kept with its child layer {c.chain_id[7:19]}")
    assert kept[rel(a)].startswith(f"kept with its child layer {b.chain_id[7:19]}")


def test_roots_reach_layers_no_image_names(tmp_path: Path) -> None:
    w = world(tmp_path)
    # A type=image mount (or builder) record on a chain no image names: it and its
    # ancestors are live.
    m1 = w.b.layer({"m1": b"1"}, w.base)
    m2 = w.b.layer({"m2": b"2"}, m1)
    w.b.image_mount(m2)
    # BuildKit's record names a chain (its snapshot's parent): it and its parent are live.
    k1 = w.b.layer({"k1": b"1"}, w.base)
    k2 = w.b.layer({"k2": b"2"}, k1)
    w.b.buildkit_snapshot(k2, {"out": b"o"})
    # A legacy builder's intermediate (untagged) image: live.
    i1 = w.b.layer({"i1": b"1"}, w.app)
    w.b.image([w.base, w.app, i1], [], parent=w.app_id)
    gone = w.b.layer({"gone": b"g"}, w.base)
    p = plan_of(w)
    assert layer_actions(p) == [rel(gone)]


def test_a_layer_whose_dir_something_uses_is_kept_with_its_ancestors(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = crash_mid_rmi(w)
    root = str(w.root)
    point = MountEntry(1, "0:99", "/", f"{root}/overlay2/{b.cache_id}/merged", "tmpfs", "t", "")
    p = plan_of(w, MountTable((point,), 2, 0))
    assert layer_actions(p) == [rel(c)]  # only the child above the used one goes
    kept = {k.path: k.reason for k in p.kept if k.kind == "unreferenced-layer"}
    assert "in use" in kept[rel(b)] and "mounted" in kept[rel(b)]
    assert "in use" in kept[rel(a)]


def test_an_unreadable_parent_on_a_reached_chain_freezes(tmp_path: Path) -> None:
    w = world(tmp_path)
    m1 = w.b.layer({"m1": b"1"}, w.base)
    m2 = w.b.layer({"m2": b"2"}, m1)
    w.b.image_mount(m2)
    crash_mid_rmi(w)
    (w.root / rel(m2) / "parent").write_text("not a digest")
    p = plan_of(w)
    assert any("unreadable parent" in f for f in p.frozen), p.frozen
    assert p.actions == ()


def test_while_a_daemon_runs_they_are_reported_not_planned(tmp_path: Path) -> None:
    w = world(tmp_path)
    a, b, c = crash_mid_rmi(w)
    p = plan_of(w, daemon="dockerd (pid 42)")
    assert layer_actions(p) == []
    kept = {k.path: k.reason for k in p.kept}
    assert "dockerd (pid 42) holds every layerdb layer in memory" in kept[rel(c)]


def test_the_plan_file_keeps_parts_and_order_and_rejects_tampering(tmp_path: Path) -> None:
    w = world(tmp_path)
    crash_mid_rmi(w)
    p = plan_of(w)
    again = Plan.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p
    doc = p.to_dict()
    doc["actions"][0]["parts"][0]["path"] = "../../etc"
    with pytest.raises(PlanFileError):
        Plan.from_dict(doc)
    doc = p.to_dict()
    doc["actions"][0]["after"] = ["/etc"]
    with pytest.raises(PlanFileError):
        Plan.from_dict(doc)


def applied(tmp_path: Path) -> tuple[World, list[Layer], Plan, dict[str, object]]:
    w = world(tmp_path)
    chain = crash_mid_rmi(w)
    p = plan_of(w)
    return w, chain, p, manifest(w.root)  # type: ignore[return-value]


def test_apply_moves_each_group_whole_and_rollback_puts_it_back(tmp_path: Path) -> None:
    w, chain, p, before = applied(tmp_path)
    view = runner.start_run(w.root, p, runner.Options(mounts=NO_MOUNTS))
    assert view.state == "applied"
    assert [s.status for s in view.steps] == ["moved"] * 3
    gone = [path for a in p.actions for path in a.paths]
    assert manifest(w.root) == without(before, gone)  # type: ignore[arg-type]
    for step in view.steps:  # record, dir and link side by side in quarantine
        assert step.op.dst.endswith(f"q/{step.seq:06d}")
        for i in (1, 2):
            assert os.path.lexists(w.root / f"{step.op.dst}-{i}")
    back = runner.rollback_run(w.root, view.run_id, runner.Options(mounts=NO_MOUNTS))
    assert back.state == "rolled-back"
    assert manifest(w.root) == before
    # Purge of another run frees every part (a fresh plan: the rollback's renames changed
    # the entries' ctimes, which a saved plan's re-check rightly treats as changed).
    view2 = runner.start_run(w.root, plan_of(w), runner.Options(mounts=NO_MOUNTS))
    purged = runner.purge_runs(w.root, 0, view2.run_id, runner.Options(mounts=NO_MOUNTS))
    assert purged[0].state == "purged"
    assert not list((w.root / ".dockergc/runs" / view2.run_id / "q").iterdir())
    assert purged[0].purged_bytes >= sum(a.bytes for a in p.actions) * 0.9


class Died(Exception):
    pass


def crash_after_first_move(root: Path, plan: Plan) -> str:
    """Apply ``plan`` and die right after the first group's first move (its record is in
    quarantine, its dir and link are not), as a kill there would; return the run id."""

    def die_mid_group(record: dict[str, object]) -> None:
        if record.get("type") == "intent":
            op = record["op"]
            assert op["name"] == "group"  # type: ignore[index]
            first = op["moves"][0]  # type: ignore[index]
            impl.do_move(
                runner.MoveOp(**{k: v for k, v in first.items() if k != "name"}), str(root)
            )
            raise Died

    with pytest.raises(Died):
        runner.start_run(root, plan, runner.Options(mounts=NO_MOUNTS, after_record=die_mid_group))
    (run_id,) = [d.name for d in (root / ".dockergc/runs").iterdir()]
    return run_id


@pytest.mark.parametrize("then", ["resume", "rollback"])
def test_a_crash_inside_a_group_is_settled_whole(tmp_path: Path, then: str) -> None:
    """The process dies after the group's first move (its record is in quarantine, its
    dir and link are not): resume and rollback both put the record back first, so the
    group is moved whole or not at all."""
    w, chain, p, before = applied(tmp_path)

    run_id = crash_after_first_move(w.root, p)
    (run_id,) = [d.name for d in (w.root / ".dockergc/runs").iterdir()]
    assert load(w.root, run_id).in_doubt
    assert not (w.root / rel(chain[2])).exists()  # the crash left the group split
    opts = runner.Options(mounts=NO_MOUNTS)
    if then == "resume":
        view = runner.resume_run(w.root, run_id, opts)
        assert view.state == "applied"
        assert manifest(w.root) == without(before, [x for a in p.actions for x in a.paths])  # type: ignore[arg-type]
    else:
        view = runner.rollback_run(w.root, run_id, opts)
        assert view.state == "rolled-back"
        assert manifest(w.root) == before


def test_a_group_that_fails_midway_is_put_back(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    w, chain, p, before = applied(tmp_path)
    real = impl.safefs.move
    calls = [0]

    def flaky(root: str, src: str, dst: str, expect: object = None) -> None:
        calls[0] += 1
        if calls[0] == 2:  # the first group's dir
            raise OSError(5, "I/O error")
        real(root, src, dst, expect=expect)  # type: ignore[arg-type]

    monkeypatch.setattr(impl.safefs, "move", flaky)
    view = runner.start_run(w.root, p, runner.Options(mounts=NO_MOUNTS))
    first = view.steps[0]
    assert first.status == "not-moved" and "I/O error" in first.reason
    # The child's record came back, so its parents were not removed either (they wait
    # on it): the root is as before.
    assert [s.status for s in view.steps] == ["not-moved"]
    assert {s["path"] for s in view.skipped} == {rel(chain[1]), rel(chain[0])}
    assert manifest(w.root) == before


def test_a_live_run_never_moves_them(tmp_path: Path) -> None:
    w, chain, p, before = applied(tmp_path)
    view = runner.start_run(w.root, p, runner.Options(live=True, mounts=NO_MOUNTS))
    reasons = {s["path"]: s["reason"] for s in view.skipped}
    assert view.steps == []
    assert set(reasons) == {rel(x) for x in chain}
    assert "holds this layer in memory" in reasons[rel(chain[2])]
    assert "was not removed in this run" in reasons[rel(chain[0])]
    assert manifest(w.root) == before


def test_a_plan_of_only_young_candidates_says_why_and_when(tmp_path: Path) -> None:
    """After a copy or relocation every file's ctime is new: the default grace period
    plans nothing for a while, and the plan says so instead of staying silent."""
    from dockergc.fixture.demo import write_demo_root
    from tests.conftest import run_cli

    root = write_demo_root(tmp_path / "docker")
    out = run_cli("plan", "--root", str(root), "--config-file", "/x", "--min-age", "1h").stdout
    assert "nothing to remove" in out
    note = next(line for line in out.splitlines() if line.startswith("NOTE: "))
    assert "all 13 candidate(s) are younger than the grace period (1h)" in note
    assert "the root was copied (or created) at" in note and "nothing is planned before" in note
    doc = json.loads(
        run_cli("gc", "--root", str(root), "--config-file", "/x", "--json", "--dry-run").stdout
    )
    assert doc["notes"] and "the root was copied (or created) at" in doc["notes"][0]


def test_the_grace_note_without_a_copy() -> None:
    from dockergc.plan import Kept, grace_note

    young = Kept("overlay2/x", "orphan-layer", "younger than the grace period (5m < 1h): ...")
    plan = Plan(1, "/r", "t", 3600.0, (), (), (young,), ())
    note = grace_note(plan, now=10 * 86400, written_at=86400)  # root written long ago
    assert note == (
        "all 1 candidate(s) are younger than the grace period (1h): they are planned once "
        "older, if nothing claims them"
    )
    assert grace_note(plan, now=10 * 86400, written_at=10 * 86400 - 60) is not None
    old = Kept("overlay2/y", "orphan-layer", "excluded by --exclude y")
    assert grace_note(Plan(1, "/r", "t", 3600.0, (), (), (old,), ()), 0, None) is None


def test_scan_counts_them(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    w = world(tmp_path)
    crash_mid_rmi(w)
    w.b.finish()
    doc = json.loads(run_cli("scan", "--root", str(w.root), "--config-file", "/x", "--json").stdout)
    assert doc["unreferenced_layers"] == 3


def test_a_tag_naming_a_missing_image_keeps_every_layer(tmp_path: Path) -> None:
    """Found by the property test: a tag whose image config is gone names layers nobody
    can list, so no layer is unreferenced for sure; orphan dirs still go."""
    w = world(tmp_path)
    gone = w.b.layer({"g": b"g"}, w.base)
    own = w.b.layer({"o": b"o"}, w.base)
    own_id = w.b.image([w.base, own], ["own:1"])
    orphan = w.b.interrupted_pull(w.base, {"p": b"p"})
    w.b.finish()
    (w.root / "image/overlay2/imagedb/content/sha256" / own_id[7:]).unlink()
    p = plan_of(w)
    assert layer_actions(p) == []
    kept = {k.path: k.reason for k in p.kept}
    for layer in (gone, own):
        assert "tag own:1 names image" in kept[rel(layer)], kept[rel(layer)]
    assert f"overlay2/{orphan}" in {a.path for a in p.actions}
    assert f"overlay2/{own.cache_id}" not in {a.path for a in p.actions}
