"""Relocation's pure parts and local steps: reverses, path rebasing, tree comparison,
config switch and restore, preflight checks that need no daemon."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockergc.relocate import steps as S
from dockergc.relocate.executor import Context, perform, rebase
from dockergc.relocate.plan import Control, plan_relocation
from dockergc.relocate.preflight import Preflight, check_paths
from dockergc.relocate.verify import compare


def test_every_step_round_trips_and_rollback_reverses_are_the_right_ones(tmp_path: Path) -> None:
    control = Control("stop", "start", "unix:///s", tmp_path / "daemon.json")
    plan = plan_relocation(Path("/old"), Path("/new"), control, "r1", 3, 2, selinux=True)
    names = [s.name for s in plan]
    assert names == [
        "stop-daemon",
        "wait-idle",
        "copy",
        "verify-copy",
        "rewrite-paths",
        "selinux-relabel",
        "switch-config",
        "start-daemon",
        "post-verify",
    ]
    for step in plan:
        assert S.step_from_dict(S.step_dict(step)) == step
    backs = {s.name: s.reverse() for s in plan}
    assert backs["copy"] == S.RemoveCopy("/new")
    assert isinstance(backs["switch-config"], S.RestoreConfig)
    assert backs["stop-daemon"] == S.StartDaemon("start", "stop", "unix:///s", "/old")
    assert backs["start-daemon"] == S.StopDaemon("stop", "start", "unix:///s", "/new")


def test_bind_mode_keeps_the_path_and_the_config(tmp_path: Path) -> None:
    control = Control("stop", "start", "unix:///s", tmp_path / "daemon.json")
    plan = plan_relocation(Path("/old"), Path("/new"), control, "r1", 3, 2, False, bind=True)
    assert [s.name for s in plan] == [
        "stop-daemon",
        "wait-idle",
        "copy",
        "verify-copy",
        "bind-mount",
        "start-daemon",
        "post-verify",
    ]
    assert plan[4].reverse() == S.Unmount("/old", "/new")
    assert plan[5] == S.StartDaemon("start", "stop", "unix:///s", "/old")


def test_rebase_moves_only_paths_under_the_old_root() -> None:
    doc = {
        "LogPath": "/var/lib/docker/containers/a/a-json.log",
        "MountPoints": {
            "/v": {"Source": "/var/lib/docker/volumes/v/_data"},
            "/b": {"Source": "/srv/data"},
        },
        "Other": "/var/lib/docker-other/x",
        "List": ["/var/lib/docker", 3],
    }
    out = rebase(doc, "/var/lib/docker", "/mnt/new")
    assert out["LogPath"] == "/mnt/new/containers/a/a-json.log"
    assert out["MountPoints"]["/v"]["Source"] == "/mnt/new/volumes/v/_data"
    assert out["MountPoints"]["/b"]["Source"] == "/srv/data"
    assert out["Other"] == "/var/lib/docker-other/x"
    assert out["List"] == ["/mnt/new", 3]


def _tree(root: Path) -> None:
    (root / "overlay2/x/diff/etc").mkdir(parents=True)
    (root / "overlay2/x/diff/etc/f").write_text("data")
    os.mknod(root / "overlay2/x/diff/wh", 0o600 | 0o020000, os.makedev(0, 0))
    os.setxattr(root / "overlay2/x/diff/etc", "trusted.overlay.opaque", b"y")
    os.symlink("../x/diff", root / "overlay2/l")
    (root / "image").mkdir()
    (root / "image/repositories.json").write_text("{}")


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and trusted xattrs need root")
def test_compare_finds_what_a_careless_copy_loses(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    _tree(old)
    _tree(new)
    assert compare(str(old), str(new))[1] == []
    os.removexattr(new / "overlay2/x/diff/etc", "trusted.overlay.opaque")
    (new / "image/repositories.json").write_text("{ }")
    os.unlink(new / "overlay2/x/diff/wh")
    diffs = {d.path: d.what for d in compare(str(old), str(new))[1]}
    assert "xattrs" in diffs["overlay2/x/diff/etc"]
    assert "extra" in diffs["image/repositories.json"]
    assert diffs["overlay2/x/diff/wh"] == "missing from the copy"


def test_switch_and_restore_config(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"graph": "/old", "log-level": "warn"}))
    backup = str(cfg) + ".bak"
    ctx = Context("r")
    perform(S.SwitchConfig(str(cfg), "/new", backup), ctx)
    assert json.loads(cfg.read_text()) == {"log-level": "warn", "data-root": "/new"}
    perform(S.SwitchConfig(str(cfg), "/new", backup), ctx)  # idempotent: backup kept
    perform(S.RestoreConfig(str(cfg), backup), ctx)
    assert json.loads(cfg.read_text()) == {"graph": "/old", "log-level": "warn"}
    # No config before the switch: the reverse removes it again.
    cfg.unlink()
    os.unlink(backup)
    perform(S.SwitchConfig(str(cfg), "/new", backup), ctx)
    perform(S.RestoreConfig(str(cfg), backup), ctx)
    assert not cfg.exists()


def test_path_checks(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for new, bad in [
        (old, "target differs"),
        (old / "sub", "target not inside old root"),
        (tmp_path, "old root not inside target"),
    ]:
        pf = Preflight(str(old), str(new), 0, 0)
        check_paths(pf, old, new)
        assert bad in {c.name for c in pf.checks if not c.ok}
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    pf = Preflight(str(old), str(full), 0, 0)
    check_paths(pf, old, full)
    assert not pf.ok


def test_mount_commands_keep_paths_with_spaces_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from dockergc.relocate import executor

    ran: list[list[str]] = []
    monkeypatch.setattr(
        executor.daemon, "run_command", lambda cmd, timeout=0: ran.append(shlex.split(cmd))
    )
    monkeypatch.setattr(executor, "_mounted_at", lambda path: path == "/var/lib/my docker")
    ctx = Context("r")
    perform(S.BindMount("/mnt/new disk/docker", "/srv/other root"), ctx)
    perform(S.Unmount("/var/lib/my docker", "/mnt/new disk/docker"), ctx)
    assert ran == [
        ["mount", "--bind", "/mnt/new disk/docker", "/srv/other root"],
        ["umount", "/var/lib/my docker"],
    ]
