"""Shared fixtures: synthetic roots for fast tests, a real engine for the ones that matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockergc.fixture.builder import RootBuilder
from dockergc.store.mountinfo import MountTable
from tests.engine import Engine

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


@pytest.fixture(scope="session")
def engine() -> Iterator[tuple[Engine, dict[str, str]]]:
    """One real dockerd for the session, populated once; tests that stop it restart it."""
    from tests.realstate import populate

    e = Engine()
    try:
        e.start()
        ids = populate(e)
        yield e, ids
    finally:
        e.destroy()


def on_root(root: Path) -> tuple[str, ...]:
    """The flags most tests pass: this root, no daemon.json, no grace period."""
    return ("--root", str(root), "--config-file", "/x", "--min-age", "0")


def cli_json(*args: str) -> Any:
    """Run dockergc (expecting exit 0) and decode the one JSON object it prints."""
    return json.loads(run_cli(*args).stdout)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Engine tests skip only outside CI; in CI a missing engine is a failure, not a skip."""
    from tests.engine import engine_available

    why = engine_available()
    if why is None:
        return
    if os.environ.get("CI"):
        return  # in CI the engine tests run and fail loudly; they must never be skipped there
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"engine unavailable: {why}"))


@pytest.fixture(autouse=True, scope="session")
def _fd_limit() -> None:
    """Deep test trees hold one fd per level while walked, as the CLI allows itself."""
    from dockergc.measure import raise_fd_limit

    raise_fd_limit()
