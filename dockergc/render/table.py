"""The dry-run report people read before anything is deleted."""

from __future__ import annotations

from dockergc.durations import format_duration
from dockergc.plan import Plan
from dockergc.render.interface import display, human_age, human_bytes


class TableRenderer:
    name = "table"

    def __init__(self, verbose: bool = False, dry_run: bool = True) -> None:
        self.verbose = verbose
        self.dry_run = dry_run  # False: the plan a real gc/apply is about to carry out

    def render(self, plan: Plan) -> str:
        what = "dry run: nothing was changed" if self.dry_run else "to be moved into quarantine"
        lines = [f"dockergc plan for {display(plan.root)} ({what})"]
        lines.append(
            f"grace period {format_duration(plan.min_age_seconds)}"
            + (f", excludes: {', '.join(plan.excludes)}" if plan.excludes else "")
        )
        lines += [f"NOTE: {n}" for n in plan.notes]
        if plan.frozen:
            lines.append("")
            lines.append("FROZEN: no layer dir will be removed until this is resolved:")
            lines += [f"  - {reason}" for reason in plan.frozen]
        lines.append("")
        if plan.actions:
            header = ("KIND", "SIZE", "AGE")
            cells = [(a.kind, human_bytes(a.bytes), human_age(a.age_seconds)) for a in plan.actions]
            widths = [max(len(r[i]) for r in [header, *cells]) for i in range(3)]
            lines.append(
                "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  PATH"
            )
            for action, row in zip(plan.actions, cells, strict=True):
                padded = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                lines.append(f"{padded}  {display(action.path)}  ({action.reason})")
                if self.verbose:
                    lines += [f"      - {e}" for e in action.evidence]
        else:
            lines.append("nothing to remove")
        lines.append("")
        totals = plan.totals()
        lines.append(
            f"would remove {totals['actions']} item(s), {human_bytes(totals['bytes'])}; "
            f"kept {totals['kept']} item(s) worth reporting"
        )
        for kind, slot in totals["by_kind"].items():
            lines.append(f"  {kind}: {slot['count']} item(s), {human_bytes(slot['bytes'])}")
        if plan.kept:
            lines.append("")
            lines.append("KEPT (reported, never deleted):")
            for k in plan.kept:
                where = display(k.path) or "-"
                lines.append(f"  {k.kind:<16} {where}  {k.reason}")
        return "\n".join(lines) + "\n"
