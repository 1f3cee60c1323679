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

    # Written by the page's own script, so the browser really rendered and ran it.
    assert int(text_of("computed-total")) == doc["totals"]["bytes"]
    assert int(text_of("computed-count")) == doc["totals"]["actions"] == 13
    assert int(text_of("total-count")) == 13
    assert int(text_of("kept-count")) == doc["totals"]["kept"]
