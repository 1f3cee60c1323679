"""Input no reader can parse, entries that vanish while read, records that claim one dir
twice, a bbolt file padded to gigabytes: each is a finding or a freeze, exit 0, never an
internal error, and nothing a record referenced is planned."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.fixture.bbolt_write import PAGE, write_bbolt
from dockergc.fixture.builder import Container, Layer, RootBuilder
from dockergc.plan import Plan, Policy
from dockergc.store import bbolt, snapshot
from tests.conftest import NO_MOUNTS, on_root, run_cli

DEEP = "[" * 3000 + "]" * 3000  # valid JSON; Go's decoder takes 10,000 levels


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        b = self.b = RootBuilder(root)
        self.base = b.layer({"bin/sh": b"s"})
        self.app = b.layer({"app": b"a"}, self.base)
        self.image = b.image([self.base, self.app], ["app:1"])
        self.running = b.container(self.image, self.app, "running", running=True)
        self.stopped = b.container(self.image, self.app, "stopped")
        self.orphan = b.interrupted_pull(self.base, {"o": b"o"})
        b.finish()

    def mounts(self, c: Container) -> Path:
        return self.root / "image/overlay2/layerdb/mounts" / c.id

    def layerdb(self, layer: Layer) -> Path:
        return self.root / "image/overlay2/layerdb/sha256" / layer.chain_id[7:]

    def plan(self) -> Plan:
        return plan_root(self.root, Policy(min_age=0), NO_MOUNTS)[2]

    def referenced(self) -> set[str]:
        """Every dir a record names (as the pristine root was built)."""
        names = {self.base.cache_id, self.app.cache_id}
        for c in (self.running, self.stopped):
            names |= {c.mount_id, c.mount_id + "-init"}
        return {f"overlay2/{n}" for n in names}


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path / "docker")


def _cli_plan(root: Path) -> dict[str, object]:
    proc = run_cli("plan", *on_root(root), "--json")
    assert "internal error" not in proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


# -- input a reader cannot parse ---------------------------------------------------------


def _deep_image_config(w: World) -> str:
    """Replace the image's config by one with a 3000-deep value, named by its digest."""
    content = w.root / "image/overlay2/imagedb/content/sha256"
    old = content / w.image[7:]
    data = old.read_bytes()[:-1] + b',"x":' + DEEP.encode() + b"}"
    new = hashlib.sha256(data).hexdigest()
    old.unlink()
    (content / new).write_bytes(data)
    repos = w.root / "image/overlay2/repositories.json"
    repos.write_text(repos.read_text().replace(w.image[7:], new))
    return f"image/overlay2/imagedb/content/sha256/{new}"


def _deep_container_config(w: World) -> str:
    rel = f"containers/{w.stopped.id}/config.v2.json"
    doc = (w.root / rel).read_text()
    (w.root / rel).write_text(doc[:-1] + ', "x": ' + DEEP + "}")
    return rel


def _deep_tags(w: World) -> str:
    rel = "image/overlay2/repositories.json"
    (w.root / rel).write_text('{"Repositories": {}, "x": ' + DEEP + "}")
    return rel


@pytest.mark.parametrize("make", [_deep_image_config, _deep_container_config, _deep_tags])
def test_deeply_nested_json_is_a_finding_not_an_internal_error(
    w: World, make: Callable[[World], str]
) -> None:
    rel = make(w)
    plan = _cli_plan(w.root)
    kept = {k["path"]: k for k in plan["kept"]}  # type: ignore[attr-defined]
    assert rel in kept and "too deep" in kept[rel]["reason"], plan["kept"]
    planned = {a["path"] for a in plan["actions"]}  # type: ignore[attr-defined]
    assert not planned & w.referenced()
    if make is not _deep_tags:  # an unreadable image or container config hides references
        assert plan["frozen"], plan
    # gc takes the same path and exits 0 with nothing moved.
    proc = run_cli("gc", *on_root(w.root), "--yes", "--json")
    assert "internal error" not in proc.stderr
    assert all((w.root / p).exists() for p in w.referenced())


def test_deeply_nested_daemon_json_is_a_usage_error(tmp_path: Path, w: World) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"x": ' + DEEP + "}")
    proc = run_cli("plan", "--root", str(w.root), "--config-file", str(cfg), check=2)
    assert str(cfg) in proc.stderr and "too deep" in proc.stderr, proc.stderr


# -- entries that vanish while read ------------------------------------------------------


def test_l_link_vanishing_between_listing_and_reading_is_skipped(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = (w.root / "overlay2" / w.orphan / "link").read_text()
    real = os.readlink

    def racing_readlink(path: str, *args: object, **kwargs: object) -> str:
        if path == victim:  # the daemon removes l/<short> right after our listing
            os.unlink(path, dir_fd=kwargs.get("dir_fd"))  # type: ignore[arg-type]
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "readlink", racing_readlink)
    plan = w.plan()
    monkeypatch.undo()
    assert any(k.path == f"overlay2/l/{victim}" and k.kind == "vanished" for k in plan.kept)
    assert not {a.path for a in plan.actions} & w.referenced()


def test_layer_dir_vanishing_between_listing_and_reading_is_skipped(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = snapshot.list_overlay

    def racing_list(root: Path) -> object:
        listed = real(root)
        shutil.rmtree(root / "overlay2" / w.orphan)  # removed after the listing
        return listed

    monkeypatch.setattr(snapshot, "list_overlay", racing_list)
    plan = w.plan()
    assert any(k.path == f"overlay2/{w.orphan}" and k.kind == "vanished" for k in plan.kept)
    assert f"overlay2/{w.orphan}" not in {a.path for a in plan.actions}
    assert not plan.frozen


@pytest.mark.parametrize("which", ["layer", "mount"])
def test_layerdb_entry_vanishing_while_read_freezes_and_says_so(
    w: World, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """A record that vanished may be the daemon deleting it (layers go -removing first):
    the dir it named would look unreferenced, so nothing is deleted this run."""
    from dockergc.store import layers

    victim = w.layerdb(w.app) if which == "layer" else w.mounts(w.stopped)
    reader = "_read_layer" if which == "layer" else "_read_mount"
    real = getattr(layers, reader)

    def racing(dfd: int | None, name: str, *args: object) -> object:
        if name == victim.name:  # removed after the listing, before the read
            shutil.rmtree(victim)
        return real(dfd, name, *args)

    monkeypatch.setattr(layers, reader, racing)
    plan = w.plan()
    rel = str(victim.relative_to(w.root))
    assert any(k.path == rel and k.kind == "vanished" for k in plan.kept), plan.kept
    assert plan.frozen and not plan.actions


# -- two records claiming one dir --------------------------------------------------------


def _copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


CLAIMS: dict[str, Callable[[World], None]] = {
    # The attack of issue 12: the stopped container's mount-id written into the running one's.
    "mount-id copied": lambda w: _copy(
        w.mounts(w.stopped) / "mount-id", w.mounts(w.running) / "mount-id"
    ),
    "init-id copied": lambda w: _copy(
        w.mounts(w.stopped) / "init-id", w.mounts(w.running) / "init-id"
    ),
    "cache-id copied between layers": lambda w: _copy(
        w.layerdb(w.base) / "cache-id", w.layerdb(w.app) / "cache-id"
    ),
    "cache-id copied into a mount-id": lambda w: _copy(
        w.layerdb(w.app) / "cache-id", w.mounts(w.running) / "mount-id"
    ),
    "link file copied": lambda w: _copy(
        w.root / "overlay2" / w.base.cache_id / "link",
        w.root / "overlay2" / w.orphan / "link",
    ),
}


def _named(w: World, name: str) -> list[str]:
    """What the freeze reason must name: both records (or both dirs, for link files)."""
    return {
        "mount-id copied": ["container stopped", "container running"],
        "init-id copied": ["container stopped", "container running"],
        "cache-id copied between layers": [w.base.chain_id[7:19], w.app.chain_id[7:19]],
        "cache-id copied into a mount-id": [w.app.chain_id[7:19], "container running"],
        "link file copied": [w.base.cache_id, w.orphan],
    }[name]


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_a_dir_claimed_twice_freezes_naming_both_records(w: World, name: str) -> None:
    CLAIMS[name](w)
    plan = _cli_plan(w.root)
    assert plan["frozen"], plan
    assert not {a["path"] for a in plan["actions"]} & w.referenced()  # type: ignore[attr-defined]
    text = " ".join(plan["frozen"])  # type: ignore[arg-type]
    assert all(n in text for n in _named(w, name)), text


def test_the_running_containers_rw_dir_is_never_planned_after_a_mount_id_swap(w: World) -> None:
    CLAIMS["mount-id copied"](w)
    plan = w.plan()
    assert f"overlay2/{w.running.mount_id}" not in {a.path for a in plan.actions}
    assert any(w.stopped.mount_id in f for f in plan.frozen), plan.frozen


# -- bbolt: hostile structure and size ---------------------------------------------------


def test_bbolt_branch_chain_deeper_than_the_limit_is_an_error_not_a_crash() -> None:
    """Branch pages each pointing at the next, thousands deep: no cycle, no recursion."""
    data = bytearray(write_bbolt({b"k": {}}))
    first, depth = 3, 3000
    data += bytes(PAGE * depth)
    for i in range(depth):
        at = (first + i) * PAGE
        struct.pack_into("<QHHI", data, at, first + i, bbolt.BRANCH, 1, 0)
        struct.pack_into("<IIQ", data, at + 16, 0, 0, first + i + 1)
    with pytest.raises(bbolt.BboltError):
        bbolt.parse(bytes(data))


def test_bbolt_page_reached_twice_is_an_error() -> None:
    data = bytearray(write_bbolt({b"k": {}}))
    data += bytes(PAGE)
    struct.pack_into("<QHHI", data, 3 * PAGE, 3, bbolt.BRANCH, 2, 0)
    struct.pack_into("<IIQ", data, 3 * PAGE + 16, 0, 0, 4)
    struct.pack_into("<IIQ", data, 3 * PAGE + 32, 0, 0, 4)
    struct.pack_into("<QHHI", data, 4 * PAGE, 4, bbolt.LEAF, 0, 0)
    with pytest.raises(bbolt.BboltError, match="twice"):
        bbolt.parse(bytes(data))


def test_bbolt_overlapping_leaf_elements_are_an_error_not_a_memory_bomb() -> None:
    """Every element of a leaf pointing at the same large value: without the layout check
    each would be a fresh copy of the span (65,535 x 64 MiB at worst)."""
    data = bytearray(write_bbolt({b"k": {}}))
    count, span = 200, 64 * 1024
    data += bytes(PAGE * (1 + span // PAGE))
    at = 3 * PAGE
    struct.pack_into("<QHHI", data, at, 3, bbolt.LEAF, count, span // PAGE)
    first = 16 + count * bbolt.LEAF_ELEM.size
    for i in range(count):
        elem = at + 16 + i * bbolt.LEAF_ELEM.size
        # pos is relative to the element's own header: all point at one shared value
        bbolt.LEAF_ELEM.pack_into(
            data, elem, 0, first - (16 + i * bbolt.LEAF_ELEM.size), 1, span - first - 1
        )
    reader = bbolt._Reader(bbolt._Source(data=bytes(data)))
    with pytest.raises(bbolt.BboltError, match="overlap"):
        reader._walk_page(reader._page(3), bbolt.Bucket(), 0)


PEAK_RSS = """
import json, resource, sys
from pathlib import Path
from dockergc.api import plan_root
from dockergc.plan import Policy
from dockergc.store.mountinfo import MountTable
snap, _, plan = plan_root(Path(sys.argv[1]), Policy(min_age=0), MountTable((), 1, 0))
peak = max(resource.getrusage(w).ru_maxrss for w in
           (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"rss_kb": peak, "keys": sorted(snap.buildkit.snapshot_keys),
                  "chains": sorted(snap.buildkit.chain_ids), "hex": len(snap.buildkit.hex_ids),
                  "findings": [f.path for f in snap.findings], "frozen": list(plan.frozen),
                  "actions": [a.path for a in plan.actions]}))
"""


def plan_peak(root: Path) -> dict[str, object]:
    """plan_root in a fresh process (readers may fork): its result and its peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def assert_padding_costs_no_memory(root: Path) -> dict[str, object]:
    """Pad buildkit/snapshots.db with 2 GiB of sparse zeros: same records, RSS <= 300 MB."""
    before = plan_peak(root)
    db = root / "buildkit/snapshots.db"
    os.truncate(db, db.stat().st_size + 2 * 2**30)
    after = plan_peak(root)
    for key in ("keys", "chains", "hex", "findings", "frozen", "actions"):
        assert after[key] == before[key], key
    assert int(after["rss_kb"]) <= 300 * 1024, after["rss_kb"]  # type: ignore[call-overload]
    return after


def test_snapshots_db_padded_to_2_gib_parses_the_same_in_bounded_memory(w: World) -> None:
    for i in range(40):  # a snapshots.db of several pages, with the fixture's layout
        w.b.buildkit_snapshot(w.base, {"f": str(i).encode()})
    w.b.finish()
    after = assert_padding_costs_no_memory(w.root)
    assert len(after["keys"]) == 40  # type: ignore[arg-type]
