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
    CtdAddressOpt,
    CtdConfigOpt,
    CtdRootOpt,
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
from dockergc.daemon import (
    DEFAULT_HOST,
    SYSTEMD_START,
    SYSTEMD_START_WITH_CONTAINERD,
    SYSTEMD_STOP,
    SYSTEMD_STOP_WITH_CONTAINERD,
)
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
from dockergc.relocate.plan import ContainerdMove, Control, plan_relocation
from dockergc.relocate.preflight import ContainerdPlan
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
    "after 180 s each. "
    "On a containerd image store host (Docker 29's default) images live in containerd's "
    "root, which data-root does not move: --containerd-to NEWCTD moves it too (both copied "
    "alike, containerd's config.toml 'root' switched with daemon.json's 'data-root', both "
    "verified, both rolled back on any fault); the stop and start commands then stop and "
    "start dockerd and containerd.",
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
    containerd_to: Annotated[
        Path | None,
        typer.Option(
            "--containerd-to",
            help="Containerd image store: containerd's new root (empty or absent), moved "
            "with the data root; its config.toml's 'root' is switched.",
        ),
    ] = None,
    ctd_config: CtdConfigOpt = None,
    ctd_address: CtdAddressOpt = None,
    ctd_root: CtdRootOpt = None,
    stop_cmd: Annotated[
        str | None,
        typer.Option(
            "--stop-cmd",
            help=f"Stops the daemon [default: {SYSTEMD_STOP}; with --containerd-to: "
            f"{SYSTEMD_STOP_WITH_CONTAINERD}].",
        ),
    ] = None,
    start_cmd: Annotated[
        str | None,
        typer.Option(
            "--start-cmd",
            help=f"Starts the daemon [default: {SYSTEMD_START}; with --containerd-to: "
            f"{SYSTEMD_START_WITH_CONTAINERD}]. A 'systemctl start UNIT...' is preceded "
            "by 'systemctl reset-failed UNIT...' (docker.service allows 3 starts a minute).",
        ),
    ] = None,
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
    if containerd_to is not None and target.store != "containerd":
        raise RefusedError(
            f"refusing --containerd-to: {old} is a graphdriver ({target.store}) root "
            f"({target.store_why}): its images are under the data root and move with it; "
            "containerd's root holds none of them. Run without --containerd-to"
        )
    if containerd_to is not None and bind:
        raise UsageError("--bind keeps the data root's path; it does not move containerd's root")
    ctd = _containerd_plan(target, containerd_to, ctd_config, ctd_address, ctd_root)
    if not dry_run:
        api.refuse_if_unwritable(old, *([ctd.old] if ctd and ctd.new else []))
    new = Path(os.path.realpath(to))
    engine = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    pf, images, containers = api.relocation_facts(
        old, new, daemon_config, engine, target.store, ctd, bind=bind
    )
    if json and dry_run:
        say_json(pf.as_dict())
    else:  # shown before the question (and when preflight fails), -q or not
        say(preflight_text(pf), err=json, always=not pf.ok or not yes)
    if not pf.ok:
        raise RefusedError("preflight failed; nothing was changed")
    if dry_run:
        return
    if pf.other_namespaces and not yes:
        raise RefusedError(
            "containerd also serves " + ", ".join(pf.other_namespaces) + ": stopping it stops "
            "them and their images move with its root; pass --yes to move it anyway"
        )
    both = f" and {pf.ctd_old} to {pf.ctd_new}" if pf.ctd_new else ""
    question = f"Copy {old} to {new}{both} while the daemon runs, then stop it for the final pass?"
    confirm(f"Stop the daemon and move {old} to {new}{both}?" if offline else question, yes)
    run_id = new_run_id()
    moving = ctd is not None and ctd.new is not None
    stop_cmd = stop_cmd or (SYSTEMD_STOP_WITH_CONTAINERD if moving else SYSTEMD_STOP)
    start_cmd = start_cmd or (SYSTEMD_START_WITH_CONTAINERD if moving else SYSTEMD_START)
    control = Control(stop_cmd, start_cmd, engine, daemon_config)
    containerd = None
    if ctd is not None and ctd.new is not None:
        containerd = ContainerdMove(
            ctd.old, ctd.new, ctd.config, pf.ctd_config_sha256, pf.ctd_target_fs
        )
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
        containerd=containerd,
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


def _containerd_plan(
    target: api.Target,
    to: Path | None,
    config: Path | None,
    address: str | None,
    root: Path | None,
) -> ContainerdPlan | None:
    """containerd's side of a containerd image store host (None on a graphdriver host):
    its root located as every command does (flags, config.toml, what dockerd says), the
    config.toml whose 'root' is switched (the file itself: a symlink is followed)."""
    if target.store != "containerd":
        return None
    from dockergc.stores.containerd.locate import locate_containerd

    s = settings(
        containerd_address=address,
        containerd_root=str(root) if root else None,
        containerd_config=str(config) if config else None,
    )
    named = s["containerd_config"]
    toml = Path(os.path.realpath(named.value))
    located = locate_containerd(
        address=s["containerd_address"].value,
        root=Path(s["containerd_root"].value) if s["containerd_root"].value else None,
        config=toml if named.source != "default" else None,
        ctr=None,
        dockerd_args=list(target.dockerd_args),
        daemon_json={"containerd": target.config.containerd}
        if target.config and target.config.containerd
        else None,
    )
    new = Path(os.path.realpath(to)) if to is not None else None
    return ContainerdPlan(located.root, new, toml, located.address, config_named=named.value)


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
