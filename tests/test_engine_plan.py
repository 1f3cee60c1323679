"""The plan against roots the real dockerd wrote: no false positives, exact leftovers.

Leftovers are made the way a daemon crash makes them (daemon stopped, then the
metadata steps moby had not reached are undone), and the verdict is checked against
the daemon itself: with the planned paths removed by hand, it starts, every image
runs, every container starts, volumes and BuildKit's cache still work.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dockergc.store.bbolt import parse as parse_bbolt
from tests.engine import Engine
from tests.realstate import (
    assert_everything_works,
    copy_root,
    inject_crash_leftovers,
    plan_json,
)

pytestmark = pytest.mark.engine


def test_healthy_root_with_running_daemon_plans_nothing(
    engine: tuple[Engine, dict[str, str]],
) -> None:
    e, _ = engine
    e.run("start", "c_running")  # a restart by an earlier test stops it
    assert "c_running" in e.run("ps", "--format", "{{.Names}}").stdout
    plan = plan_json(e.root, "--min-age", "0")
    assert plan["frozen"] == []
    assert plan["actions"] == [], plan["actions"]


def test_buildkit_records_read_from_real_snapshots_db(
    engine: tuple[Engine, dict[str, str]],
) -> None:
    e, _ = engine
    tree = parse_bbolt((e.root / "buildkit/snapshots.db").read_bytes())
    keys = {k.decode() for k in tree.buckets}
    cache_ids = {
        (d / "cache-id").read_text() for d in (e.root / "image/overlay2/layerdb/sha256").iterdir()
    }
    non_hex = {d.name for d in (e.root / "overlay2").iterdir() if len(d.name) == 25}
    assert non_hex, "the BuildKit build left no BuildKit-named dirs"
    # Every BuildKit-named dir is a bucket in snapshots.db or registered in layerdb.
    assert non_hex <= keys | cache_ids


def test_crash_leftovers_are_planned_exactly(engine: tuple[Engine, dict[str, str]]) -> None:
    e, ids = engine
    e.stop()
    try:
        twin = copy_root(e)
    finally:
        e.start()
    try:
        expected = inject_crash_leftovers(twin.root, ids)
        plan = plan_json(twin.root, "--min-age", "0")
        got = {(a["kind"], a["path"]) for a in plan["actions"]}
        assert got == expected
        assert plan["frozen"] == []

        # The default grace period keeps them all: they were written moments ago.
        young = plan_json(twin.root)
        assert young["actions"] == []
        kept = {k["path"]: k["reason"] for k in young["kept"]}
        assert all("younger than the grace period" in kept[p] for _, p in expected)

        # The daemon agrees: remove exactly the plan by hand, start, use everything.
        for _, rel in sorted(expected):
            path = twin.root / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
            else:
                shutil.rmtree(path)
        twin.start()
        survivors = set(ids["images"].split()) - {ids["victim:1"], ids["gone:1"]}
        assert set(twin.image_ids()) == survivors
        assert_everything_works(twin)
    finally:
        twin.destroy()


def test_synthetic_fixture_mirrors_what_dockerd_wrote(
    engine: tuple[Engine, dict[str, str]], tmp_path: Path
) -> None:
    """Every kind of thing the fixture writes has the exact names, types and modes of dockerd's."""
    from dockergc.fixture.builder import RootBuilder
    from tests.shapes import shapes

    e, _ = engine
    real = shapes(e.root)
    b = RootBuilder(tmp_path / "docker")
    base = b.layer({"bin/busybox": b"x"})
    child = b.layer({"hello.txt": b"hello"}, base)
    image = b.image([base, child], ["app:1"])
    b.container(image, child, "c")
    fake = shapes(b.finish())
    assert set(fake) == set(real)
    for category, listings in fake.items():
        assert listings <= real[category], (category, listings, real[category])
