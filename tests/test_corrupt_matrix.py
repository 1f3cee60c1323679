"""Every metadata file the readers parse, corrupted every way a crash or a hostile writer
can: the result is always a finding (or a freeze), never a crash, and the plan never
gains a path that was referenced before the corruption."""

from __future__ import annotations

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
        (b'{"features": {"containerd-snapshotter": true}, "data-root": "%ROOT%"}', 3, "containerd"),
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
