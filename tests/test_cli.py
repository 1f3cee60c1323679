"""The command line contract: exit codes, one-line errors, JSON shape, saved plans."""

from __future__ import annotations

import json
from pathlib import Path

from dockergc.fixture.builder import RootBuilder
from dockergc.fixture.demo import write_demo_root
from tests.conftest import run_cli


def test_demo_prints_a_report_with_every_kind() -> None:
    out = run_cli("demo").stdout
    for kind in (
        "orphan-layer",
        "stale-init",
        "orphan-link",
        "dangling-link",
        "removing-layer",
        "write-set",
    ):
        assert kind in out
    assert "unknown-dir" in out and "would remove 13 item(s)" in out


def test_plan_json_contract_and_out_file(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    saved = tmp_path / "plan.json"
    proc = run_cli(
        "plan",
        "--root",
        str(root),
        "--config-file",
        "/nonexistent",
        "--min-age",
        "0",
        "--json",
        "--out",
        str(saved),
    )
    doc = json.loads(proc.stdout)
    assert json.loads(saved.read_text()) == doc
    assert doc["version"] == 1 and doc["root"] == str(root)
    assert set(doc) >= {"version", "root", "created", "actions", "kept", "totals"}
    for a in doc["actions"]:
        assert set(a) >= {"id", "kind", "path", "bytes", "age_seconds", "reason", "evidence"}
    assert doc["totals"]["actions"] == len(doc["actions"]) == 13
    assert doc["totals"]["bytes"] == sum(a["bytes"] for a in doc["actions"])


def test_plan_changes_nothing(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")

    def tree() -> list[tuple[str, int, float]]:
        return sorted((str(p), p.lstat().st_mode, p.lstat().st_mtime) for p in root.rglob("*"))

    before = tree()
    run_cli("plan", "--root", str(root), "--config-file", "/nonexistent", "--min-age", "0")
    run_cli("scan", "--root", str(root), "--config-file", "/nonexistent")
    assert tree() == before


def test_check_exits_4_when_there_is_work(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    args = ("plan", "--root", str(root), "--config-file", "/nonexistent", "--check")
    run_cli(*args, "--min-age", "0", check=4)
    run_cli(*args, check=0)  # everything is younger than the default grace period


def test_errors_are_one_line_with_the_contract_exit_code(tmp_path: Path) -> None:
    aufs = tmp_path / "aufs"
    (aufs / "image/aufs").mkdir(parents=True)
    cases = [
        (("plan", "--root", str(tmp_path / "missing")), 1, "does not exist"),
        (("plan", "--root", str(aufs)), 3, "aufs"),
        (("plan", "--root", str(aufs), "--min-age", "soon"), 2, "not a duration"),
        (("plan", "--bogus-flag"), 2, "No such option"),
        (("scan", "--root", "/"), 3, "system directory"),
    ]
    for args, code, words in cases:
        proc = run_cli(*args, "--config-file", "/nonexistent", check=code)
        assert words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        if code != 2:
            assert len(proc.stderr.strip().splitlines()) <= 2


def test_bad_daemon_json_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text("{ not json")
    proc = run_cli("plan", "--config-file", str(cfg), check=2)
    assert "not valid JSON" in proc.stderr


def test_scan_reports_findings_and_freeze(tmp_path: Path) -> None:
    b = RootBuilder(tmp_path / "docker")
    base = b.layer({"f": b"1"})
    b.image([base], ["x:1"])
    root = b.finish()
    (root / "image/overlay2/imagedb/content/sha256" / ("0" * 64)).write_text("{oops")
    doc = json.loads(run_cli("scan", "--root", str(root), "--config-file", "/x", "--json").stdout)
    assert doc["images"] == 1 and doc["layers"] == 1
    assert any(f["kind"] == "bad-json" for f in doc["findings"])
    assert doc["frozen"]


def test_changing_commands_refuse_without_root(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from dockergc.cli.main import main

    root = write_demo_root(tmp_path / "docker")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for args in (["gc", "--min-age", "0", "--yes"], ["purge", "--yes"], ["rollback", "x", "--yes"]):
        assert main([*args, "--root", str(root), "--config-file", "/x"]) == 3
        assert "needs root" in capsys.readouterr().err
    # Reading is fine without root.
    assert main(["plan", "--root", str(root), "--config-file", "/x"]) == 0


def test_root_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    import os

    root = write_demo_root(tmp_path / "docker")
    os.chown(root, 65534, 65534)
    proc = run_cli(
        "gc", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--yes", check=3
    )
    assert "owned by uid 65534" in proc.stderr


def test_symlinked_root_is_resolved_once_and_printed(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    link = tmp_path / "var-lib-docker"
    link.symlink_to(root)
    proc = run_cli(
        "gc", "--root", str(link), "--config-file", "/x", "--min-age", "0", "--yes", "--json"
    )
    assert f"resolves to {root}" in proc.stderr
    import json

    assert json.loads(proc.stdout)["root"] == str(root)


def test_prune_without_a_daemon_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = run_cli("prune", "--dangling", "--host", f"unix://{tmp_path}/none.sock", check=1)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0], out.stderr
    assert "internal error" not in out.stderr and not out.stdout
    bad = run_cli("prune", "--dangling", "--high-watermark", "90", check=2)
    assert "needs both" in bad.stderr
    none = run_cli("prune", check=2)
    assert "selects nothing" in none.stderr


def test_deep_or_misshapen_files_given_on_the_command_line_are_one_line_usage_errors(
    tmp_path: Path,
) -> None:
    """A plan file or config file nested deeper than Python's parsers take, or a plan of
    the wrong shape, is exit 2 naming the file: never an internal error."""
    deep_plan = tmp_path / "deep.json"
    deep_plan.write_text("[" * 5000 + "]" * 5000)
    shapeless = tmp_path / "shapeless.json"
    shapeless.write_text('{"version": 1}')
    deep_toml = tmp_path / "config.toml"
    deep_toml.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    cases = [
        (("apply", str(deep_plan), "--yes"), str(deep_plan)),
        (("apply", str(shapeless), "--yes"), str(shapeless)),
        (("--config", str(deep_toml), "plan", "--root", str(tmp_path)), str(deep_toml)),
    ]
    for args, named in cases:
        proc = run_cli(*args, check=2)
        assert named in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
