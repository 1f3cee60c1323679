"""prune's command line and config file: volumes and --keep-container are rules of their
own, and the disk-pressure marks take a percentage or a size from either place, with
nonsense refused (exit 2) before any daemon is asked."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_marks_take_both_forms_from_flags_and_config_and_refuse_mixing(tmp_path: Path) -> None:
    nowhere = ("--host", f"unix://{tmp_path}/none.sock")
    mixed = run_cli("prune", "--high-watermark", "200GB", "--low-watermark", "80%", check=2)
    assert "--high-watermark 200GB and --low-watermark 80% mix a percentage with a size" in (
        mixed.stderr
    )
    inverted = run_cli("prune", "--high-watermark", "150GB", "--low-watermark", "200GB", check=2)
    assert "--low-watermark 200GB must be below --high-watermark 150GB" in inverted.stderr
    unit = run_cli("prune", "--high-watermark", "200GiG", "--low-watermark", "1GB", check=2)
    assert "unknown unit 'gig'" in unit.stderr and "Traceback" not in unit.stderr

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'prune_high_watermark = "5MB"\nprune_low_watermark = "1MiB"\nprune_volumes = true\n'
        'prune_keep_volumes = ["keep_*"]\nprune_keep_containers = ["db-*"]\n'
    )
    shown = json.loads(run_cli("--config", str(cfg), "config", "show", "--json").stdout)
    assert shown["prune_high_watermark"] == {"value": "5MB", "source": str(cfg)}
    assert shown["prune_keep_containers"]["value"] == ["db-*"]
    # Accepted: the command gets as far as the (absent) daemon.
    accepted = run_cli("--config", str(cfg), "prune", *nowhere, check=1)
    assert "does not answer" in accepted.stderr
    # A flag overrides one mark; mixing forms across file and flag is named as given.
    mixed = run_cli("--config", str(cfg), "prune", "--low-watermark", "50%", *nowhere, check=2)
    assert f'prune_high_watermark = "5MB" in {cfg} and --low-watermark 50% mix' in mixed.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("prune_keep_volumes = [1]\n")
    assert "list of strings" in run_cli("--config", str(bad), "config", "show", check=2).stderr


def test_volume_rules_select_on_their_own(tmp_path: Path) -> None:
    for flag in ("--volumes", "--volumes-all"):
        out = run_cli("prune", flag, "--host", f"unix://{tmp_path}/none.sock", check=1)
        assert "does not answer" in out.stderr  # not "prune selects nothing" (exit 2)
    none = run_cli("prune", "--keep-volume", "x", "--keep-container", "y", check=2)
    assert "selects nothing" in none.stderr and "--volumes" in none.stderr
