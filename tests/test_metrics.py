"""The metrics textfile parses with the official Prometheus parser and tells the truth."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockergc.fixture.demo import write_demo_root
from tests.conftest import cli_json, on_root, run_cli
from tests.test_gc_interrupt import SIGNAL_AFTER


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(v for (n, lab), v in m.items() if n == name and labels.items() <= dict(lab).items())


def test_gc_metrics_match_the_run(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    prom = tmp_path / "dockergc.prom"
    dry = cli_json("gc", *on_root(root), "--dry-run", "--json", "--metrics-file", str(prom))
    m = samples(prom)
    assert value(m, "dockergc_reclaimable_bytes") == dry["totals"]["bytes"]
    assert value(m, "dockergc_orphans", kind="orphan-layer") == 3
    assert value(m, "dockergc_reclaimed_bytes") == 0
    assert value(m, "dockergc_last_run_success") == 1
    run = cli_json("gc", *on_root(root), "--yes", "--json", "--metrics-file", str(prom))
    m = samples(prom)
    assert value(m, "dockergc_reclaimed_bytes") == run["bytes"] > 0
    assert value(m, "dockergc_reclaimed_bytes", kind="write-set") > 0
    assert value(m, "dockergc_frozen") == 0
    assert value(m, "dockergc_last_run_timestamp_seconds") > 1.7e9
    assert not list(tmp_path.glob(".dockergc.prom.*"))  # written atomically, no leftovers


def success(m: dict) -> dict[str, float]:  # type: ignore[type-arg]
    """result label -> value of every dockergc_last_run_success sample (one expected)."""
    return {dict(lab)["result"]: v for (n, lab), v in m.items() if n == "dockergc_last_run_success"}


def test_a_refusal_writes_metrics(tmp_path: Path) -> None:
    """A host refused every night must not look green: result="refused", 0."""
    root = write_demo_root(tmp_path / "docker")
    prom = tmp_path / "dockergc.prom"
    holder = subprocess.Popen(["sleep", "60"], cwd=root / "overlay2")
    try:
        run_cli("gc", *on_root(root), "--yes", "--metrics-file", str(prom), check=3)
    finally:
        holder.kill()
        holder.wait()
    m = samples(prom)
    assert success(m) == {"refused": 0}
    assert value(m, "dockergc_last_run_success", root=str(root)) == 0
    assert time.time() - 60 < value(m, "dockergc_last_run_timestamp_seconds") <= time.time()


def test_an_error_writes_metrics(tmp_path: Path) -> None:
    prom = tmp_path / "dockergc.prom"
    missing = tmp_path / "no-such-root"
    run_cli("gc", *on_root(missing), "--yes", "--metrics-file", str(prom), check=1)
    m = samples(prom)
    assert success(m) == {"error": 0}
    assert value(m, "dockergc_last_run_timestamp_seconds") > 1.7e9


@pytest.mark.parametrize("after", [0, 3])  # while planning; in the run, after 3 records
def test_an_interruption_writes_metrics(tmp_path: Path, after: int) -> None:
    root = write_demo_root(tmp_path / "docker")
    prom = tmp_path / "dockergc.prom"
    args = ["gc", *on_root(root), "--yes", "--metrics-file", str(prom)]
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER, str(after), "SIGTERM", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr
    m = samples(prom)
    assert success(m) == {"interrupted": 0}
    # A run the signal stopped stays unfinished (resume or roll back), its items held.
    assert value(m, "dockergc_unfinished_runs") == (1 if after else 0)
    assert (value(m, "dockergc_quarantine_bytes") > 0) == bool(after)


def test_quarantine_bytes_follow_every_run(tmp_path: Path) -> None:
    root = write_demo_root(tmp_path / "docker")
    prom = tmp_path / "dockergc.prom"
    run = cli_json("gc", *on_root(root), "--yes", "--json", "--metrics-file", str(prom))
    m = samples(prom)
    assert value(m, "dockergc_quarantine_bytes") == run["bytes"] > 0
    assert value(m, "dockergc_unfinished_runs") == 0
    run_cli("rollback", run["run_id"], "--root", str(root), "--config-file", "/x", "--yes")
    cli_json("gc", *on_root(root), "--yes", "--json", "--metrics-file", str(prom))  # again
    m = samples(prom)
    assert value(m, "dockergc_quarantine_bytes") == value(m, "dockergc_reclaimed_bytes") > 0


def test_a_metrics_write_failure_is_a_warning(tmp_path: Path) -> None:
    """The run moved everything: a textfile it cannot write does not turn that into a
    failure (exit 2 used to stop the unit before its purge)."""
    root = write_demo_root(tmp_path / "docker")
    (tmp_path / "file").write_text("")
    prom = tmp_path / "file" / "dockergc.prom"  # its directory is a file: cannot exist
    proc = run_cli("gc", *on_root(root), "--yes", "--json", "--metrics-file", str(prom))
    assert json.loads(proc.stdout)["state"] == "applied"
    assert f"warning: metrics not written to {prom}" in proc.stderr


def test_the_metrics_directory_is_created(tmp_path: Path) -> None:
    """packaging/config.toml points into node_exporter's textfile dir, which a fresh host
    may not have yet."""
    root = write_demo_root(tmp_path / "docker")
    prom = tmp_path / "node_exporter/textfile_collector/dockergc.prom"
    run_cli("gc", *on_root(root), "--dry-run", "--metrics-file", str(prom))
    assert success(samples(prom)) == {"planned": 1}
    # node_exporter does not run as root: the file must be readable by others.
    assert prom.stat().st_mode & 0o777 == 0o644


def test_a_night_below_the_high_watermark_writes_metrics(tmp_path: Path) -> None:
    """Below the mark gc does nothing, as planned: the timestamp still moves (else the
    'timer stopped running' alert fires) and success is 1."""
    root = write_demo_root(tmp_path / "docker")
    prom = tmp_path / "dockergc.prom"
    args = ("--yes", "--high-watermark", "100%", "--metrics-file", str(prom))
    run_cli("gc", *on_root(root), *args)
    m = samples(prom)
    assert success(m) == {"below-watermark": 1}
    assert value(m, "dockergc_last_run_timestamp_seconds") > time.time() - 60
