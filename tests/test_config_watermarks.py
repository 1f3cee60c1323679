"""The config file (values, provenance, overrides, bad files) and disk-pressure watermarks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.fixture.demo import write_demo_root
from dockergc.plan import Policy
from tests.conftest import NO_MOUNTS, cli_json, on_root, run_cli
from tests.engine import loop_fs


def test_config_file_values_sources_and_overrides(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
    orphan = next(a.path for a in plan.actions if a.kind == "orphan-layer")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'root = "{root}"\ndaemon_config = "/nonexistent"\nmin_age = "0s"\n'
        f'excludes = ["{orphan.split("/")[1]}"]\nretention = "3d"\n'
    )
    shown = json.loads(run_cli("--config", str(cfg), "config", "show", "--json").stdout)
    assert shown["min_age"] == {"value": "0s", "source": str(cfg)}
    assert shown["retention"]["source"] == str(cfg)
    assert shown["live_min_age"] == {"value": "24h", "source": "default"}
    flagged = json.loads(
        run_cli("--config", str(cfg), "config", "show", "--min-age", "2h", "--json").stdout
    )
    assert flagged["min_age"] == {"value": "2h", "source": "--min-age"}
    # The plan follows the file: root, grace period 0s, the exclude.
    doc = json.loads(run_cli("--config", str(cfg), "plan", "--json").stdout)
    assert doc["root"] == str(root)
    assert orphan not in {a["path"] for a in doc["actions"]}
    assert any(k["path"] == orphan and "exclude" in k["reason"] for k in doc["kept"])
    # A flag wins over the file.
    doc = json.loads(run_cli("--config", str(cfg), "plan", "--min-age", "1h", "--json").stdout)
    assert doc["actions"] == []
    env = run_cli("config", "show", "--json", check=None)
    assert env.returncode == 0


@pytest.mark.parametrize(
    "text,words",
    [
        ("min_age = 5\n", "wrong type"),
        ('colour = "red"\n', "unknown key"),
        ('min_age = "1h\n', "not valid TOML"),
        ("excludes = [1, 2]\n", "list of strings"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    proc = run_cli("--config", str(cfg), "config", "show", check=2)
    assert words in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")
def test_watermarks_act_only_under_pressure_and_purge_until_low(tmp_path: Path) -> None:
    with loop_fs(200) as disk:
        root = write_demo_root(disk / "docker")
        _, _, plan = plan_root(root, Policy(min_age=0), NO_MOUNTS)
        orphan = next(a.path for a in plan.actions if a.kind == "orphan-layer")
        (root / orphan / "diff" / "big").write_bytes(os.urandom(40 * 2**20))

        def used() -> float:
            st = os.statvfs(disk)
            return 100.0 * (st.f_blocks - st.f_bfree) / (st.f_blocks - st.f_bfree + st.f_bavail)

        st = os.statvfs(disk)
        total = (st.f_blocks - st.f_bfree + st.f_bavail) * st.f_frsize
        fill = int(0.85 * total) - (st.f_blocks - st.f_bfree) * st.f_frsize
        with open(disk / "filler", "wb") as fh:
            fh.write(b"\1" * fill)
        os.sync()
        before = used()
        base = ["gc", *on_root(root), "--yes", "--json"]
        calm = cli_json(*base, "--high-watermark", "99%")
        assert calm["state"] == "below-watermark" and os.path.isdir(root / orphan)
        low = before - 10
        out = cli_json(
            *base, "--high-watermark", f"{before - 5:.1f}%", "--low-watermark", f"{low:.1f}%"
        )
        assert out["state"] == "purged"
        assert used() < low
        assert not os.path.exists(root / orphan)
