"""Property-based: random valid roots, random crash leftovers, random corruptions.

Invariants: with no corruption the plan is exactly the leftovers; with corruption, or
valid ids moved between records, it never gains a path that was referenced before;
planning twice gives the same plan.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockergc.api import plan_root
from dockergc.fixture.builder import Layer, RootBuilder
from dockergc.graph import mark
from dockergc.plan import Policy
from dockergc.store.snapshot import gather
from tests.conftest import NO_MOUNTS
from tests.test_corrupt_matrix import CORRUPTIONS, MOVE_CLASSES, move_ids


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, object]:
    return {
        "images": draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)),
        "containers": draw(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=3)),
        "buildkit": draw(st.integers(0, 2)),
        "pulls": draw(st.integers(0, 3)),
        "removed_containers": draw(st.integers(0, 2)),
        "removing": draw(st.integers(0, 1)),
        "dangling": draw(st.integers(0, 2)),
        "write_sets": draw(st.integers(0, 1)),
        "image_mounts": draw(st.integers(0, 2)),
        "crashed_records": draw(st.integers(0, 2)),
        "moves": draw(
            st.lists(
                st.tuples(
                    st.sampled_from(MOVE_CLASSES),
                    st.integers(0, 10**6),
                    st.integers(0, 10**6),
                    st.booleans(),
                ),
                max_size=2,
            )
        ),
        "corrupt": draw(
            st.lists(
                st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(CORRUPTIONS))), max_size=2
            )
        ),
    }


def build(root: Path, w: dict[str, object]) -> set[tuple[str, str]]:
    b = RootBuilder(root)
    base = b.layer({"bin/sh": b"s"})
    images: list[tuple[str, Layer]] = []
    for i, depth in enumerate(w["images"]):  # type: ignore[arg-type]
        top, chain = base, [base]
        for j in range(depth - 1):
            top = b.layer({f"l{i}/{j}": bytes([j])}, top)
            chain.append(top)
        images.append((b.image(chain, [f"img{i}:1"]), top))
    for idx, running in w["containers"]:  # type: ignore[attr-defined]
        image, top = images[idx % len(images)]
        b.container(image, top, f"c{idx}", running=running)
    for k in range(w["image_mounts"]):  # type: ignore[call-overload]
        b.image_mount(images[k % len(images)][1])  # no init-id, no container dir
    # Records a crash during container removal left naming no dir, on an image of their
    # own: leftovers shaped like their dirs would (rightly) be kept, not planned.
    own = b.layer({"own": b"o"}, base)
    own_image = b.image([base, own], ["own:1"])
    for k in range(w["crashed_records"]):  # type: ignore[call-overload]
        c = b.container(own_image, own, f"crashed{k}") if k % 2 == 0 else b.image_mount(own)
        b.crash_during_container_removal(c)
    for _ in range(w["buildkit"]):  # type: ignore[call-overload]
        b.buildkit_snapshot(base, {"bk": b"b"})
    expect: set[tuple[str, str]] = set()

    def link(name: str) -> str:
        return "overlay2/l/" + (root / "overlay2" / name / "link").read_text()

    for _ in range(w["pulls"]):  # type: ignore[call-overload]
        n = b.interrupted_pull(images[0][1], {"p": b"p"})
        expect |= {("orphan-layer", f"overlay2/{n}"), ("orphan-link", link(n))}
    for k in range(w["removed_containers"]):  # type: ignore[call-overload]
        image, top = images[k % len(images)]
        c = b.container(image, top, f"gone{k}")
        b.interrupted_container_removal(c)
        for n, kind in ((c.mount_id, "orphan-layer"), (c.mount_id + "-init", "stale-init")):
            expect |= {(kind, f"overlay2/{n}"), ("orphan-link", link(n))}
    for _ in range(w["removing"]):  # type: ignore[call-overload]
        doomed = b.layer({"d": b"d"}, base)
        name = b.interrupted_layer_removal(doomed)
        expect |= {
            ("removing-layer", f"image/overlay2/layerdb/sha256/{name}"),
            ("orphan-layer", f"overlay2/{doomed.cache_id}"),
            ("orphan-link", f"overlay2/l/{doomed.link}"),
        }
    for _ in range(w["dangling"]):  # type: ignore[call-overload]
        expect.add(("dangling-link", f"overlay2/l/{b.dangling_link()}"))
    for _ in range(w["write_sets"]):  # type: ignore[call-overload]
        expect.add(("write-set", f"image/overlay2/layerdb/tmp/{b.write_set()}"))
    b.finish()
    return expect


def metadata_files(root: Path) -> list[Path]:
    files = [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.is_symlink()
        and "/diff/" not in str(p)
        and p.name not in ("tar-split.json.gz",)
    ]
    return files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_plans_are_exact_safe_under_corruption_and_deterministic(w: dict[str, object]) -> None:
    work = Path(tempfile.mkdtemp(prefix="dgc-prop-"))
    try:
        root = work / "docker"
        expect = build(root, w)
        _, _, clean = plan_root(root, Policy(min_age=0), NO_MOUNTS)
        assert {(a.kind, a.path) for a in clean.actions} == expect
        graph = mark(gather(root, NO_MOUNTS))
        live = {f"overlay2/{n}" for n in graph.live} | {f"overlay2/l/{s}" for s in graph.live_links}
        files = metadata_files(root)
        for pick, kind in w["corrupt"]:  # type: ignore[attr-defined]
            victim = files[pick % len(files)]
            if victim.exists() and not victim.is_symlink():
                CORRUPTIONS[kind](victim)
        for cls, a, b, swap in w["moves"]:  # type: ignore[attr-defined]
            move_ids(root, cls, a, b, swap)  # valid ids moved between records
        _, _, first = plan_root(root, Policy(min_age=0), NO_MOUNTS)
        assert not {p for a in first.actions for p in a.paths} & live
        _, _, second = plan_root(root, Policy(min_age=0), NO_MOUNTS)
        assert [(a.id, a.path, a.bytes) for a in first.actions] == [
            (a.id, a.path, a.bytes) for a in second.actions
        ]
        assert [k.path for k in first.kept] == [k.path for k in second.kept]
    finally:
        shutil.rmtree(work, ignore_errors=True)
