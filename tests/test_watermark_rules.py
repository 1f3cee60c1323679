"""gc's watermarks: a low mark without a high one, or above it, is refused before anything
changes, whether the marks come from flags, the config file or both."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockergc.fixture.demo import write_demo_root
from tests.conftest import on_root, run_cli
from tests.manifest import manifest

CASES = [
    # (flags, config file lines, words in the one-line error)
    (["--low-watermark", "1%"], "", "--low-watermark needs a high watermark"),
    ([], 'low_watermark = "1%"\n', "low_watermark in"),
    ([], "low_watermark = 1\n", "needs a high watermark"),
    (["--high-watermark", "50%", "--low-watermark", "60%"], "", "is above --high-watermark"),
    ([], 'high_watermark = "50%"\nlow_watermark = "60%"\n', "is above high_watermark in"),
    (["--low-watermark", "60%"], 'high_watermark = "50%"\n', "--low-watermark (60%) is above"),
    (["--high-watermark", "50"], 'low_watermark = "60%"\n', "is above --high-watermark (50%)"),
    (["--high-watermark", "1%"], 'low_watermark = "2%"\n', "must not exceed"),
]


@pytest.mark.parametrize("flags,config,words", CASES)
def test_bad_watermarks_are_usage_errors_that_change_nothing(
    tmp_path: Path, flags: list[str], config: str, words: str
) -> None:
    root = write_demo_root(tmp_path / "docker")
    cfg = tmp_path / "config.toml"
    cfg.write_text(config)
    before = manifest(root)
    for extra in ([], ["--dry-run"]):
        proc = run_cli("--config", str(cfg), "gc", *on_root(root), "--yes", *flags, *extra, check=2)
        assert words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert manifest(root) == before
        assert not (root / ".dockergc").exists()


def test_equal_marks_and_a_high_mark_alone_are_fine(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    for marks in (
        ["--high-watermark", "99.9%"],
        ["--high-watermark", "99%", "--low-watermark", "99%"],
    ):
        out = run_cli("gc", *on_root(root), "--yes", *marks, "--json")
        assert '"below-watermark"' in out.stdout
