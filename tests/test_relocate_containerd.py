"""Relocation of both roots on a containerd image store host, without a daemon: the plan,
the config kinds (daemon.json's data-root, containerd's config.toml root) backed up,
switched and restored by the same steps, the preflight's containerd checks, and a whole
run, rollback and finalize with the daemon's control faked in-process.

The real engine (dockerd 28.5 + containerd 2.1) is tests/test_engine_relocate_ctd.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockergc import daemon
from dockergc.execute.journal import new_run_id
from dockergc.fixture.containerd import (
    CtdSpec,
    FxBlob,
    FxImage,
    build_ctd_root,
    docker_like_spec,
)
from dockergc.host.detect import DaemonProcess
from dockergc.relocate import ctdconfig, daemonjson, executor, impl
from dockergc.relocate import steps as S
from dockergc.relocate.plan import ContainerdMove, Control, plan_relocation
from dockergc.relocate.preflight import ContainerdPlan, preflight
from tests.conftest import run_cli
from tests.engine import loop_fs

K8S = "k8s.io"
TOML = b'# the operator\'s config\nversion = 2\nroot = "%s"  # keep me\n[grpc]\n  address = "x"\n'
JSON = b'{\n  "log-level": "warn",\n   "data-root": "%s"\n}\n'


def _plan(old: Path, new: Path, ctd: ContainerdMove | None, precopy: bool) -> list[S.Step]:
    control = Control("stop", "start", "unix:///x.sock", Path("/etc/docker/daemon.json"))
    return plan_relocation(
        old, new, control, "r", 1, 2, False, config_sha256="a", precopy=precopy, containerd=ctd
    )


CTD = ContainerdMove(Path("/ctd"), Path("/n/ctd"), Path("/etc/containerd/config.toml"), "b")


def test_the_plan_moves_both_roots_alike_and_backs_up_both_files_before_either_switch() -> None:
    plan = _plan(Path("/o"), Path("/n/docker"), CTD, precopy=True)
    assert [S.label(s) for s in plan] == [
        "pre-copy",
        "pre-copy (containerd)",
        "stop-daemon",
        "wait-idle",
        "wait-idle (containerd)",
        "copy",
        "copy (containerd)",
        "verify-copy",
        "verify-copy (containerd)",
        "rewrite-paths",
        "backup-config",
        "backup-config (containerd.toml)",
        "switch-config",
        "switch-config (containerd.toml)",
        "start-daemon",
        "post-verify",
    ]
    stop = plan[2]
    assert isinstance(stop, S.StopDaemon) and stop.ctd_root == "/ctd"
    back = stop.reverse()  # rollback starts both on the old roots and waits for both
    assert isinstance(back, S.StartDaemon) and back.expect_ctd_root == "/ctd"
    start = plan[-2]
    assert isinstance(start, S.StartDaemon) and start.expect_ctd_root == "/n/ctd"
    switch = plan[13]
    assert isinstance(switch, S.SwitchConfig) and switch.kind == S.CONTAINERD_TOML
    assert switch.backup == "/etc/containerd/config.toml.dockergc-r.bak"
    undo = switch.reverse()
    assert isinstance(undo, S.RestoreConfig) and undo.kind == S.CONTAINERD_TOML
    copies = [s for s in plan if isinstance(s, (S.PreCopy, S.Copy))]
    assert {s.marker for s in copies} == {S.marker_for("r")}
    assert [s.reverse() for s in copies[1::2]] == [
        S.RemoveCopy("/n/ctd", S.marker_for("r"), "containerd")
    ] * 2
    for step in plan:  # every step survives the journal
        assert S.step_from_dict(json.loads(json.dumps(S.step_dict(step)))) == step
    # Without containerd, today's plan, unchanged.
    assert [s.name for s in _plan(Path("/o"), Path("/n"), None, False)] == [
        "stop-daemon", "wait-idle", "copy", "verify-copy", "rewrite-paths", "backup-config",
        "switch-config", "start-daemon", "post-verify",
    ]  # fmt: skip


def test_journals_from_before_config_kinds_load_as_daemon_json() -> None:
    old = {"name": "switch-config", "config": "/c", "new_root": "/n", "backup": "/b",
           "original_sha256": None}  # fmt: skip
    step = S.step_from_dict(old)
    assert isinstance(step, S.SwitchConfig) and step.kind == S.DAEMON_JSON
    stop = S.step_from_dict({"name": "stop-daemon", "cmd": "a", "start_cmd": "b", "host": "h",
                             "root": "/o"})  # fmt: skip
    assert isinstance(stop, S.StopDaemon) and stop.ctd_root == ""


def test_bind_mode_does_not_move_containerd() -> None:
    control = Control("stop", "start", "h", Path("/c"))
    with pytest.raises(ValueError):
        plan_relocation(Path("/o"), Path("/n"), control, "r", 0, 0, False, True,
                        config_sha256=None, containerd=CTD)  # fmt: skip


# -- the toml kind through the same steps ------------------------------------------------


def _toml_steps(tmp: Path, data: bytes | None) -> tuple[S.BackupConfig, S.SwitchConfig]:
    config = tmp / "config.toml"
    if data is not None:
        config.write_bytes(data)
    sha = daemonjson.digest(data)
    backup = str(config) + ".dockergc-r.bak"
    kind = S.CONTAINERD_TOML
    return (
        S.BackupConfig(str(config), backup, sha, kind),
        S.SwitchConfig(str(config), "/new/ctd", backup, sha, kind),
    )


def test_containerd_toml_is_backed_up_switched_and_restored_byte_for_byte(tmp_path: Path) -> None:
    original = TOML % b"/var/lib/containerd"
    backup, switch = _toml_steps(tmp_path, original)
    ctx = impl.Context("r")
    impl.perform(backup, ctx)
    impl.perform(switch, ctx)
    impl.perform(switch, ctx)  # a resumed switch: switched already, nothing written
    config = Path(switch.config)
    assert config.read_bytes() == original.replace(b"/var/lib/containerd", b"/new/ctd")
    assert ctdconfig.root_of(config.read_bytes()) == "/new/ctd"
    assert Path(backup.backup).read_bytes() == original
    restore = switch.reverse()
    assert isinstance(restore, S.RestoreConfig)
    assert impl.restorable(restore) == (True, original)
    impl.perform(restore, ctx)
    assert config.read_bytes() == original
    impl.perform(restore, ctx)  # again: the original is in place, nothing to do
    assert config.read_bytes() == original


def test_an_edited_containerd_toml_is_never_overwritten(tmp_path: Path) -> None:
    original = TOML % b"/var/lib/containerd"
    backup, switch = _toml_steps(tmp_path, original)
    ctx = impl.Context("r")
    impl.perform(backup, ctx)
    impl.perform(switch, ctx)
    config = Path(switch.config)
    config.write_bytes(config.read_bytes() + b"# edited since\n")
    edited = config.read_bytes()
    with pytest.raises(impl.ConfigConflict, match="config.toml"):
        impl.perform(switch.reverse(), ctx)
    assert config.read_bytes() == edited
    # Changed between preflight and the backup: nothing is switched.
    config.write_bytes(original + b"# changed\n")
    Path(backup.backup).unlink()
    with pytest.raises(impl.ConfigConflict, match="changed since preflight"):
        impl.perform(backup, ctx)


def test_a_missing_containerd_toml_is_created_and_removed_again(tmp_path: Path) -> None:
    backup, switch = _toml_steps(tmp_path, None)
    ctx = impl.Context("r")
    impl.perform(backup, ctx)
    impl.perform(switch, ctx)
    assert Path(switch.config).read_bytes() == b'root = "/new/ctd"\n'
    impl.perform(switch.reverse(), ctx)
    assert not Path(switch.config).exists()


# -- preflight ---------------------------------------------------------------------------


@dataclass
class Host:
    old: Path  # the data root (containerd store: containers/, volumes/, rootfs/overlayfs)
    ctd: Path  # containerd's root
    config: Path  # daemon.json
    toml: Path  # containerd's config.toml


def _host(tmp: Path, spec: CtdSpec | None = None) -> Host:
    old, ctd = tmp / "docker", tmp / "containerd"
    for sub in ("containers", "volumes/v/_data", "rootfs/overlayfs", "buildkit"):
        (old / sub).mkdir(parents=True)
    (old / "volumes/v/_data/f").write_bytes(b"volume data")
    build_ctd_root(ctd, spec or docker_like_spec())
    (ctd / "io.containerd.grpc.v1.introspection").mkdir(exist_ok=True)
    (ctd / "io.containerd.grpc.v1.introspection/uuid").write_text("u-1")
    config, toml = tmp / "daemon.json", tmp / "config.toml"
    config.write_bytes(JSON % str(old).encode())
    toml.write_bytes(TOML % str(ctd).encode())
    return Host(old, ctd, config, toml)


def _checks(pf: object) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in pf.checks}  # type: ignore[attr-defined]


def _ctd_plan(h: Host, new: Path | None) -> ContainerdPlan:
    for target in (new, h.old.parent / "n"):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
    return ContainerdPlan(h.ctd, new, h.toml, str(h.ctd.parent / "none.sock"))


def test_preflight_measures_both_roots_and_checks_the_toml(tmp_path: Path) -> None:
    h = _host(tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    pf = preflight(h.old, new / "docker", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, new / "ctd"))  # fmt: skip
    checks = _checks(pf)
    assert pf.ok, checks
    assert pf.ctd_bytes > 0 and pf.ctd_entries > 0 and pf.ctd_new == str(new / "ctd")
    assert pf.ctd_config_sha256 == daemonjson.sha256_of(h.toml)
    assert checks["containerd config names the root"][0]
    assert checks["containerd target: overlay mount (d_type)"][0]
    assert checks["other containerd clients"] == (True, "none (only moby, moby_history)")
    # Both targets on one disk: one free-space check, both roots' bytes summed.
    (space,) = [c for c in pf.checks if c.name.startswith("free space")]
    assert "data root +" in space.detail and "containerd root" in space.detail


def test_preflight_warns_about_other_namespaces(tmp_path: Path) -> None:
    base = docker_like_spec()
    k8s = FxBlob(b"k8s manifest", namespaces=(K8S,))
    spec = CtdSpec(
        namespaces=(*base.namespaces, K8S),
        blobs=(*base.blobs, k8s),
        snapshots=base.snapshots,
        images=(*base.images, FxImage("registry.k8s.io/pause:3.9", k8s.digest, namespace=K8S)),
        leases=base.leases,
        containers=base.containers,
    )
    h = _host(tmp_path, spec)
    pf = preflight(h.old, tmp_path / "n/docker", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, tmp_path / "n/ctd"))  # fmt: skip
    assert pf.other_namespaces == ["k8s.io (1 images, 0 containers)"]
    ok, detail = _checks(pf)["other containerd clients"]
    assert not ok and pf.ok  # a note, not a refusal: --yes goes on
    assert detail.startswith("WARNING: containerd also serves namespaces other than moby: k8s.io")


def test_preflight_refuses_nested_targets_a_managed_containerd_and_a_wrong_toml(
    tmp_path: Path,
) -> None:
    h = _host(tmp_path)
    cases = {
        "containerd target apart": tmp_path / "new/docker/ctd",  # inside the data target
        "containerd target differs": h.ctd,
    }
    for name, ctd_new in cases.items():
        pf = preflight(h.old, tmp_path / "new/docker", h.config, [], store="containerd",
                       containerd=_ctd_plan(h, ctd_new))  # fmt: skip
        assert not pf.ok and not _checks(pf)[name][0], name
    pf = preflight(h.old, h.ctd / "x", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, tmp_path / "n/ctd"))  # fmt: skip
    assert not _checks(pf)["data-root target apart from containerd's root"][0]
    h.toml.write_bytes(TOML % b"/somewhere/else")
    pf = preflight(h.old, tmp_path / "n/docker", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, tmp_path / "n/ctd"))  # fmt: skip
    ok, detail = _checks(pf)["containerd config names the root"]
    assert not ok and "/somewhere/else" in detail and str(h.ctd) in detail
    managed = ContainerdPlan(h.old / "containerd/daemon", tmp_path / "n/ctd", h.toml, "x")
    (h.old / "containerd/daemon").mkdir(parents=True)
    pf = preflight(h.old, tmp_path / "n/docker", h.config, [], store="containerd",
                   containerd=managed)  # fmt: skip
    assert "managed" in _checks(pf)["containerd root apart from the data root"][1]


def test_a_containerd_store_host_without_containerd_to_is_told_what_does_not_move(
    tmp_path: Path,
) -> None:
    h = _host(tmp_path)
    pf = preflight(h.old, tmp_path / "n/docker", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, None))  # fmt: skip
    ok, detail = _checks(pf)["containerd root moves"]
    assert not ok and not pf.ok
    assert f"containerd's root {h.ctd}, which data-root does not move" in detail
    assert "--containerd-to" in detail


pytestmark_root = pytest.mark.skipif(os.geteuid() != 0, reason="relocation needs root")


def _cli(h: Host, new: Path, *extra: str, check: int | None = 0) -> str:
    proc = run_cli(
        *("relocate", "--to", str(new), "--root", str(h.old), "--config-file", str(h.config)),
        *("--containerd-config", str(h.toml), "--containerd-address", str(h.ctd.parent / "c.sock")),
        *("--host", "unix:///nonexistent.sock", "--state-dir", str(h.old.parent / "state")),
        *extra,
        check=check,
    )
    return proc.stdout + proc.stderr


@pytestmark_root
def test_cli_dry_run_on_a_containerd_store_host(tmp_path: Path) -> None:
    h = _host(tmp_path)
    (tmp_path / "n").mkdir()
    before = (h.config.read_bytes(), h.toml.read_bytes())
    out = _cli(h, tmp_path / "n/docker", "--dry-run", check=3)
    assert "[FAIL] containerd root moves" in out and "preflight FAILED" in out
    out = _cli(h, tmp_path / "n/docker", "--containerd-to", str(tmp_path / "n/ctd"), "--dry-run")
    assert f"and containerd's root {h.ctd} -> {tmp_path}/n/ctd" in out
    assert "preflight passed" in out
    assert (h.config.read_bytes(), h.toml.read_bytes()) == before
    assert not any((tmp_path / "n").iterdir())


@pytestmark_root
def test_cli_refuses_containerd_to_on_a_graphdriver_host(tmp_path: Path) -> None:
    from dockergc.fixture.demo import write_demo_root

    old = write_demo_root(tmp_path / "docker")
    proc = run_cli(
        *("relocate", "--to", str(tmp_path / "n"), "--root", str(old), "--config-file", "/x"),
        *("--containerd-to", str(tmp_path / "c"), "--dry-run"),
        check=3,
    )
    assert "refusing --containerd-to" in proc.stderr and "graphdriver (overlay2)" in proc.stderr


# -- a whole run, rollback and finalize, the daemon's control faked ----------------------


@dataclass
class Fake:
    """dockerd and containerd as the steps see them: stopped/started by the commands, each
    on the root its config names."""

    h: Host
    running: bool = True
    images: frozenset[str] = frozenset({"sha256:" + "d" * 64})  # containerd's, by id

    def engine_state(self, host: str) -> daemon.EngineState:
        return daemon.EngineState(self.engine_root(host), 5, 0, (), self.images)

    def engine_root(self, host: str) -> str:
        if not self.running:
            raise daemon.EngineUnavailable("down")
        return str(json.loads(self.h.config.read_bytes())["data-root"])

    def run_command(self, cmd: str, timeout: float = 300) -> None:
        self.running = cmd == "start"

    def daemons_using(self, root: Path) -> list[DaemonProcess]:
        """The dockerd, on the root daemon.json names, while it runs."""
        on = self.running and Path(root) == Path(self.engine_root(""))
        return [DaemonProcess(1, "dockerd", str(root))] if on else []

    def containerd_on(self, root: Path) -> bool:
        return self.running and ctdconfig.root_of(self.h.toml.read_bytes()) == str(root)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fake]:
    f = Fake(_host(tmp_path))
    monkeypatch.setattr(daemon, "engine_state", f.engine_state)
    monkeypatch.setattr(daemon, "engine_root", f.engine_root)
    monkeypatch.setattr(daemon, "run_command", f.run_command)
    monkeypatch.setattr(daemon, "daemons_using", f.daemons_using)
    monkeypatch.setattr(daemon, "processes_using", lambda root: [])
    monkeypatch.setattr(impl, "containerd_on", f.containerd_on)
    yield f


def _run(fake: Fake, disk: Path, before_step: object = None) -> tuple[executor.Journal, Path, Path]:
    h, run_id = fake.h, new_run_id()
    new, ctd_new = disk / "docker", disk / "ctd"
    move = ContainerdMove(h.ctd, ctd_new, h.toml, daemonjson.sha256_of(h.toml))
    control = Control("stop", "start", "unix:///x", h.config)
    steps = plan_relocation(h.old, new, control, run_id, 5, 0, False,
                            config_sha256=daemonjson.sha256_of(h.config), precopy=True,
                            containerd=move)  # fmt: skip
    journal = executor.begin(h.old.parent / "state", run_id, h.old, new, steps)
    ctx = executor.Context(run_id, before_step=before_step)  # type: ignore[arg-type]
    if before_step is None:
        executor.run(journal, ctx)
    else:
        with pytest.raises(executor.RelocationFailed):
            executor.run(journal, ctx)
    return journal, new, ctd_new


@pytestmark_root
def test_both_roots_move_roll_back_and_finalize(fake: Fake) -> None:
    h = fake.h
    config, toml = h.config.read_bytes(), h.toml.read_bytes()
    meta = "io.containerd.metadata.v1.bolt/meta.db"
    with loop_fs(200) as disk:
        journal, new, ctd_new = _run(fake, disk)
        view = executor.view_of(journal)
        assert view.state == "relocated" and view.containerd_new == str(ctd_new)
        assert json.loads(h.config.read_bytes())["data-root"] == str(new)
        assert h.toml.read_bytes() == toml.replace(str(h.ctd).encode(), str(ctd_new).encode())
        assert (ctd_new / meta).read_bytes() == (h.ctd / meta).read_bytes()
        assert (new / "volumes/v/_data/f").read_bytes() == b"volume data"
        assert "copy (containerd)" in view.timings
        executor.rollback(journal, executor.Context(journal.run_id))
        assert (h.config.read_bytes(), h.toml.read_bytes()) == (config, toml)
        assert not any(new.iterdir()) and not any(ctd_new.iterdir())
        assert (h.ctd / meta).is_file() and fake.running

        journal, new, ctd_new = _run(fake, disk)
        executor.finalize(journal, executor.Context(journal.run_id))
        assert not any(h.ctd.iterdir()) and not [
            p for p in h.old.iterdir() if p.name != ".dockergc"
        ]
        assert (ctd_new / meta).is_file()


@pytestmark_root
def test_an_image_the_daemon_listed_before_the_stop_must_be_listed_after(fake: Fake) -> None:
    """On the containerd store the images are containerd's: the stop step journals the
    daemon's listing, and post-verify wants every image of it back."""

    def lose_the_image(step: object) -> None:
        if isinstance(step, S.PostVerify):
            fake.images = frozenset()

    with loop_fs(200) as disk:
        journal, new, _ = _run(fake, disk, lose_the_image)
        view = executor.view_of(journal)
        assert view.state == "rolled-back", view
        assert "does not list all it must: 1 image(s) missing: dddddddddddd" in view.error
        assert not any(new.iterdir()) and fake.running


@pytestmark_root
@pytest.mark.parametrize(
    "at", ["copy (containerd)", "switch-config (containerd.toml)", "start-daemon"]
)
def test_a_fault_at_a_containerd_step_rolls_both_back(fake: Fake, at: str) -> None:
    h = fake.h
    config, toml = h.config.read_bytes(), h.toml.read_bytes()

    def fault(step: S.Step) -> None:
        if S.label(step) == at:
            raise OSError(5, "injected")

    with loop_fs(200) as disk:
        journal, new, ctd_new = _run(fake, disk, fault)
        view = executor.view_of(journal)
        assert view.state == "rolled-back", view.error
        assert (h.config.read_bytes(), h.toml.read_bytes()) == (config, toml)
        assert not any(new.iterdir()) and not any(ctd_new.iterdir())
        assert fake.running
        assert not list(h.toml.parent.glob("config.toml.dockergc-*")) or at != "copy (containerd)"


@pytestmark_root
def test_other_namespaces_need_an_explicit_yes(tmp_path: Path) -> None:
    base = docker_like_spec()
    spec = CtdSpec(
        namespaces=(*base.namespaces, K8S),
        blobs=base.blobs,
        snapshots=base.snapshots,
        images=base.images,
        leases=base.leases,
        containers=base.containers,
    )
    h = _host(tmp_path, spec)
    (tmp_path / "n").mkdir()
    before = (h.config.read_bytes(), h.toml.read_bytes())
    out = _cli(h, tmp_path / "n/docker", "--containerd-to", str(tmp_path / "n/ctd"), check=3)
    assert "[note] other containerd clients: WARNING: containerd also serves" in out
    assert "containerd also serves k8s.io (0 images, 0 containers): stopping it" in out
    assert "pass --yes to move it anyway" in out
    assert (h.config.read_bytes(), h.toml.read_bytes()) == before
    assert not any((tmp_path / "n").iterdir()) and not (tmp_path / "state").exists()


# -- the preflight's downtime estimate ---------------------------------------------------


def test_downtime_estimates_from_the_walk_and_the_read_rate() -> None:
    from dockergc.relocate.preflight import downtime_estimates

    precopy, offline = downtime_estimates(10 * 2**30, 2.0, 100 * 2**20)
    assert precopy == 15.0  # 5 walks (final pass: both trees + the forced list; verify) + 5 s
    assert offline == round(10 * 1024 / 100 + 4 + 5, 1)  # the copy + verify's 2 walks + 5 s
    assert downtime_estimates(10 * 2**30, 2.0, None) == (15.0, None)


def test_the_read_rate_reads_only_the_roots_regular_files(tmp_path: Path) -> None:
    from dockergc.relocate.preflight import read_rate

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.write_bytes(os.urandom(4 * 2**20))
    (root / "link").symlink_to(outside)
    os.mkfifo(root / "fifo")
    assert read_rate([root]) is None  # nothing of its own to read: the link not followed
    (root / "d").mkdir()
    (root / "d/f").write_bytes(os.urandom(3 * 2**20))
    rate = read_rate([root])
    assert rate is not None and rate > 2**20


def test_the_preflight_prints_the_downtime_estimate(tmp_path: Path) -> None:
    h = _host(tmp_path)
    (h.old / "volumes/v/_data/big").write_bytes(os.urandom(2 * 2**20))
    pf = preflight(h.old, tmp_path / "n/docker", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, tmp_path / "n/ctd"))  # fmt: skip
    ok, detail = _checks(pf)["downtime estimate"]
    assert ok and pf.downtime_precopy is not None and pf.downtime_offline is not None
    assert detail.startswith("about ") and "with the pre-copy" in detail
    assert "--offline about" in detail and "/s read here" in detail


@pytestmark_root
def test_a_rollback_refuses_with_nothing_changed_while_config_toml_is_unaccounted_for(
    fake: Fake,
) -> None:
    h = fake.h
    with loop_fs(200) as disk:
        journal, new, ctd_new = _run(fake, disk)
        h.toml.write_bytes(h.toml.read_bytes() + b"# edited after the move\n")
        before = (h.config.read_bytes(), h.toml.read_bytes(), journal.path.read_bytes())
        with pytest.raises(impl.ConfigConflict, match="config.toml"):
            executor.rollback(journal, executor.Context(journal.run_id))
        assert (h.config.read_bytes(), h.toml.read_bytes(), journal.path.read_bytes()) == before
        assert fake.running and (ctd_new / "io.containerd.metadata.v1.bolt/meta.db").is_file()


# -- the kill matrix of both roots' daemonless steps (the real engine's: test_engine_…) --


def _both_steps(tmp: Path) -> tuple[Host, Path, Path, list[S.Step]]:
    """Both roots' pre-copy, final pass and verification, both configs' backup and
    switch: every step of the containerd plan that needs no daemon."""
    h = _host(tmp)
    new, ctd_new = tmp / "new/docker", tmp / "new/ctd"
    marker = S.marker_for("r")
    files = [
        (h.config, str(new), S.DAEMON_JSON),
        (h.toml, str(ctd_new), S.CONTAINERD_TOML),
    ]
    pairs = [(h.old, new, ""), (h.ctd, ctd_new, S.CONTAINERD)]
    steps: list[S.Step] = [S.PreCopy(str(o), str(n), "", marker, w) for o, n, w in pairs]
    steps += [S.Copy(str(o), str(n), "", marker, w) for o, n, w in pairs]
    steps += [S.VerifyCopy(str(o), str(n), marker, w) for o, n, w in pairs]
    shas = {c: daemonjson.sha256_of(c) for c, _, _ in files}
    steps += [S.BackupConfig(str(c), f"{c}.dockergc-r.bak", shas[c], k) for c, _, k in files]
    steps += [S.SwitchConfig(str(c), r, f"{c}.dockergc-r.bak", shas[c], k) for c, r, k in files]
    return h, new, ctd_new, steps


@pytestmark_root
def test_killed_after_any_record_both_roots_and_both_files_roll_back_or_resume(
    tmp_path: Path,
) -> None:
    from dockergc.relocate.verify import compare
    from tests.relocate_crash import record_labels, relocate_and_kill

    h, new, ctd_new, steps = _both_steps(tmp_path)
    original = (h.config.read_bytes(), h.toml.read_bytes())
    switched = (
        daemonjson.switched(original[0], str(new)),
        ctdconfig.switched(original[1], str(ctd_new)),
    )
    state = tmp_path / "state"
    kills: list[int | str] = [*range(1, len(record_labels(steps)) + 1)]
    kills.append("progress=pre-copy pass 1 (containerd)")  # between containerd's passes
    labels = [*record_labels(steps), "in containerd's pre-copy"]
    for n, label in zip(kills, labels, strict=True):
        for how in ("rollback", "resume"):
            run_id = f"r{kills.index(n)}-{how}"
            relocate_and_kill(state, run_id, h.old, new, steps, n)
            journal = executor.journal_for(state, run_id)
            if how == "rollback":
                assert executor.rollback(journal, impl.Context(run_id)).state == "rolled-back"
                assert (h.config.read_bytes(), h.toml.read_bytes()) == original, label
                for target in (new, ctd_new):
                    assert not target.exists() or not any(target.iterdir()), label
            elif label != "end":
                assert executor.resume(journal, impl.Context(run_id)).state == "relocated"
                assert (h.config.read_bytes(), h.toml.read_bytes()) == switched, label
                assert compare(str(h.old), str(new))[1] == [], label
                assert compare(str(h.ctd), str(ctd_new))[1] == [], label
            daemonjson.write_atomic(h.config, original[0])
            daemonjson.write_atomic(h.toml, original[1])
            for target in (new, ctd_new):  # a resumed run's copies: the next run's target
                shutil.rmtree(target, ignore_errors=True)


@pytestmark_root
def test_a_rollback_of_both_killed_after_any_record_finishes_when_run_again(
    tmp_path: Path,
) -> None:
    from tests.relocate_crash import relocate_and_kill

    h, new, ctd_new, steps = _both_steps(tmp_path)
    original = (h.config.read_bytes(), h.toml.read_bytes())
    state = tmp_path / "state"
    # rollback-begin, then an undo-intent and undo-done for each of: the two restores and
    # the two copies' removal (the other undos are no-ops, not journaled)
    for n in range(1, 10):
        run_id = f"r{n}"
        executor.run(executor.begin(state, run_id, h.old, new, steps), impl.Context(run_id))
        relocate_and_kill(state, run_id, h.old, new, None, n)
        journal = executor.journal_for(state, run_id)
        with pytest.raises(executor.RefusedError, match="rolling-back"):
            executor.resume(journal, impl.Context(run_id))
        assert executor.rollback(journal, impl.Context(run_id)).state == "rolled-back"
        assert (h.config.read_bytes(), h.toml.read_bytes()) == original, n
        assert not any(new.iterdir()) and not any(ctd_new.iterdir()), n


def test_preflight_fails_when_an_imported_file_sets_the_root(tmp_path: Path) -> None:
    """The switch rewrites the main file's root; an import's root would win over it, and
    containerd would start on its old root after the move."""
    h = _host(tmp_path)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d/50-root.toml").write_text(f'root = "{h.ctd}"\n')
    h.toml.write_bytes(b'imports = ["conf.d/*.toml"]\n' + h.toml.read_bytes())
    new = tmp_path / "new"
    new.mkdir()
    pf = preflight(h.old, new / "docker", h.config, [], store="containerd",
                   containerd=_ctd_plan(h, new / "ctd"))  # fmt: skip
    ok, detail = _checks(pf)["containerd config imports"]
    assert not ok and not pf.ok
    assert f"{tmp_path}/conf.d/50-root.toml (imported by {h.toml}) sets root" in detail


@pytest.mark.parametrize("how", ["--root", "another config"])
def test_preflight_fails_when_containerd_would_not_take_the_switched_root(
    tmp_path: Path, fake_daemon: Callable[..., None], how: str
) -> None:
    """The switch changes config.toml's root: a containerd whose root is on its command
    line, or that reads another config file, would come back on the old root."""
    h = _host(tmp_path)
    plan = _ctd_plan(h, tmp_path / "new/ctd")
    Path(plan.address).write_text("")  # its socket, as far as the preflight can tell
    other = tmp_path / "other.toml"
    shutil.copy(h.toml, other)
    if how == "--root":
        fake_daemon(
            "containerd", "--address", plan.address, "--config", str(h.toml), "--root", str(h.ctd)
        )
        says = f"--root on its command line wins over {h.toml}'s root"
    else:
        fake_daemon("containerd", "--address", plan.address, "--config", str(other))
        says = f"reads {other}, not {h.toml}: pass --containerd-config {other}"
    for _ in range(100):  # until it runs as containerd (not still the fork)
        pf = preflight(h.old, tmp_path / "new/docker", h.config, [], store="containerd",
                       containerd=plan)  # fmt: skip
        if "containerd takes its root from config.toml" in _checks(pf):
            break
        time.sleep(0.05)
    ok, detail = _checks(pf)["containerd takes its root from config.toml"]
    assert not ok and not pf.ok and says in detail, detail
    assert _checks(pf)["containerd runs on the root"][0]


def test_preflight_passes_a_containerd_reading_the_config_that_is_switched(
    tmp_path: Path, fake_daemon: Callable[..., None]
) -> None:
    h = _host(tmp_path)
    plan = _ctd_plan(h, tmp_path / "new/ctd")
    Path(plan.address).write_text("")
    fake_daemon("containerd", "--address", plan.address, "--config", str(h.toml))
    for _ in range(100):
        pf = preflight(h.old, tmp_path / "new/docker", h.config, [], store="containerd",
                       containerd=plan)  # fmt: skip
        if _checks(pf)["containerd runs on the root"][0]:
            break
        time.sleep(0.05)
    checks = _checks(pf)
    assert checks["containerd runs on the root"][0], checks
    assert "containerd takes its root from config.toml" not in checks
    assert pf.ok, checks


def test_imports_resolve_from_the_path_containerd_is_given_not_its_symlink_target(
    tmp_path: Path,
) -> None:
    """config.toml a symlink into a config-management dir: containerd resolves relative
    imports from the dir of the path it is given (no symlink followed), so must we."""
    h = _host(tmp_path)
    managed = tmp_path / "managed"
    managed.mkdir()
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d/10-root.toml").write_text(f'root = "{h.ctd}"\n')
    (managed / "config.toml").write_bytes(b'imports = ["conf.d/*.toml"]\n' + h.toml.read_bytes())
    (etc / "config.toml").symlink_to(managed / "config.toml")
    plan = ContainerdPlan(
        h.ctd,
        tmp_path / "new/ctd",
        managed / "config.toml",
        str(tmp_path / "none.sock"),
        config_named=str(etc / "config.toml"),
    )
    (tmp_path / "new").mkdir()
    pf = preflight(h.old, tmp_path / "new/docker", h.config, [], store="containerd",
                   containerd=plan)  # fmt: skip
    ok, detail = _checks(pf)["containerd config imports"]
    assert not ok and f"{etc}/conf.d/10-root.toml (imported by" in detail
