"""Commands that change disk: apply, gc, rollback, purge; and runs, which lists them."""

from __future__ import annotations

import json as jsonlib
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from dockergc import api
from dockergc.cli.app import (
    ConfigOpt,
    ExcludeOpt,
    JsonOpt,
    LiveOpt,
    MetricsOpt,
    MinAgeOpt,
    RootOpt,
    YesOpt,
    app,
    confirm,
    policy_from_flags,
    settings,
    target_from,
)
from dockergc.cli.output import write_atomic
from dockergc.config import percent
from dockergc.durations import parse_duration
from dockergc.errors import PlanFileError
from dockergc.execute import runner
from dockergc.execute.journal import RunView, list_runs, load
from dockergc.lock import exclusive
from dockergc.plan import Plan
from dockergc.render.jsonfmt import dumps
from dockergc.render.prometheus import render_metrics
from dockergc.render.runs import run_summary, run_to_dict, runs_table
from dockergc.render.table import TableRenderer


def _progress(json: bool) -> runner.Progress:
    """Per-step lines on stderr; on a terminal, a Rich progress bar fed by the same lines."""
    if json:
        return lambda _: None
    if not sys.stderr.isatty():
        return lambda line: typer.echo(line, err=True)
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=False)
    task = bar.add_task("dockergc", total=None)

    def update(line: str) -> None:
        if not bar.live.is_started:
            bar.start()
        done, _, total = line.partition("]")[0].lstrip("[").partition("/")
        if done.isdigit() and total.isdigit():
            bar.update(task, completed=int(done), total=int(total), description=line[:60])
            if done == total:
                bar.stop()
        else:
            bar.console.print(line, highlight=False)

    return update


def _show(view: RunView, json: bool) -> None:
    typer.echo(dumps(run_to_dict(view)) if json else run_summary(view))


def _load_plan(path: Path) -> Plan:
    try:
        return Plan.from_dict(jsonlib.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise PlanFileError(f"cannot read plan {path}: {exc.strerror}") from exc
    except (ValueError, AttributeError) as exc:
        raise PlanFileError(f"{path} is not a dockergc plan: {exc}") from exc


def _execute(
    target: api.Target, live: bool, work: runner.Options, plan: Plan | None, resume: str | None
) -> RunView:
    root = target.root.path
    api.refuse_if_unwritable(root)
    with exclusive(root):
        api.refuse_if_daemon(root, live)
        if resume:
            return runner.resume_run(root, resume, work)
        runner.refuse_if_unfinished(root)
        assert plan is not None
        return runner.start_run(root, plan, work)


@app.command()
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="A plan saved by 'plan --out'.")] = None,
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Finish run ID after a crash.")
    ] = None,
    yes: YesOpt = False,
    live: LiveOpt = False,
    json: JsonOpt = False,
) -> None:
    """Carry out a saved plan: each item re-checked, then moved to quarantine (undo: rollback)."""
    if (plan_file is None) == (resume is None):
        raise PlanFileError("give a PLAN file, or --resume RUN_ID")
    plan = _load_plan(plan_file) if plan_file else None
    target = target_from(root or (Path(plan.root) if plan else None), config_file)
    if plan and not json and not yes:
        typer.echo(TableRenderer().render(plan).rstrip("\n"))
    api.refuse_if_daemon(target.root.path, live)
    confirm("Move these into quarantine?" if plan else f"Resume run {resume}?", yes)
    view = _execute(target, live, runner.Options(live=live, progress=_progress(json)), plan, resume)
    _show(view, json)


@app.command()
def gc(
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    min_age: MinAgeOpt = None,
    exclude: ExcludeOpt = None,
    yes: YesOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and show; change nothing.")
    ] = False,
    live: LiveOpt = False,
    json: JsonOpt = False,
    metrics_file: MetricsOpt = None,
    high_watermark: Annotated[
        str | None,
        typer.Option(
            "--high-watermark",
            help="Act only when the root's filesystem is fuller "
            "than this (e.g. 85%); then also purge quarantine, oldest run first, "
            "until below --low-watermark.",
        ),
    ] = None,
    low_watermark: Annotated[
        str | None, typer.Option("--low-watermark", help="e.g. 70% [default: the high mark].")
    ] = None,
) -> None:
    """Plan and apply in one (the nightly job). Items go to quarantine; 'purge' frees them."""
    started = time.time()
    metrics_file = _metrics_path(metrics_file)
    marks = settings(high_watermark=high_watermark, low_watermark=low_watermark)
    high = percent(marks["high_watermark"].value, "--high-watermark")
    low = percent(marks["low_watermark"].value, "--low-watermark") or high
    policy = policy_from_flags(min_age, exclude, live)
    target = target_from(root, config_file)
    if target.root.path != target.root.given:
        typer.echo(f"note: data root {target.root.given} resolves to {target.root.path}", err=True)
    if not dry_run:  # refuse before the work of planning, and again under the lock
        api.refuse_if_daemon(target.root.path, live)
        api.refuse_if_unwritable(target.root.path)
    if high is not None and not dry_run:
        used = api.disk_used_percent(target.root.path)
        if used < high:
            msg = f"disk {used:.1f}% full, below the high watermark {high:g}%: nothing to do"
            typer.echo(
                dumps(
                    {
                        "run_id": None,
                        "state": "below-watermark",
                        "actions": [],
                        "bytes": 0,
                        "disk_used_percent": used,
                    }
                )
                if json
                else msg
            )
            return
    _, _, plan = api.plan_root(target.root.path, policy)
    if dry_run:
        typer.echo(dumps(plan.to_dict()) if json else TableRenderer().render(plan).rstrip("\n"))
        _write_metrics(metrics_file, plan, None, started, "planned")
        return
    if not plan.actions:
        _write_metrics(metrics_file, plan, None, started, "nothing-to-do")
        if json:
            typer.echo(
                dumps(
                    {
                        "run_id": None,
                        "state": "nothing-to-do",
                        "actions": [],
                        "bytes": 0,
                        "frozen": list(plan.frozen),
                    }
                )
            )
        else:
            typer.echo(TableRenderer().render(plan).rstrip("\n"))
        return
    if not json and not yes:
        typer.echo(TableRenderer().render(plan).rstrip("\n"))
    confirm("Move these into quarantine?", yes)
    view = _execute(target, live, runner.Options(live=live, progress=_progress(json)), plan, None)
    if low is not None:
        with exclusive(target.root.path):
            runner.purge_until(
                target.root.path,
                low,
                api.disk_used_percent,
                runner.Options(progress=_progress(json)),
            )
        view = load(target.root.path, view.run_id)
    _write_metrics(metrics_file, plan, view, started, view.state)
    _show(view, json)


def _metrics_path(flag: Path | None) -> Path | None:
    chosen = settings(metrics_file=str(flag) if flag else None)["metrics_file"].value
    return Path(chosen) if chosen else None


def _write_metrics(
    path: Path | None, plan: Plan, view: RunView | None, started: float, result: str
) -> None:
    if path is not None:
        write_atomic(path, render_metrics(plan, view, started, time.time(), result))


@app.command()
def runs(root: RootOpt = None, config_file: ConfigOpt = None, json: JsonOpt = False) -> None:
    """List journaled runs with their state and bytes in quarantine."""
    target = target_from(root, config_file)
    views = sorted(
        (load(target.root.path, r) for r in list_runs(target.root.path)),
        key=lambda v: (v.created, v.run_id),
    )
    if json:
        typer.echo(dumps({"runs": [run_to_dict(v) for v in views]}))
    else:
        typer.echo(runs_table(views))


@app.command()
def rollback(
    run_id: Annotated[str, typer.Argument(help="The run to undo (see 'dockergc runs').")],
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    yes: YesOpt = False,
    live: LiveOpt = False,
    json: JsonOpt = False,
) -> None:
    """Put every quarantined item of a run back where it was, newest first."""
    target = target_from(root, config_file)
    confirm(f"Restore everything run {run_id} quarantined?", yes)
    api.refuse_if_unwritable(target.root.path)
    with exclusive(target.root.path):
        api.refuse_if_daemon(target.root.path, live)
        view = runner.rollback_run(
            target.root.path, run_id, runner.Options(progress=_progress(json))
        )
    _show(view, json)
    if view.state != "rolled-back":
        raise typer.Exit(1)


@app.command()
def purge(
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only runs that ended this long ago [default: 7d, "
            "or retention in the config file].",
        ),
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Purge this run now, whatever its age.")
    ] = None,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Free quarantined items for good. This cannot be undone."""
    retention = settings(retention=older_than)["retention"]
    seconds = parse_duration(str(retention.value), retention.source)
    target = target_from(root, config_file)
    confirm("Delete quarantined items for good? This cannot be undone.", yes)
    api.refuse_if_unwritable(target.root.path)
    with exclusive(target.root.path):
        views = runner.purge_runs(
            target.root.path, seconds, run, runner.Options(progress=_progress(json))
        )
    freed = sum(v.purged_bytes for v in views)
    if json:
        typer.echo(dumps({"runs": [run_to_dict(v) for v in views], "bytes": freed}))
    else:
        typer.echo(
            f"purged {len(views)} run(s)" + "".join(f"\n  {v.run_id}: {v.state}" for v in views)
        )
