"""dockergc SIGKILLed at any point of a relocation of a real dockerd's root.

The kill matrix: after every journal record, ``relocate rollback`` puts daemon.json back
byte for byte and the daemon runs on the old root, and ``relocate --resume`` ends on the
new root. The copy killed with its process group resumes to an exact copy; dockergc
killed alone takes its rsync with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from dockergc.execute.journal import new_run_id
from dockergc.relocate import daemonjson, executor
from dockergc.relocate import steps as S
from dockergc.relocate.plan import Control, plan_relocation
from tests.conftest import run_cli
from tests.engine import ENGINE_VERSIONS, Engine, loop_fs
from tests.realstate import APP
from tests.relocate_crash import record_labels, relocate_and_kill

pytestmark = pytest.mark.engine

# An operator's daemon.json: its exact bytes (layout, key order) must survive.
ORIGINAL = '{\n    "log-level":   "warn",\n  "data-root": "%s"\n}\n'


@dataclass
class Host:
    e: Engine
    stop: str
    start: str
    disk: Path
    original: bytes
    counts: tuple[int, int]

    def state(self) -> tuple[str, int, int]:
        info = json.loads(self.e.run("info", "--format", "{{json .}}").stdout)
        return info["DockerRootDir"], info["Images"], info["Containers"]

    def assert_runs_on(self, root: Path, every_image: bool = False) -> None:
        """The daemon answers on ``root`` with everything: c1 starts with its volume (and
        with ``every_image``, each image runs)."""
        assert self.state() == (str(root), *self.counts)
        for image in self.e.image_ids() if every_image else []:
            self.e.run("run", "--rm", "--network", "none", image, "true")
        assert self.e.run("start", "-a", "c1").stdout.split() == ["data", "hello"]

    def on_old_root(self) -> bool:
        answers = self.e.run("info", "--format", "{{.DockerRootDir}}", check=False)
        return answers.stdout.strip() == str(self.e.root)

    def relocate_args(self, new: Path, state: Path) -> list[str]:
        return [
            "relocate",
            "--to",
            str(new),
            "--root",
            str(self.e.root),
            "--config-file",
            str(self.e.config),
            "--stop-cmd",
            self.stop,
            "--start-cmd",
            self.start,
            "--host",
            f"unix://{self.e.sock}",
            "--state-dir",
            str(state),
            "--yes",
        ]


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    e = Engine(root_in_config=True, version=request.param)
    try:
        original = (ORIGINAL % e.root).encode()
        e.config.write_bytes(original)
        stop, start = e.start_detached()
        e.import_base()
        e.build("app:1", APP)
        e.run("volume", "create", "vol1")
        c1 = ["--network", "none", "-v", "vol1:/v", "--name", "c1", "app:1"]
        e.run("create", *c1, "sh", "-c", "echo data > /v/x; cat /v/x /hello.txt")
        counts = (len(e.image_ids()), len(e.container_ids()))
        with loop_fs(1200) as disk:
            yield Host(e, stop, start, disk, original, counts)
    finally:
        e.destroy()


@pytest.fixture(autouse=True)
def back_on_the_old_root(host: Host) -> Iterator[None]:
    """Each case starts and ends with the daemon on the old root, the original config."""
    yield
    restart = not host.on_old_root() or host.e.config.read_bytes() != host.original
    if restart:
        subprocess.run(host.stop.split(), check=True)
        host.e.config.write_bytes(host.original)
        host.e.unmount_all()
    for leftover in host.e.config.parent.glob("daemon.json.dockergc-*"):
        leftover.unlink()
    for target in host.disk.iterdir():
        if target.name != "lost+found":
            shutil.rmtree(target)
    if restart:
        subprocess.run(host.start.split(), check=True)
        host.e._wait(host.on_old_root, 60, "dockerd on the old root")


def _plan(host: Host, new: Path, run_id: str, precopy: bool = False) -> list[S.Step]:
    control = Control(host.stop, host.start, f"unix://{host.e.sock}", host.e.config)
    return plan_relocation(
        host.e.root,
        new,
        control,
        run_id,
        *host.counts,
        False,
        config_sha256=daemonjson.sha256_of(host.e.config),
        precopy=precopy,
    )


# One label a journal record of a relocation: "intent-6-switch-config", ..., "end".
LABELS = record_labels(
    plan_relocation(
        Path("/o"), Path("/n"), Control("", "", "", Path("/c")), "r", 0, 0, False, config_sha256=""
    )
)


@pytest.mark.parametrize("how", ["rollback", "resume"])
@pytest.mark.parametrize("n", range(1, len(LABELS) + 1), ids=LABELS)
def test_killed_after_any_journal_record(host: Host, n: int, how: str, tmp_path: Path) -> None:
    _killed_then(host, n, how, tmp_path, LABELS, precopy=False)


# The pre-copy plan's own records: killed during the pre-copy (the daemon still runs:
# nothing to undo but the partial copy), right after it, during the final pass and
# during the verification (the daemon stopped). The rest is the offline plan's.
PRE_LABELS = record_labels(
    plan_relocation(
        Path("/o"),
        Path("/n"),
        Control("", "", "", Path("/c")),
        "r",
        0,
        0,
        False,
        config_sha256="",
        precopy=True,
    )
)
PRE_KILLS = [
    "intent-0-pre-copy",
    "progress=pre-copy pass 1",  # between the pre-copy's passes
    "done-0-pre-copy",
    "intent-3-copy",
    "intent-4-verify-copy",
]


@pytest.mark.parametrize("how", ["rollback", "resume"])
@pytest.mark.parametrize("label", PRE_KILLS)
def test_a_precopy_run_killed_at_its_new_steps(
    host: Host, label: str, how: str, tmp_path: Path
) -> None:
    n = label if label.startswith("progress=") else PRE_LABELS.index(label) + 1
    _killed_then(host, n, how, tmp_path, PRE_LABELS, precopy=True)


def _killed_then(
    host: Host, n: int | str, how: str, tmp_path: Path, labels: list[str], precopy: bool
) -> None:
    new, state, run_id = host.disk / "docker", tmp_path / "state", new_run_id()
    relocate_and_kill(state, run_id, host.e.root, new, _plan(host, new, run_id, precopy), n)
    if how == "rollback":
        proc = run_cli(
            "relocate", "rollback", run_id, "--state-dir", str(state), "--yes", check=None
        )
        assert daemonjson.read(host.e.config) == host.original  # never lost, byte for byte
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not new.exists() or not any(new.iterdir())
        host.assert_runs_on(host.e.root)
        return
    wanted = 2 if isinstance(n, int) and labels[n - 1] == "end" else 0  # finished: nothing to do
    run_cli("relocate", "--resume", run_id, "--state-dir", str(state), "--yes", check=wanted)
    doc = json.loads(host.e.config.read_bytes())
    assert doc == {**json.loads(host.original), "data-root": str(new)}
    host.assert_runs_on(new)


# -- the copy killed --------------------------------------------------------------------


@pytest.fixture
def big_file(host: Host) -> Iterator[str]:
    """A 1 GiB sparse file in vol1: rsync takes seconds over it, its temp file shows."""
    path = host.e.root / "volumes/vol1/_data/sparse"
    with open(path, "wb") as fh:
        fh.truncate(2**30)
    yield path.name
    path.unlink()


def _start_relocation(host: Host, new: Path, state: Path) -> subprocess.Popen[bytes]:
    """dockergc relocate in its own process group, as a shell job would be."""
    return subprocess.Popen(
        [sys.executable, "-m", "dockergc", *host.relocate_args(new, state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for(what: str, found: Callable[[], list[Path]], seconds: float = 120) -> list[Path]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if hits := found():
            return hits
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {seconds}s")


def _rsync_temps(new: Path, name: str) -> Callable[[], list[Path]]:
    """rsync writes ``.<name>.XXXXXX`` beside the file until it is complete."""
    return lambda: sorted((new / "volumes/vol1/_data").glob(f".{name}.??????"))


def _rsyncs_into(new: Path) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "cmdline", "status"])
        if p.info["name"] == "rsync"
        and p.info["status"] != psutil.STATUS_ZOMBIE
        and f"{new}/" in (p.info["cmdline"] or [])
    ]


def _only_run(state: Path) -> str:
    (run_id,) = executor.list_runs_in(state)  # beside the runs: the relocations' lock
    return run_id


def test_resume_after_the_copy_was_killed_with_its_group_finishes(
    host: Host, big_file: str, tmp_path: Path
) -> None:
    new, state = host.disk / "docker", tmp_path / "state"
    proc = _start_relocation(host, new, state)
    (temp,) = _wait_for("rsync temp file", _rsync_temps(new, big_file))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert temp.exists()  # the partial file a killed rsync leaves behind
    out = run_cli("relocate", "--resume", _only_run(state), "--state-dir", str(state), "--yes")
    assert "relocated" in out.stdout
    assert not _rsync_temps(new, big_file)()
    assert (new / "volumes/vol1/_data" / big_file).stat().st_size == 2**30
    host.assert_runs_on(new, every_image=True)


def test_killing_dockergc_alone_kills_its_copy(host: Host, big_file: str, tmp_path: Path) -> None:
    new, state = host.disk / "docker", tmp_path / "state"
    proc = _start_relocation(host, new, state)
    _wait_for("rsync temp file", _rsync_temps(new, big_file))
    os.kill(proc.pid, signal.SIGKILL)  # not its group: rsync must not outlive it
    proc.wait()
    deadline = time.monotonic() + 2  # the copy alone would run on for seconds
    while _rsyncs_into(new) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rsyncs_into(new) == []
    run_cli("relocate", "rollback", _only_run(state), "--state-dir", str(state), "--yes")
    assert host.e.config.read_bytes() == host.original
    host.assert_runs_on(host.e.root)


# -- the daemon started again on the old root before a resume ----------------------------


def test_resume_refuses_while_a_daemon_uses_the_old_root_again(host: Host, tmp_path: Path) -> None:
    """Killed right after the copy's intent; then someone starts docker on the old root.
    The resume must not rsync a live root: it refuses (exit 3), nothing changed; once the
    daemon is stopped again, it finishes."""
    new, state, run_id = host.disk / "docker", tmp_path / "state", new_run_id()
    n = LABELS.index("intent-2-copy") + 1
    relocate_and_kill(state, run_id, host.e.root, new, _plan(host, new, run_id), n)
    subprocess.run(host.start.split(), check=True)
    host.e._wait(host.on_old_root, 60, "dockerd on the old root again")
    journal = executor.journal_for(state, run_id).path
    before = journal.read_bytes()
    resume = [sys.executable, "-m", "dockergc", "relocate", "--resume", run_id]
    proc = subprocess.Popen(
        [*resume, "--state-dir", str(state), "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        copying = new.is_dir() and any(new.iterdir())
        if copying or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            what = "copied into" if copying else "ran for 60 s over"
            pytest.fail(f"the resume {what} {new} while dockerd used the old root")
        time.sleep(0.01)
    _, err = proc.communicate()
    assert proc.returncode == 3, err
    (line,) = err.strip().splitlines()
    assert f"uses the old root {host.e.root} again; stop it ({host.stop})" in line, line
    assert journal.read_bytes() == before
    assert not new.exists()
    assert host.e.config.read_bytes() == host.original
    host.assert_runs_on(host.e.root)
    subprocess.run(host.stop.split(), check=True)  # the operator stops it: the move goes on
    run_cli(*resume[3:], "--state-dir", str(state), "--yes")
    host.assert_runs_on(new)
