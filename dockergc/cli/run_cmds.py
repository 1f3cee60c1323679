"""Commands that change disk: apply, gc, rollback, purge; and runs, which lists them."""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from types import FrameType
from typing import Annotated, ParamSpec, TypeVar

import typer

from dockergc import api
from dockergc.cli.app import (
    LIVE_FLOOR_SECONDS,
    ConfigOpt,
    CtdAddressOpt,
    CtdConfigOpt,
    CtdRootOpt,
    ExcludeOpt,
    JsonOpt,
    LiveOpt,
    MetricsOpt,
    MinAgeOpt,
    RootOpt,
    YesOpt,
    app,
    confirm,
    emit,
    is_quiet,
    policy_from_flags,
    say,
    settings,
    store_from,
    target_from,
)
from dockergc.cli.output import write_atomic
from dockergc.config import watermarks
from dockergc.durations import parse_duration
from dockergc.errors import EXIT_REFUSED, DockerGCError, Interrupted, PlanFileError, UsageError
from dockergc.execute import runner
from dockergc.execute.journal import RunView, list_runs, load
from dockergc.fleet import load_plan_file
from dockergc.lock import exclusive
from dockergc.plan import RECORD_KINDS, Plan
from dockergc.render.interface import human_bytes
from dockergc.render.jsonfmt import plan_document
from dockergc.render.prometheus import render_metrics
from dockergc.render.runs import run_summary, run_to_dict, runs_table
from dockergc.render.table import TableRenderer
from dockergc.retention import purgeable, quarantined_bytes
from dockergc.stores.interface import Store

P = ParamSpec("P")
R = TypeVar("R")


class _Signalled(BaseException):
    """SIGINT/SIGTERM outside a run's steps. A BaseException, so that no ``except
    Exception`` on the way (a reader reporting a bad file) can take it for something else,
    and not KeyboardInterrupt, which typer turns into 'Aborted!' and exit 1."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _signals_stop(command: Callable[P, R]) -> Callable[P, R]:
    """Ctrl-C or SIGTERM while a command plans, locks or reports stops it at once, with
    the exit codes of an interrupted run (130, 143): nothing is half-done there. Inside a
    run the runner installs its own handler, which finishes the current step first."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Signalled(signum)

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return command(*args, **kwargs)
        except _Signalled as exc:
            raise Interrupted("interrupted", exc.signum) from None
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    return wrapper


# Whether this gc invocation wrote its metrics already (a run interrupted after its report).
_metrics_written: ContextVar[bool] = ContextVar("_metrics_written", default=False)


def _failure_result(exc: BaseException) -> str:
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return "interrupted"
    return "refused" if getattr(exc, "exit_code", None) == EXIT_REFUSED else "error"


def _metrics_on_failure(command: Callable[P, R]) -> Callable[P, R]:
    """gc's metrics for a run that ended in a refusal, an error or a signal before it
    wrote its own: result="refused"/"error"/"interrupted", success 0."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.time()
        token = _metrics_written.set(False)
        try:
            return command(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as exc:
            if not _metrics_written.get():
                _failure_metrics(kwargs, started, _failure_result(exc))
            raise
        finally:
            _metrics_written.reset(token)

    return wrapper


def _failure_metrics(flags: dict[str, object], started: float, result: str) -> None:
    root = flags.get("root")
    try:
        path = _metrics_path(flags.get("metrics_file"))  # type: ignore[arg-type]
        try:
            label = str(target_from(root, flags.get("config_file")).root.path)  # type: ignore[arg-type]
        except DockerGCError:  # a root refused as it was located: name it as it was given
            label = str(root or settings()["root"].value or "")
    except DockerGCError:  # the settings are what failed (gc said so): nowhere to write
        return
    _write_metrics(path, None, None, started, result, root=label)


def _progress(json: bool) -> runner.Progress:
    """Per-step lines on stderr; on a terminal, a Rich progress bar fed by the same lines."""
    if json or is_quiet():
        return lambda _: None
    if not sys.stderr.isatty():  # a closed pipe silences the lines, never stops a step
        return lambda line: say(line, err=True)
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
    emit(json, run_to_dict(view), run_summary(view))


def _stopped(view: RunView, root: Path) -> Interrupted:
    """The one line for a run a signal stopped, and its exit code (128 + signal)."""
    signum = signal.Signals[view.signal].value if view.signal else signal.SIGINT.value
    handled = len(view.steps) + len(view.skipped)
    return Interrupted(
        f"interrupted after {handled} of {view.total}; resume with: "
        f"{runner.resume_hint(root, view)}",
        signum,
    )


def _finish(view: RunView, root: Path, json: bool) -> None:
    """Show a run's outcome; a run a signal stopped is also one line and exit 130/143."""
    if view.state == "interrupted":
        if json:
            _show(view, json)
        raise _stopped(view, root)
    _show(view, json)


def _question(plan: Plan) -> str:
    if any(a.kind in RECORD_KINDS for a in plan.actions):
        return (
            "Delete these leases through containerd (they cannot be restored) and move the "
            "rest into quarantine?"
        )
    return "Move these into quarantine?"


def _load_plan(path: Path) -> Plan:
    return load_plan_file(path)


def _execute(
    store: Store, live: bool, work: runner.Options, plan: Plan | None, resume: str | None
) -> RunView:
    root = store.root
    api.refuse_if_unwritable(root, *store.other_roots())
    with exclusive(root):
        store.refuse_unsafe(live)
        work.checks = store.checks(live, work.mounts, work.live_slack)
        if resume:
            return runner.resume_run(root, resume, work)
        runner.refuse_if_unfinished(root)
        assert plan is not None
        return runner.start_run(root, plan, work)


@app.command()
@_signals_stop
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
    containerd_address: CtdAddressOpt = None,
    containerd_root: CtdRootOpt = None,
    containerd_config: CtdConfigOpt = None,
) -> None:
    """Carry out a saved plan: each item re-checked, then moved to quarantine (undo: rollback)."""
    if (plan_file is None) == (resume is None):
        raise PlanFileError("give a PLAN file, or --resume RUN_ID")
    plan = _load_plan(plan_file) if plan_file else None
    if live and plan and plan.min_age_seconds < LIVE_FLOOR_SECONDS:
        raise UsageError(
            f"--live needs a plan made with --min-age of at least 1h; {plan_file} was made "
            f"with {plan.min_age_seconds:g}s: plan it again with --min-age 1h or more"
        )
    target = target_from(root or (Path(plan.root) if plan else None), config_file)
    store = store_from(target, containerd_address, containerd_root, containerd_config)
    if plan and plan.store != store.name:
        raise PlanFileError(f"{plan_file} is a plan for the {plan.store} store; {store.describe()}")
    if plan and not json and not yes:  # shown before the question, -q or not
        say(TableRenderer(dry_run=False).render(plan).rstrip("\n"), always=True)
    store.refuse_unsafe(live)
    confirm(_question(plan) if plan else f"Resume run {resume}?", yes)
    view = _execute(store, live, runner.Options(live=live, progress=_progress(json)), plan, resume)
    _finish(view, target.root.path, json)


@app.command()
@_metrics_on_failure
@_signals_stop
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
    containerd_address: CtdAddressOpt = None,
    containerd_root: CtdRootOpt = None,
    containerd_config: CtdConfigOpt = None,
) -> None:
    """Plan and apply in one (the nightly job). Items go to quarantine; 'purge' frees them."""
    started = time.time()
    metrics_file = _metrics_path(metrics_file)
    marks = settings(high_watermark=high_watermark, low_watermark=low_watermark)
    high, low = watermarks(marks["high_watermark"], marks["low_watermark"])
    policy = policy_from_flags(min_age, exclude, live)
    target = target_from(root, config_file)
    if target.root.path != target.root.given:
        say(f"note: data root {target.root.given} resolves to {target.root.path}", err=True)
    store = store_from(target, containerd_address, containerd_root, containerd_config)
    if not dry_run:  # refuse before the work of planning, and again under the lock
        store.refuse_unsafe(live)
        api.refuse_if_unwritable(target.root.path, *store.other_roots())
    used = api.disk_used_percent(target.root.path) if high is not None else None
    if used is not None and high is not None and used < high:  # a dry run decides the same
        msg = f"disk {used:.1f}% full, below the high watermark {high:g}%: nothing to do"
        doc: dict[str, object] = {
            "run_id": None,
            "state": "below-watermark",
            "actions": [],
            "bytes": 0,
            "disk_used_percent": used,
        }
        emit(json, {**doc, "dry_run": True} if dry_run else doc, msg)
        _write_metrics(metrics_file, None, None, started, "below-watermark", str(target.root.path))
        return
    for note in runner.interrupted_notes(target.root.path):
        say(note, err=True)
    plan = store.plan(policy)
    if dry_run:
        marks_doc, marks_text = _watermark_decision(used, high, low)
        emit(
            json,
            {**plan_document(plan), **marks_doc},
            TableRenderer().render(plan).rstrip("\n") + marks_text,
        )
        _write_metrics(metrics_file, plan, None, started, "planned")
        return
    if not plan.actions:
        _write_metrics(metrics_file, plan, None, started, "nothing-to-do")
        doc = {
            "run_id": None,
            "state": "nothing-to-do",
            "actions": [],
            "bytes": 0,
            "frozen": list(plan.frozen),
            "notes": list(plan.notes),
        }
        emit(json, doc, TableRenderer(dry_run=False).render(plan).rstrip("\n"))
        return
    if not json and not yes:  # shown before the question, -q or not
        say(TableRenderer(dry_run=False).render(plan).rstrip("\n"), always=True)
    confirm(_question(plan), yes)
    view = _execute(store, live, runner.Options(live=live, progress=_progress(json)), plan, None)
    if low is not None and view.state == "applied":
        with exclusive(target.root.path):
            purged = runner.purge_until(
                target.root.path,
                low,
                api.disk_used_percent,
                runner.Options(progress=_progress(json)),
            )
        view = load(target.root.path, view.run_id)
        if any(v.signal for v in purged):
            _write_metrics(metrics_file, plan, view, started, "interrupted")
            raise Interrupted(
                "interrupted while purging quarantine under disk pressure; the run is "
                f"{view.state}",
                signal.Signals[next(v.signal for v in purged if v.signal)].value,
            )
    _write_metrics(metrics_file, plan, view, started, view.state)
    _finish(view, target.root.path, json)


def _watermark_decision(
    used: float | None, high: float | None, low: float | None
) -> tuple[dict[str, object], str]:
    """What a dry run says about the watermarks a real gc would act on (it got past the
    high mark, or there is none)."""
    if used is None or high is None:
        return {}, ""
    doc = {"disk_used_percent": used, "high_watermark": high, "low_watermark": low}
    text = (
        f"\ndisk {used:.1f}% full, at or above the high watermark {high:g}%: gc would apply "
        f"this plan, then purge quarantine, oldest run first, until below {low:g}%"
    )
    return {"watermarks": doc}, text


def _metrics_path(flag: Path | None) -> Path | None:
    chosen = settings(metrics_file=str(flag) if flag else None)["metrics_file"].value
    return Path(chosen) if chosen else None


def _write_metrics(
    path: Path | None,
    plan: Plan | None,
    view: RunView | None,
    started: float,
    result: str,
    root: str | None = None,
) -> None:
    """Write the textfile, creating its directory. The run's outcome stands whatever
    happens here: a metrics file that cannot be written is a warning, not a failed run."""
    if path is None:
        return
    _metrics_written.set(True)
    label = root if root is not None else plan.root if plan else ""
    try:
        runs = [load(Path(label), r) for r in list_runs(Path(label))] if label else []
    except (OSError, DockerGCError, ValueError):
        runs = []  # the journals' own problems are reported by 'dockergc runs'
    text = render_metrics(label, plan, view, runs, started, time.time(), result)
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(path, text)
    except (OSError, DockerGCError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        say(f"warning: metrics not written to {path}: {reason}", err=True, always=True)


@app.command()
def runs(root: RootOpt = None, config_file: ConfigOpt = None, json: JsonOpt = False) -> None:
    """List journaled runs with their state and bytes in quarantine."""
    target = target_from(root, config_file)
    views = sorted(
        (load(target.root.path, r) for r in list_runs(target.root.path)),
        key=lambda v: (v.created, v.run_id),
    )
    emit(json, {"runs": [run_to_dict(v) for v in views]}, runs_table(views))


@app.command()
@_signals_stop
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
            target.root.path, run_id, runner.Options(live=live, progress=_progress(json))
        )
    _show(view, json)
    if view.signal:
        raise Interrupted(
            "rollback interrupted; finish it with: "
            + runner.command(
                target.root.path, "rollback", run_id, *(["--live"] if view.mode == "live" else [])
            ),
            signal.Signals[view.signal].value,
        )
    if view.state != "rolled-back":
        raise typer.Exit(1)


def _purge_preview(views: list[RunView], json: bool) -> None:
    total = sum(quarantined_bytes(v) for v in views)
    lines = [
        f"would purge {len(views)} run(s), {human_bytes(total)} (dry run: nothing was changed)"
    ]
    lines += [
        f"  {v.run_id}: {len(v.quarantined)} item(s), {human_bytes(quarantined_bytes(v))}"
        for v in views
    ]
    doc = {"dry_run": True, "runs": [run_to_dict(v) for v in views], "bytes": total}
    emit(json, doc, "\n".join(lines))


@app.command()
@_signals_stop
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
    live: Annotated[
        bool,
        typer.Option("--live", help="Allow it while a daemon uses the root (the nightly timer)."),
    ] = False,
    json: JsonOpt = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="List the runs it would free and their bytes; change nothing."
        ),
    ] = False,
) -> None:
    """Free quarantined items for good. This cannot be undone."""
    retention = settings(retention=older_than)["retention"]
    seconds = parse_duration(str(retention.value), retention.named)
    target = target_from(root, config_file)
    if dry_run:
        _purge_preview(purgeable(target.root.path, seconds, run), json)
        return
    confirm("Delete quarantined items for good? This cannot be undone.", yes)
    api.refuse_if_unwritable(target.root.path)
    with exclusive(target.root.path):
        api.refuse_if_daemon(target.root.path, live, hint=api.PURGE_HINT)
        views = runner.purge_runs(
            target.root.path, seconds, run, runner.Options(progress=_progress(json))
        )
    freed = sum(v.purged_bytes for v in views)
    emit(
        json,
        {"runs": [run_to_dict(v) for v in views], "bytes": freed},
        f"purged {len(views)} run(s)" + "".join(f"\n  {v.run_id}: {v.state}" for v in views),
    )
    stopped = next((v.signal for v in views if v.signal), None)
    if stopped:
        raise Interrupted("purge interrupted; run it again to go on", signal.Signals[stopped].value)
