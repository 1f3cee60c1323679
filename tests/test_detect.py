"""Daemon detection on a fake /proc: names, cwd, namespaces, open files, (dev, ino).

Each fake process is a dir with the files detection reads (cmdline, comm, and the exe,
cwd, root and fd/N links); its ``root`` link stands for its mount namespace's root.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dockergc.host.detect import daemons_using, dockerd_root, processes_using
from dockergc.host.procfs import resolve


def fake_proc(
    proc: Path,
    pid: int,
    argv: list[str],
    *,
    cwd: Path = Path("/"),
    root: Path = Path("/"),
    fds: tuple[Path, ...] = (),
) -> None:
    d = proc / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    (d / "comm").write_text(os.path.basename(argv[0])[:15] + "\n")
    (d / "exe").symlink_to(argv[0])
    (d / "cwd").symlink_to(cwd)
    (d / "root").symlink_to(root)
    for n, target in enumerate(fds, start=3):
        (d / "fd" / str(n)).symlink_to(target)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "docker"
    (r / "volumes").mkdir(parents=True)
    (r / "volumes" / "metadata.db").write_bytes(b"")
    return r


def test_resolve_stays_in_the_process_namespace(tmp_path: Path) -> None:
    ns = tmp_path / "ns"
    (ns / "real").mkdir(parents=True)
    (ns / "srv").mkdir()
    (ns / "srv" / "data").symlink_to("/real")  # absolute: from *its* root, not ours
    found = resolve(str(ns), "/srv/data")
    assert (found.path, found.exists, found.symlinks) == ("/real", True, 1)
    assert resolve(str(ns), "../../../real").path == "/real"  # .. stops at its root
    assert resolve(str(ns), "data", cwd="/srv").path == "/real"
    missing = resolve(str(ns), "/srv/nope/x/../y")
    assert (missing.path, missing.exists) == ("/srv/nope/y", False)


def test_relative_config_file_is_read_from_the_daemon_cwd(tmp_path: Path, root: Path) -> None:
    """dockerd-ce --config-file daemon.json, in its cwd; data-root names an alias."""
    proc, etc = tmp_path / "proc", tmp_path / "etc"
    etc.mkdir()
    (tmp_path / "alias").symlink_to(root)
    (etc / "daemon.json").write_text(json.dumps({"data-root": str(tmp_path / "alias")}))
    fake_proc(proc, 42, ["/opt/bin/dockerd-ce", "--config-file", "daemon.json"], cwd=etc)
    [d] = daemons_using(root, proc)
    assert (d.pid, d.name, d.kind) == (42, "dockerd-ce", "dockerd")
    text = d.describe()
    assert text.startswith(f"dockerd-ce (pid 42, /opt/bin/dockerd-ce) uses {tmp_path}/alias")
    assert f"the same directory as {root}" in text
    assert f"relative to its cwd {etc}" in text and "symlink" in text


def test_a_path_is_resolved_in_the_daemon_namespace(tmp_path: Path) -> None:
    """--data-root /srv/data means what it means in the daemon's mount namespace."""
    proc, ns = tmp_path / "proc", tmp_path / "ns"
    (ns / "real" / "volumes").mkdir(parents=True)
    (ns / "srv").mkdir()
    (ns / "srv" / "data").symlink_to("/real")
    fake_proc(proc, 7, ["/usr/sbin/dockerd", "--data-root", "/srv/data"], root=ns)
    assert [d.pid for d in daemons_using(ns / "real", proc)] == [7]


def test_the_same_path_string_is_not_the_same_directory(tmp_path: Path, root: Path) -> None:
    """In its namespace, the path that names our root is another directory: not ours."""
    proc, ns = tmp_path / "proc", tmp_path / "ns"
    (ns / str(root).lstrip("/")).mkdir(parents=True)
    fake_proc(proc, 8, ["/usr/sbin/dockerd", "--data-root", str(root)], root=ns)
    assert daemons_using(root, proc) == []
    fake_proc(proc, 9, ["/usr/sbin/dockerd", "-g", str(root)])
    assert [d.pid for d in daemons_using(root, proc)] == [9]


def test_containerd_rooted_inside_the_data_root(tmp_path: Path, root: Path) -> None:
    proc = tmp_path / "proc"
    toml = tmp_path / "containerd.toml"
    toml.write_text(f'version = 2\nroot = "{root}/containerd/daemon"\n')
    fake_proc(proc, 5, ["/usr/bin/containerd", "--config", str(toml)])
    fake_proc(proc, 6, ["/usr/bin/containerd-shim-runc-v2", "-id", "x"], cwd=root)
    d, shim = daemons_using(root, proc)
    assert (d.pid, d.kind) == (5, "containerd")
    assert f"keeps its root {root}/containerd/daemon inside {root}" in d.describe()
    assert (shim.pid, shim.kind) == (6, "process")  # not a daemon by name; it holds the root


def test_a_daemon_by_any_name_is_found_by_its_open_files(tmp_path: Path, root: Path) -> None:
    proc = tmp_path / "proc"
    other = tmp_path / "other"
    other.mkdir()
    fake_proc(proc, 11, ["/usr/sbin/dockerd", "--data-root", str(other)])
    fake_proc(proc, 12, ["/tmp/storaged"], fds=(Path("/dev/null"), root / "volumes/metadata.db"))
    fake_proc(proc, 13, ["/bin/sh"], cwd=root / "volumes")
    fake_proc(proc, 14, ["/bin/cat"], fds=(tmp_path / "other",))
    assert [(d.pid, d.kind) for d in daemons_using(root, proc)] == [
        (12, "process"),
        (13, "process"),
    ]
    assert f"has {root}/volumes/metadata.db open" in daemons_using(root, proc)[0].describe()
    users = processes_using(root, proc)
    assert len(users) == 2 and any(f"has its cwd in {root}/volumes" in u for u in users)


def test_every_process_is_checked_by_what_it_holds(tmp_path: Path, root: Path) -> None:
    """A daemon found by name does not spare the others the check of their open files."""
    proc = tmp_path / "proc"
    fake_proc(proc, 20, ["/usr/sbin/dockerd", "--data-root", str(root)])
    fake_proc(proc, 21, ["/tmp/storaged"], fds=(root / "volumes/metadata.db",))
    assert [d.pid for d in daemons_using(root, proc)] == [20, 21]
    assert len(processes_using(root, proc)) == 2


def test_a_daemon_whose_config_was_edited_is_found_by_what_it_holds(
    tmp_path: Path, root: Path
) -> None:
    """daemon.json now names another root (a move being prepared): the dockerd still
    running on this one is found by its open databases, and says why it was missed."""
    proc, other = tmp_path / "proc", tmp_path / "new"
    other.mkdir()
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"data-root": str(other)}))
    db = root / "volumes/metadata.db"
    fake_proc(proc, 50, ["/usr/sbin/dockerd", "--config-file", str(cfg)], fds=(db,))
    fake_proc(proc, 51, ["/usr/bin/containerd", "--root", str(other)], cwd=root)
    d, ctd = daemons_using(root, proc)
    assert (d.pid, d.name, d.kind) == (50, "dockerd", "dockerd")
    assert d.describe().startswith(f"dockerd (pid 50, /usr/sbin/dockerd) has {db} open")
    assert "its configuration names another root" in d.describe()
    assert "it may have been edited after it started" in d.describe()
    assert (ctd.pid, ctd.kind) == (51, "containerd")
    assert f"has its cwd in {root}; its command line names another root" in ctd.describe()


def test_a_shell_in_the_root_is_not_called_a_daemon(tmp_path: Path, root: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 60, ["/bin/sh"], cwd=root / "volumes")
    fake_proc(proc, 61, ["/usr/bin/less"], fds=(root / "volumes/metadata.db",))
    sh, less = (d.describe() for d in daemons_using(root, proc))
    assert sh.startswith(f"sh (pid 60, /bin/sh) has its cwd in {root}/volumes (found by")
    assert f"has {root}/volumes/metadata.db open (found by its files" in less
    assert "uses" not in sh + less


def test_a_process_that_vanishes_or_is_unreadable_is_skipped(tmp_path: Path, root: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "30").mkdir(parents=True)  # exited between listing and reading
    fake_proc(proc, 31, ["/usr/sbin/dockerd", "--data-root", str(root)])
    (proc / "31" / "root").unlink()  # root link unreadable: cannot resolve its paths
    fake_proc(proc, 32, ["/usr/sbin/dockerd", "--data-root", str(root)])
    assert [d.pid for d in daemons_using(root, proc)] == [32]
    assert daemons_using(tmp_path / "gone", proc) == []


def test_dockerd_root_reads_flags_then_config_then_default(tmp_path: Path) -> None:
    cfg = tmp_path / "d.json"
    cfg.write_text(json.dumps({"graph": "/g"}))
    assert dockerd_root(["--data-root=/a", "--config-file", str(cfg)]) == "/a"
    assert dockerd_root(["--config-file", str(cfg)]) == "/g"
    assert dockerd_root(["--config-file", str(tmp_path / "none")]) == "/var/lib/docker"


def test_relative_data_root_is_resolved_against_the_daemon_cwd(tmp_path: Path, root: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 40, ["/usr/bin/dockerd", "--data-root", "./docker"], cwd=tmp_path)
    fake_proc(proc, 41, ["/usr/bin/dockerd", "--data-root", "./docker"], cwd=root)
    d, held = daemons_using(root, proc)
    assert d.pid == 40 and f"uses {root} (--data-root, relative to its cwd" in d.describe()
    assert held.pid == 41 and f"has its cwd in {root}; its command" in held.describe()


@pytest.mark.parametrize(
    ("argv", "root"),
    [
        (["-g/a"], "/a"),
        (["-g=/a"], "/a"),
        (["-g", "/a"], "/a"),
        (["-Dg", "/a"], "/a"),
        (["-Dg/a"], "/a"),
        (["-Dg=/a"], "/a"),
        (["--data-root=/a"], "/a"),
        (["--data-root", "/a"], "/a"),
        (["--graph", "/a"], "/a"),
        (["-D", "-g", "/b", "--debug", "-g/a"], "/a"),  # the last one counts
        (["-H", "-g", "--data-root", "/a"], "/a"),  # -H takes "-g" as its value
        (["--debug", "--data-root", "/a", "-l", "info"], "/a"),
        (["-Hunix:///x.sock", "-Ds", "overlay2", "-g", "/a"], "/a"),
        (["--", "-g/a"], "/var/lib/docker"),
        (["-D"], "/var/lib/docker"),
    ],
)
def test_dockerd_flags_are_parsed_as_pflag_does(argv: list[str], root: str) -> None:
    assert dockerd_root([*argv, "--config-file", "/nonexistent"]) == root


CHROOTED = (
    "import os, sys, time\n"
    "f = open(sys.argv[1]) if sys.argv[1] != '-' else None\n"
    "os.chroot(sys.argv[2]); os.chdir('/')\n"
    "print('ready', flush=True); time.sleep(60)\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot)")
def test_a_chrooted_process_is_found_by_what_it_holds(tmp_path: Path, root: Path) -> None:
    """/proc names a chrooted process's files from the top of its mount tree, not from its
    root: one chrooted beside the root with a file open in it, one chrooted inside it, and
    a containerd chrooted in R/containerd with --root /daemon, are all found."""
    import subprocess
    import sys

    script = tmp_path / "chrooted.py"
    script.write_text(CHROOTED)
    (tmp_path / "jail").mkdir()
    (root / "containerd" / "daemon").mkdir(parents=True)
    db = root / "volumes" / "metadata.db"
    runs = [
        [sys.executable, str(script), str(db), str(tmp_path / "jail")],
        [sys.executable, str(script), "-", str(root / "volumes")],
        ["containerd", str(script), "-", str(root / "containerd"), "--root", "/daemon"],
    ]
    procs = [
        subprocess.Popen(a, executable=sys.executable, stdout=subprocess.PIPE, text=True)
        for a in runs
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        found = {d.pid: d for d in daemons_using(root)}
        beside, inside, ctd = (found[p.pid] for p in procs)
        assert f"has {db} open (found by its files" in beside.describe()
        assert f"has its root in {root}/volumes (found by its files" in inside.describe()
        assert ctd.kind == "containerd"
        assert f"keeps its root /daemon inside {root}" in ctd.describe()
    finally:
        for p in procs:
            p.kill()
            p.wait()


ID = "0123456789abcdef" * 4


def test_a_log_reader_is_not_a_daemon_but_must_exit_before_a_move(
    tmp_path: Path, root: Path
) -> None:
    """A process not named like a daemon whose every hold is a container's log or dir is
    left out of ``daemons_using`` (the gate) and kept in ``processes_using`` (a move or a
    removal waits for it); one more hold elsewhere, or a daemon's name, and it counts."""
    proc = tmp_path / "proc"
    logs = root / "containers" / ID
    (logs / "local-logs").mkdir(parents=True)
    json_log = logs / f"{ID}-json.log"
    for f in (json_log, logs / f"{ID}-json.log.3", logs / "local-logs" / "container.log"):
        f.write_bytes(b"")
    fake_proc(proc, 30, ["/usr/bin/filebeat"], fds=(json_log, logs / f"{ID}-json.log.3"))
    fake_proc(proc, 31, ["/usr/bin/fluent-bit"], cwd=logs, fds=(logs / "local-logs/container.log",))
    fake_proc(proc, 32, ["/usr/bin/promtail"], fds=(json_log, root / "volumes/metadata.db"))
    fake_proc(proc, 33, ["/usr/bin/dockerd", "--data-root", str(tmp_path)], fds=(json_log,))
    (root / "containers" / "abc").mkdir()
    (root / "containers" / "abc" / "abc-json.log").write_bytes(b"")  # not a container's id
    fake_proc(proc, 34, ["/usr/bin/tail"], fds=(root / "containers/abc/abc-json.log",))
    found = daemons_using(root, proc)
    assert [d.pid for d in found] == [32, 33, 34]
    assert "has " + str(root / "volumes/metadata.db") + " open" in found[0].describe()
    assert len(processes_using(root, proc)) == 5


TAIL_OR_HOLD = (
    "import sys, time\nf = open(sys.argv[1], 'rb')\nprint('ready', flush=True); time.sleep(60)\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="gc needs root")
def test_offline_gc_runs_beside_a_log_shipper_and_refuses_a_renamed_daemon(
    tmp_path: Path,
) -> None:
    """A real ``tail -F`` of a container's log does not stop an offline gc; a process
    under another name holding buildkit/snapshots.db does."""
    import shutil
    import subprocess
    import sys

    from dockergc.fixture.builder import RootBuilder
    from dockergc.relocate.preflight import Preflight, check_holders
    from tests.conftest import run_cli

    b = RootBuilder(tmp_path / "docker")
    b.layer({"f": b"x"})
    root = b.finish()
    (root / "containers" / ID).mkdir(parents=True, exist_ok=True)
    log = root / "containers" / ID / f"{ID}-json.log"
    log.write_bytes(b"{}\n")
    (root / "buildkit").mkdir(exist_ok=True)
    (root / "buildkit" / "snapshots.db").write_bytes(b"")
    tail = subprocess.Popen(["tail", "-F", str(log)], stdout=subprocess.DEVNULL)
    shutil.copy(sys.executable, tmp_path / "storaged")
    script = tmp_path / "hold.py"
    script.write_text(TAIL_OR_HOLD)
    try:
        deadline = time.monotonic() + 10
        while not any(str(log) in u for u in processes_using(root)):
            assert time.monotonic() < deadline, "tail never opened the log"
            time.sleep(0.05)
        assert daemons_using(root) == []
        pf = Preflight(str(root), str(tmp_path / "new"), 0, 0)
        check_holders(pf, root)
        (note,) = pf.checks
        assert not note.ok and not note.blocking
        assert f"tail (pid {tail.pid}" in note.detail and "stop them" in note.detail
        run_cli("gc", "--root", str(root), "--yes")
        held = subprocess.Popen(
            [str(tmp_path / "storaged"), str(script), str(root / "buildkit/snapshots.db")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert held.stdout is not None and held.stdout.readline() == "ready\n"
            refused = run_cli("gc", "--root", str(root), "--yes", check=3)
            assert f"storaged (pid {held.pid}" in refused.stderr
            assert "buildkit/snapshots.db open (found by its files" in refused.stderr
            assert "not a Docker daemon by name" in refused.stderr
        finally:
            held.kill()
            held.wait()
    finally:
        tail.kill()
        tail.wait()


def test_a_wait_that_times_out_names_what_is_left() -> None:
    """Relocation's stop and wait-idle steps say what still holds the root."""
    from dockergc.daemon import EngineUnavailable, wait_until_none

    left = [["tail (pid 7) has R/x open", "sh (pid 8) has its cwd in R"], ["tail (pid 7)"]]
    with pytest.raises(EngineUnavailable, match=r"waiting for R to be free; still using it: "):
        wait_until_none(lambda: left.pop(0) if len(left) > 1 else left[0], 0.3, "R to be free")
    wait_until_none(list, 1, "nothing")
