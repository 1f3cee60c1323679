"""relocate: move the whole data root to a new disk; rollback; finalize."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import typer

from dockergc import api
from dockergc.cli.app import (
    ConfigOpt,
    JsonOpt,
    RootOpt,
    YesOpt,
    app,
    confirm,
    emit,
    is_quiet,
    say,
    say_json,
    settings,
    target_from,
)
from dockergc.cli.run_cmds import _signals_stop
from dockergc.daemon import DEFAULT_HOST, SYSTEMD_START, SYSTEMD_STOP
from dockergc.errors import RefusedError, UsageError
from dockergc.execute.journal import Journal, new_run_id
from dockergc.execute.runner import (
    RELOCATION_SIGNALS,
    _Stop,
    _stop_between_steps,
    unfinished_runs,
)
from dockergc.lock import exclusive
from dockergc.relocate import executor, impl
from dockergc.relocate.plan import Control, plan_relocation
from dockergc.relocate.progress import Display
from dockergc.render.relocation import preflight_text, view_dict, view_text

relocate_app = typer.Typer(
    rich_markup_mode=None,
    help="Move the whole data root to a new disk: preflight, copy (rsync -aHAX) while the "
    "daemon runs (passes until the delta stops shrinking; then the new disk is flushed), "
    "stop, final pass (--delete), verify (metadata of both trees; contents of what changed "
    "since the pre-copy and of the metadata files), switch daemon.json, start, verify; any "
    "fault rolls back to the old root. The downtime (stop issued -> Engine API answering "
    "on the new root) is printed and journaled. --offline stops the daemon first and "
    "copies with it stopped. "
    "The old root stays untouched until 'relocate finalize'. "
    "Every pass shows its progress on stderr (bytes, rate, ETA: at a terminal one line "
    "updated in place, else a line every 10 s; none with -q) and journals it every 10 s. "
    "The copy has no time limit: it runs until done, however long that takes; stop it "
    "with Ctrl-C, which rolls back (the copy removed, the daemon started on the old "
    "root). SIGTERM or SIGHUP sent to dockergc alone lets the copy finish, then rolls "
    "back. The steps that wait on others do time out, and roll back: the stop and start "
    "commands, the daemon's exit, its answer on the new root and the root going idle "
    "after 180 s each.",
)
app.add_typer(relocate_app, name="relocate")

StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="Where relocation journals are kept [default: /var/lib/dockergc]."
    ),
]


def _state_dir(flag: Path | None) -> Path:
    return Path(settings(state_dir=str(flag) if flag else None)["state_dir"].value)


def _ctx(run_id: str, json: bool, stop: _Stop | None = None) -> impl.Context:
    """Step lines on stderr (none under --json); the copy's progress on stderr, --json or
    not (stdout keeps the one JSON document): at a terminal one line updated in place,
    else a line every 10 s. -q shows neither."""
    display = None if is_quiet() else Display(sys.stderr, _isatty(sys.stderr))
    return impl.Context(
        run_id,
        progress=(lambda _: None) if json else (lambda line: say(line, err=True)),
        stop=stop,
        copy_display=display,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


# Ctrl-C/SIGTERM: outside a run's steps (preflight, the question, the locks) it stops the
# command at once (_signals_stop: exit 130/143, nothing done); inside, the runner's handler
# lets the step under way finish, then the relocation rolls back (executor.run).
@relocate_app.callback(invoke_without_command=True)
@_signals_stop
def relocate(
    ctx: typer.Context,
    to: Annotated[
        Path | None, typer.Option("--to", help="The new data root (empty or absent).")
    ] = None,
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    stop_cmd: Annotated[str, typer.Option("--stop-cmd", help="Stops the daemon.")] = SYSTEMD_STOP,
    start_cmd: Annotated[
        str, typer.Option("--start-cmd", help="Starts the daemon.")
    ] = SYSTEMD_START,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Engine API [default: $DOCKER_HOST, else unix:///var/run/docker.sock]."
        ),
    ] = None,
    state_dir: StateOpt = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Go on with a relocation dockergc itself did not finish."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Preflight only.")] = False,
    bind: Annotated[
        bool,
        typer.Option(
            "--bind",
            help="Keep the path: bind-mount the copy over the old root "
            "(daemon.json unchanged; an fstab line is printed).",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Stop the daemon before copying (no pre-copy): down for the whole copy.",
        ),
    ] = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Move the data root to --to (see 'relocate --help')."""
    if ctx.invoked_subcommand:
        return
    states = _state_dir(state_dir)
    if resume:
        journal = executor.journal_for(states, resume)
        with executor.locked(states, resume), executor.old_root_locked(journal):
            confirm(f"Resume relocation {resume}?", yes)
            # After the question: Ctrl-C answers it. SIGHUP too: an SSH drop mid-run.
            with _stop_between_steps(RELOCATION_SIGNALS) as stop:
                view = executor.resume(journal, _ctx(resume, json, stop))
        emit(json, view_dict(view), view_text(view))
        return
    if to is None:
        raise UsageError("relocate needs --to NEW (or --resume RUN, or a subcommand)")
    target = target_from(root, config_file)
    # The file itself: a symlinked daemon.json is switched and restored where it points.
    configured = settings(daemon_config=str(config_file) if config_file else None)
    daemon_config = Path(os.path.realpath(configured["daemon_config"].value))
    old = target.root.path
    if not dry_run:
        api.refuse_if_unwritable(old)
    new = Path(os.path.realpath(to))
    engine = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    pf, images, containers = api.relocation_facts(old, new, daemon_config, engine)
    if json and dry_run:
        say_json(pf.as_dict())
    else:  # shown before the question (and when preflight fails), -q or not
        say(preflight_text(pf), err=json, always=not pf.ok or not yes)
    if not pf.ok:
        raise RefusedError("preflight failed; nothing was changed")
    if dry_run:
        return
    question = f"Copy {old} to {new} while the daemon runs, then stop it for the final pass?"
    confirm(f"Stop the daemon and move {old} to {new}?" if offline else question, yes)
    run_id = new_run_id()
    control = Control(stop_cmd, start_cmd, engine, daemon_config)
    steps = plan_relocation(
        old,
        new,
        control,
        run_id,
        images,
        containers,
        pf.selinux,
        bind,
        config_sha256=pf.config_sha256,
        target_fs=pf.target_fs,
        precopy=not offline,
    )
    # The run's lock is held to its end: a rollback or resume of this run (the latest)
    # started meanwhile would undo or redo its steps under it.
    # Signals are caught from before the begin record: none leaves the run 'running'.
    with (
        exclusive(old),
        executor.locked(states, run_id),
        _stop_between_steps(RELOCATION_SIGNALS) as stop,
    ):
        for unfinished in unfinished_runs(old):
            raise RefusedError(
                f"gc run {unfinished.run_id} is unfinished; resume or roll it "
                "back before moving the root"
            )
        executor.refuse_if_unfinished(states)
        journal = executor.begin(states, run_id, old, new, steps)
        view = executor.run(journal, _ctx(run_id, json, stop))
    emit(json, view_dict(view), view_text(view))


RunIdArg = Annotated[str | None, typer.Argument(help="Relocation id [default: the latest].")]


def _after_the_fact(
    run_id: str | None,
    state_flag: Path | None,
    yes: bool,
    json: bool,
    question: str,
    act: Callable[[Journal, impl.Context], executor.RelocationView],
) -> executor.RelocationView:
    """rollback/finalize: pick the run, ask, act, render."""
    state_dir = _state_dir(state_flag)
    rid = run_id or executor.latest(state_dir)
    journal = executor.journal_for(state_dir, rid)
    with executor.locked(state_dir, rid), executor.old_root_locked(journal):
        confirm(question.format(rid=rid, old=executor.view_of(journal).old), yes)
        # The undo or removal under way finishes and is journaled; then it stops.
        with _stop_between_steps(RELOCATION_SIGNALS) as stop:
            view = act(journal, _ctx(rid, json, stop))
    emit(json, view_dict(view), view_text(view))
    return view


@relocate_app.command("rollback")
@_signals_stop
def relocate_rollback(
    run_id: RunIdArg = None,
    state_dir: StateOpt = None,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Go back to the old root: stop, restore daemon.json, remove the copy, start."""
    question = "Roll relocation {rid} back to {old}? Changes made on the new root are lost."
    view = _after_the_fact(run_id, state_dir, yes, json, question, executor.rollback)
    if view.state != "rolled-back":
        journal = executor.journal_for(_state_dir(state_dir), view.run_id)
        raise impl.RelocationFailed(
            f"rollback of {view.run_id} did not finish: "
            + executor.unfinished_rollback(journal, view)
        )


@relocate_app.command("finalize")
@_signals_stop
def relocate_finalize(
    run_id: RunIdArg = None,
    state_dir: StateOpt = None,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Remove the old root after a successful relocation. This cannot be undone."""
    _after_the_fact(
        run_id, state_dir, yes, json, "Delete the old root {old} for good?", executor.finalize
    )
