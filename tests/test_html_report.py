"""The HTML report, opened in a real headless Chromium with no network."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dockergc.fixture.demo import write_demo_root
from tests.conftest import cli_json, on_root, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    page = tmp_path / "report.html"
    run_cli(
        "plan", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--html", str(page)
    )
    html = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external assets
    assert "orphan-layer" in html and "<svg" in html and "evidence" in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_with_the_right_totals(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    page = tmp_path / "report.html"
    doc = cli_json("plan", *on_root(root), "--json", "--html", str(page))
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]

    def text_of(element_id: str) -> str:
        match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
        assert match, element_id
        return match.group(1)

    def computed(name: str) -> int:
        table = re.search(r'<table id="actions"[^>]*>', dom)
        assert table, "no actions table"
        match = re.search(rf'data-computed-{name}="(\d+)"', table.group(0))
        assert match, f"the page's script did not record its {name}: {table.group(0)}"
        return int(match.group(1))

    # Recorded by the page's own script, so the browser really rendered and ran it; the
    # page agrees with itself, so its warning stays hidden.
    assert computed("total") == doc["totals"]["bytes"]
    assert computed("count") == doc["totals"]["actions"] == 13
    assert int(text_of("total-count")) == 13
    assert int(text_of("kept-count")) == doc["totals"]["kept"]
    assert re.search(r'<p id="self-check"[^>]*hidden', dom), "the page says it does not add up"
    assert "adds up to" not in dom
    assert text_of("host") == doc["host"] and text_of("dockergc-version") == doc["dockergc_version"]
