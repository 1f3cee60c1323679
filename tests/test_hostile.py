"""Hostile contents inside orphaned layer dirs: what containers and image authors can plant.

Invariant for every case: nothing outside the root is read for size, moved or deleted;
nothing mounted is touched; the tool finishes and its output parses.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.execute import runner
from dockergc.fixture.demo import write_demo_root
from dockergc.plan import Policy
from dockergc.render.table import TableRenderer
from tests.conftest import NO_MOUNTS, run_cli
from tests.manifest import manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and mounts need root")


def orphan_of(root: Path) -> Path:
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    return root / next(a.path for a in plan.actions if a.kind == "orphan-layer") / "diff"


def deep_tree(top: Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as fh:
            fh.write("bottom")
    finally:
        os.close(fd)


def plant(diff: Path, outside: Path) -> None:
    os.symlink("/", diff / "to-root")
    os.symlink(outside / "secret", diff / "to-secret")
    os.symlink(outside, diff / "to-outside-dir")
    os.symlink("loop-b", diff / "loop-a")
    os.symlink("loop-a", diff / "loop-b")
    os.mkfifo(diff / "fifo")
    os.mknod(diff / "null-dev", 0o600 | 0o020000, os.makedev(1, 3))
    os.mknod(diff / "whiteout", 0o600 | 0o020000, os.makedev(0, 0))
    os.mknod(diff / "blockdev", 0o600 | 0o060000, os.makedev(7, 200))
    os.link(outside / "hardlinked", diff / "hard")
    (diff / "new\nline").write_text("x")
    with open(os.fsencode(diff) + b"/bad-\xff\xfe-utf8", "wb") as fh:
        fh.write(b"y")
    with open(diff / "sparse", "wb") as fh:
        fh.truncate(50 * 2**30)  # 50 GiB apparent, nothing allocated
    os.setxattr(diff, "trusted.overlay.opaque", b"y")


def outside_tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (outside / "hardlinked").write_text("linked")
    (outside / "big").write_bytes(b"\1" * 3_000_000)
    return outside


def test_hostile_entries_through_plan_gc_rollback_purge(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    outside = outside_tree(tmp_path)
    before_outside = manifest(outside, skip=())
    diff = orphan_of(root)
    plant(diff, outside)
    deep_tree(diff, 4096)
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    target = next(a for a in plan.actions if a.path == str(diff.parent.relative_to(root)))
    # The deep dirs themselves (4 KiB each) and little else: no symlink followed (the 3 MB
    # outside file), the 50 GiB sparse file counted by its allocated blocks only.
    assert target.bytes < 4097 * 4096 + 1_000_000
    TableRenderer(verbose=True).render(plan)
    json.dumps(plan.to_dict())
    before = manifest(root)
    view = runner.start_run(root, plan, runner.Options(mounts=NO_MOUNTS))
    assert all(s.status == "moved" for s in view.steps)
    runner.rollback_run(root, view.run_id, runner.Options(mounts=NO_MOUNTS))
    assert manifest(root) == before
    _, _, again = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    view = runner.start_run(root, again, runner.Options(mounts=NO_MOUNTS))
    purged = runner.purge_runs(root, 0, view.run_id, runner.Options(mounts=NO_MOUNTS))
    assert purged[0].state == "purged"
    assert not diff.parent.exists()
    assert manifest(outside, skip=()) == before_outside
    assert (outside / "hardlinked").read_text() == "linked"
    assert Path("/").is_dir() and Path("/etc/passwd").exists()


def test_a_hundred_thousand_files(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    diff = orphan_of(root)
    for i in range(100):
        d = diff / f"d{i}"
        d.mkdir()
        for j in range(1000):
            (d / f"f{j}").touch()
    out = json.loads(
        run_cli(
            "gc", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--yes", "--json"
        ).stdout
    )
    assert out["state"] == "applied"
    purged = json.loads(
        run_cli(
            "purge",
            "--root",
            str(root),
            "--config-file",
            "/x",
            "--older-than",
            "0",
            "--yes",
            "--json",
        ).stdout
    )
    assert purged["runs"][0]["state"] == "purged"
    assert not diff.exists()


def test_bind_mount_inside_an_orphan_is_kept_and_not_walked(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    outside = outside_tree(tmp_path)
    diff = orphan_of(root)
    (diff / "mnt").mkdir()
    subprocess.run(["mount", "--bind", str(outside), str(diff / "mnt")], check=True)
    try:
        plan = json.loads(
            run_cli(
                "plan", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--json"
            ).stdout
        )
        orphan = str(diff.parent.relative_to(root))
        assert orphan not in {a["path"] for a in plan["actions"]}
        kept = {k["path"]: k["reason"] for k in plan["kept"]}
        assert "mount" in kept[orphan]
        run_cli("gc", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--yes")
        run_cli("purge", "--root", str(root), "--config-file", "/x", "--older-than", "0", "--yes")
        assert (outside / "secret").read_text() == "secret"
        assert (diff / "mnt" / "big").stat().st_size == 3_000_000
    finally:
        subprocess.run(["umount", "-l", str(diff / "mnt")], check=True)
