"""The plan against roots the real dockerd wrote: no false positives, exact leftovers.

Leftovers are made the way a daemon crash makes them (daemon stopped, then the
metadata steps moby had not reached are undone), and the verdict is checked against
the daemon itself: with the planned paths removed by hand, it starts, every image
runs, every container starts, volumes and BuildKit's cache still work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockergc.store.bbolt import parse as parse_bbolt
from dockergc.store.ids import chain_ids
from tests.conftest import run_cli
from tests.engine import Engine

pytestmark = pytest.mark.engine

APP = """FROM base:1
RUN echo hello > /hello.txt && mkdir -p /data/sub && echo x > /data/sub/f && echo keep > /data/k
RUN rm /bin/vi && rm -rf /data/sub && echo y > /data/new
"""
VICTIM = (
    "FROM app:1\nRUN echo pulled-halfway > /victim && dd if=/dev/zero of=/blob bs=1k count=300\n"
)
GONE = "FROM base:1\nRUN echo being-removed > /gone\n"
MULTI = """FROM base:1 AS build
RUN echo built > /artifact && echo junk > /junk
FROM base:1
COPY --from=build /artifact /artifact
RUN echo done > /done
"""


def populate(e: Engine) -> dict[str, str]:
    """Images (legacy and BuildKit), containers stopped and running, a volume."""
    e.import_base()
    e.build("app:1", APP)
    e.build("victim:1", VICTIM)
    e.build("gone:1", GONE)
    e.build("bk:1", MULTI, buildkit=True)
    e.run("volume", "create", "vol1")
    e.run(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "vol1:/v",
        "base:1",
        "sh",
        "-c",
        "echo data > /v/x",
    )
    e.run(
        "create",
        "--network",
        "none",
        "-v",
        "vol1:/v",
        "--name",
        "c_stopped",
        "app:1",
        "sh",
        "-c",
        "cat /v/x /hello.txt",
    )
    e.run("start", "-a", "c_stopped")
    e.run("create", "--network", "none", "--name", "c_doomed", "base:1", "true")
    e.run("run", "-d", "--network", "none", "--name", "c_running", "app:1", "sleep", "100000")
    ids = {"doomed": e.run("inspect", "-f", "{{.Id}}", "c_doomed").stdout.strip()}
    upper = e.run("inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "c_doomed").stdout.strip()
    ids["doomed_mount"] = Path(upper).parent.name
    for tag in ("victim:1", "gone:1"):
        ids[tag] = e.run("inspect", "-f", "{{.Id}}", tag).stdout.strip()
        layers = json.loads(e.run("inspect", "-f", "{{json .RootFS.Layers}}", tag).stdout)
        ids[tag + "/top"] = chain_ids(layers)[-1]
    ids["images"] = " ".join(e.image_ids())
    return ids


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Engine, dict[str, str]]]:
    e = Engine()
    try:
        e.start()
        ids = populate(e)
        yield e, ids
    finally:
        e.destroy()


def copy_root(e: Engine) -> Engine:
    """A stopped copy of ``e``'s root in a new Engine (rsync -aHAX keeps whiteouts)."""
    twin = Engine()
    subprocess.run(
        ["rsync", "-aHAX", "--numeric-ids", "--sparse", f"{e.root}/", f"{twin.root}/"], check=True
    )
    return twin


def plan_json(root: Path, *extra: str) -> dict:
    out = run_cli("plan", "--root", str(root), "--config-file", "/nonexistent", "--json", *extra)
    return json.loads(out.stdout)


def test_healthy_root_with_running_daemon_plans_nothing(
    engine: tuple[Engine, dict[str, str]],
) -> None:
    e, _ = engine
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


def inject_crash_leftovers(root: Path, ids: dict[str, str]) -> set[tuple[str, str]]:
    """Undo the metadata steps a crash interrupts; return the (kind, path) the plan must list."""
    img = root / "image/overlay2"
    ldb = img / "layerdb/sha256"
    expected: set[tuple[str, str]] = set()

    def drop_image(image_id: str, tag: str) -> None:
        (img / "imagedb/content/sha256" / image_id[7:]).unlink()
        shutil.rmtree(img / "imagedb/metadata/sha256" / image_id[7:], ignore_errors=True)
        repos = json.loads((img / "repositories.json").read_text())
        del repos["Repositories"][tag.split(":")[0]]
        (img / "repositories.json").write_text(json.dumps(repos))

    def link_of(cache: str) -> str:
        return "overlay2/l/" + (root / "overlay2" / cache / "link").read_text()

    # An interrupted pull: the layer dir exists, its layerdb entry and image never did.
    top = ids["victim:1/top"][7:]
    cache = (ldb / top / "cache-id").read_text()
    drop_image(ids["victim:1"], "victim:1")
    shutil.rmtree(ldb / top)
    expected |= {("orphan-layer", f"overlay2/{cache}"), ("orphan-link", link_of(cache))}

    # An interrupted container removal: container dir and mount record gone, dirs left.
    mount = ids["doomed_mount"]
    shutil.rmtree(root / "containers" / ids["doomed"])
    shutil.rmtree(img / "layerdb/mounts" / ids["doomed"])
    expected |= {
        ("orphan-layer", f"overlay2/{mount}"),
        ("orphan-link", link_of(mount)),
        ("stale-init", f"overlay2/{mount}-init"),
        ("orphan-link", link_of(mount + "-init")),
    }

    # An interrupted layer deletion: layerdb entry renamed -removing, dir not yet gone.
    top = ids["gone:1/top"][7:]
    cache = (ldb / top / "cache-id").read_text()
    drop_image(ids["gone:1"], "gone:1")
    removing = f"{top}-3f9a1c0b7d2e4f60-removing"
    (ldb / top).rename(ldb / removing)
    expected |= {
        ("removing-layer", f"image/overlay2/layerdb/sha256/{removing}"),
        ("orphan-layer", f"overlay2/{cache}"),
        ("orphan-link", link_of(cache)),
    }

    # A dangling short link, and the temp dir of an interrupted registration.
    os.symlink("../" + "ab" * 32 + "/diff", root / "overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA")
    expected.add(("dangling-link", "overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA"))
    (img / "layerdb/tmp/write-set-4242").mkdir()
    expected.add(("write-set", "image/overlay2/layerdb/tmp/write-set-4242"))
    return expected


def assert_everything_works(e: Engine) -> None:
    """Every image runs, every container starts, data, whiteouts and build cache intact."""
    for image in e.image_ids():
        e.run("run", "--rm", "--network", "none", image, "/bin/sh", "-c", "true")
    out = e.run(
        "run",
        "--rm",
        "--network",
        "none",
        "app:1",
        "sh",
        "-c",
        "test ! -e /bin/vi && test ! -e /data/sub && cat /data/new /data/k",
    ).stdout
    assert out.split() == ["y", "keep"]
    assert e.run("start", "-a", "c_stopped").stdout.split() == ["data", "hello"]
    assert "hello" in e.run("logs", "c_stopped").stdout
    e.run("start", "c_running")
    assert "true" in e.run("inspect", "-f", "{{.State.Running}}", "c_running").stdout
    e.build("bk:2", MULTI, buildkit=True)
    e.run("run", "--rm", "--network", "none", "bk:2", "cat", "/artifact", "/done")


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
