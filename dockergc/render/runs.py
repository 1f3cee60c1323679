"""Runs (apply, rollback, purge) as JSON objects and as lines people read."""

from __future__ import annotations

from typing import Any

from dockergc.execute.journal import RunView
from dockergc.execute.ops import RecordOp
from dockergc.render.interface import display, human_bytes


def run_to_dict(view: RunView) -> dict[str, Any]:
    actions: list[dict[str, Any]] = [
        {
            "path": s.path,
            "kind": s.kind,
            "bytes": s.bytes,
            "outcome": s.status,
            **({"freed": s.freed} if s.freed is not None else {}),
            "reason": s.reason,
            "quarantine": None if isinstance(s.op, RecordOp) else s.op.dst,
        }
        for s in view.steps
    ]
    actions += [
        {
            "path": k.get("path"),
            "kind": k.get("kind"),
            "bytes": 0,
            "outcome": "skipped",
            "reason": k.get("reason", ""),
        }
        for k in view.skipped
    ]
    return {
        "run_id": view.run_id,
        "root": view.root,
        "state": view.state,
        "mode": view.mode,
        "bytes": view.bytes,
        "freed_bytes": view.freed_bytes,  # deleted through containerd, measured after
        "purged_bytes": view.purged_bytes,
        "actions": actions,
    }


def run_summary(view: RunView) -> str:
    moved = [s for s in view.steps if s.status in ("moved", "restore-skipped")]
    lines = [
        f"run {view.run_id}: {view.state}; {len(moved)} item(s) in quarantine "
        f"({human_bytes(sum(s.bytes for s in moved))}), {len(view.skipped)} kept on re-check"
    ]
    if view.deleted:
        lines[0] += (
            f"; {len(view.deleted)} deleted through containerd, "
            f"{human_bytes(view.freed_bytes)} freed (measured)"
        )
    for k in view.skipped:
        lines.append(f"  kept {display(str(k.get('path')))}: {k.get('reason')}")
    for s in view.steps:
        if s.status not in ("moved", "purged", "restored", "deleted"):
            lines.append(f"  {s.status} {display(s.path)}: {s.reason}")
    return "\n".join(lines)


def runs_table(views: list[RunView]) -> str:
    if not views:
        return "no runs"
    rows = [("RUN", "STATE", "MODE", "ITEMS", "QUARANTINED", "PURGED")]
    for v in views:
        rows.append(
            (
                v.run_id,
                v.state,
                v.mode,
                str(len(v.steps)),
                human_bytes(sum(s.bytes for s in v.quarantined)),
                human_bytes(v.purged_bytes),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
