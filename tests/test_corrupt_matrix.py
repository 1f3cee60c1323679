"""Every metadata file the readers parse, corrupted every way a crash or a hostile writer
can: the result is always a finding (or a freeze), never a crash, and the plan never
gains a path that was referenced before the corruption."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dockergc.api import plan_root, scan_root
from dockergc.cli.main import main
from dockergc.fixture.builder import RootBuilder
from dockergc.graph import mark
from dockergc.plan import Plan, Policy
from dockergc.store import fsread
from dockergc.store.snapshot import gather
from tests.conftest import NO_MOUNTS


def build(root: Path) -> dict[str, str]:
    """A root with images, containers, BuildKit records and two leftovers; file map."""
    b = RootBuilder(root)
    base = b.layer({"bin/sh": b"x" * 100})
    app = b.layer({"app": b"y" * 100}, base)
    b.image([base], ["base:1"])
    image = b.image([base, app], ["app:1"], parent=None)
    c = b.container(image, app, "web")
    b.buildkit_snapshot(base, {"o": b"o"})
    b.interrupted_pull(base, {"z": b"z"})
    gone = b.container(image, app, "gone")
    b.interrupted_container_removal(gone)
    b.finish()
    ldb = "image/overlay2/layerdb"
    return {
        "repositories.json": "image/overlay2/repositories.json",
        "image config": f"image/overlay2/imagedb/content/sha256/{image[7:]}",
        "layer cache-id": f"{ldb}/sha256/{app.chain_id[7:]}/cache-id",
        "layer diff": f"{ldb}/sha256/{app.chain_id[7:]}/diff",
        "layer parent": f"{ldb}/sha256/{app.chain_id[7:]}/parent",
        "layer size": f"{ldb}/sha256/{app.chain_id[7:]}/size",
        "mount-id": f"{ldb}/mounts/{c.id}/mount-id",
        "init-id": f"{ldb}/mounts/{c.id}/init-id",
        "mount parent": f"{ldb}/mounts/{c.id}/parent",
        "config.v2.json": f"containers/{c.id}/config.v2.json",
        "lower": f"overlay2/{c.mount_id}/lower",
        "link": f"overlay2/{base.cache_id}/link",
        "snapshots.db": "buildkit/snapshots.db",
    }


def _set(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "missing": lambda p: p.unlink(),
    "empty": lambda p: _set(p, b""),
    "truncated": lambda p: _set(p, p.read_bytes()[: max(1, len(p.read_bytes()) // 2)]),
    "invalid-encoding": lambda p: _set(p, b"\xff\xfe{not json\x00"),
    "wrong-types": lambda p: _set(p, b'{"rootfs": 3, "Repositories": [], "State": "x"}'),
    "non-hex-id": lambda p: _set(p, b"zz" * 32),
    "huge": lambda p: (p.unlink(), os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 100 * 2**20)),
    "symlink": lambda p: (p.unlink(), os.symlink("/etc/passwd", p)),
    "fifo": lambda p: (p.unlink(), os.mkfifo(p)),
}
# Losing these is a state dockerd itself writes (base layers, images without parents).
OPTIONAL_WHEN_MISSING = {
    "layer parent",
    "layer size",
    "init-id",
    "mount parent",
    "layer diff",
    "repositories.json",
    "snapshots.db",
}


# Still well-formed after the corruption: a truncated size is a smaller number, and an
# empty mount parent is what a container of a layer-less (scratch) image has.
# Files the graph never needs (chains come from image configs): checked by scan only.
SCAN_ONLY = {"layer diff", "layer parent", "layer size"}

WELL_FORMED = {("layer size", "truncated"), ("mount parent", "empty")}


def referenced(root: Path) -> set[str]:
    graph = mark(gather(root, NO_MOUNTS))
    return {f"overlay2/{n}" for n in graph.live} | {f"overlay2/l/{s}" for s in graph.live_links}


def reported(plan: Plan, rel: str) -> bool:
    where = rel.rsplit("/", 1)[0]
    return bool(plan.frozen) or any(
        k.path == rel or k.path.startswith(where) or k.kind == "dangling-tag" for k in plan.kept
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], set[str]]:
    root = tmp_path_factory.mktemp("pristine") / "docker"
    files = build(root)
    return root, files, referenced(root)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize(
    "target",
    [
        "repositories.json",
        "image config",
        "layer cache-id",
        "layer diff",
        "layer parent",
        "layer size",
        "mount-id",
        "init-id",
        "mount parent",
        "config.v2.json",
        "lower",
        "link",
        "snapshots.db",
    ],
)
def test_corruption_is_reported_and_never_frees_a_referenced_path(
    pristine: tuple[Path, dict[str, str], set[str]], tmp_path: Path, target: str, corruption: str
) -> None:
    src, files, live_before = pristine
    root = tmp_path / "docker"
    shutil.copytree(src, root, symlinks=True)
    rel = files[target]
    CORRUPTIONS[corruption](root / rel)
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    planned = {a.path for a in plan.actions}
    assert not planned & live_before, (target, corruption, planned & live_before)
    benign = (corruption == "missing" and target in OPTIONAL_WHEN_MISSING) or (
        (target, corruption) in WELL_FORMED
    )
    if benign:
        pass
    elif target in SCAN_ONLY:
        # plan reads only what deciding needs; scan reads and checks every file.
        snap, _ = scan_root(root, NO_MOUNTS)
        assert any(f.path == rel for f in snap.findings), (target, corruption, snap.findings)
    else:
        assert reported(plan, rel), (target, corruption, plan.kept, plan.frozen)
    json.dumps(plan.to_dict())


def test_unreadable_file_is_a_finding(
    pristine: tuple[Path, dict[str, str], set[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read permission (root ignores modes, so the refusal is simulated at open)."""
    src, files, live_before = pristine
    root = tmp_path / "docker"
    shutil.copytree(src, root, symlinks=True)
    real_open = os.open
    for target in ("image config", "mount-id", "config.v2.json", "lower"):
        victim = str(root / files[target])

        def deny(path: object, *a: object, _v: str = victim, **k: object) -> int:
            fd = k.get("dir_fd")
            full = str(path) if fd is None else os.readlink(f"/proc/self/fd/{fd}") + f"/{path}"
            if full == _v:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(fsread.os, "open", deny)
        _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
        monkeypatch.undo()
        assert not {a.path for a in plan.actions} & live_before
        assert reported(plan, files[target]), target


@pytest.mark.parametrize(
    "content,code,words",
    [
        (b"{broken", 2, "not valid JSON"),
        (b"\xff\xfe", 2, "UTF-8"),
        (b"[1, 2]", 2, "not a JSON object"),
        (b'{"data-root": 5}', 1, "does not exist"),
        (b'{"data-root": "/"}', 3, "system directory"),
        (b'{"storage-driver": "devicemapper", "data-root": "%ROOT%"}', 3, "devicemapper"),
    ],
)
def test_daemon_json_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, code: int, words: str
) -> None:
    root = tmp_path / "docker"
    build(root)
    cfg = tmp_path / "daemon.json"
    cfg.write_bytes(content.replace(b"%ROOT%", str(root).encode()))
    assert main(["plan", "--config-file", str(cfg)]) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


# -- valid ids moved between records ---------------------------------------------------
# Each class is a pool of files of one kind (or two pools, for ids that one kind of
# record can wrongly hold from another): every value is copied onto every other file of
# the class, and every pair is swapped. A copy leaves some dir claimed by nobody and one
# claimed twice; a swap leaves every dir claimed once, but by the wrong record.


def build_claims(root: Path) -> dict[str, list[Path]]:
    """A root whose every record kind exists at least three times; the pools by class."""
    b = RootBuilder(root)
    base = b.layer({"bin/sh": b"x"})
    app = b.layer({"app": b"a"}, base)
    tool = b.layer({"tool": b"t"}, base)
    top = b.layer({"top": b"p"}, app)
    images = [b.image([base, app], ["app:1"]), b.image([base, tool], ["tool:1"])]
    images.append(b.image([base, app, top], ["top:1"]))
    tops = [app, tool, top]
    cs = [b.container(images[i % 3], tops[i % 3], f"c{i}", running=i % 2 == 0) for i in range(3)]
    key = b.buildkit_snapshot(app, {"o": b"o"})
    pulled = b.interrupted_pull(app, {"z": b"z"})
    gone = b.container(images[0], app, "gone")
    b.interrupted_container_removal(gone)
    lone = b.image_mount(tool)  # no init-id: a type=image mount or the legacy builder's
    crashed = b.container(images[2], top, "crashed")  # its record outlived its dirs
    b.crash_during_container_removal(crashed)
    b.finish()
    ldb = root / "image/overlay2/layerdb"
    layers = [ldb / "sha256" / lay.chain_id[7:] for lay in (base, app, tool, top)]
    mounts = [ldb / "mounts" / c.id for c in (*cs, lone)]
    # One dir of each role (base and child layer, rw and init of a live and of a removed
    # container, BuildKit's, a leftover pull): link and lower files move between those.
    roles = [base.cache_id, app.cache_id, cs[0].mount_id, key, pulled, gone.mount_id]
    roles += [cs[0].mount_id + "-init", gone.mount_id + "-init"]
    dirs = [root / "overlay2" / name for name in roles]
    return {
        "mount-id": [m / "mount-id" for m in mounts],
        "init-id": [m / "init-id" for m in mounts if (m / "init-id").exists()],
        "cache-id": [lay / "cache-id" for lay in layers],
        "parent": [p / "parent" for p in layers[1:] + mounts],
        "lower": [d / "lower" for d in dirs if (d / "lower").exists()],
        "link": [d / "link" for d in dirs],
        "l/ target": [root / "overlay2/l" / (d / "link").read_text() for d in dirs],
    }


# Classes of one pool, and cross classes (a value of the first pool moved into the second).
CLAIM_CLASSES: dict[str, tuple[str, ...]] = {
    "mount-id": ("mount-id",),
    "init-id": ("init-id",),
    "cache-id": ("cache-id",),
    "parent": ("parent",),
    "lower": ("lower",),
    "link": ("link",),
    "l/ target": ("l/ target",),
    "mount-id/init-id": ("mount-id", "init-id"),
    "mount-id/cache-id": ("mount-id", "cache-id"),
    "init-id/cache-id": ("init-id", "cache-id"),
}


# A valid id that names no dir written over one record's: the record then dangles like
# one a crash left (its dirs removed first), and its real dirs are named by nothing.
FRESH_CLASSES: dict[str, str] = {
    "mount-id -> fresh id": "mount-id",
    "init-id -> fresh id": "init-id",
}
MOVE_CLASSES = sorted([*CLAIM_CLASSES, *FRESH_CLASSES])


def fresh_id(path: Path, variant: int) -> str:
    """A 64-hex id no dir has (derived from the file, so runs repeat), or its -init twin."""
    hexid = hashlib.sha256(f"{path}\0fresh".encode()).hexdigest()
    return hexid + ("-init" if variant % 2 else "")


def _value(path: Path) -> str:
    return os.readlink(path) if path.is_symlink() else path.read_text()


def _put(path: Path, value: str) -> None:
    if path.is_symlink():
        path.unlink()
        os.symlink(value, path)
    else:
        path.write_text(value)


def moves(pools: dict[str, list[Path]], cls: str) -> list[dict[Path, str]]:
    """Every copy and every swap of the class, as {file: new value}; for a fresh class,
    every file of its pool given a fresh id, bare and with -init."""
    if cls in FRESH_CLASSES:
        return [{f: fresh_id(f, v)} for f in pools[FRESH_CLASSES[cls]] for v in (0, 1)]
    first, second = (CLAIM_CLASSES[cls] * 2)[:2]
    a_pool, b_pool = pools[first], pools[second]
    out: list[dict[Path, str]] = []
    swapped: set[frozenset[Path]] = set()
    for a in a_pool:
        for b in b_pool:
            if a == b or _value(a) == _value(b):
                continue
            out.append({b: _value(a)})  # a's value copied over b's
            if first != second:
                out.append({a: _value(b)})  # and the other way
            if frozenset((a, b)) not in swapped:
                swapped.add(frozenset((a, b)))
                out.append({a: _value(b), b: _value(a)})
    return out


@pytest.fixture(scope="module")
def claims_root(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, list[Path]], set[str]]:
    root = tmp_path_factory.mktemp("claims") / "docker"
    pools = build_claims(root)
    return root, pools, referenced(root)


# The figures the README quotes: mutations run per class (a regression guard, too).
MOVE_COUNTS = {
    "mount-id": 18,
    "init-id": 9,
    "cache-id": 18,
    "parent": 54,
    "lower": 45,
    "link": 84,
    "l/ target": 84,
    "mount-id/init-id": 36,
    "mount-id/cache-id": 48,
    "init-id/cache-id": 36,
    "mount-id -> fresh id": 8,
    "init-id -> fresh id": 6,
}


@pytest.mark.parametrize("cls", MOVE_CLASSES)
def test_ids_moved_between_records_never_free_a_referenced_path(
    claims_root: tuple[Path, dict[str, list[Path]], set[str]], cls: str
) -> None:
    root, pools, live_before = claims_root
    changes = moves(pools, cls)
    frozen = 0
    for change in changes:
        before = {path: _value(path) for path in change}
        try:
            for path, value in change.items():
                _put(path, value)
            _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
            if cls == "parent":  # only scan reads parent files (plan has no use for them)
                scan_root(root, NO_MOUNTS)
        finally:
            for path, value in before.items():
                _put(path, value)
        planned = {p for a in plan.actions for p in a.paths} & live_before
        assert not planned, (cls, {str(p): v for p, v in change.items()}, planned, plan.frozen)
        frozen += bool(plan.frozen)
    print(f"{cls}: {len(changes)} mutations ({frozen} frozen), 0 referenced planned, 0 errors")
    assert len(changes) >= MOVE_COUNTS[cls]


def claim_pools(root: Path) -> dict[str, list[Path]]:
    """The same pools, every file of each kind in any root (for random roots)."""
    ldb = root / "image/overlay2/layerdb"
    dirs = sorted(p for p in (root / "overlay2").iterdir() if p.name != "l")
    return {
        "mount-id": sorted(ldb.glob("mounts/*/mount-id")),
        "init-id": sorted(ldb.glob("mounts/*/init-id")),
        "cache-id": sorted(ldb.glob("sha256/*/cache-id")),
        "parent": sorted(ldb.glob("*/*/parent")),
        "lower": [d / "lower" for d in dirs if (d / "lower").is_file()],
        "link": [d / "link" for d in dirs if (d / "link").is_file()],
        "l/ target": sorted((root / "overlay2/l").iterdir()),
    }


def move_ids(root: Path, cls: str, a: int, b: int, swap: bool) -> None:
    """Move one value of class ``cls`` (picks modulo the pool sizes): copy or swap; for
    a fresh class, give the picked file a fresh id (``swap``: with -init)."""
    pools = claim_pools(root)
    if cls in FRESH_CLASSES:
        pool = pools[FRESH_CLASSES[cls]]
        if pool:
            _put(pool[a % len(pool)], fresh_id(pool[a % len(pool)], swap + b))
        return
    first, second = (CLAIM_CLASSES[cls] * 2)[:2]
    if not pools[first] or not pools[second]:
        return
    src, dst = pools[first][a % len(pools[first])], pools[second][b % len(pools[second])]
    # A corruption may have made either side a FIFO or a dir: reading one would block.
    if src == dst or not all(p.is_symlink() or p.is_file() for p in (src, dst)):
        return
    try:
        value, old = _value(src), _value(dst)
    except (UnicodeDecodeError, OSError):  # a corruption got there first: nothing to move
        return
    _put(dst, value)
    if swap:
        _put(src, old)
