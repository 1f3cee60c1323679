"""node_exporter textfile metrics for a plan and, after gc, for its run."""

from __future__ import annotations

from dockergc.execute.journal import RunView
from dockergc.plan import KINDS, Plan


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def render_metrics(
    plan: Plan, run: RunView | None, started: float, finished: float, result: str
) -> str:
    """The textfile: reclaimable and reclaimed bytes by kind, counts, last run facts."""
    root = _escape(plan.root)
    lines: list[str] = []
    by_kind = plan.totals()["by_kind"]
    _metric(lines, "dockergc_reclaimable_bytes", "gauge", "Bytes the last plan would free.")
    for kind in KINDS:
        slot = by_kind.get(kind, {"bytes": 0})
        lines.append(f'dockergc_reclaimable_bytes{{root="{root}",kind="{kind}"}} {slot["bytes"]}')
    _metric(lines, "dockergc_orphans", "gauge", "Items the last plan would remove.")
    for kind in KINDS:
        slot = by_kind.get(kind, {"count": 0})
        lines.append(f'dockergc_orphans{{root="{root}",kind="{kind}"}} {slot["count"]}')
    _metric(lines, "dockergc_kept_findings", "gauge", "Items reported and kept.")
    lines.append(f'dockergc_kept_findings{{root="{root}"}} {len(plan.kept)}')
    _metric(lines, "dockergc_frozen", "gauge", "1 when inconsistent metadata froze deletion.")
    lines.append(f'dockergc_frozen{{root="{root}"}} {1 if plan.frozen else 0}')
    _metric(lines, "dockergc_reclaimed_bytes", "gauge", "Bytes the last run moved to quarantine.")
    moved: dict[str, int] = {}
    for step in run.steps if run else []:
        if step.status == "moved":
            moved[step.kind] = moved.get(step.kind, 0) + step.bytes
    for kind in KINDS:
        lines.append(
            f'dockergc_reclaimed_bytes{{root="{root}",kind="{kind}"}} {moved.get(kind, 0)}'
        )
    _metric(lines, "dockergc_last_run_timestamp_seconds", "gauge", "When the last run ended.")
    lines.append(f'dockergc_last_run_timestamp_seconds{{root="{root}"}} {finished:.3f}')
    _metric(lines, "dockergc_last_run_duration_seconds", "gauge", "How long the last run took.")
    lines.append(f'dockergc_last_run_duration_seconds{{root="{root}"}} {finished - started:.3f}')
    _metric(lines, "dockergc_last_run_success", "gauge", "1 if the last run ended as planned.")
    ok = 1 if result in ("applied", "nothing-to-do", "planned") else 0
    lines.append(f'dockergc_last_run_success{{root="{root}",result="{_escape(result)}"}} {ok}')
    return "\n".join(lines) + "\n"
