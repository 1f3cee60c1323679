"""Packaging stays true to the code: units verify, and every command they run parses."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dockergc.cli.main import main

PKG = Path(__file__).resolve().parents[1] / "packaging"


def packaged_commands() -> list[list[str]]:
    cmds = []
    for line in (PKG / "systemd/dockergc.service").read_text().splitlines():
        if line.startswith("ExecStart="):
            cmds.append(shlex.split(line.split("=", 1)[1])[1:])
    cron = (PKG / "cron/dockergc").read_text()
    for part in re.findall(r"dockergc ([^>;]+)>>", cron):
        cmds.append(shlex.split(part))
    return cmds


def test_every_packaged_command_uses_real_flags(capsys: pytest.CaptureFixture[str]) -> None:
    cmds = packaged_commands()
    assert len(cmds) == 4
    for args in cmds:
        # Unknown flags are a usage error (2) even with --help; real ones print help (0).
        assert main([*args, "--help"]) == 0, args
    assert main(["gc", "--live", "--bogus", "--help"]) == 2
    capsys.readouterr()


def test_example_config_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(PKG / "config.toml"), "config", "show"]) == 0
    assert "from " + str(PKG / "config.toml") in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    for unit in ("dockergc.service", "dockergc.timer"):
        text = (PKG / "systemd" / unit).read_text()
        # verify needs the executable to exist; point it at this interpreter's dockergc.
        exe = shutil.which("dockergc") or sys.executable
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/dockergc", exe))
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, sorted(tmp_path.iterdir()))],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dockergc.service" not in proc.stderr, proc.stderr
