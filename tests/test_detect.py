"""Daemon detection on a fake /proc: names, cwd, namespaces, open files, (dev, ino).

Each fake process is a dir with the files detection reads (cmdline, comm, and the exe,
cwd, root and fd/N links); its ``root`` link stands for its mount namespace's root.
"""

from __future__ import annotations

import json
import os
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
    [d] = daemons_using(root, proc)
    assert (d.pid, d.kind) == (5, "containerd")
    assert f"keeps its root {root}/containerd/daemon inside {root}" in d.describe()


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


def test_a_named_daemon_spares_the_walk_of_open_files(tmp_path: Path, root: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 20, ["/usr/sbin/dockerd", "--data-root", str(root)])
    fake_proc(proc, 21, ["/tmp/storaged"], fds=(root / "volumes/metadata.db",))
    assert [d.pid for d in daemons_using(root, proc)] == [20]
    assert len(processes_using(root, proc)) == 2  # processes_using always looks


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
    [d] = daemons_using(root, proc)
    assert d.pid == 40 and f"uses {root} (--data-root, relative to its cwd" in d.describe()
