"""The metrics textfile parses with the official Prometheus parser and tells the truth."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dockergc.fixture.demo import write_demo_root
from tests.conftest import cli_json, on_root


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
