"""The dry-run report as a Rich table, for people at a terminal.

Cron, pipes and --json get the plain table (stable text to grep and diff); a terminal
gets this one: coloured kinds, sizes right-aligned, paths that wrap instead of breaking.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dockergc.durations import format_duration
from dockergc.plan import Plan
from dockergc.render.interface import display, human_age, human_bytes

KIND_STYLE = {
    "orphan-layer": "red",
    "stale-init": "magenta",
    "orphan-link": "yellow",
    "dangling-link": "yellow",
    "removing-layer": "cyan",
    "write-set": "cyan",
    "unreferenced-layer": "red",
    "stale-lease": "bold red",  # deleted through containerd: cannot be put back
    "containerd-gc": "cyan",
    "orphan-snapshot": "red",
    "stale-ingest": "cyan",
    "orphan-rootfs": "magenta",
    "gone-container": "magenta",
}


class RichRenderer:
    name = "rich"

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose

    def render(self, plan: Plan) -> str:
        with self.console.capture() as cap:
            self.print(plan)
        return cap.get()

    def print(self, plan: Plan) -> None:
        c = self.console
        c.print(
            f"[bold]dockergc plan for {display(plan.root)}[/] (dry run: nothing was changed); "
            f"grace period {format_duration(plan.min_age_seconds)}"
            + (f", excludes: {', '.join(plan.excludes)}" if plan.excludes else ""),
            highlight=False,
        )
        for note in plan.notes:
            c.print(f"[bold]NOTE[/]: {note}", highlight=False)
        for reason in plan.frozen:
            c.print(f"[bold red]FROZEN[/]: {reason}", highlight=False)
        table = Table(show_lines=False, header_style="bold")
        for col, justify in (
            ("kind", "left"),
            ("size", "right"),
            ("age", "right"),
            ("path", "left"),
            ("reason", "left"),
        ):
            table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for a in plan.actions:
            reason = a.reason + ("".join(f"\n  - {e}" for e in a.evidence) if self.verbose else "")
            table.add_row(
                f"[{KIND_STYLE.get(a.kind, 'white')}]{a.kind}[/]",
                human_bytes(a.bytes),
                human_age(a.age_seconds),
                display(a.path),
                reason,
            )
        if plan.actions:
            c.print(table)
        totals = plan.totals()
        c.print(
            f"would remove [bold]{totals['actions']}[/] item(s), "
            f"[bold]{human_bytes(totals['bytes'])}[/]; kept {totals['kept']} worth reporting",
            highlight=False,
        )
        if plan.kept:
            kept = Table(title="kept (reported, never deleted)", header_style="bold")
            for col in ("kind", "path", "reason"):
                kept.add_column(col, overflow="fold")
            for k in plan.kept:
                kept.add_row(k.kind, display(k.path) or "-", k.reason)
            c.print(kept)
