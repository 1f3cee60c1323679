"""Relocation of both roots of a real dockerd 28.5 on the containerd image store (its
images in a private containerd 2.1's root) to real second disks (loop-mounted ext4).

Success: dockerd and containerd end on the new roots, both configs switched (the
operator's config.toml byte for byte but its root), every image runs, containers start,
volumes keep their data, BuildKit's cache holds, what a container wrote during the
pre-copy is all there; the old roots are untouched until ``finalize``. A 2 MB target is
refused with nothing changed; a containerd that will not start on the new root rolls
both back. The kill matrix: dockergc SIGKILLed after each of the new steps' journal
records (and between the containerd pre-copy's passes, and mid-file in containerd's
final copy), then ``relocate rollback`` (both configs byte for byte, both daemons on the
old roots) or ``relocate --resume`` (both on the new roots).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockergc.execute.journal import new_run_id
from dockergc.relocate import ctdconfig, daemonjson, executor
from dockergc.relocate import steps as S
from dockergc.relocate.impl import containerd_on
from dockergc.relocate.plan import ContainerdMove, Control, plan_relocation
from tests import ctd_state
from tests.conftest import run_cli
from tests.engine import Engine, engine_available, loop_fs
from tests.relocate_crash import record_labels, relocate_and_kill

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        not os.environ.get("CI") and engine_available("28.5") is not None,
        reason=f"{engine_available('28.5')}",
    ),
]

# An operator's files: their exact bytes (comments, layout, key order) must survive.
ORIGINAL_JSON = '{\n    "log-level":   "warn",\n  "data-root": "%s"\n}\n'
TOML_HEAD = "# containerd for dockerd (operator's comment, kept)\n"


def control_scripts(e: Engine, fail_unless_ctd_root: Path | None = None) -> tuple[str, str]:
    """(stop, start) commands that stop dockerd then containerd, and start containerd (with
    its config file) then dockerd, as `systemctl stop docker.socket docker.service
    containerd.service` and its reverse would. With ``fail_unless_ctd_root``, the start
    fails whenever config.toml names another root: a containerd that will not come up on
    the new disk."""
    base, toml = e.base, e.ctd_dir / "config.toml"
    ctd_pid = base / "ctd.pid"
    guard = ""
    if fail_unless_ctd_root:
        guard = (
            f"grep -q '^root = \"{fail_unless_ctd_root}\"' {toml} || "
            "{ echo 'containerd refuses to start' >&2; exit 1; }\n"
        )
    path = f"PATH={shlex.quote(e.bins.path_prefix)}:$PATH; export PATH\n"
    tag = "-guarded" if fail_unless_ctd_root else ""
    start, stop = base / f"start-both{tag}.sh", base / f"stop-both{tag}.sh"
    start.write_text(
        "#!/bin/sh\n"
        + guard
        + path
        + f"if ! {{ [ -f {ctd_pid} ] && kill -0 $(cat {ctd_pid}) 2>/dev/null; }}; then\n"
        + f"  rm -f {e.ctd_sock}\n"
        + f"  setsid {e.bins.containerd} --config {toml} >>{base}/containerd.log 2>&1 &\n"
        + f"  echo $! > {ctd_pid}\n"
        + f"  for i in $(seq 150); do [ -S {e.ctd_sock} ] && break; sleep 0.2; done\n"
        + "fi\n"
        + f"[ -f {e.pidfile} ] && kill -0 $(cat {e.pidfile}) 2>/dev/null && exit 0\n"
        + f"setsid {shlex.join(e.dockerd_args())} >>{base}/dockerd.log 2>&1 &\n"
    )
    stop.write_text(
        "#!/bin/sh\n"
        "stop_pid() {\n"
        "  [ -f $1 ] || return 0; pid=$(cat $1)\n"
        "  kill -TERM $pid 2>/dev/null || return 0\n"
        "  for i in $(seq 200); do kill -0 $pid 2>/dev/null || return 0; sleep 0.2; done\n"
        "  kill -KILL $pid\n"
        "}\n"
        f"stop_pid {e.pidfile}\nstop_pid {ctd_pid}\n"
    )
    return f"sh {stop}", f"sh {start}"


@dataclass
class Host:
    e: Engine
    stop: str
    start: str
    original_json: bytes
    original_toml: bytes

    @property
    def toml(self) -> Path:
        return self.e.ctd_dir / "config.toml"

    @property
    def ctd_root(self) -> Path:
        return self.e.ctd_dir / "root"

    def state(self) -> tuple[str, int, int]:
        info = json.loads(self.e.run("info", "--format", "{{json .}}").stdout)
        return info["DockerRootDir"], info["Images"], info["Containers"]

    def on(self, root: Path, ctd_root: Path) -> bool:
        answers = self.e.run("info", "--format", "{{.DockerRootDir}}", check=False)
        return answers.stdout.strip() == str(root) and containerd_on(ctd_root)

    def configs(self) -> tuple[bytes, bytes]:
        return self.e.config.read_bytes(), self.toml.read_bytes()

    def switched(self, new: Path, ctd_new: Path) -> tuple[bytes, bytes]:
        doc = {**json.loads(self.original_json), "data-root": str(new)}
        return (json.dumps(doc, indent=2) + "\n").encode(), ctdconfig.switched(
            self.original_toml, str(ctd_new)
        )

    def relocate_args(self, new: Path, ctd_new: Path, state: Path, *extra: str) -> list[str]:
        return [
            *("relocate", "--to", str(new), "--containerd-to", str(ctd_new)),
            *("--root", str(self.e.root), "--config-file", str(self.e.config)),
            *("--containerd-config", str(self.toml)),
            *("--stop-cmd", self.stop, "--start-cmd", self.start),
            *("--host", f"unix://{self.e.sock}", "--state-dir", str(state), "--yes"),
            *extra,
        ]

    def back_to_the_old_roots(self) -> None:
        """Both daemons on the old roots with the original configs, no leftovers."""
        if not self.on(self.e.root, self.ctd_root) or self.configs() != (
            self.original_json,
            self.original_toml,
        ):
            subprocess.run(self.stop.split(), check=True)
            self.e.config.write_bytes(self.original_json)
            self.toml.write_bytes(self.original_toml)
            self.e.unmount_all()
            subprocess.run(self.start.split(), check=True)
            self.e._wait(lambda: self.on(self.e.root, self.ctd_root), 90, "both on the old roots")
        for leftover in [
            *self.e.config.parent.glob("daemon.json.dockergc-*"),
            *self.toml.parent.glob("config.toml.dockergc-*"),
        ]:
            leftover.unlink()


def _make_host(e: Engine) -> Host:
    """dockerd 28.5 on the containerd store, both daemons started by the control scripts
    (not our children), daemon.json and config.toml with the operator's bytes."""
    original_json = (ORIGINAL_JSON % e.root).encode()
    e.config.write_bytes(original_json)
    e.start()  # containerd + dockerd as our children: the roots and config.toml made
    e.stop()
    toml = e.ctd_dir / "config.toml"
    original_toml = (TOML_HEAD + toml.read_text()).encode()
    toml.write_bytes(original_toml)
    stop, start = control_scripts(e)
    subprocess.run(start.split(), check=True)
    host = Host(e, stop, start, original_json, original_toml)
    e._wait(lambda: host.on(e.root, host.ctd_root), 90, "dockerd and containerd (detached)")
    return host


@contextlib.contextmanager
def _engine() -> Iterator[Host]:
    e = Engine(root_in_config=True, version="28.5", store="containerd")
    host = None
    try:
        host = _make_host(e)
        yield host
    finally:
        e._kill_containers()
        if host is not None:
            subprocess.run(host.stop.split(), check=False)
        e.destroy()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` (.dockergc aside): (mode, size, mtime in ns)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if dirpath == str(root) and ".dockergc" in dirs:
            dirs.remove(".dockergc")
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out[rel] = (st.st_mode, st.st_size if name not in dirs else 0, st.st_mtime_ns)
    return out


META = "io.containerd.metadata.v1.bolt/meta.db"
# A container writing a line every 10 ms into its own rw layer (a snapshot in containerd's
# root) all through the pre-copy; the stop ends it.
WRITER = "trap 'exit 0' TERM; i=0; while :; do echo line $i >> /wlog; i=$((i+1)); sleep 0.01; done"


def _writer_log(ctd_root: Path) -> list[str]:
    (log,) = ctd_root.glob("io.containerd.snapshotter.v1.overlayfs/snapshots/*/fs/wlog")
    return log.read_text().splitlines()


# -- success, refusal, a daemon failing on the new root ----------------------------------


@pytest.fixture(scope="module")
def populated() -> Iterator[tuple[Host, ctd_state.Baseline]]:
    with _engine() as host:
        yield host, ctd_state.populate(host.e)


def test_both_roots_move_and_finalize(
    populated: tuple[Host, ctd_state.Baseline], tmp_path: Path
) -> None:
    host, baseline = populated
    e = host.e
    e.run(*("run", "-d", "--network", "none", "--name", "writer", "base:1", "sh", "-c", WRITER))
    before = host.state()
    with loop_fs(1500) as disk, loop_fs(1500) as ctd_disk:
        new, ctd_new = disk / "docker", ctd_disk / "containerd"
        args = host.relocate_args(new, ctd_new, tmp_path / "state")
        dry = run_cli(*args, "--dry-run").stdout
        assert f"and containerd's root {host.ctd_root} -> {ctd_new}" in dry, dry
        assert "[ok  ] containerd runs on the root" in dry and "preflight passed" in dry
        assert "[ok  ] other containerd clients: none" in dry
        assert host.configs() == (host.original_json, host.original_toml)
        proc = run_cli(*args, "--json")
        out = json.loads(proc.stdout)
        assert out["state"] == "relocated", out
        labels = [s["step"] for s in out["steps"]]
        assert labels[:3] == ["pre-copy", "pre-copy (containerd)", "stop-daemon"]
        assert "switch-config (containerd.toml)" in labels
        assert out["containerd_new"] == str(ctd_new) and 0 < out["downtime_seconds"] < 120
        estimate = next(line for line in dry.splitlines() if "downtime estimate" in line)
        print(f"\nmeasured: downtime {out['downtime_seconds']} s; preflight: {estimate.strip()}")
        print("timings:", out["timings"])
        # Both configs switched: the operator's bytes but for the one key.
        assert host.configs() == host.switched(new, ctd_new)
        assert TOML_HEAD.encode() in host.toml.read_bytes()
        assert host.on(new, ctd_new) and not containerd_on(host.ctd_root)
        assert host.state() == (str(new), before[1], before[2])
        # What the writer wrote until the stop is all on the new root (old root frozen).
        written = _writer_log(host.ctd_root)
        assert _writer_log(ctd_new) == written and len(written) > 50
        assert written == [f"line {i}" for i in range(len(written))]
        # The old roots are untouched until finalize: the daemons at work on the new roots
        # (every image run, containers started, a build, loads) change nothing there.
        old_meta, old_entries = _sha(host.ctd_root / META), _tree(host.ctd_root)
        old_data = _tree(e.root)
        ctd_state.verify_all(e, baseline)
        assert (_sha(host.ctd_root / META), _tree(host.ctd_root)) == (old_meta, old_entries)
        assert _tree(e.root) == old_data
        run_cli("relocate", "finalize", "--state-dir", str(tmp_path / "state"), "--yes")
        assert not [p for p in host.ctd_root.iterdir() if p.name != ".dockergc"]
        assert not [p for p in e.root.iterdir() if p.name != ".dockergc"]
        for image in baseline.images:
            e.run("run", "--rm", "--network", "none", image, "true")
        assert e.run("start", "-a", "c_stopped").stdout.split() == ["data"]
        e._kill_containers()
        subprocess.run(host.stop.split(), check=True)


def test_a_2mb_target_is_refused_with_nothing_changed(tmp_path: Path) -> None:
    with _engine() as host:
        host.e.import_base()
        before = host.state()
        with loop_fs(1500) as disk, loop_fs(2) as tiny:
            args = host.relocate_args(disk / "docker", tiny / "containerd", tmp_path / "state")
            proc = run_cli(*args, check=3)
            out = proc.stdout + proc.stderr
            assert "[FAIL] free space" in out and "preflight failed" in out, out
            assert not (disk / "docker").exists() and not (tiny / "containerd").exists()
        assert host.configs() == (host.original_json, host.original_toml)
        assert host.state() == before and host.on(host.e.root, host.ctd_root)
        assert not executor.list_runs_in(tmp_path / "state")


def test_containerd_failing_on_the_new_root_rolls_both_back(tmp_path: Path) -> None:
    with _engine() as host:
        e = host.e
        e.import_base()
        e.run("volume", "create", "vol1")
        e.run(*("create", "--network", "none", "-v", "vol1:/v", "--name", "c1", "base:1"),
              *("sh", "-c", "echo data > /v/x; cat /v/x"))  # fmt: skip
        before = host.state()
        _, start = control_scripts(e, fail_unless_ctd_root=host.ctd_root)
        with loop_fs(1500) as disk:
            args = host.relocate_args(disk / "docker", disk / "containerd", tmp_path / "state")
            args[args.index("--start-cmd") + 1] = start
            proc = run_cli(*args, check=1)
            out = proc.stdout + proc.stderr
            assert "relocation failed at start-daemon" in out and "rolled back" in out, out
            assert not any((disk / "docker").iterdir())
            assert not any((disk / "containerd").iterdir())
        assert host.configs() == (host.original_json, host.original_toml)
        assert host.on(e.root, host.ctd_root) and host.state() == before
        assert e.run("start", "-a", "c1").stdout.split() == ["data"]


# -- the kill matrix of the new steps ----------------------------------------------------


@dataclass
class KillHost:
    host: Host
    disk: Path
    counts: tuple[int, int]

    def targets(self) -> tuple[Path, Path]:
        return self.disk / "docker", self.disk / "containerd"

    def assert_runs_on(self, root: Path, ctd_root: Path) -> None:
        h = self.host
        assert h.on(root, ctd_root), (h.state(), root, ctd_root)
        assert h.state() == (str(root), *self.counts)
        h.e.run("run", "--rm", "--network", "none", "base:1", "true")
        assert h.e.run("start", "-a", "c1").stdout.split() == ["data"]


@pytest.fixture(scope="module")
def kill_host() -> Iterator[KillHost]:
    with _engine() as host:
        e = host.e
        e.import_base()
        e.run("volume", "create", "vol1")
        e.run(*("create", "--network", "none", "-v", "vol1:/v", "--name", "c1", "base:1"),
              *("sh", "-c", "echo data > /v/x; cat /v/x"))  # fmt: skip
        e.run("run", "--rm", "--network", "none", "-v", "vol1:/v", "base:1", "sh", "-c",
              "echo data > /v/x")  # fmt: skip
        _, images, containers = host.state()  # as docker info counts them on this store
        with loop_fs(1200) as disk:
            yield KillHost(host, disk, (images, containers))


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "kill_host" not in request.fixturenames:
        return
    kh: KillHost = request.getfixturevalue("kill_host")
    kh.host.back_to_the_old_roots()
    for target in kh.disk.iterdir():
        if target.name != "lost+found":
            shutil.rmtree(target)


def _plan(kh: KillHost, run_id: str, precopy: bool = True) -> list[S.Step]:
    h = kh.host
    new, ctd_new = kh.targets()
    control = Control(h.stop, h.start, f"unix://{h.e.sock}", h.e.config)
    move = ContainerdMove(h.ctd_root, ctd_new, h.toml, daemonjson.sha256_of(h.toml))
    return plan_relocation(
        h.e.root, new, control, run_id, *kh.counts, False,
        config_sha256=daemonjson.sha256_of(h.e.config), precopy=precopy, containerd=move,
    )  # fmt: skip


LABELS = record_labels(
    plan_relocation(
        Path("/o"), Path("/n"), Control("", "", "", Path("/c")), "r", 0, 0, False,
        config_sha256="", precopy=True,
        containerd=ContainerdMove(Path("/co"), Path("/cn"), Path("/c.toml"), ""),
    )
)  # fmt: skip
# Every record of the steps the containerd plan adds or changes: containerd's pre-copy
# (and between its passes), its wait and final pass, its verification, config.toml's
# backup and switch, the start that waits for containerd on its new root.
KILLS = [
    "intent-1-pre-copy-containerd",
    "progress=pre-copy pass 1 (containerd)",
    "done-1-pre-copy-containerd",
    "intent-2-stop-daemon",
    "intent-4-wait-idle-containerd",
    "intent-6-copy-containerd",
    "done-6-copy-containerd",
    "intent-8-verify-copy-containerd",
    "done-8-verify-copy-containerd",
    "intent-11-backup-config-containerd.toml",
    "done-11-backup-config-containerd.toml",
    "intent-13-switch-config-containerd.toml",
    "done-13-switch-config-containerd.toml",
    "intent-14-start-daemon",
    "done-14-start-daemon",
]


def test_the_kill_labels_name_the_plan() -> None:
    for label in KILLS:
        assert label.startswith("progress=") or label in LABELS, label


@pytest.mark.parametrize("how", ["rollback", "resume"])
@pytest.mark.parametrize("label", KILLS)
def test_killed_at_a_containerd_step(
    kill_host: KillHost, label: str, how: str, tmp_path: Path
) -> None:
    h, (new, _) = kill_host.host, kill_host.targets()
    state, run_id = tmp_path / "state", new_run_id()
    n = label if label.startswith("progress=") else LABELS.index(label) + 1
    relocate_and_kill(state, run_id, h.e.root, new, _plan(kill_host, run_id), n)
    _settle(kill_host, state, run_id, how)


def _settle(kh: KillHost, state: Path, run_id: str, how: str) -> None:
    h, (new, ctd_new) = kh.host, kh.targets()
    if how == "rollback":
        proc = run_cli(
            "relocate", "rollback", run_id, "--state-dir", str(state), "--yes", check=None
        )
        assert h.configs() == (h.original_json, h.original_toml)  # never lost, byte for byte
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for target in (new, ctd_new):
            assert not target.exists() or not any(target.iterdir())
        kh.assert_runs_on(h.e.root, h.ctd_root)
        return
    run_cli("relocate", "--resume", run_id, "--state-dir", str(state), "--yes")
    assert h.configs() == h.switched(new, ctd_new)
    kh.assert_runs_on(new, ctd_new)


@pytest.fixture
def big_file(kill_host: KillHost) -> Iterator[Path]:
    """A 1 GiB sparse file in containerd's root (containerd ignores what it does not
    know there): rsync takes seconds over it, its temp file shows in containerd's target."""
    path = kill_host.host.ctd_root / "sparse-big"
    with open(path, "wb") as fh:
        fh.truncate(2**30)
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["rollback", "resume"])
def test_killed_with_its_group_mid_file_in_containerds_copy(
    kill_host: KillHost, big_file: Path, how: str, tmp_path: Path
) -> None:
    """--offline: containerd's copy is a pass with the daemons stopped; dockergc and its
    rsync SIGKILLed mid-file (rsync's temp file in containerd's target)."""
    h, (new, ctd_new) = kill_host.host, kill_host.targets()
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockergc", *h.relocate_args(new, ctd_new, state, "--offline")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pattern = f".{big_file.name}.??????"
    deadline = time.monotonic() + 180
    while not (ctd_new.is_dir() and list(ctd_new.glob(pattern))):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no rsync temp file in containerd's target")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_id,) = executor.list_runs_in(state)
    records = executor.journal_for(state, run_id).records()
    last = [r for r in records if r.get("type") != "progress"][-1]
    assert last["type"] == "intent" and last["step"]["what"] == "containerd", last
    _settle(kill_host, state, run_id, how)
    if how == "resume":
        assert (ctd_new / big_file.name).stat().st_size == 2**30
        assert not list(ctd_new.glob(pattern))
