"""What a relocation checks before it goes on, without a daemon: one relocation command at
a time (the state dir's lock), and a target whose disk is no longer mounted."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockergc.fixture.builder import RootBuilder
from dockergc.relocate import daemonjson, executor
from dockergc.relocate.verify import compare
from tests.conftest import run_cli
from tests.engine import loop_fs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="relocation and mounts need root")

CONFIG = b'{"log-level": "warn"}\n'


def _dockergc(*args: str) -> subprocess.Popen[str]:
    """dockergc in its own process group, as a shell job would be."""
    return subprocess.Popen(
        [sys.executable, "-m", "dockergc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _until(what: str, ready: object, holder: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not ready():  # type: ignore[operator]
        if holder.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {what}: {holder.communicate()[1][-2000:]}")
        time.sleep(0.02)


def _refused_by_the_lock(state: Path, run_id: str, *args: str) -> None:
    """``dockergc relocate ARGS`` while another command holds the lock: exit 3 at once, one
    line naming the run that holds it."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dockergc", "relocate", *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"relocate {' '.join(args)} ran alongside the command holding run {run_id}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    lock = state / "relocations/lock"
    assert f", relocation {run_id}) holds {lock}; try again when it ends" in line, line


def _fixture_root(tmp_path: Path) -> Path:
    """A data root as dockerd writes it: one layer, no image, no container."""
    builder = RootBuilder(tmp_path / "docker")
    builder.layer({"f": b"x"})
    return builder.finish()


def test_one_relocation_command_at_a_time(tmp_path: Path) -> None:
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    config = tmp_path / "daemon.json"
    config.write_bytes(CONFIG)
    stopping = tmp_path / "stopping"
    holder = _dockergc(
        *("relocate", "--to", str(new), "--root", str(old), "--config-file", str(config)),
        *("--stop-cmd", f"sh -c 'touch {stopping}; exec sleep 60'", "--start-cmd", "true"),
        *("--host", f"unix://{tmp_path}/none.sock", "--state-dir", str(state), "--yes"),
    )
    try:
        _until("stop command", stopping.exists, holder)
        (run_id,) = executor.list_runs_in(state)
        journal = executor.journal_for(state, run_id)
        records = journal.path.read_bytes()
        # The relocation itself holds it to its end, not only --resume/rollback/finalize.
        for args in (["rollback", "--yes"], ["--resume", run_id, "--yes"], ["finalize", "--yes"]):
            _refused_by_the_lock(state, run_id, *args)
        assert journal.path.read_bytes() == records
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    rollback = _dockergc("relocate", "rollback", run_id, "--state-dir", str(state), "--yes")
    try:  # its start command is done; it waits for a daemon that never answers
        _until(
            "undo of stop-daemon", lambda: b'"undo-intent"' in journal.path.read_bytes(), rollback
        )
        records = journal.path.read_bytes()
        _refused_by_the_lock(state, run_id, "--resume", run_id, "--yes")
        _refused_by_the_lock(state, run_id, "rollback", run_id, "--yes")
        assert journal.path.read_bytes() == records
    finally:
        os.killpg(rollback.pid, signal.SIGKILL)
        rollback.wait()
    assert config.read_bytes() == CONFIG and not new.exists()


# -- a target whose disk is not mounted at resume -----------------------------------------


class _Api(http.server.BaseHTTPRequestHandler):
    """The Engine API a relocation's start and post-verify ask: the daemon answers on the
    root daemon.json names, with no images or containers (those of _fixture_root)."""

    server: _FakeEngine

    def do_GET(self) -> None:
        doc = json.loads(self.server.config.read_bytes())
        info = {"DockerRootDir": doc.get("data-root", str(self.server.old)), "Containers": 0}
        body = json.dumps(info if self.path.startswith("/info") else []).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _FakeEngine(socketserver.ThreadingUnixStreamServer):
    def __init__(self, sock: Path, config: Path, old: Path) -> None:
        super().__init__(str(sock), _Api)
        self.config, self.old = config, old


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(its unix:// host, the daemon.json it reads)."""
    config = tmp_path / "daemon.json"
    config.write_bytes(CONFIG)
    server = _FakeEngine(tmp_path / "api.sock", config, tmp_path / "docker")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"unix://{server.server_address}", config
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def disk() -> Iterator[Path]:
    with loop_fs(600) as mnt:  # preflight wants the copy's size plus 512 MiB free
        yield mnt


def _mount(disk: Path, on: bool) -> None:
    image = disk.parent / "disk.img"
    cmd = ["mount", "-o", "loop", str(image), str(disk)] if on else ["umount", str(disk)]
    subprocess.run(cmd, check=True)


def test_resume_refuses_a_target_whose_disk_is_not_mounted(
    disk: Path, tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """Killed mid-copy (its rsync kills dockergc), the disk unmounted: the resume refuses
    and writes nothing to the filesystem beneath; mounted again, it finishes."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), disk / "docker", tmp_path / "state"
    (old / "volumes/v/_data").mkdir(parents=True)
    (old / "volumes/v/_data/f").write_bytes(b"data" * 1000)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rsync").write_text("#!/bin/sh\nkill -KILL $PPID\nsleep 60\n")
    (bin_dir / "rsync").chmod(0o755)
    relocate = [sys.executable, "-m", "dockergc", "relocate", "--to", str(new)]
    relocate += ["--root", str(old), "--config-file", str(config), "--host", host]
    relocate += ["--stop-cmd", "true", "--start-cmd", "true", "--state-dir", str(state), "--yes"]
    path = f"{bin_dir}:{os.environ['PATH']}"
    killed = subprocess.run(relocate, env={**os.environ, "PATH": path}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_id,) = executor.list_runs_in(state)
    journal = executor.journal_for(state, run_id)
    records = journal.path.read_bytes()
    last = journal.records()[-1]
    assert (last["type"], last["step"]["name"]) == ("intent", "copy")  # killed mid-copy
    resume = ("relocate", "--resume", run_id, "--state-dir", str(state), "--yes")
    _mount(disk, False)
    try:
        proc = run_cli(*resume, check=None)
        written = os.listdir(disk)  # on the filesystem beneath the mount point
    finally:
        _mount(disk, True)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"the target {new} is no longer on the filesystem it was planned on" in line
    assert line.endswith("); mount it again"), line
    assert written == []
    assert journal.path.read_bytes() == records and config.read_bytes() == CONFIG
    assert "relocated" in run_cli(*resume).stdout
    assert compare(str(old), str(new))[1] == []
    assert daemonjson.read(config) == daemonjson.switched(CONFIG, str(new))
    (begin,) = [r for r in journal.records() if r["type"] == "begin"]
    (copy,) = [s for s in begin["steps"] if s["name"] == "copy"]
    assert copy["fs"].startswith("ext4 ") and copy["fs"].endswith(f" at {disk}")  # preflight's
