"""The large-root paths: reads spread over child processes, the linear lower propagation,
and streamed JSON. Each compares against the plain path on the same root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockergc import measure
from dockergc.api import plan_root
from dockergc.fixture.builder import RootBuilder
from dockergc.graph import mark
from dockergc.plan import Policy
from dockergc.render.jsonfmt import JsonRenderer
from dockergc.store import beside, snapshot
from dockergc.store.overlay import list_overlay, read_overlay_dirs
from tests.conftest import NO_MOUNTS


def _root(tmp_path: Path) -> Path:
    """Chains of 12 layers, containers, leftovers, a bad lower file and a stray entry."""
    b = RootBuilder(tmp_path / "docker")
    for n in range(6):
        top = None
        chain = []
        for i in range(12):
            top = b.layer({f"f{n}{i}": b"x"}, top)
            chain.append(top)
        image = b.image(chain, [f"img{n}:1"])
        c = b.container(image, top, f"c{n}")
        if n == 2:
            b.interrupted_container_removal(c)
        b.interrupted_pull(chain[5], {"y": b"y"})
    b.dangling_link()
    b.finish()
    (b.root / "overlay2/stray-file").write_text("")
    return b.root


def _plan_dict(root: Path) -> dict[str, object]:
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    doc = plan.to_dict()
    doc.pop("created")
    return doc


def test_spread_reads_give_the_same_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(tmp_path)
    plain = _plan_dict(root)
    forks: list[int] = []
    real = beside.Beside.__init__

    def counting(self: beside.Beside[object], *a: object) -> None:
        forks.append(1)
        real(self, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(beside.Beside, "__init__", counting)
    monkeypatch.setattr(snapshot, "PARALLEL_MIN_ENTRIES", 0)
    monkeypatch.setattr(snapshot, "SHARES", {"overlay": 4, "chains": 3})
    monkeypatch.setattr(measure, "PARALLEL_MIN_PATHS", 10**9)  # count the readers only
    spread = _plan_dict(root)
    assert len(forks) == 7
    assert spread == plain
    assert plain["actions"], "the root has leftovers to plan"


def test_a_child_that_fails_is_redone_here(tmp_path: Path) -> None:
    root = _root(tmp_path)
    names, _ = list_overlay(root)
    parent = os.getpid()

    def dies_in_child(r: Path, chunk: list[str]) -> object:
        if os.getpid() != parent:
            os._exit(3)
        return read_overlay_dirs(r, chunk)

    def raises_in_child(r: Path, chunk: list[str]) -> object:
        if os.getpid() != parent:
            raise RuntimeError("boom")
        return read_overlay_dirs(r, chunk)

    expected = read_overlay_dirs(root, names)
    for fn in (dies_in_child, raises_in_child):
        parts = beside.spread(fn, root, names, shares=3)
        assert len(parts) == 3
        got = [d for p in parts for d in p.result().dirs]  # type: ignore[attr-defined]
        assert got == list(expected.dirs)


def test_lower_shortcut_marks_what_the_full_walk_marks(tmp_path: Path) -> None:
    """A lower file that is not its parent's link + the parent's list is walked in full:
    a dir whose list skips an ancestor still keeps it, and a list naming a missing link
    still freezes."""
    root = _root(tmp_path)
    snap = snapshot.gather(root, NO_MOUNTS)
    graph = mark(snap)
    # Rewrite one live dir's lower to drop its 3rd entry and add a link that names nothing.
    victim = next(d for d in snap.overlay.dirs if len(d.lower) > 5 and d.name in graph.live)
    shorts = list(victim.lower)
    dropped = shorts.pop(2)
    (root / "overlay2" / victim.name / "lower").write_text(":".join(f"l/{s}" for s in shorts))
    graph2 = mark(snapshot.gather(root, NO_MOUNTS))
    owner = graph.link_owner[dropped]
    assert owner in graph2.live  # still reached, through its own child
    (root / "overlay2" / victim.name / "lower").write_text(
        ":".join(f"l/{s}" for s in [*shorts, "A" * 26])
    )
    graph3 = mark(snapshot.gather(root, NO_MOUNTS))
    assert any("names no dir" in f for f in graph3.freeze)


def test_json_chunks_are_the_rendered_plan(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    text = "".join(JsonRenderer().chunks(plan))
    assert text == JsonRenderer().render(plan) + "\n"
    assert json.loads(text)["totals"]["actions"] == len(plan.actions)


def test_parallel_measure_counts_like_the_sequential_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hard links across paths measured in different processes are counted once, at the
    first path in plan order, exactly as one sequential walk counts them."""
    from dockergc import measure as m

    paths = []
    for n in range(20):
        d = tmp_path / f"d{n:02d}"
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "own").write_bytes(os.urandom(5000 * (n + 1)))
        paths.append(d.name)
    shared = tmp_path / "d00" / "shared"
    shared.write_bytes(os.urandom(64 * 1024))
    for n in (1, 2, 7):  # in both interleaved groups, after d00
        os.link(shared, tmp_path / f"d{n:02d}" / "shared")
    seen: set[tuple[int, int]] = set()
    sequential = {p: m.measure(str(tmp_path / p), seen) for p in paths}
    monkeypatch.setattr(m, "PARALLEL_MIN_PATHS", 2)
    forks: list[int] = []
    real = beside.Beside.__init__

    def counting(self: beside.Beside[object], *a: object) -> None:
        forks.append(1)
        real(self, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(beside.Beside, "__init__", counting)
    parallel = m.measure_all(str(tmp_path), paths)
    assert len(forks) == 2
    assert parallel == sequential
    assert sequential["d00"].bytes > sequential["d01"].bytes  # type: ignore[union-attr]
