"""Relocation's pure parts and local steps: reverses, path rebasing, tree comparison,
config switch and restore, preflight checks that need no daemon."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dockergc.errors import RefusedError
from dockergc.relocate import daemonjson, executor
from dockergc.relocate import steps as S
from dockergc.relocate.executor import ConfigConflict, Context, perform
from dockergc.relocate.impl import rebase
from dockergc.relocate.plan import Control, plan_relocation
from dockergc.relocate.preflight import Preflight, check_paths
from dockergc.relocate.verify import compare
from tests.relocate_crash import record_labels, relocate_and_kill


def test_every_step_round_trips_and_rollback_reverses_are_the_right_ones(tmp_path: Path) -> None:
    control = Control("stop", "start", "unix:///s", tmp_path / "daemon.json")
    plan = plan_relocation(
        Path("/old"), Path("/new"), control, "r1", 3, 2, selinux=True, config_sha256="ab"
    )
    names = [s.name for s in plan]
    assert names == [
        "stop-daemon",
        "wait-idle",
        "copy",
        "verify-copy",
        "rewrite-paths",
        "selinux-relabel",
        "backup-config",
        "switch-config",
        "start-daemon",
        "post-verify",
    ]
    for step in plan:
        assert S.step_from_dict(S.step_dict(step)) == step
    backs = {s.name: s.reverse() for s in plan}
    assert backs["copy"] == S.RemoveCopy("/new", ".dockergc-relocation-r1")
    cfg = str(tmp_path / "daemon.json")
    assert backs["switch-config"] == S.RestoreConfig(cfg, f"{cfg}.dockergc-r1.bak", "/new", "ab")
    assert backs["backup-config"] == S.Noop()  # the backup is never removed
    assert backs["stop-daemon"] == S.StartDaemon("start", "stop", "unix:///s", "/old")
    assert backs["start-daemon"] == S.StopDaemon("stop", "start", "unix:///s", "/new")


def test_bind_mode_keeps_the_path_and_the_config(tmp_path: Path) -> None:
    control = Control("stop", "start", "unix:///s", tmp_path / "daemon.json")
    plan = plan_relocation(
        Path("/old"), Path("/new"), control, "r1", 3, 2, False, bind=True, config_sha256=None
    )
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

    from dockergc.relocate import impl

    ran: list[list[str]] = []
    monkeypatch.setattr(
        impl.daemon, "run_command", lambda cmd, timeout=0: ran.append(shlex.split(cmd))
    )
    monkeypatch.setattr(impl, "_shows", lambda old, new: old == "/var/lib/my docker")
    ctx = Context("r")
    perform(S.BindMount("/mnt/new disk/docker", "/srv/other root"), ctx)
    perform(S.Unmount("/var/lib/my docker", "/mnt/new disk/docker"), ctx)
    assert ran == [
        ["mount", "--bind", "/mnt/new disk/docker", "/srv/other root"],
        ["umount", "/var/lib/my docker"],
    ]


# -- daemon.json: backed up before the switch, every undo judged by what is on disk -------

ORIGINAL = b'{ "log-level":"warn",\n   "graph": "/old" }\n'


def _config_steps(tmp_path: Path, original: bytes | None) -> tuple[Path, Path, list[S.Step]]:
    cfg = tmp_path / "etc" / "daemon.json"
    cfg.parent.mkdir(exist_ok=True)
    if original is not None:
        cfg.write_bytes(original)
        os.chmod(cfg, 0o640)
    backup = cfg.with_name("daemon.json.dockergc-r.bak")
    sha = daemonjson.digest(original)
    steps: list[S.Step] = [
        S.BackupConfig(str(cfg), str(backup), sha),
        S.SwitchConfig(str(cfg), "/new", str(backup), sha),
    ]
    return cfg, backup, steps


def test_switch_then_restore_gives_back_the_same_bytes_and_mode(tmp_path: Path) -> None:
    cfg, backup, steps = _config_steps(tmp_path, ORIGINAL)
    ctx = Context("r")
    for step in steps * 2:  # each step is idempotent: a resumed run redoes it
        perform(step, ctx)
    assert backup.read_bytes() == ORIGINAL and os.stat(backup).st_mode & 0o777 == 0o640
    assert json.loads(cfg.read_bytes()) == {"log-level": "warn", "data-root": "/new"}
    for _ in range(2):
        perform(steps[1].reverse(), ctx)
        assert cfg.read_bytes() == ORIGINAL and os.stat(cfg).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in cfg.parent.iterdir()) == [cfg.name, backup.name]  # no temps


SWITCHED = daemonjson.switched(ORIGINAL, "/new")
EDITED = b'{"data-root": "/new", "debug": true}\n'


@pytest.mark.parametrize(
    ("original", "on_disk", "backup", "after"),
    [
        # (daemon.json before the relocation, on disk at the undo, its backup, afterwards)
        (ORIGINAL, ORIGINAL, None, ORIGINAL),  # killed before the switch: nothing to do
        (ORIGINAL, SWITCHED, ORIGINAL, ORIGINAL),  # switched: restored from the backup
        (ORIGINAL, None, ORIGINAL, ORIGINAL),  # removed since: the backup is put back
        (ORIGINAL, SWITCHED, None, "refused"),  # no backup: never deleted, never overwritten
        (ORIGINAL, SWITCHED, b"{}", "refused"),  # a backup that is not the original
        (ORIGINAL, EDITED, ORIGINAL, "refused"),  # edited after the switch: the operator's
        (ORIGINAL, None, None, "refused"),
        (None, None, None, None),  # there was none and there is none
        (None, daemonjson.switched(None, "/new"), None, None),  # the one we created goes
        (None, EDITED, None, "refused"),
    ],
    ids=[
        "original-untouched",
        "switched-restored",
        "missing-restored",
        "switched-no-backup",
        "switched-bad-backup",
        "edited-after-switch",
        "missing-no-backup",
        "none-stays-none",
        "none-ours-removed",
        "none-edited",
    ],
)
def test_restore_judges_daemon_json_by_what_is_on_disk(
    tmp_path: Path,
    original: bytes | None,
    on_disk: bytes | None,
    backup: bytes | None,
    after: bytes | str | None,
) -> None:
    cfg, backup_path, steps = _config_steps(tmp_path, original)
    cfg.unlink(missing_ok=True)
    for path, data in ((cfg, on_disk), (backup_path, backup)):
        if data is not None:
            path.write_bytes(data)
    undo = steps[1].reverse()
    if after == "refused":
        with pytest.raises(ConfigConflict) as info:
            perform(undo, Context("r"))
        assert str(cfg) in str(info.value) and str(backup_path) in str(info.value)
        after = on_disk  # left exactly as it was
    else:
        perform(undo, Context("r"))
    assert daemonjson.read(cfg) == after
    assert daemonjson.read(backup_path) == backup  # the backup is never touched


def test_config_changed_since_preflight_or_without_backup_is_never_switched(
    tmp_path: Path,
) -> None:
    cfg, backup, (back_up, switch) = _config_steps(tmp_path, ORIGINAL)
    cfg.write_bytes(EDITED)
    with pytest.raises(ConfigConflict, match="changed since preflight"):
        perform(back_up, Context("r"))
    with pytest.raises(ConfigConflict):
        perform(switch, Context("r"))
    cfg.write_bytes(ORIGINAL)  # the original, but its backup was never made
    with pytest.raises(ConfigConflict, match="backup"):
        perform(switch, Context("r"))
    assert cfg.read_bytes() == ORIGINAL and not backup.exists()


def _copy_and_switch(tmp_path: Path, original: bytes | None) -> tuple[Path, Path, list[S.Step]]:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "overlay2/x").mkdir(parents=True)
    (old / "overlay2/x/f").write_text("data")
    cfg, _, config_steps = _config_steps(tmp_path, original)
    return cfg, new, [S.Copy(str(old), str(new)), S.VerifyCopy(str(old), str(new)), *config_steps]


@pytest.mark.parametrize("original", [ORIGINAL, None], ids=["config", "no-config"])
def test_killed_after_any_record_rollback_and_resume_keep_daemon_json(
    tmp_path: Path, original: bytes | None
) -> None:
    cfg, new, steps = _copy_and_switch(tmp_path, original)
    state = tmp_path / "state"
    for n, label in enumerate(record_labels(steps), start=1):
        for how in ("rollback", "resume"):
            run_id = f"r{n}-{how}"
            relocate_and_kill(state, run_id, tmp_path / "old", new, steps, n)
            journal = executor.journal_for(state, run_id)
            if how == "rollback":
                assert executor.rollback(journal, Context(run_id)).state == "rolled-back"
                assert daemonjson.read(cfg) == original, label
                assert not new.exists() or not any(new.iterdir()), label
            elif label != "end":
                assert executor.resume(journal, Context(run_id)).state == "relocated"
                assert daemonjson.read(cfg) == daemonjson.switched(original, "/new"), label
                assert compare(str(tmp_path / "old"), str(new))[1] == [], label
            if cfg.exists():  # back to the start for the next kill
                daemonjson.write_atomic(cfg, original or b"")
            if original is None:
                cfg.unlink(missing_ok=True)


def test_a_rollback_killed_after_any_record_finishes_when_run_again(tmp_path: Path) -> None:
    cfg, new, steps = _copy_and_switch(tmp_path, ORIGINAL)
    old, state = tmp_path / "old", tmp_path / "state"
    # rollback-begin, intent and done of restore-config and of remove-copy: killed after each
    for n in range(1, 6):
        run_id = f"r{n}"
        executor.run(executor.begin(state, run_id, old, new, steps), Context(run_id))
        relocate_and_kill(state, run_id, old, new, None, n)
        journal = executor.journal_for(state, run_id)
        with pytest.raises(RefusedError, match="rolling-back"):
            executor.resume(journal, Context(run_id))  # half undone: never goes forward
        assert executor.rollback(journal, Context(run_id)).state == "rolled-back"
        assert cfg.read_bytes() == ORIGINAL and not any(new.iterdir()), n


def test_rollback_stops_at_a_daemon_json_it_cannot_account_for(tmp_path: Path) -> None:
    cfg, new, steps = _copy_and_switch(tmp_path, ORIGINAL)
    journal = executor.begin(tmp_path / "state", "r", tmp_path / "old", new, steps)
    assert executor.run(journal, Context("r")).state == "relocated"
    cfg.write_bytes(EDITED)  # edited by hand after the switch
    records = journal.path.read_bytes()
    with pytest.raises(executor.ConfigConflict) as refused:  # before any undo: no stop
        executor.rollback(journal, Context("r"))
    line = str(refused.value)
    assert str(cfg) in line and f"{cfg}.dockergc-r.bak" in line and "nothing changed" in line
    assert line.endswith(f"then run 'dockergc relocate rollback r --state-dir {tmp_path}/state'")
    assert journal.path.read_bytes() == records  # no undo journaled, none run
    assert cfg.read_bytes() == EDITED and (new / "overlay2/x/f").exists()
    assert executor.view_of(journal).state == "relocated"
    cfg.write_bytes(SWITCHED)  # put right by hand: the rollback can finish
    assert executor.rollback(journal, Context("r")).state == "rolled-back"
    assert cfg.read_bytes() == ORIGINAL and not any(new.iterdir())


def test_a_finalized_relocation_is_never_rolled_back(tmp_path: Path) -> None:
    cfg, new, steps = _copy_and_switch(tmp_path, ORIGINAL)
    journal = executor.begin(tmp_path / "state", "r", tmp_path / "old", new, steps)
    executor.run(journal, Context("r"))
    journal.append({"type": "finalize-end", "state": "finalized"})
    with pytest.raises(RefusedError, match="finalized"):
        executor.rollback(journal, Context("r"))
    assert (new / "overlay2/x/f").exists()


# -- the copy: a re-run converges on an exact copy ----------------------------------------


def test_a_rerun_copy_converges_on_an_exact_copy(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "volumes/v/_data").mkdir(parents=True)
    (old / "volumes/v/_data/big").write_bytes(b"x" * 4096)
    (new / "volumes/v/_data").mkdir(parents=True)
    (new / "volumes/v/_data/.big.Xa1b2C").write_bytes(b"x" * 100)  # a killed rsync's temp
    (new / "volumes/v/_data/stale").write_text("not in the original")
    (new / ".dockergc").mkdir()  # excluded from the copy, so never deleted by it
    perform(S.Copy(str(old), str(new)), Context("r"))
    assert compare(str(old), str(new))[1] == []
    assert (new / ".dockergc").is_dir()


def test_the_copy_marks_its_target_and_its_undo_empties_only_a_marked_one(
    tmp_path: Path,
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "volumes/v/_data").mkdir(parents=True)
    (old / "volumes/v/_data/f").write_text("data")
    copy = S.Copy(str(old), str(new), "", S.marker_for("r"))
    marker = new / ".dockergc-relocation-r"
    new.mkdir()
    (new / "theirs").write_text("put here after preflight")
    with pytest.raises(RefusedError, match="no longer empty and holds no"):
        perform(copy, Context("r"))
    assert os.listdir(new) == ["theirs"]
    (new / "theirs").unlink()
    perform(copy, Context("r"))
    perform(copy, Context("r"))  # a re-run: rsync --delete keeps the marker
    assert marker.read_text() == "relocation r\n" and compare(str(old), str(new))[1] == []
    perform(copy.reverse(), Context("r"))
    assert os.listdir(new) == []  # the marker went last
    (new / "theirs").write_text("put here after the rollback")
    with pytest.raises(RefusedError, match="does not hold .dockergc-relocation-r"):
        perform(copy.reverse(), Context("r"))
    assert os.listdir(new) == ["theirs"]


@pytest.mark.parametrize(
    ("cmd", "calls"),
    [
        (
            "systemctl start containerd.service docker.socket docker.service",
            [
                "reset-failed containerd.service docker.socket docker.service",
                "start containerd.service docker.socket docker.service",
            ],
        ),
        ("systemctl --user start docker.service", ["--user start docker.service"]),
        ("systemctl start --no-block docker", ["start --no-block docker"]),
        ("systemctl restart docker", ["restart docker"]),
    ],
)
def test_a_systemctl_start_resets_the_start_limit_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cmd: str, calls: list[str]
) -> None:
    """docker.service's start limit (3 a minute) counts the relocation's own restarts: a
    plain ``systemctl start UNIT...`` is preceded by ``reset-failed`` of the same units;
    any other command runs as given."""
    from dockergc import daemon

    log = tmp_path / "calls"
    fake = tmp_path / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >>{log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    daemon.run_start_command(cmd, 10)
    assert log.read_text().splitlines() == calls


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_bind_steps_never_take_another_filesystem_for_their_mount(tmp_path: Path) -> None:
    """An old root that is a mount point of its own (a disk or LV at /var/lib/docker):
    unmount leaves it mounted, bind-mount is not skipped because of it, and preflight
    refuses --bind there."""
    import subprocess

    from dockergc.relocate.preflight import Preflight, check_bind

    old, new = tmp_path / "docker", tmp_path / "copy"
    old.mkdir()
    new.mkdir()
    (new / "in-the-copy").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(old)], check=True)
    try:
        (old / "on-the-disk").write_text("x")
        pf = Preflight(old=str(old), new=str(new), bytes_to_copy=0, entries=0, running=[])
        check_bind(pf, old)
        assert not pf.ok and "is itself a mount point" in pf.checks[0].detail
        perform(S.Unmount(str(old), str(new)), Context("r"))  # the disk is not the bind
        assert (old / "on-the-disk").exists()
        perform(S.BindMount(str(new), str(old)), Context("r"))
        assert (old / "in-the-copy").exists()
        perform(S.BindMount(str(new), str(old)), Context("r"))  # resumed: made, not again
        perform(S.Unmount(str(old), str(new)), Context("r"))
        assert (old / "on-the-disk").exists() and not (old / "in-the-copy").exists()
    finally:
        while os.path.ismount(old):
            subprocess.run(["umount", str(old)], check=True)
    plain = Preflight(old=str(old), new=str(new), bytes_to_copy=0, entries=0, running=[])
    check_bind(plain, old)
    assert plain.ok
    # A bind mount of a dir on the same filesystem: the same device as its parent.
    (tmp_path / "src").mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "src"), str(old)], check=True)
    try:
        bound = Preflight(old=str(old), new=str(new), bytes_to_copy=0, entries=0, running=[])
        check_bind(bound, old)
    finally:
        subprocess.run(["umount", str(old)], check=True)
    assert not bound.ok and "is itself a mount point" in bound.checks[0].detail
    # dockerd's own bind of its data root onto itself (a shared mount): the same dir.
    subprocess.run(["mount", "--bind", str(old), str(old)], check=True)
    try:
        itself = Preflight(old=str(old), new=str(new), bytes_to_copy=0, entries=0, running=[])
        check_bind(itself, old)
    finally:
        subprocess.run(["umount", str(old)], check=True)
    assert itself.ok, itself.checks


def test_a_refused_rollback_says_the_daemon_is_down_when_it_is(tmp_path: Path) -> None:
    """The start fails after something (config management) rewrote daemon.json: the
    rollback refuses to overwrite it, and the one line says the daemon is down, with the
    command that starts it, not that it was left running."""
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "containers").mkdir(parents=True)
    cfg, backup, config_steps = _config_steps(tmp_path, ORIGINAL)
    start = f"sh -c 'echo {{}} >{cfg}; exit 1'"
    steps: list[S.Step] = [
        S.StopDaemon("true", "true", "unix:///nonexistent.sock", str(old)),
        *config_steps,
        S.StartDaemon(start, "true", "unix:///nonexistent.sock", str(new)),
    ]
    journal = executor.begin(tmp_path / "state", "r", old, new, steps)
    with pytest.raises(executor.RelocationFailed) as failed:
        executor.run(journal, Context("r"))
    said = str(failed.value)
    assert "not rolled back: refusing to roll back relocation r, nothing changed" in said
    assert "(the daemon is down (start it with 'true'))" in said, said
    assert cfg.read_text() == "{}\n"  # what the other writer put there is kept


@pytest.mark.skipif(os.geteuid() != 0, reason="relocation needs root")
def test_malformed_container_and_volume_metadata_is_moved_not_a_crash(tmp_path: Path) -> None:
    """JSON that is not the object the daemon writes (an empty config.v2.json, a list in
    opts.json, a string for a mount point): preflight notes the files, passes, and the
    rewrite step leaves them as copied; never an internal error."""
    import json as jsonlib

    from dockergc.fixture.demo import write_demo_root
    from tests.conftest import run_cli

    old = write_demo_root(tmp_path / "docker")
    (web,) = [d for d in (old / "containers").iterdir() if (d / "config.v2.json").exists()]
    doc = jsonlib.loads((web / "config.v2.json").read_text())
    doc["MountPoints"] = {"/data": "oops", "/x": {"Type": "bind", "Source": 7}}
    (web / "config.v2.json").write_text(jsonlib.dumps(doc))
    broken = old / "containers" / ("ab" * 32)
    broken.mkdir()
    (broken / "config.v2.json").write_text("")
    (old / "volumes/pgdata/opts.json").write_text('["x"]')
    config = tmp_path / "daemon.json"
    config.write_text("{}")
    out = run_cli(
        *("relocate", "--to", str(tmp_path / "new"), "--root", str(old)),
        *("--config-file", str(config), "--host", "unix:///nonexistent.sock", "--dry-run"),
    ).stdout
    assert "[note] metadata parses: not JSON objects" in out and "preflight passed" in out
    assert f"{broken}/config.v2.json" in out and f"{old}/volumes/pgdata/opts.json" in out
    new = tmp_path / "copy"
    shutil.copytree(old, new, symlinks=True)
    said: list[str] = []
    perform(S.RewritePaths(str(old), str(new)), Context("r", progress=said.append))
    assert (new / "containers" / ("ab" * 32) / "config.v2.json").read_text() == ""
    assert any("left as copied: not JSON" in line for line in said), said


@pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' /proc")
@pytest.mark.parametrize("how", ["--data-root", "-g", "another config", "this config"])
def test_preflight_knows_a_dockerd_that_would_not_take_the_switched_root(
    tmp_path: Path, fake_daemon: Callable[..., None], how: str
) -> None:
    """The switch changes daemon.json's data-root: a dockerd with --data-root (or -g) on
    its command line refuses to start beside it; one that reads another file would come
    back on the old root. Both fail the preflight; the file it reads passes."""
    import time

    from dockergc.relocate import takes
    from dockergc.relocate.preflight import Preflight

    old = tmp_path / "docker"
    (old / "containers").mkdir(parents=True)
    config, other = tmp_path / "daemon.json", tmp_path / "other.json"
    for f in (config, other):
        f.write_text(json.dumps({"data-root": str(old)}))
    args = {
        "--data-root": ["--data-root", str(old)],
        "-g": ["-g", str(old), "--config-file", str(config)],
        "another config": ["--config-file", str(other)],
        "this config": ["--config-file", str(config)],
    }[how]
    fake_daemon("dockerd", *args)
    for _ in range(100):  # until it runs as dockerd (not still the fork)
        pf = Preflight(old=str(old), new="/new", bytes_to_copy=0, entries=0, running=[])
        takes.check_dockerd(pf, old, config)
        if pf.checks:
            break
        time.sleep(0.05)
    (check,) = pf.checks
    assert check.ok is (how == "this config"), check
    says = {
        "--data-root": f"--data-root {old} on its command line",
        "-g": f"-g {old} on its command line",
        "another config": f"reads {other}, not {config}: pass --config-file {other}",
        "this config": str(config),
    }[how]
    assert says in check.detail, check.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_preflight_warns_of_a_mount_under_the_root_the_daemon_does_not_make(
    tmp_path: Path,
) -> None:
    """A filesystem mounted under the root by hand or fstab stays after the daemon stops,
    and the move would wait for it after the stop: preflight says so. A volume with mount
    options (the daemon mounts and unmounts it) is not warned of."""
    import subprocess

    from dockergc.fixture.demo import write_demo_root
    from dockergc.relocate.preflight import Preflight, _measured

    old = write_demo_root(tmp_path / "docker")
    for name in ("big", "nfs"):
        (old / "volumes" / name / "_data").mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(old / "volumes" / name / "_data")])
    (old / "volumes/nfs/opts.json").write_text('{"MountType":"nfs","MountOpts":"addr=x"}')
    try:
        pf = Preflight(old=str(old), new="/new", bytes_to_copy=0, entries=0, running=[])
        _measured(pf, old)
    finally:
        for name in ("big", "nfs"):
            subprocess.run(["umount", str(old / "volumes" / name / "_data")], check=True)
    (check,) = [c for c in pf.checks if c.name == "mounts under the root"]
    assert not check.ok and not check.blocking
    assert f"{old}/volumes/big/_data" in check.detail and "nfs" not in check.detail


@pytest.mark.parametrize("have", ["semanage", "semanage with a rule", "restorecon only"])
def test_relabel_makes_the_new_path_equivalent_to_the_old_before_restorecon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, have: str
) -> None:
    """restorecon alone would give the copy its new path's default labels; with semanage
    the new path first gets the old one's (an equivalence rule); without it the labels
    rsync copied are kept and restorecon is not run."""
    log = tmp_path / "calls"
    tools = tmp_path / "bin"
    tools.mkdir()
    names = ["restorecon"] if have == "restorecon only" else ["semanage", "restorecon"]
    for name in names:
        refuse = name == "semanage" and have == "semanage with a rule"
        body = 'case "$*" in *" -a "*) exit 1;; esac\n' if refuse else ""
        (tools / name).write_text(f'#!/bin/sh\necho "{name} $*" >>{log}\n{body}')
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    said: list[str] = []
    perform(
        S.Relabel("/mnt/disk/docker", old="/var/lib/docker"), Context("r", progress=said.append)
    )
    calls = log.read_text().splitlines() if log.exists() else []
    rule = "semanage fcontext {} -e /var/lib/docker /mnt/disk/docker"
    expected = {
        "semanage": [rule.format("-a"), "restorecon -R /mnt/disk/docker"],
        "semanage with a rule": [
            rule.format("-a"),
            rule.format("-m"),
            "restorecon -R /mnt/disk/docker",
        ],
        "restorecon only": [],
    }[have]
    assert calls == expected
    assert bool(said) is (have == "restorecon only")


def test_the_copy_is_not_removed_while_a_daemon_uses_it(
    tmp_path: Path, fake_daemon: Callable[..., None]
) -> None:
    """A rollback's last undo empties the target; not while a daemon runs on it (started
    on it by hand since, or a --bind remounted at boot): refused, all left."""
    from dockergc import daemon

    new = tmp_path / "new"
    (new / "overlay2").mkdir(parents=True)
    marker = S.marker_for("r1")
    (new / marker).write_text("r1")
    fake_daemon("dockerd", "--data-root", str(new))
    deadline = time.monotonic() + 10
    while not daemon.daemons_using(new) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the fake daemon has exec'd
    with pytest.raises(RefusedError, match=f"refusing to remove the copy at {new}: dockerd"):
        perform(S.RemoveCopy(str(new), marker), Context("r1"))
    assert sorted(os.listdir(new)) == sorted(["overlay2", marker])


@pytest.mark.parametrize(
    "answers",
    [
        {"/info": [], "/images/json?all=1": [], "/containers/json": []},
        {"/info": {"Containers": "3"}, "/images/json?all=1": [], "/containers/json": []},
        {"/info": {}, "/images/json?all=1": [1], "/containers/json": []},
        {"/info": {}, "/images/json?all=1": [], "/containers/json": {"a": 1}},
    ],
)
def test_an_engine_api_answer_not_as_written_is_engine_unavailable(
    answers: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read like the store's files: a named EngineUnavailable (one line, and a step's
    failure the executor rolls back), never an AttributeError out of a step."""
    from dockergc import daemon
    from dockergc.relocate.impl import answers_on

    monkeypatch.setattr(daemon, "engine_get", lambda host, path: answers.get(path, []))
    with pytest.raises(daemon.EngineUnavailable, match="unix:///x"):
        daemon.engine_state("unix:///x")
    if answers["/info"] == []:
        with pytest.raises(daemon.EngineUnavailable, match="not a JSON object"):
            daemon.engine_root("unix:///x")
        assert not answers_on("unix:///x", "/var/lib/docker")


def test_running_names_tolerate_odd_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockergc import daemon

    answers = {
        "/info": {"DockerRootDir": "/r", "Containers": 2},
        "/containers/json": [{"Names": None}, {"Names": ["/web"]}],
        "/containers/json?all=1": [{"Id": "a"}, {"Id": "b"}],
    }
    monkeypatch.setattr(daemon, "engine_get", lambda host, path: answers.get(path, []))
    state = daemon.engine_state("unix:///x")
    assert state.running == ("?", "web") and state.container_ids == {"a", "b"}
    assert state.containers == 2 and state.root == "/r"
