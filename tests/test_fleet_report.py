"""dockergc report: the fleet's saved plans (and refusals) as one report."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from dockergc.fixture.demo import write_demo_root
from tests.conftest import cli_json, on_root, run_cli


@pytest.fixture
def plans(tmp_path: Path) -> Path:
    """plans/ as the dry-run playbook leaves it: two hosts' plans, one host's refusal."""
    out = tmp_path / "plans"
    out.mkdir()
    root = write_demo_root(tmp_path / "docker")
    (out / "web1.json").write_text(run_cli("plan", *on_root(root), "--json").stdout)
    doc = json.loads((out / "web1.json").read_text())
    doc["host"] = "web2"  # another host's plan: one action fewer
    doc["actions"] = doc["actions"][1:]
    (out / "web2.json").write_text(json.dumps(doc))
    # What 'plan --json' prints on a host where dockergc refuses: its JSON error object.
    refusal = run_cli("gc", *on_root(root), "--json", check=3)
    (out / "db1.json").write_text(refusal.stdout)
    return out


def test_plan_json_names_its_host_and_dockergc_version(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    saved = tmp_path / "plan.json"
    doc = cli_json("plan", *on_root(root), "--json", "--out", str(saved))
    assert doc["host"] and doc["dockergc_version"] == version("dockergc")
    assert json.loads(saved.read_text())["host"] == doc["host"]
    # apply still takes it
    assert cli_json("apply", str(saved), "--yes", "--json")["state"] == "applied"


def test_report_rows_and_totals_as_json(plans: Path) -> None:
    files = sorted(str(p) for p in plans.iterdir())
    doc: dict[str, Any] = cli_json("report", *files, "--json")
    rows = {h["host"]: h for h in doc["hosts"]}
    web1 = json.loads((plans / "web1.json").read_text())
    assert set(rows) == {web1["host"], "web2", json.loads((plans / "db1.json").read_text())["host"]}
    assert rows[web1["host"]]["actions"] == 13 and rows["web2"]["actions"] == 12
    assert rows[web1["host"]]["bytes"] == web1["totals"]["bytes"]
    refused = next(h for h in doc["hosts"] if h["status"] == "refused")
    assert refused["actions"] == 0 and "--yes" in refused["refusals"][0]
    assert refused["file"].endswith("db1.json")
    totals = doc["totals"]
    assert totals["hosts"] == 3 and totals["actions"] == 25 and totals["refused_hosts"] == 1
    assert totals["bytes"] == sum(h["bytes"] for h in doc["hosts"])
    assert doc["bad_files"] == []


def test_report_text_and_html(plans: Path, tmp_path: Path) -> None:
    page = tmp_path / "fleet.html"
    proc = run_cli("report", *sorted(str(p) for p in plans.iterdir()), "--html", str(page))
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["HOST", "STATUS", "ACTIONS", "BYTES"]
    assert any(line.split()[:3] == ["web2", "ok", "12"] for line in lines)
    assert "refused: refusing to change anything without --yes" in proc.stdout
    assert "fleet: 3 host(s), would remove 25 item(s)" in proc.stdout
    html = page.read_text()
    assert '<b id="fleet-actions">25</b>' in html and "web2" in html and "refused" in html


def test_frozen_hosts_show_their_reasons(plans: Path) -> None:
    doc = json.loads((plans / "web2.json").read_text())
    doc["frozen"], doc["actions"] = ["image abc names layer def that layerdb lacks"], []
    (plans / "web2.json").write_text(json.dumps(doc))
    row = next(h for h in cli_json("report", str(plans / "web2.json"), "--json")["hosts"])
    assert row["status"] == "frozen" and row["frozen"] == doc["frozen"]
    assert (
        "web2: frozen: image abc names layer" in run_cli("report", str(plans / "web2.json")).stdout
    )


def test_bad_plan_files_are_named_skipped_and_exit_1(plans: Path) -> None:
    (plans / "broken.json").write_text('{"version": 1,')
    doc = json.loads((plans / "web2.json").read_text())
    doc["actions"][0]["bytes"] = "many"
    (plans / "web3.json").write_text(json.dumps(doc))
    (plans / "other.json").write_text('{"hello": "world"}')
    files = sorted(str(p) for p in plans.iterdir())
    proc = run_cli("report", *files, "--json", check=1)
    out = json.loads(proc.stdout)
    assert out["totals"]["hosts"] == 3 and out["totals"]["bad_files"] == 3  # web1, web2, db1
    problems = {Path(b["file"]).name: b["problem"] for b in out["bad_files"]}
    assert "is not JSON" in problems["broken.json"]
    assert problems["web3.json"].endswith("actions[0].bytes must be an integer, not a string")
    assert "version" in problems["other.json"]
    for name in problems:
        assert f"skipped {plans / name}" in proc.stderr
    text = run_cli("report", *files, check=1).stdout
    assert "skipped 3 bad plan file(s):" in text and str(plans / "web3.json") in text


def test_a_plan_without_a_host_is_named_by_its_file(plans: Path) -> None:
    doc = json.loads((plans / "web1.json").read_text())
    del doc["host"], doc["dockergc_version"]  # made by a dockergc before 'host' existed
    (plans / "old-host.json").write_text(json.dumps(doc))
    row = cli_json("report", str(plans / "old-host.json"), "--json")["hosts"][0]
    assert row["host"] == "old-host" and row["dockergc_version"] is None


def test_report_needs_a_file() -> None:
    assert run_cli("report", check=2).returncode == 2
