"""Shared fixtures: synthetic roots for fast tests, a real engine for the ones that matter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockergc.fixture.builder import RootBuilder
from dockergc.store.mountinfo import MountTable
from tests.engine import ENGINE_VERSIONS, Engine

NO_MOUNTS = MountTable((), 1, 0)


@pytest.fixture
def builder(tmp_path: Path) -> RootBuilder:
    return RootBuilder(tmp_path / "docker")


def age_tree(path: Path, seconds: float = 3 * 86400) -> None:
    """Push mtimes back; ctimes stay 'now', so tests that need age pass min_age=0 instead."""
    past = os.stat(path).st_mtime - seconds
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (past, past), follow_symlinks=False)


def run_cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run dockergc as users do, in a child process."""
    proc = subprocess.run(
        [sys.executable, "-m", "dockergc", *args], capture_output=True, text=True, timeout=600
    )
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"dockergc {' '.join(args)} exited {proc.returncode}, wanted {check}\n"
            f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="session", params=ENGINE_VERSIONS)
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, dict[str, str]]]:
    """One real dockerd per engine version for the session, populated once; tests that
    stop it restart it. pytest groups the tests by version: one engine runs at a time."""
    from tests.realstate import populate

    e = Engine(version=request.param)
    try:
        e.start()
        ids = populate(e)
        yield e, ids
    finally:
        e.destroy()


@pytest.fixture(scope="session", params=["28.5"])
def ctd_engine(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, Any]]:
    """One real dockerd 28.5 on the containerd image store for the session, populated once
    (tests/ctd_state.py); tests that stop or break it leave it running and whole. (The
    version is a parameter so that the skip logic knows which engine it needs.)"""
    from tests.ctd_state import populate

    e = Engine(version=request.param, store="containerd")
    try:
        e.start()
        yield e, populate(e)
    finally:
        e.destroy()


def ctd_flags(e: Engine) -> tuple[str, ...]:
    """dockergc's flags for a containerd-store engine: its data root and its containerd."""
    return (
        "--root",
        str(e.root),
        "--config-file",
        str(e.config),
        "--containerd-root",
        str(e.ctd_dir / "root"),
        "--containerd-address",
        str(e.ctd_sock),
    )


def on_root(root: Path) -> tuple[str, ...]:
    """The flags most tests pass: this root, no daemon.json, no grace period."""
    return ("--root", str(root), "--config-file", "/x", "--min-age", "0")


def cli_json(*args: str) -> Any:
    """Run dockergc (expecting exit 0) and decode the one JSON object it prints."""
    return json.loads(run_cli(*args).stdout)


def engine_version_of(item: pytest.Item) -> str:
    """The engine version an engine test runs on: the ENGINE_VERSIONS value its fixtures
    were parametrized with, else 20.10 (a test about 20.10's own behaviour)."""
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        if isinstance(value, str) and value in ENGINE_VERSIONS:
            return value
    return ENGINE_VERSIONS[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Engine tests skip only outside CI; in CI a missing engine is a failure, not a skip."""
    from tests.engine import engine_available

    if os.environ.get("CI"):
        return  # in CI the engine tests run and fail loudly; they must never be skipped there
    why = {v: engine_available(v) for v in ENGINE_VERSIONS}
    for item in items:
        if "engine" in item.keywords and (reason := why[engine_version_of(item)]):
            item.add_marker(pytest.mark.skip(reason=f"engine unavailable: {reason}"))


@pytest.fixture(autouse=True, scope="session")
def _fd_limit() -> None:
    """Deep test trees hold one fd per level while walked, as the CLI allows itself."""
    from dockergc.measure import raise_fd_limit

    raise_fd_limit()


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Start a process whose executable is named NAME (dockerd, containerd), with the given
    arguments: a copy of the Python interpreter, sleeping. What dockergc reads of a running
    daemon (its executable's name, its command line) without running one."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        exe = tmp_path / "fake-daemons" / name
        exe.parent.mkdir(exist_ok=True)
        shutil.copy(os.path.realpath(sys.executable), exe)
        proc = subprocess.Popen([str(exe), "-", *args], stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(b"import time; time.sleep(120)\n")
        proc.stdin.close()
        procs.append(proc)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
