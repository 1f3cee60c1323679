"""CLI conventions: --version, completion, the man page, -q, JSON errors, messages that
name what the user typed, exact grace periods, and dry runs that decide as real runs do."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from dockergc.durations import parse_duration
from dockergc.errors import PlanFileError
from dockergc.fixture.demo import write_demo_root
from dockergc.plan import Plan
from dockergc.relocate.preflight import Preflight, check_space
from tests.conftest import cli_json, on_root, run_cli
from tests.manifest import manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    return write_demo_root(tmp_path / "docker")


def test_version_is_the_installed_package_version() -> None:
    proc = run_cli("--version")
    assert proc.stdout.strip() == f"dockergc {version('dockergc')}"


def test_shell_completion_is_switched_on() -> None:
    assert "_dockergc_completion" in run_cli("--show-completion", "bash").stdout
    env = {**os.environ, "_DOCKERGC_COMPLETE": "complete_bash", "COMP_WORDS": "dockergc pl"}
    proc = subprocess.run(
        [sys.executable, "-m", "dockergc"],
        env={**env, "COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["plan"], proc.stdout + proc.stderr


def test_man_page_documents_every_command_and_option_and_renders_cleanly(tmp_path: Path) -> None:
    page = run_cli("man").stdout
    assert page.startswith('.TH DOCKERGC 1 "" "dockergc ')
    for command in ("plan", "gc", "apply", "purge", "report", "config show", "relocate rollback"):
        assert f'.SS "dockergc {command} ' in page, command
    for flag in ("\\-\\-older\\-than", "\\-\\-dry\\-run", "\\-q, \\-\\-quiet", "\\-\\-html"):
        assert flag in page, flag
    assert "man" not in run_cli("--help").stdout.split()  # hidden from --help
    out = tmp_path / "dockergc.1"
    run_cli("-q", "man")  # -q does not silence what was asked for
    subprocess.run([sys.executable, "-m", "dockergc.cli.manpage", str(out)], check=True)
    assert out.read_text() == page
    if shutil.which("groff"):
        proc = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(out)], capture_output=True, text=True
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_quiet_prints_nothing_but_errors_and_asked_for_json(demo_root: Path) -> None:
    for args in (
        ("-q", "plan", *on_root(demo_root)),
        ("plan", *on_root(demo_root), "--quiet"),  # after the command too
        ("gc", *on_root(demo_root), "--dry-run", "-q"),
        ("-q", "config", "show"),
    ):
        proc = run_cli(*args)
        assert proc.stdout == "" and proc.stderr == "", args
    doc = json.loads(run_cli("-q", "plan", *on_root(demo_root), "--json").stdout)
    assert doc["totals"]["actions"] == 13
    err = run_cli("-q", "plan", "--root", str(demo_root / "nope"), check=1)
    assert "does not exist" in err.stderr


@pytest.mark.parametrize(
    ("args", "kind", "code"),
    [
        (("plan", "--bogus", "--json"), "usage", 2),
        (("plan", "--root", "/nonexistent/root", "--config-file", "/x", "--json"), "root", 1),
        (
            ("gc", "--root", "{root}", "--config-file", "/x", "--min-age", "0", "--json"),
            "refused",
            3,
        ),
        (("purge", "--older-than", "7x", "--json"), "usage", 2),
    ],
)
def test_errors_under_json_are_one_json_object(
    demo_root: Path, args: tuple[str, ...], kind: str, code: int
) -> None:
    proc = run_cli(*(a.format(root=demo_root) for a in args), check=code)
    doc = json.loads(proc.stdout)
    assert doc["error"]["type"] == kind and doc["error"]["exit_code"] == code
    assert doc["host"] and doc["dockergc_version"] == version("dockergc")
    assert doc["error"]["message"] in proc.stderr  # the human line stays on stderr


def test_messages_name_the_flag_the_user_typed(tmp_path: Path) -> None:
    proc = run_cli("purge", "--root", str(tmp_path), "--older-than", "7x", check=2)
    assert "--older-than" in proc.stderr and "--retention" not in proc.stderr


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('min_age = "7x"\n', "min_age in {cfg}"),
        ('retention = "soon"\n', "retention in {cfg}"),
        ("high_watermark = true\n", "high_watermark has the wrong type"),
        ("low_watermark = false\n", "not the boolean false"),
        (
            "prune_keep_newest = true\n",
            "prune_keep_newest has the wrong type: it must be an integer",
        ),
        ('excludes = ["a", 1]\n', "excludes has the wrong type: it must be a list of strings"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    root = write_demo_root(tmp_path / "docker")
    args = ("gc", "--root", str(root), "--config-file", "/x", "--dry-run")
    if text.startswith("retention"):
        args = ("purge", "--root", str(root), "--config-file", "/x", "--dry-run")
    proc = run_cli("--config", str(cfg), *args, check=2)
    assert words.format(cfg=cfg) in proc.stderr, proc.stderr


def _saved_plan(root: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "plan.json"
    run_cli("plan", *on_root(root), "--out", str(out))
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def _set(doc: Any, path: str, value: object) -> None:
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"\w+", path)]
    for key in keys[:-1]:
        doc = doc[key]
    doc[keys[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("actions.0.bytes", "12", "actions[0].bytes must be an integer, not a string"),
        ("actions.0.bytes", True, "actions[0].bytes must be an integer, not the boolean true"),
        ("actions.0.bytes", -1, "actions[0].bytes must not be negative"),
        ("actions.0.dev", 1.5, "actions[0].dev must be an integer, not a number"),
        ("actions.0.evidence", [1], "actions[0].evidence[0] must be a string, not an integer"),
        ("actions.0.id", None, "actions[0].id is missing"),
        ("actions.1.path", ["x"], "actions[1].path must be a string, not a list"),
        ("actions", {}, "actions must be a list, not an object"),
        ("root", 5, "root must be a string, not an integer"),
        ("policy.min_age_seconds", "1h", "policy.min_age_seconds must be a number, not a string"),
        ("kept.0.reason", 3, "kept[0].reason must be a string, not an integer"),
        ("frozen", ["ok", {}], "frozen[1] must be a string, not an object"),
    ],
)
def test_plan_files_with_wrong_types_name_the_field(
    demo_root: Path, tmp_path: Path, path: str, value: object, message: str
) -> None:
    doc = _saved_plan(demo_root, tmp_path)
    _set(doc, path, value)
    with pytest.raises(PlanFileError) as caught:
        Plan.from_dict(doc)
    assert str(caught.value) == message
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    proc = run_cli("apply", str(bad), "--yes", check=2)
    assert proc.stderr.strip() == f"dockergc: {bad} is not a dockergc plan: {message}"


def test_a_plan_that_is_not_an_object_says_so() -> None:
    with pytest.raises(PlanFileError, match="a plan is a JSON object, not a list"):
        Plan.from_dict([])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["90m", "1h30m", "90s", "1d2h3m4s", "0", "7d"])
def test_durations_print_back_exactly(text: str) -> None:
    from dockergc.durations import format_duration

    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_grace_periods_print_exactly(demo_root: Path, tmp_path: Path) -> None:
    args = ("--root", str(demo_root), "--config-file", "/x", "--min-age", "90m")
    page = tmp_path / "r.html"
    text = run_cli("plan", *args, "--html", str(page)).stdout
    assert "grace period 1h30m" in text and "grace period (1h30m)" in text
    assert "Grace period 1h30m." in page.read_text()
    assert "1h30m" in run_cli("gc", *args, "--dry-run").stdout


def test_real_gc_never_says_dry_run(demo_root: Path) -> None:
    base = ("gc", "--root", str(demo_root), "--config-file", "/x")
    asked = run_cli(*base, "--min-age", "0", check=3)  # the table, then no --yes: refused
    assert "would remove 13 item(s)" in asked.stdout and "dry run" not in asked.stdout
    nothing = run_cli(*base, "--yes")  # all younger than 1h: nothing to do
    assert "nothing to remove" in nothing.stdout and "dry run" not in nothing.stdout
    assert "dry run: nothing was changed" in run_cli(*base, "--dry-run").stdout


def test_config_show_names_the_file_it_read(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('min_age = "2h"\n')
    text = run_cli("--config", str(cfg), "config", "show").stdout
    assert text.splitlines()[0] == f"config file {cfg} (read; chosen by --config)"
    doc = cli_json("--config", str(cfg), "config", "show", "--json")
    assert doc["config_file"] == {"value": str(cfg), "source": "--config", "read": True}
    env = {**os.environ, "DOCKERGC_CONFIG": str(cfg)}
    proc = subprocess.run(
        [sys.executable, "-m", "dockergc", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.startswith(f"config file {cfg} (read; chosen by DOCKERGC_CONFIG)")


def test_preflight_sizes_are_human(tmp_path: Path) -> None:
    old = write_demo_root(tmp_path / "docker")
    pf = Preflight(old=str(old), new=str(tmp_path / "new"), bytes_to_copy=0, entries=0)
    check_space(pf, old, tmp_path / "new")
    detail = next(c.detail for c in pf.checks if c.name == "free space")
    assert re.fullmatch(
        r"[\d.]+ (B|KiB|MiB|GiB|TiB) free on target, need [\d.]+ MiB "
        r"\([\d.]+ (KiB|MiB) to copy \+ [\d.]+ MiB margin: 5% of it, at least 64.0 MiB\)",
        detail,
    ), detail


def test_purge_dry_run_lists_what_purge_frees_and_changes_nothing(demo_root: Path) -> None:
    run_cli("gc", *on_root(demo_root), "--yes")
    where = ("--root", str(demo_root), "--config-file", "/x")
    assert cli_json("purge", *where, "--dry-run", "--json")["runs"] == []  # younger than 7d
    before = manifest(demo_root, skip=())  # quarantine and journals included
    preview = cli_json("purge", *where, "--older-than", "0", "--dry-run", "--json")
    text = run_cli("purge", *where, "--older-than", "0", "--dry-run").stdout
    assert manifest(demo_root, skip=()) == before
    assert preview["dry_run"] is True and len(preview["runs"]) == 1 and preview["bytes"] > 0
    assert text.startswith("would purge 1 run(s)") and "(dry run: nothing was changed)" in text
    done = cli_json("purge", *where, "--older-than", "0", "--yes", "--json")
    assert [r["run_id"] for r in done["runs"]] == [r["run_id"] for r in preview["runs"]]
    assert done["bytes"] == preview["bytes"]


def test_gc_dry_run_with_watermarks_decides_as_the_real_run(demo_root: Path) -> None:
    args = (*on_root(demo_root), "--high-watermark", "100%")  # never reached
    real = cli_json("gc", *args, "--yes", "--json")
    dry = cli_json("gc", *args, "--dry-run", "--json")
    assert real["state"] == dry["state"] == "below-watermark" and dry["actions"] == []
    text = run_cli("gc", *args, "--dry-run").stdout
    assert "below the high watermark 100%: nothing to do" in text
    above = (*on_root(demo_root), "--high-watermark", "0.01%", "--low-watermark", "0.005%")
    plan = cli_json("gc", *above, "--dry-run", "--json")
    assert plan["totals"]["actions"] == 13 and plan["watermarks"]["high_watermark"] == 0.01
    assert "then purge quarantine" in run_cli("gc", *above, "--dry-run").stdout


def test_html_report_names_host_and_version_without_the_arithmetic(
    demo_root: Path, tmp_path: Path
) -> None:
    page = tmp_path / "r.html"
    doc = cli_json("plan", *on_root(demo_root), "--json", "--html", str(page))
    html = page.read_text()
    assert f'<span id="host">{doc["host"]}</span>' in html
    assert f'<span id="dockergc-version">{version("dockergc")}</span>' in html
    assert "adds up to" not in html and "computed-count" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_report_warns_when_it_does_not_add_up(demo_root: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    run_cli("plan", *on_root(demo_root), "--html", str(page))
    html = page.read_text()
    page.write_text(html.replace('<b id="total-count">13</b>', '<b id="total-count">12</b>'))
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    warning = re.search(r'<p id="self-check"[^>]*>([^<]*)<', proc.stdout)
    assert warning and "hidden" not in warning.group(0), proc.stdout[-2000:]
    assert "does not add up" in warning.group(1) and "13 row(s)" in warning.group(1)
