"""Fleet packaging checked by its own ecosystems' validators, and by dockergc itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dockergc.cli.main import main

PKG = Path(__file__).resolve().parents[1] / "packaging"


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="pip install '.[fleet]'")
@pytest.mark.parametrize("playbook", ["site.yml", "dry-run.yml"])
def test_playbooks_pass_syntax_check(playbook: str) -> None:
    proc = subprocess.run(
        ["ansible-playbook", "--syntax-check", "-i", "localhost,", playbook],
        cwd=PKG / "ansible",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("kubernetes-validate") is None, reason="pip install '.[fleet]'")
def test_kubernetes_manifests_validate_strictly() -> None:
    proc = subprocess.run(
        ["kubernetes-validate", "--strict", "daemonset.yaml", "cronjob.yaml"],
        cwd=PKG / "kubernetes",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("passed") + proc.stdout.count("passed") == 2


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "dockergc_high_watermark": "85%",
            "dockergc_low_watermark": "70%",
            "dockergc_excludes": ["keep-*"],
        },
    ],
)
def test_role_config_template_renders_a_config_dockergc_accepts(
    tmp_path: Path, extra: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    jinja2 = pytest.importorskip("jinja2")
    import yaml  # type: ignore[import-untyped]

    role = PKG / "ansible/roles/dockergc"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    text = env.from_string((role / "templates/config.toml.j2").read_text()).render(
        **{**defaults, **extra}
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    assert main(["--config", str(cfg), "config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["live_min_age"]["value"] == "24h"
    if extra:
        assert shown["high_watermark"]["value"] == "85%"
        assert shown["excludes"]["value"] == ["keep-*"]
