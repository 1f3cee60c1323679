"""node_exporter textfile metrics for every gc run: the plan, the run, the root's quarantine.

Every run writes the last-run facts, a refusal or an error too (with result="refused",
"error" or "interrupted" and success 0), so a host refused every night does not look
green. The plan's figures are written when there was a plan."""

from __future__ import annotations

from collections.abc import Sequence

from dockergc.execute.journal import RunView
from dockergc.plan import KINDS, Plan

# Results of a run that ended as planned: dockergc_last_run_success 1; anything else is 0.
SUCCESS_RESULTS = ("applied", "nothing-to-do", "planned", "below-watermark")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _unfinished(view: RunView) -> bool:
    """A run that needs 'apply --resume' or 'rollback' before gc moves anything again."""
    return view.state in ("running", "interrupted") or bool(view.in_doubt)


def _plan_lines(lines: list[str], root: str, plan: Plan, run: RunView | None) -> None:
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


def render_metrics(
    root: str,
    plan: Plan | None,
    run: RunView | None,
    runs: Sequence[RunView],
    started: float,
    finished: float,
    result: str,
) -> str:
    """The textfile: the plan's and run's figures (when there was a plan), the root's
    quarantine and unfinished runs (``runs``: every journaled run), the last run's facts."""
    label = _escape(root)
    lines: list[str] = []
    if plan is not None:
        _plan_lines(lines, label, plan, run)
    _metric(
        lines,
        "dockergc_quarantine_bytes",
        "gauge",
        "Bytes in quarantine (moved by gc runs, not yet purged or rolled back).",
    )
    held = sum(step.bytes for view in runs for step in view.quarantined)
    lines.append(f'dockergc_quarantine_bytes{{root="{label}"}} {held}')
    _metric(
        lines,
        "dockergc_unfinished_runs",
        "gauge",
        "Runs a crash or a signal left unfinished (resume or roll them back).",
    )
    lines.append(f'dockergc_unfinished_runs{{root="{label}"}} {sum(map(_unfinished, runs))}')
    _metric(lines, "dockergc_last_run_timestamp_seconds", "gauge", "When the last run ended.")
    lines.append(f'dockergc_last_run_timestamp_seconds{{root="{label}"}} {finished:.3f}')
    _metric(lines, "dockergc_last_run_duration_seconds", "gauge", "How long the last run took.")
    lines.append(f'dockergc_last_run_duration_seconds{{root="{label}"}} {finished - started:.3f}')
    _metric(
        lines,
        "dockergc_last_run_success",
        "gauge",
        "1 if the last run ended as planned, else 0; result says how it ended.",
    )
    ok = 1 if result in SUCCESS_RESULTS else 0
    lines.append(f'dockergc_last_run_success{{root="{label}",result="{_escape(result)}"}} {ok}')
    return "\n".join(lines) + "\n"
