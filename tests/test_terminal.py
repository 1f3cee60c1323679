"""People at a terminal get Rich tables and a progress bar; pipes and cron get plain text."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from dockergc.api import plan_root
from dockergc.fixture.demo import write_demo_root
from dockergc.plan import Policy
from dockergc.render.rich_table import RichRenderer
from tests.conftest import NO_MOUNTS, run_cli


def test_rich_table_holds_every_action_and_the_totals(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    text = RichRenderer(Console(width=400, color_system=None), verbose=True).render(plan)
    for a in plan.actions:
        assert a.path in text and a.kind in text
    assert "would remove 13 item(s)" in text and "backup-before-upgrade" in text
    assert "newest change" in text  # evidence with -v


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pty")
def test_terminal_gets_rich_and_a_pipe_gets_plain(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    args = f"{sys.executable} -m dockergc plan --root {root} --config-file /x --min-age 0"
    tty = subprocess.run(
        ["script", "-qec", args, "/dev/null"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "250", "TERM": "xterm", "PATH": "/usr/bin:/bin"},
    )
    assert tty.returncode == 0, tty.stdout + tty.stderr
    assert "━" in tty.stdout or "─" in tty.stdout  # a Rich table
    plain = run_cli("plan", "--root", str(root), "--config-file", "/x", "--min-age", "0").stdout
    assert "━" not in plain and "KIND" in plain
    gc = f"{sys.executable} -m dockergc gc --root {root} --config-file /x --min-age 0 --yes"
    bar = subprocess.run(
        ["script", "-qec", gc, "/dev/null"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "TERM": "xterm", "PATH": "/usr/bin:/bin"},
    )
    assert bar.returncode == 0, bar.stdout
    assert "13/13" in bar.stdout and "applied" in bar.stdout
