"""What a relocation checks before it goes on, without a daemon: one relocation command at
a time (the state dir's lock), and a target whose disk is no longer mounted."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockergc.execute.journal import Journal
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
        *("relocate", "--offline", "--to", str(new), "--root", str(old)),
        *("--config-file", str(config)),
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


def _dockergc_cli(args: list[str], state: Path, rsync: str) -> subprocess.CompletedProcess[str]:
    """``dockergc relocate ARGS``; with ``rsync``, the body of a shell script run as
    rsync (first on PATH)."""
    env = dict(os.environ)
    if rsync:
        bin_dir = state.parent / "bin"
        bin_dir.mkdir(exist_ok=True)
        # The preflight asks rsync its version: the real one answers.
        real = shutil.which("rsync")
        version = f'[ "$1" = --version ] && exec {real} --version\n'
        (bin_dir / "rsync").write_text(f"#!/bin/sh\n{version}{rsync}\n")
        (bin_dir / "rsync").chmod(0o755)
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    relocate = [sys.executable, "-m", "dockergc", "relocate", *args]
    return subprocess.run(relocate, env=env, capture_output=True, text=True, timeout=300)


def _relocate_cli(
    host: str, config: Path, old: Path, new: Path, state: Path, rsync: str = ""
) -> subprocess.CompletedProcess[str]:
    """``dockergc relocate --to NEW`` with fake stop/start commands and the fake engine."""
    args = ["--offline", "--to", str(new), "--root", str(old), "--config-file", str(config)]
    args += ["--host", host, "--stop-cmd", "true", "--start-cmd", "true"]
    return _dockergc_cli([*args, "--state-dir", str(state), "--yes"], state, rsync)


def _killed_mid_copy(host: str, config: Path, old: Path, new: Path, state: Path) -> str:
    """A relocation whose rsync kills dockergc (SIGKILL); its run id."""
    (old / "volumes/v/_data").mkdir(parents=True)
    (old / "volumes/v/_data/f").write_bytes(b"data" * 1000)
    killed = _relocate_cli(host, config, old, new, state, "kill -KILL $PPID\nsleep 60")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_id,) = executor.list_runs_in(state)
    last = executor.journal_for(state, run_id).records()[-1]
    assert (last["type"], last["step"]["name"]) == ("intent", "copy")  # killed mid-copy
    return run_id


def test_resume_refuses_a_target_whose_disk_is_not_mounted(
    disk: Path, tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """Killed mid-copy (its rsync kills dockergc), the disk unmounted: the resume refuses
    and writes nothing to the filesystem beneath; mounted again, it finishes."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), disk / "docker", tmp_path / "state"
    run_id = _killed_mid_copy(host, config, old, new, state)
    journal = executor.journal_for(state, run_id)
    records = journal.path.read_bytes()
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


# -- runs that must be settled first, a target that is not the copy, the old root's lock --


def _one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    return line


def test_a_rolled_back_relocation_is_not_rolled_back_again(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """Rolled back, then something put at the target: 'relocate rollback' (the latest run)
    again is refused, exit 2 (nothing to do), and removes nothing."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    assert _relocate_cli(host, config, old, new, state).returncode == 0
    (run_id,) = executor.list_runs_in(state)
    run_cli("relocate", "rollback", "--state-dir", str(state), "--yes")
    assert config.read_bytes() == CONFIG and os.listdir(new) == []
    (new / "theirs").write_text("put here after the rollback")
    journal = executor.journal_for(state, run_id)
    records = journal.path.read_bytes()
    proc = run_cli("relocate", "rollback", "--state-dir", str(state), "--yes", check=None)
    line = _one_line(proc, 2)
    assert f"relocation {run_id} was rolled back already; nothing to roll back" in line
    assert (new / "theirs").read_text() == "put here after the rollback"
    assert journal.path.read_bytes() == records and config.read_bytes() == CONFIG


def test_rollback_never_empties_a_target_that_is_not_this_runs_copy(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """The copy's marker (.dockergc-relocation-RUN, written before rsync, kept by its
    --delete, skipped by verify): a target made anew since is left as it is."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    assert _relocate_cli(host, config, old, new, state).returncode == 0
    (run_id,) = executor.list_runs_in(state)
    marked = [p.is_file() for p in (new / f".dockergc-relocation-{run_id}", old / "x")]
    subprocess.run(["rm", "-rf", str(new)], check=True)
    new.mkdir()
    (new / "theirs").write_text("not the copy")
    rollback = ("relocate", "rollback", run_id, "--state-dir", str(state), "--yes")
    proc = run_cli(*rollback, check=None)  # progress lines, then the error
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"does not hold .dockergc-relocation-{run_id}" in line, line
    assert (new / "theirs").read_text() == "not the copy"
    assert config.read_bytes() == CONFIG  # the rest of the rollback was done
    assert marked == [True, False] and not list(old.glob(".dockergc-relocation-*"))
    (new / "theirs").unlink()  # settled by hand: the rollback finishes
    assert "rolled-back" in run_cli(*rollback).stdout


@pytest.mark.parametrize("state_name", ["running", "rolling-back", "rollback-failed"])
def test_a_new_relocation_waits_for_an_unfinished_one(
    tmp_path: Path, fake_engine: tuple[str, Path], state_name: str
) -> None:
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    earlier = executor.begin(state, "r0", old, tmp_path / "new0", [])
    earlier.append({"type": "intent", "seq": 0, "step": {"name": "noop"}})
    if state_name != "running":
        earlier.append({"type": "rollback-begin"})
    if state_name == "rollback-failed":
        earlier.append({"type": "rollback-end", "state": state_name, "failures": ["x"]})
    line = _one_line(_relocate_cli(host, config, old, new, state), 3)
    assert f"relocation r0 is unfinished ({state_name}); settle it first with " in line
    rollback = f"'dockergc relocate rollback r0 --state-dir {state}'"
    resume = f"'dockergc relocate --resume r0 --state-dir {state}'"
    assert line.endswith(f"{resume} or {rollback}" if state_name == "running" else rollback)
    assert executor.list_runs_in(state) == ["r0"] and not new.exists()
    assert config.read_bytes() == CONFIG


_HOLD = """
import sys, time
from pathlib import Path
from dockergc.errors import RefusedError
from dockergc.lock import exclusive
try:
    with exclusive(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except RefusedError:
    print("refused", flush=True)
"""


def test_resume_rollback_finalize_hold_the_old_roots_gc_lock(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """The gc lock (<old>/.dockergc/lock) is held by --resume, rollback and finalize: no
    gc changes the old root under a resumed copy, and none of them runs under a gc."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    run_id = _killed_mid_copy(host, config, old, new, state)
    journal = executor.journal_for(state, run_id)
    hold = [sys.executable, "-c", _HOLD, str(old)]

    def refused_while_a_gc_holds(*args: str) -> None:
        gc = subprocess.Popen([*hold, "120"], stdout=subprocess.PIPE, text=True)
        try:
            assert gc.stdout is not None and gc.stdout.readline() == "held\n"
            records, before = journal.path.read_bytes(), config.read_bytes()
            proc = run_cli("relocate", *args, "--state-dir", str(state), "--yes", check=None)
            line = _one_line(proc, 3)
            assert f"holds {old}/.dockergc/lock; try again when it ends" in line, line
            assert journal.path.read_bytes() == records and config.read_bytes() == before
        finally:
            gc.kill()
            gc.wait()

    refused_while_a_gc_holds("--resume", run_id)
    # A gc that starts during the resumed copy (from the fake rsync) finds the lock held.
    tried = tmp_path / "gc-during-copy"
    rsync = f'{shlex.join([*hold, "0"])} > {tried}\nexec {shutil.which("rsync")} "$@"'
    resume = ["--resume", run_id, "--state-dir", str(state), "--yes"]
    proc = _dockergc_cli(resume, state, rsync)
    assert proc.returncode == 0 and "relocated" in proc.stdout, proc.stderr
    assert tried.read_text() == "refused\n"
    refused_while_a_gc_holds("rollback", run_id)
    refused_while_a_gc_holds("finalize", run_id)
    assert compare(str(old), str(new))[1] == []  # nothing removed from the old root


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_relocation_rolls_back_after_the_step(
    tmp_path: Path, fake_engine: tuple[str, Path], signum: int
) -> None:
    """Ctrl-C, SIGTERM or SIGHUP (an SSH drop) during the copy: the copy finishes and is
    journaled, then the relocation rolls back (the daemon up on the old root); one line,
    exit 128+signal."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    rsync = shutil.which("rsync")
    proc = _relocate_cli(host, config, old, new, state, f'kill -{signum} $PPID\nexec {rsync} "$@"')
    assert proc.returncode == 128 + signum, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    (run_id,) = executor.list_runs_in(state)
    name = signal.Signals(signum).name
    assert last == (
        f"dockergc: relocation {run_id} interrupted ({name}) at verify-copy; "
        f"rolled back: the daemon runs on {old} again"
    )
    journal = executor.journal_for(state, run_id)
    records = journal.records()
    done = [r["seq"] for r in records if r["type"] == "done"]
    assert done == [0, 1, 2]  # stop-daemon, wait-idle, copy: finished, then no step more
    (fault,) = [r for r in records if r["type"] == "fault"]
    assert (
        fault["signal"] == name
        and records.index(fault)
        == records.index(next(r for r in records if r["type"] == "done" and r["seq"] == 2)) + 1
    )  # journaled before the rollback begins
    undone = [r["step"] for r in records if r["type"] == "undo-done"]
    assert undone == ["start-daemon", "remove-copy"]  # the daemon up before the copy goes
    assert executor.view_of(journal).state == "rolled-back"
    assert config.read_bytes() == CONFIG and os.listdir(new) == []


# -- finalize cut short, rollback refusals before any undo, --bind, signals in rollback ---


def test_a_finalize_cut_short_is_finished_never_rolled_back(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """finalize-begin without finalize-end (killed mid-removal): 'finalizing'. A rollback
    would remove the only complete copy: refused, exit 3; a new relocation waits; finalize
    again finishes it."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    assert _relocate_cli(host, config, old, new, state).returncode == 0
    (run_id,) = executor.list_runs_in(state)
    journal = executor.journal_for(state, run_id)
    journal.append({"type": "finalize-begin"})  # then SIGKILL, half-way
    shutil.rmtree(old / "overlay2")
    shutil.rmtree(old / "image")
    assert executor.view_of(journal).state == "finalizing"
    records, switched = journal.path.read_bytes(), config.read_bytes()
    finish = f"dockergc relocate finalize {run_id} --state-dir {state}"
    rollback = ("relocate", "rollback", run_id, "--state-dir", str(state), "--yes")
    line = _one_line(run_cli(*rollback, check=None), 3)
    assert line == (
        f"dockergc: finalize of {run_id} began; the old root is partly deleted; "
        f"run '{finish}' to finish it"
    )
    assert journal.path.read_bytes() == records and config.read_bytes() == switched
    assert (new / "overlay2").is_dir()
    other = RootBuilder(tmp_path / "other")
    other.layer({"f": b"y"})
    line = _one_line(_relocate_cli(host, config, other.finish(), tmp_path / "new2", state), 3)
    assert line.endswith(f"is unfinished (finalizing); settle it first with '{finish}'"), line
    out = run_cli("relocate", "finalize", run_id, "--state-dir", str(state), "--yes").stdout
    assert f"relocation {run_id}: finalized" in out
    assert os.listdir(old) == [] or os.listdir(old) == [".dockergc"]
    assert compare(str(new), str(new))[1] == [] and (new / "overlay2").is_dir()


def _logging(tmp_path: Path, what: str, extra: str = "") -> str:
    return f"sh -c 'echo {what} >> {tmp_path}/cmds.log{extra}'"


def test_rollback_checks_daemon_json_before_stopping_the_daemon(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """daemon.json edited since the switch: the rollback refuses before any undo (the
    daemon is not stopped), one line naming daemon.json, the backup and what to do."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    args = ["--offline", "--to", str(new), "--root", str(old), "--config-file", str(config)]
    args += ["--host", host]
    args += ["--stop-cmd", _logging(tmp_path, "stop"), "--start-cmd", _logging(tmp_path, "start")]
    assert _dockergc_cli([*args, "--state-dir", str(state), "--yes"], state, "").returncode == 0
    (run_id,) = executor.list_runs_in(state)
    edited = config.read_bytes().replace(b"{", b'{"registry-mirrors": ["https://m"], ', 1)
    config.write_bytes(edited)
    log = tmp_path / "cmds.log"
    cmds, records = log.read_text(), executor.journal_for(state, run_id).path.read_bytes()
    rollback = ("relocate", "rollback", run_id, "--state-dir", str(state), "--yes")
    line = _one_line(run_cli(*rollback, check=None), 3)
    assert f"refusing to roll back relocation {run_id}, nothing changed" in line, line
    assert str(config) in line and f"{config}.dockergc-{run_id}.bak" in line
    assert line.endswith(f"then run 'dockergc relocate rollback {run_id} --state-dir {state}'")
    assert log.read_text() == cmds  # not stopped
    assert executor.journal_for(state, run_id).path.read_bytes() == records
    assert config.read_bytes() == edited and (new / "overlay2").is_dir()


def test_a_busy_bind_mount_stops_the_rollback_before_removing_the_copy(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    """--bind: the unmount fails (target busy): no remove-copy, no start; the line names
    the mount and how to find its holders. Then the rollback finishes, and says to drop
    the fstab line, not to add it."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    args = ["--offline", "--to", str(new), "--root", str(old), "--config-file", str(config)]
    args += ["--host", host]
    args += ["--bind", "--stop-cmd", "true", "--start-cmd", _logging(tmp_path, "start")]
    assert _dockergc_cli([*args, "--state-dir", str(state), "--yes"], state, "").returncode == 0
    (run_id,) = executor.list_runs_in(state)
    journal = executor.journal_for(state, run_id)
    rollback = ("relocate", "rollback", run_id, "--state-dir", str(state), "--yes")
    try:
        _busy_rollback(old, run_id, state, journal, new, tmp_path, rollback)
        out = run_cli(*rollback).stdout
        assert "rolled-back" in out and "add this line to /etc/fstab" not in out
        assert f"remove the fstab line for {old} if you added it" in out
        assert not _mounted(old), "the rollback left the bind mount in place"
    finally:  # never leave a mount behind for the rest of the suite, whatever failed
        for _ in range(5):  # stacked mounts come off one at a time
            if not _mounted(old):
                break
            subprocess.run(["umount", "-l", str(old)], check=False)


def _busy_rollback(
    old: Path,
    run_id: str,
    state: Path,
    journal: Journal,
    new: Path,
    tmp_path: Path,
    rollback: tuple[str, ...],
) -> None:
    """The rollback while a process holds the bind mount: it stops at the unmount."""
    holder = subprocess.Popen(["sleep", "60"], cwd=old / "overlay2")
    try:
        proc = run_cli(*rollback, check=None)
        assert proc.returncode == 1, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert f"cannot unmount the bind mount {old}" in last and f"'fuser -vm {old}'" in last
        assert "the daemon is down (start it with " in last, last
        assert last.endswith(
            f"finish it with 'dockergc relocate rollback {run_id} --state-dir {state}'"
        )
        undone = [r["step"]["name"] for r in journal.records() if r["type"] == "undo-intent"]
        assert undone == ["stop-daemon", "unmount"]
        assert (new / "overlay2").is_dir() and (tmp_path / "cmds.log").read_text() == "start\n"
    finally:
        holder.kill()
        holder.wait()


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


def test_ctrl_c_during_rollback_finishes_the_undo_and_says_how_to_go_on(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    slow = tmp_path / "slow"
    args = ["--offline", "--to", str(new), "--root", str(old), "--config-file", str(config)]
    args += ["--host", host]
    start = f"sh -c 'if [ -e {slow} ]; then touch {slow}.started; sleep 2; fi'"
    args += ["--stop-cmd", "true", "--start-cmd", start]
    assert _dockergc_cli([*args, "--state-dir", str(state), "--yes"], state, "").returncode == 0
    (run_id,) = executor.list_runs_in(state)
    journal = executor.journal_for(state, run_id)
    slow.touch()  # the rollback's first undo: stop the daemon (on the new root) ...
    stop = f"sh -c 'touch {slow}.stopping; sleep 2'"
    records = [json.loads(line) for line in journal.path.read_text().splitlines()]
    records[0]["steps"][0]["cmd"] = stop
    journal.path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rollback = _dockergc("relocate", "rollback", run_id, "--state-dir", str(state), "--yes")
    _until("stop command", Path(f"{slow}.stopping").exists, rollback)
    os.kill(rollback.pid, signal.SIGINT)  # ... Ctrl-C: it finishes, is journaled, then stops
    _, err = rollback.communicate(timeout=60)
    assert rollback.returncode == 130, err
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith(f"dockergc: rollback of relocation {run_id} interrupted: ")
    assert "interrupted (SIGINT) after stop-daemon" in line
    assert line.endswith(
        f"finish it with 'dockergc relocate rollback {run_id} --state-dir {state}'"
    )
    tail = [r["type"] for r in journal.records()][-3:]
    assert tail == ["undo-intent", "undo-done", "rollback-stopped"]
    assert executor.view_of(journal).state == "rolling-back"
    slow.unlink()
    assert (
        "rolled-back"
        in run_cli("relocate", "rollback", run_id, "--state-dir", str(state), "--yes").stdout
    )
    assert config.read_bytes() == CONFIG


def _relocated(tmp_path: Path, fake_engine: tuple[str, Path]) -> tuple[Path, Path, str, Journal]:
    """A relocation of the fixture root to ``tmp_path/new`` through the CLI, done: its
    daemon.json, target, run id and journal."""
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    assert _relocate_cli(host, config, old, new, state).returncode == 0
    (run_id,) = executor.list_runs_in(state)
    return config, new, run_id, executor.journal_for(state, run_id)


def test_a_rollback_cut_short_after_the_start_never_stops_the_daemon_again(
    tmp_path: Path, fake_engine: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies are removed after the daemon is started on the old root, so that is
    where Ctrl-C most likely cuts a rollback short. Finishing it as told ('relocate
    rollback RUN') only removes the copy: the daemon that runs again is not stopped and
    started once more."""
    from dockergc import daemon
    from dockergc.execute.runner import _Stop
    from dockergc.relocate.impl import Context

    config, new, run_id, journal = _relocated(tmp_path, fake_engine)
    commands: list[str] = []
    stop = _Stop()

    def started(cmd: str, timeout: float = 0) -> None:
        commands.append(f"start {cmd}")
        stop.signum = signal.SIGINT  # Ctrl-C, as the daemon comes up again

    monkeypatch.setattr(daemon, "run_command", lambda cmd, timeout=0: commands.append(cmd))
    monkeypatch.setattr(daemon, "run_start_command", started)
    with pytest.raises(executor.Interrupted, match="the daemon was started again"):
        executor.rollback(journal, Context(run_id, stop=stop))
    assert commands == ["true", "start true"] and any(new.iterdir())  # the copy is still there
    commands.clear()
    assert executor.rollback(journal, Context(run_id)).state == "rolled-back"
    assert commands == [] and not any(new.iterdir())  # only the copy removed
    assert config.read_bytes() == CONFIG


def test_a_rollback_run_again_starts_a_daemon_stopped_by_hand_since(
    tmp_path: Path, fake_engine: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback cut short had started the daemon on the old root; someone stopped it
    since. Finishing the rollback starts it again (and stops nothing): a start is taken
    as done only while the daemon answers on the old root."""
    from dockergc import daemon
    from dockergc.execute.runner import _Stop
    from dockergc.relocate.impl import Context

    config, new, run_id, journal = _relocated(tmp_path, fake_engine)
    commands: list[str] = []
    stop = _Stop()
    down = [False]
    answer = daemon.engine_root

    def engine_root(h: str) -> str:
        if down[0]:
            raise daemon.EngineUnavailable("connection refused")
        return answer(h)

    def started(cmd: str, timeout: float = 0) -> None:
        commands.append(f"start {cmd}")
        down[0] = False
        if stop.signum is None and len(commands) == 2:
            stop.signum = signal.SIGINT  # Ctrl-C, as the daemon first comes up again

    monkeypatch.setattr(daemon, "engine_root", engine_root)
    monkeypatch.setattr(daemon, "run_command", lambda cmd, timeout=0: commands.append(cmd))
    monkeypatch.setattr(daemon, "run_start_command", started)
    with pytest.raises(executor.Interrupted, match="the daemon was started again"):
        executor.rollback(journal, Context(run_id, stop=stop))
    assert commands == ["true", "start true"] and any(new.iterdir())
    commands.clear()
    down[0] = True  # `systemctl stop docker` by hand
    # The start fails first (the unit is masked, say): the copy is kept, and the line
    # says the daemon is down, not "started again".
    monkeypatch.setattr(
        daemon,
        "run_start_command",
        lambda cmd, timeout=0: (_ for _ in ()).throw(
            daemon.EngineUnavailable("'true' exited 1: Unit docker.service is masked.")
        ),
    )
    view = executor.rollback(journal, Context(run_id))
    assert view.state == "rollback-failed" and "masked" in view.error, view
    assert any(new.iterdir()) and commands == []
    assert "the daemon is down (start it with 'true')" in executor.unfinished_rollback(
        journal, view
    )
    monkeypatch.setattr(daemon, "run_start_command", started)
    assert executor.rollback(journal, Context(run_id)).state == "rolled-back"
    # Down, as far as the journal knows: the stop (a no-op) makes sure, then the start.
    assert commands == ["true", "start true"] and not any(new.iterdir())
    assert config.read_bytes() == CONFIG
