"""Packaging stays true to the code: units verify, and every command they run parses."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dockergc.cli.main import main
from dockergc.fixture.demo import write_demo_root
from tests.conftest import on_root, run_cli

PKG = Path(__file__).resolve().parents[1] / "packaging"


def cron_line() -> str:
    return next(
        line
        for line in (PKG / "cron/dockergc").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    )


def packaged_commands() -> list[list[str]]:
    cmds = []
    for line in (PKG / "systemd/dockergc.service").read_text().splitlines():
        if line.startswith("ExecStart="):
            cmds.append(shlex.split(line.split("=", 1)[1])[1:])
    for part in re.findall(r"ionice -c3 dockergc ([^;)]+)", cron_line()):
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


def test_packaged_jobs_take_retention_from_the_config() -> None:
    """No job hard-codes --older-than: purge reads `retention` from the config."""
    cmds = packaged_commands()
    assert sorted(c[0] for c in cmds) == ["gc", "gc", "purge", "purge"]
    assert not [c for c in cmds if any(a.startswith("--older-than") for a in c)], cmds
    assert "--older-than" not in (PKG / "kubernetes/daemonset.yaml").read_text()


def test_purge_takes_retention_from_the_config(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    run_cli("gc", *on_root(root), "--yes")
    cfg = tmp_path / "config.toml"
    cfg.write_text('retention = "7d"\n')
    kept = run_cli("--config", str(cfg), "purge", *on_root(root)[:4], "--yes", "--json")
    assert json.loads(kept.stdout)["runs"] == []  # ended just now: younger than 7d
    cfg.write_text('retention = "0s"\n')
    gone = run_cli("--config", str(cfg), "purge", *on_root(root)[:4], "--yes", "--json")
    assert [r["state"] for r in json.loads(gone.stdout)["runs"]] == ["purged"]


def test_service_follows_the_configured_root() -> None:
    """Nothing in the unit names a root: a relocated root (daemon.json's data-root) or one
    set in config.toml is run on, not skipped (Condition) or left read-only (ReadWritePaths);
    the state dir is created by systemd (StateDirectory=), not assumed."""
    unit = (PKG / "systemd/dockergc.service").read_text()
    settings = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert not [line for line in settings if "/var/lib/docker" in line], settings
    assert not [line for line in settings if line.startswith("Condition")], settings
    assert "StateDirectory=dockergc" in settings
    assert "ProtectSystem=full" in settings  # strict would need every root listed
    assert not [line for line in settings if line.startswith(("ReadWritePaths=", "ProtectHome"))]


def test_cron_log_lines_carry_timestamps(tmp_path: Path) -> None:
    """The cron line as cron runs it (\\% is a literal %, SHELL=/bin/sh), with a stub
    dockergc: purge then gc, every line of the log stamped with the time."""
    line = cron_line()
    fields = line.split(None, 6)
    assert fields[5] == "root"
    command = fields[6]
    assert "%" not in command.replace("\\%", ""), "an unescaped % is a newline to cron"
    command = command.replace("\\%", "%").replace("/var/log/dockergc.log", str(tmp_path / "log"))
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "dockergc").write_text('#!/bin/sh\necho "ran $*"\necho "to stderr" >&2\nexit 3\n')
    (stub / "dockergc").chmod(0o755)
    # nice -n 19, ionice -c3: as on a host, without needing the rights they need
    for tool, flags in (("nice", 2), ("ionice", 1)):
        (stub / tool).write_text(f'#!/bin/sh\nshift {flags}\nexec "$@"\n')
        (stub / tool).chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "LANG": "C"}
    subprocess.run(["/bin/sh", "-c", command], env=env, check=True, timeout=60)
    lines = (tmp_path / "log").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "
    assert [re.sub(stamp, "", s, count=1) for s in lines] == [
        "ran purge --live --yes",
        "to stderr",
        "dockergc purge exited 3",
        "ran gc --live --yes",
        "to stderr",
        "dockergc gc exited 3",
    ], lines
    assert all(re.match(stamp, s) for s in lines), lines


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
    # Documentation=man:dockergc(1): verify runs man; give it the page as installed.
    units = sorted(tmp_path.iterdir())
    page = tmp_path / "man/man1/dockergc.1"
    page.parent.mkdir(parents=True)
    page.write_text(run_cli("man").stdout)
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(tmp_path / "man")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "dockergc.service" not in proc.stderr, proc.stderr
