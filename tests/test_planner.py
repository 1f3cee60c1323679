"""Table-driven planner cases on synthetic roots: what is planned, what is kept and why."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.fixture.builder import Layer, RootBuilder
from dockergc.plan import Plan, Policy
from dockergc.store.mountinfo import MountEntry, MountTable
from tests.conftest import NO_MOUNTS

FILES = {"bin/busybox": b"\x7fELF" + b"\0" * 5000}


@dataclass
class World:
    b: RootBuilder
    base: Layer
    app: Layer
    app_id: str
    expect: set[tuple[str, str]]

    @property
    def root(self) -> Path:
        return self.b.root


def world(tmp_path: Path) -> World:
    b = RootBuilder(tmp_path / "docker")
    base = b.layer(FILES)
    app = b.layer({"app/x": b"x" * 3000}, base)
    b.image([base], ["base:1"])
    app_id = b.image([base, app], ["app:1"])
    b.container(app_id, app, "web", running=True)
    b.volume("data", {"f": b"1"})
    b.buildkit_snapshot(base, {"out": b"o"})
    return World(b, base, app, app_id, set())


def link(w: World, name: str) -> str:
    return "overlay2/l/" + (w.root / "overlay2" / name / "link").read_text()


def plan_of(w: World, mounts: MountTable = NO_MOUNTS, **policy: object) -> Plan:
    w.b.finish()
    _, _, p = plan_root(w.root, Policy(min_age=0, **policy), mounts)  # type: ignore[arg-type]
    return p


def got(p: Plan) -> set[tuple[str, str]]:
    return {(a.kind, a.path) for a in p.actions}


# -- scenarios: each mutates a healthy world and says what must be planned ------------------


def healthy(w: World) -> None:
    pass


def interrupted_pull(w: World) -> None:
    name = w.b.interrupted_pull(w.app, {"big": b"z" * 10000})
    w.expect |= {("orphan-layer", f"overlay2/{name}"), ("orphan-link", link(w, name))}


def interrupted_container_removal(w: World) -> None:
    c = w.b.container(w.app_id, w.app, "gone")
    w.b.interrupted_container_removal(c)
    w.expect |= {
        ("orphan-layer", f"overlay2/{c.mount_id}"),
        ("orphan-link", link(w, c.mount_id)),
        ("stale-init", f"overlay2/{c.mount_id}-init"),
        ("orphan-link", link(w, c.mount_id + "-init")),
    }


def interrupted_layer_removal(w: World) -> None:
    doomed = w.b.layer({"old": b"o"}, w.base)
    name = w.b.interrupted_layer_removal(doomed)
    w.expect |= {
        ("removing-layer", f"image/overlay2/layerdb/sha256/{name}"),
        ("orphan-layer", f"overlay2/{doomed.cache_id}"),
        ("orphan-link", f"overlay2/l/{doomed.link}"),
    }


def dangling_link_and_write_set(w: World) -> None:
    short = w.b.dangling_link()
    ws = w.b.write_set()
    w.expect |= {
        ("dangling-link", f"overlay2/l/{short}"),
        ("write-set", f"image/overlay2/layerdb/tmp/{ws}"),
    }


def untagged_layers_and_intermediates(w: World) -> None:
    # An untagged (intermediate) image is live; a layer no image, mount record or
    # BuildKit record names (a crash mid-rmi or mid-load) is one item: record, dir, link.
    layer = w.b.layer({"cached": b"c"}, w.base)
    w.b.image([w.base, w.app], [], parent=w.app_id)
    w.expect.add(("unreferenced-layer", f"image/overlay2/layerdb/sha256/{layer.chain_id[7:]}"))


def mount_record_without_container(w: World) -> None:
    # type=image mounts and builders leave records with no container dir: they pin.
    c = w.b.container(w.app_id, w.app, "builder")
    shutil.rmtree(w.root / "containers" / c.id)


def orphan_with_child_orphan(w: World) -> None:
    parent = w.b.interrupted_pull(w.base, {"p": b"p"})
    plink = (w.root / "overlay2" / parent / "link").read_text()
    child = w.b.interrupted_pull(None, {"c": b"c"})
    (w.root / "overlay2" / child / "lower").write_text(f"l/{plink}")
    for n in (parent, child):
        w.expect |= {("orphan-layer", f"overlay2/{n}"), ("orphan-link", link(w, n))}


def crash_left_a_dangling_mount_record(w: World) -> None:
    # moby removes the rw dir, the -init dir, then the record: a crash in between leaves
    # a record naming no dir. Nothing to plan for it, and no other leftover is held (one
    # on the same parent layer, shaped like the record's dirs, would be: see DANGLING).
    solo = w.b.layer({"solo": b"s"}, w.base)
    c = w.b.container(w.b.image([w.base, solo], ["solo:1"]), solo, "crashed")
    w.b.crash_during_container_removal(c)
    w.b.crash_during_container_removal(w.b.image_mount(solo))  # one without init-id


SCENARIOS: list[Callable[[World], None]] = [
    healthy,
    interrupted_pull,
    interrupted_container_removal,
    interrupted_layer_removal,
    dangling_link_and_write_set,
    untagged_layers_and_intermediates,
    mount_record_without_container,
    orphan_with_child_orphan,
    crash_left_a_dangling_mount_record,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_plans_exactly_the_leftovers(tmp_path: Path, scenario: Callable[[World], None]) -> None:
    w = world(tmp_path)
    scenario(w)
    p = plan_of(w)
    assert p.frozen == ()
    assert got(p) == w.expect
    for a in p.actions:
        assert a.reason and a.evidence, a
        assert a.bytes > 0


def test_all_leftovers_together_and_order(tmp_path: Path) -> None:
    w = world(tmp_path)
    for s in SCENARIOS:
        s(w)
    p = plan_of(w)
    assert got(p) == w.expect
    kinds = [a.kind for a in p.actions]
    # Dirs go before the links and records that go with them; layerdb temp dirs last.
    last_dir = max(i for i, k in enumerate(kinds) if k in ("stale-init", "orphan-layer"))
    assert last_dir < kinds.index("orphan-link")
    assert kinds[-1] == "write-set"
    assert p.to_dict() == json.loads(json.dumps(p.to_dict()))
    assert Plan.from_dict(p.to_dict()) == p


def test_grace_period_keeps_young_candidates_with_reason(tmp_path: Path) -> None:
    w = world(tmp_path)
    interrupted_pull(w)
    w.b.finish()
    _, _, p = plan_root(w.root, Policy(min_age=3600), NO_MOUNTS)
    assert p.actions == ()
    reasons = {k.path: k.reason for k in p.kept}
    for _, path in w.expect:
        assert "younger than the grace period" in reasons[path]


def test_young_removing_record_keeps_its_dir_whatever_the_dir_age(tmp_path: Path) -> None:
    import time

    w = world(tmp_path)
    interrupted_layer_removal(w)
    w.b.finish()
    removing = next(p for k, p in w.expect if k == "removing-layer")
    dir_path = next(p for k, p in w.expect if k == "orphan-layer")
    time.sleep(2)
    (w.root / removing / "touch").write_text("x")  # the daemon renamed it a moment ago
    now = time.time()
    _, _, young = plan_root(w.root, Policy(min_age=1.5, now=now + 0.3), NO_MOUNTS)
    kept = {k.path: k.reason for k in young.kept}
    assert "daemon may be deleting it now" in kept[dir_path]
    assert removing in kept
    _, _, old = plan_root(w.root, Policy(min_age=1.5, now=now + 2), NO_MOUNTS)
    assert {dir_path, removing} <= {a.path for a in old.actions}


def test_exclude_keeps_matching_paths_and_their_links(tmp_path: Path) -> None:
    w = world(tmp_path)
    interrupted_pull(w)
    orphan = next(p for k, p in w.expect if k == "orphan-layer")
    p = plan_of(w, excludes=(orphan.split("/")[1][:8] + "*",))
    assert p.actions == ()
    reasons = {k.path: k.reason for k in p.kept}
    assert reasons[orphan].startswith("excluded by --exclude")
    link_path = next(p for k, p in w.expect if k == "orphan-link")
    assert reasons[link_path].startswith(f"kept with {orphan}")


def test_buildkit_named_ids_are_kept(tmp_path: Path) -> None:
    w = world(tmp_path)
    name = w.b.interrupted_pull(w.base, {"b": b"b"})
    w.b.buildkit[b"somekey"] = {b"committed": name.encode()}
    p = plan_of(w)
    assert p.actions == ()


def test_buildkit_hex_id_anywhere_in_its_files_is_kept(tmp_path: Path) -> None:
    w = world(tmp_path)
    name = w.b.interrupted_pull(w.base, {"b": b"b"})
    w.b.finish()
    (w.root / "buildkit/metadata_v2.db").write_bytes(b"\0garbage" + name.encode() + b"\0")
    _, _, p = plan_root(w.root, Policy(min_age=0), NO_MOUNTS)
    assert p.actions == ()
    assert "BuildKit" in {k.path: k.reason for k in p.kept}.get(f"overlay2/{name}", "BuildKit")


def test_live_lower_chain_keeps_parents_without_layerdb(tmp_path: Path) -> None:
    # A live rw dir whose lower names an otherwise unreferenced dir: that dir is live.
    w = world(tmp_path)
    hidden = w.b.interrupted_pull(w.base, {"h": b"h"})
    hlink = (w.root / "overlay2" / hidden / "link").read_text()
    c = w.b.container(w.app_id, w.app, "odd")
    lower = w.root / "overlay2" / c.mount_id / "lower"
    lower.write_text(lower.read_text() + f":l/{hlink}")
    p = plan_of(w)
    assert p.actions == ()


def test_mounted_dirs_are_kept(tmp_path: Path) -> None:
    w = world(tmp_path)
    name = w.b.interrupted_pull(w.base, {"m": b"m"})
    root = str(w.root)
    overlay = MountEntry(
        1,
        "0:99",
        "/",
        "/merged",
        "overlay",
        "overlay",
        f"rw,lowerdir=l/{(w.root / 'overlay2' / name / 'link').read_text()},"
        f"upperdir={root}/overlay2/zz/diff,workdir={root}/overlay2/zz/work",
    )
    p = plan_of(w, MountTable((overlay,), 2, 0))
    assert p.actions == ()
    # and a plain mount point inside a candidate
    w2 = world(tmp_path / "two")
    name2 = w2.b.interrupted_pull(w2.base, {"m": b"m"})
    point = MountEntry(1, "0:99", "/", f"{w2.root}/overlay2/{name2}/merged", "tmpfs", "tmpfs", "")
    p2 = plan_of(w2, MountTable((point,), 2, 0))
    assert {k.path for k in p2.kept if k.reason.startswith("mounted")} >= {f"overlay2/{name2}"}
    assert p2.actions == ()


FREEZES: dict[str, Callable[[World], None]] = {
    "image needs a layer layerdb lacks": lambda w: shutil.rmtree(
        w.root / "image/overlay2/layerdb/sha256" / w.app.chain_id[7:]
    ),
    "container without mount record": lambda w: shutil.rmtree(
        next((w.root / "image/overlay2/layerdb/mounts").iterdir())
    ),
    "unreadable image config": lambda w: (
        w.root / "image/overlay2/imagedb/content/sha256" / w.app_id[7:]
    ).write_text("{not json"),
    "unreadable mount record": lambda w: (
        next((w.root / "image/overlay2/layerdb/mounts").iterdir()) / "mount-id"
    ).write_text("../../etc"),
    "unreadable container config": lambda w: (
        next((w.root / "containers").iterdir()) / "config.v2.json"
    ).write_text(""),
    "layer without cache-id": lambda w: (
        w.root / "image/overlay2/layerdb/sha256" / w.base.chain_id[7:] / "cache-id"
    ).unlink(),
    "live layer with empty lower": lambda w: (
        w.root / "overlay2" / w.app.cache_id / "lower"
    ).write_text(""),
    "live lower names a missing link": lambda w: (
        w.root / "overlay2" / w.app.cache_id / "lower"
    ).write_text("l/AAAAAAAAAAAAAAAAAAAAAAAAAA"),
    "unreadable BuildKit file": lambda w: (
        os.chmod(w.root / "buildkit/cache.db", 0o000)
        if os.geteuid() != 0
        else (w.root / "buildkit/cache.db").unlink() or os.mkfifo(w.root / "buildkit/cache.db")
    ),
}


@pytest.mark.parametrize("name", sorted(FREEZES))
def test_inconsistent_state_freezes_every_delete(tmp_path: Path, name: str) -> None:
    w = world(tmp_path)
    interrupted_pull(w)
    interrupted_container_removal(w)
    w.b.finish()
    FREEZES[name](w)
    _, _, p = plan_root(w.root, Policy(min_age=0), NO_MOUNTS)
    assert p.frozen, f"{name}: not frozen"
    assert p.actions == ()
    kept = {k.path: k.reason for k in p.kept}
    for _, path in w.expect:
        assert kept[path].startswith("frozen: ")


def test_unknown_dirs_are_reported_and_never_planned(tmp_path: Path) -> None:
    w = world(tmp_path)
    (w.root / "overlay2" / "my-backup").mkdir()
    (w.root / "overlay2" / ("A" * 64)).mkdir()  # upper-case: not a Docker id
    p = plan_of(w)
    assert p.actions == ()
    kinds = {k.path: k.kind for k in p.kept}
    assert kinds["overlay2/my-backup"] == "unknown-dir"
    assert kinds["overlay2/" + "A" * 64] == "unknown-dir"


def test_symlink_out_of_root_is_not_followed_for_size(tmp_path: Path) -> None:
    w = world(tmp_path)
    name = w.b.interrupted_pull(w.base, {"s": b"s"})
    big = tmp_path / "outside.bin"
    big.write_bytes(b"\1" * 5_000_000)
    os.symlink(big, w.root / "overlay2" / name / "diff" / "escape")
    os.symlink("/", w.root / "overlay2" / name / "diff" / "slash")
    p = plan_of(w)
    action = next(a for a in p.actions if a.path == f"overlay2/{name}")
    assert action.bytes < 1_000_000


def test_hard_links_are_counted_once(tmp_path: Path) -> None:
    w = world(tmp_path)
    a = w.b.interrupted_pull(w.base, {"one": b"1" * 200_000})
    b2 = w.b.interrupted_pull(w.base, {"two": b"2"})
    os.link(w.root / "overlay2" / a / "diff/one", w.root / "overlay2" / b2 / "diff/same")
    p = plan_of(w)
    total = sum(x.bytes for x in p.actions if x.kind == "orphan-layer")
    assert 200_000 <= total < 300_000


# -- a mount record whose id names no dir --------------------------------------------------
# Its real dirs are named by no record now: each is kept, named, when its lower file is
# what that record's dirs would list (the parent layer's link, then the parent's lower;
# an rw dir on an init dir has the init dir's link first). Leftovers that do not fit are
# still planned.

MOUNTS = "image/overlay2/layerdb/mounts"


def _fresh() -> str:
    import secrets

    return secrets.token_hex(32)


def image_mount_id_rewritten(w: World) -> tuple[str, set[str]]:
    m = w.b.image_mount(w.app)
    (w.root / MOUNTS / m.id / "mount-id").write_text(_fresh())
    return m.id, {m.mount_id}


def image_mount_id_rewritten_parent_lost(w: World) -> tuple[str, set[str]]:
    m = w.b.image_mount(w.app)
    (w.root / MOUNTS / m.id / "mount-id").write_text(_fresh())
    (w.root / MOUNTS / m.id / "parent").unlink()
    return m.id, {m.mount_id}


def scratch_image_mount_id_rewritten(w: World) -> tuple[str, set[str]]:
    m = w.b.image_mount(None)
    (w.root / MOUNTS / m.id / "mount-id").write_text(_fresh())
    return m.id, {m.mount_id}


def container_ids_rewritten_together(w: World) -> tuple[str, set[str]]:
    c = w.b.container(w.app_id, w.app, "moved")
    fresh = _fresh()
    (w.root / MOUNTS / c.id / "mount-id").write_text(fresh)
    (w.root / MOUNTS / c.id / "init-id").write_text(fresh + "-init")
    return c.id, {c.mount_id, c.mount_id + "-init"}


# name -> (what it does, whether an unrelated pull on the base layer is still planned:
# with the record's parent unknown, any dir shaped like a container's on a live layer is
# kept, that pull included).
DANGLING: dict[str, tuple[Callable[[World], tuple[str, set[str]]], bool]] = {
    "image mount: mount-id names no dir": (image_mount_id_rewritten, True),
    "image mount: mount-id names no dir, parent lost": (
        image_mount_id_rewritten_parent_lost,
        False,
    ),
    "scratch image mount: mount-id names no dir": (scratch_image_mount_id_rewritten, False),
    "container: mount-id and init-id name no dir": (container_ids_rewritten_together, True),
}


@pytest.mark.parametrize("name", sorted(DANGLING))
def test_dirs_a_mount_record_may_have_meant_are_kept_and_named(tmp_path: Path, name: str) -> None:
    w = world(tmp_path)
    mutate, pull_planned = DANGLING[name]
    pulled = w.b.interrupted_pull(w.base, {"p": b"p"})
    dangling_link_and_write_set(w)  # fit no record: always planned
    record, dirs = mutate(w)
    p = plan_of(w)
    assert p.frozen == ()
    planned = {a.path for a in p.actions}
    assert not planned & {f"overlay2/{d}" for d in dirs}, planned
    kept = {k.path: (k.kind, k.reason) for k in p.kept}
    why = f"may be the rw dir of mount record {record} (its mount-id names no dir)"
    for d in dirs:
        assert kept[f"overlay2/{d}"] == ("maybe-referenced", why)
    if pull_planned:
        w.expect |= {("orphan-layer", f"overlay2/{pulled}"), ("orphan-link", link(w, pulled))}
    else:
        assert kept[f"overlay2/{pulled}"] == ("maybe-referenced", why)
    assert got(p) == w.expect
