"""Carry out a relocation step by step on a journal; on any fault, roll back.

Rollback runs the reverse of every step that finished or was under way, newest first:
stop the daemon if it was started on the new root, restore daemon.json, remove the
copy, start the daemon on the old root. The old root is never written to before
``finalize``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from dockergc import daemon
from dockergc.config import SCHEMA
from dockergc.errors import DockerGCError, Interrupted, RefusedError, UsageError
from dockergc.execute import safefs
from dockergc.execute.journal import Journal
from dockergc.execute.runner import RELOCATION_SIGNALS, _Stop, _stop_between_steps
from dockergc.lock import exclusive, exclusive_file
from dockergc.relocate import counts
from dockergc.relocate import steps as S
from dockergc.relocate.impl import (
    LOCK,
    RELOCATIONS,
    ConfigConflict,
    Context,
    RelocationFailed,
    fstab_line,
    perform,
    refuse_if_target_moved,
    restorable,
    started,
)
from dockergc.relocate.targetfs import mount_of
from dockergc.store.snapshot import read_pins

# -- the run ------------------------------------------------------------------------------


@dataclass
class RelocationView:
    run_id: str
    state: str  # running|relocated|rolling-back|rolled-back|rollback-failed|finalizing|finalized
    old: str
    new: str
    steps: list[dict[str, Any]]
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    fstab: str = ""  # --bind mode: the line that makes the mount permanent
    # Stop command issued -> Engine API answering on the new root (None: not measured).
    downtime_seconds: float | None = None
    # containerd's root, when it moved too (a containerd image store host): old, new.
    containerd_old: str = ""
    containerd_new: str = ""


def journal_for(state_dir: Path, run_id: str) -> Journal:
    return Journal(state_dir, run_id, base=RELOCATIONS)


@contextmanager
def locked(state_dir: Path, run_id: str) -> Iterator[None]:
    """Hold ``<state-dir>/relocations/lock`` for a whole relocation command (relocate,
    --resume, rollback, finalize); refuse (exit 3, naming the run that holds it) if
    another holds it. It lives outside both roots: a lock file under the old root would be
    inside --bind mode's mount, and its unmount would fail "target is busy"."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive_file(state_dir / RELOCATIONS / LOCK, f"relocation {run_id}"):
        yield


def daemons_on(old: Path) -> str:
    """The daemons that use ``old`` ("" when none does), for a refusal."""
    return "; ".join(d.describe() for d in daemon.daemons_using(old))


def old_roots(plan: list[S.Step]) -> list[Path]:
    """Every root the plan copies from: the data root, and containerd's when it moves."""
    return [Path(s.old) for s in plan if isinstance(s, S.Copy)]


def daemons_on_any(roots: list[Path]) -> tuple[str, Path | None]:
    """(the daemons that use the first of ``roots`` any daemon uses, that root)."""
    for root in roots:
        if users := daemons_on(root):
            return users, root
    return "", None


def begin(state_dir: Path, run_id: str, old: Path, new: Path, plan: list[S.Step]) -> Journal:
    journal = journal_for(state_dir, run_id)
    journal.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    journal.append(
        {"type": "begin", "old": str(old), "new": str(new), "steps": [S.step_dict(s) for s in plan]}
    )
    return journal


def run(journal: Journal, ctx: Context, start: int = 0) -> RelocationView:
    """Perform the planned steps from ``start``; roll back on the first failure, and on
    SIGINT/SIGTERM once the step under way has finished and is journaled (``ctx.stop``:
    the caller installs the handler before its ``begin`` record; else it is done here)."""
    if ctx.stop is None:
        with _stop_between_steps(RELOCATION_SIGNALS) as stop:
            return run(journal, replace(ctx, stop=stop), start)
    head = _begin(journal)
    plan = [S.step_from_dict(d) for d in head["steps"]]
    olds = old_roots(plan) or [Path(head["old"])]
    for i in range(start, len(plan)):
        step = plan[i]
        if ctx.stop.requested:
            _interrupted(journal, ctx, ctx.stop, step, None)
        journal.append({"type": "intent", "seq": i, "step": S.step_dict(step)})
        ctx.progress(f"[{i + 1}/{len(plan)}] {S.label(step)}")
        t0 = time.monotonic()
        try:
            if isinstance(step, S.NEEDS_STOPPED):
                users, used = daemons_on_any(olds)
                if users:
                    raise RefusedError(f"{users} uses the old root {used} again")
            if ctx.before_step:
                ctx.before_step(step)
            listed = counts.listed_in(journal.records()) if isinstance(step, S.PostVerify) else None
            perform(step, replace(ctx, record=_progress_to(journal, i), listed=listed))
        except (DockerGCError, daemon.EngineUnavailable, OSError, ValueError) as exc:
            journal.append({"type": "fault", "seq": i, "error": str(exc)})
            if ctx.stop.requested:  # the terminal's SIGINT reaches rsync and the commands too
                _interrupted(journal, ctx, ctx.stop, step, exc)
            ctx.progress(f"{S.label(step)} failed: {exc}; rolling back")
            outcome = _roll_back_after(journal, ctx)
            raise RelocationFailed(
                f"relocation failed at {S.label(step)}: {exc}; {outcome}"
            ) from exc
        ctx.timings[S.label(step)] = round(time.monotonic() - t0, 3)
        done: dict[str, Any] = {"type": "done", "seq": i, "seconds": ctx.timings[S.label(step)]}
        if isinstance(step, S.StartDaemon) and (down := downtime(journal, plan)) is not None:
            done["downtime_seconds"] = down
            ctx.progress(
                f"downtime: {down:.1f} s (stop issued -> daemon answering on the new root)"
            )
        journal.append(done)
    end: dict[str, Any] = {"type": "end", "state": "relocated", "timings": ctx.timings}
    if (down := _recorded_downtime(journal.records())) is not None:
        end["downtime_seconds"] = down
    journal.append(end)
    return view_of(journal)


def downtime(journal: Journal, plan: list[S.Step]) -> float | None:
    """Seconds from the stop step's first intent (the stop command is issued right after
    it) to now, the start step having just seen the daemon answer on its root. Journal
    times are wall-clock: a resume in another process measures across the gap, which was
    downtime too."""
    for r in journal.records():
        if r.get("type") == "intent" and isinstance(plan[int(r["seq"])], S.StopDaemon):
            return round(time.time() - float(r["t"]), 3)
    return None


def _recorded_downtime(records: list[dict[str, Any]]) -> float | None:
    found = None
    for r in records:
        if r.get("type") in ("done", "end") and "downtime_seconds" in r:
            found = float(r["downtime_seconds"])
    return found


def _progress_to(journal: Journal, seq: int) -> Callable[[dict[str, Any]], None]:
    """A step's ``progress`` records (the copy's, every ~10 s): for people reading the
    journal; replay, resume and rollback read only the records they know and skip these."""

    def record(fields: dict[str, Any]) -> None:
        journal.append({"type": "progress", "seq": seq, **fields})

    return record


def _interrupted(
    journal: Journal, ctx: Context, stop: _Stop, step: S.Step, exc: Exception | None
) -> NoReturn:
    """Roll back after a signal, journaled first. Rolling back, not stopping resumable: a
    relocation stopped half-way leaves the daemon down until someone resumes or rolls it
    back; the operator who pressed Ctrl-C (or the system that sent SIGTERM) gets the
    service back on the untouched old root now, and can run the move again later."""
    assert stop.signum is not None
    name = signal.Signals(stop.signum).name
    if exc is None:
        journal.append({"type": "fault", "error": f"interrupted by {name}", "signal": name})
    ctx.progress(f"{name}: rolling back")
    outcome = _roll_back_after(journal, ctx)
    at = f"at {S.label(step)}" + (f" ({exc})" if exc else "")
    raise Interrupted(
        f"relocation {journal.run_id} interrupted ({name}) {at}; {outcome}", stop.signum
    ) from exc


def _roll_back_after(journal: Journal, ctx: Context) -> str:
    """Roll back after a fault or a signal (a second signal does not cut it short); what
    came of it, for the one line."""
    try:
        view = rollback(journal, replace(ctx, stop=None))
    except ConfigConflict as exc:
        return f"not rolled back: {exc}"
    if view.state == "rolled-back":
        return f"rolled back: the daemon runs on {view.old} again"
    return f"the rollback did not finish: {unfinished_rollback(journal, view)}"


def state_dir_of(journal: Journal) -> Path:
    return journal.dir.parent.parent  # <state-dir>/relocations/<run>


def unfinished_rollback(journal: Journal, view: RelocationView) -> str:
    """Why a rollback did not finish, whether the daemon is down, and how to go on."""
    redo = command(state_dir_of(journal), "relocate", "rollback", journal.run_id)
    return f"{view.error}; {_daemon_now(journal)}; once that is settled, finish it with '{redo}'"


def _daemon_now(journal: Journal) -> str:
    """Where the daemon stands, said for the one line."""
    state = _daemon_state(journal)
    if state == "started again":
        return "the daemon was started again"
    if state == "on the new root":
        return "the daemon was left running on the new root"
    stop = next((s for s in _plan(journal) if isinstance(s, S.StopDaemon)), None)
    if state == "down" and stop is not None:
        return f"the daemon is down (start it with '{stop.start_cmd}')"
    return "the daemon was not stopped"


def _daemon_state(journal: Journal) -> str:
    """Where the daemon stands, from the journal read in order: the run's stop (issued:
    down) and start (done: up on the new root), the rollbacks' stops and starts."""
    plan = _plan(journal)
    now = "not stopped"
    for r in journal.records():
        kind = r.get("type")
        if kind in ("intent", "done"):
            step = plan[int(r["seq"])]
            if kind == "intent" and isinstance(step, S.StopDaemon):
                now = "down"
            elif kind == "done" and isinstance(step, S.StartDaemon):
                now = "on the new root"
        elif kind == "undo-intent" and (
            _named(r.get("step"), "stop-daemon") or _named(r.get("step"), "start-daemon")
        ):
            now = "down"  # a start's undo-done says otherwise; its fault leaves it down
        elif kind == "undo-done" and r.get("step") == "start-daemon":
            now = "started again"
    return now


def _undone(records: list[dict[str, Any]]) -> set[str]:
    """Each undo a rollback finished (its journaled step): a rollback run again after one
    was cut short does not do them again (nor stop the daemon it had started again)."""
    finished: set[str] = set()
    pending: str | None = None
    for r in records:
        if r.get("type") == "undo-intent":
            pending = json.dumps(r.get("step"), sort_keys=True)
        elif r.get("type") == "undo-done" and pending is not None:
            finished.add(pending)
            pending = None
    return finished


def _key(step: S.Step) -> str:
    return json.dumps(S.step_dict(step), sort_keys=True)


def _named(step: Any, name: str) -> bool:
    return isinstance(step, dict) and step.get("name") == name


def _plan(journal: Journal) -> list[S.Step]:
    return [S.step_from_dict(d) for d in _begin(journal)["steps"]]


def _refuse_unrestorable(journal: Journal, undo: list[S.Step]) -> None:
    """Before any undo runs (the daemon not yet stopped): daemon.json and its backup must
    be what the journal records, else refuse with nothing changed."""
    for step in undo:
        if not isinstance(step, S.RestoreConfig):
            continue
        try:
            restorable(step)
        except ConfigConflict as exc:
            redo = command(state_dir_of(journal), "relocate", "rollback", journal.run_id)
            raise ConfigConflict(
                f"refusing to roll back relocation {journal.run_id}, nothing changed "
                f"({_daemon_now(journal)}): {exc}; put the right daemon.json in place by "
                f"hand, then run '{redo}'",
                hint="",
            ) from None


def _stop_if_asked(journal: Journal, ctx: Context, after: str) -> None:
    """Ctrl-C/SIGTERM/SIGHUP during 'relocate rollback': the undo under way has finished
    and is journaled; stop here (the run stays rolling-back), saying how to finish."""
    if ctx.stop is None or not ctx.stop.requested:
        return
    assert ctx.stop.signum is not None
    name = signal.Signals(ctx.stop.signum).name
    journal.append({"type": "rollback-stopped", "signal": name, "after": after})
    view = replace(view_of(journal), error=f"interrupted ({name}) after {after}")
    raise Interrupted(
        f"rollback of relocation {journal.run_id} interrupted: "
        + unfinished_rollback(journal, view),
        ctx.stop.signum,
    )


def rollback(journal: Journal, ctx: Context) -> RelocationView:
    """Undo every started step, newest first but the copies' removal, done last (after
    the daemon is started again); the old root is left as it was.

    daemon.json is checked before any undo runs (refused: nothing changed). If it cannot
    be restored even so, or the bind mount not unmounted, stop there: every later undo
    (remove the copy, start the daemon) assumes the old root is what the old path and
    daemon.json show again."""
    view = view_of(journal)
    if view.state == "finalized":
        raise RefusedError(
            f"relocation {journal.run_id} was finalized: the old root is gone, so there is "
            "nothing to roll back to (rolling back would remove the only copy)"
        )
    if view.state == "finalizing":  # the copy is the only complete one
        raise RefusedError(finalize_begun(journal), hint="")
    if view.state == "rolled-back":  # again: it would stop the daemon, empty the target
        raise UsageError(
            f"relocation {journal.run_id} was rolled back already; nothing to roll back "
            f"(the daemon runs on {view.old}; {view.new} is left as it is)"
        )
    records = journal.records()
    started = sorted({int(r["seq"]) for r in records if r.get("type") == "intent"}, reverse=True)
    plan = _plan(journal)
    _refuse_unrestorable(journal, [plan[i].reverse() for i in started])
    finished = _undone(records)  # by a rollback cut short before this one
    back_up = _daemon_state(journal) == "started again"
    journal.append({"type": "rollback-begin"})
    failures: list[str] = []
    ran_on_new = any(isinstance(plan[i], S.StartDaemon) for i in started)
    if ran_on_new and not back_up:  # not once an earlier rollback started it on the old root
        stop = next(s for s in plan if isinstance(s, S.StopDaemon))
        # The roots it runs on are in doubt: run the command, wait for nothing (below).
        _best_effort(journal, ctx, S.StopDaemon(stop.cmd, stop.start_cmd, stop.host, ""), failures)
        _stop_if_asked(journal, ctx, "stop-daemon")
    undos = [plan[i].reverse() for i in started]
    # Removing a copy touches only the target: done after the daemon is started on the
    # old root again, its time (minutes for millions of files) is not downtime.
    undos.sort(key=lambda back: isinstance(back, S.RemoveCopy))  # stable: newest first
    for back in undos:
        if _key(back) in finished and not _down_since(back):
            continue  # done by the rollback cut short: the daemon is not stopped again
        if isinstance(back, S.StopDaemon) and ran_on_new:
            continue  # already stopped above, even if its start never answered
        done = _best_effort(journal, ctx, back, failures)
        if not done and isinstance(back, (S.RestoreConfig, S.Unmount)):
            failures.append("rollback stopped there: the copy is kept and the daemon not started")
            break
        if not done and isinstance(back, S.StartDaemon):
            # Not seen answering on the old root: keep the copies, whatever it runs on.
            failures.append("the copy is kept until the daemon runs on the old root again")
            break
        if not isinstance(back, S.Noop):
            _stop_if_asked(journal, ctx, S.label(back))
    state = "rollback-failed" if failures else "rolled-back"
    journal.append({"type": "rollback-end", "state": state, "failures": failures})
    return view_of(journal)


def _down_since(back: S.Step) -> bool:
    """A start on the old root that a rollback cut short had done, whose daemon is down
    now (stopped by hand since): it is run again, not taken as done."""
    return isinstance(back, S.StartDaemon) and not started(back)


def _best_effort(journal: Journal, ctx: Context, step: S.Step, failures: list[str]) -> bool:
    if isinstance(step, S.Noop):
        return True
    journal.append({"type": "undo-intent", "step": S.step_dict(step)})
    ctx.progress(f"rollback: {S.label(step)}")
    try:
        if isinstance(step, S.StopDaemon) and not step.root:
            daemon.run_command(step.cmd, ctx.timeout)  # the root it runs on is in doubt
        else:
            perform(step, ctx)
        journal.append({"type": "undo-done", "step": step.name})
    except (DockerGCError, daemon.EngineUnavailable, OSError, ValueError) as exc:
        failures.append(f"{S.label(step)}: {exc}")
        journal.append({"type": "undo-fault", "step": step.name, "error": str(exc)})
        return False
    return True


def _begin(journal: Journal) -> dict[str, Any]:
    for r in journal.records():
        if r.get("type") == "begin":
            return r
    raise UsageError(f"relocation {journal.run_id} has no begin record")


def view_of(journal: Journal) -> RelocationView:
    records = journal.records()
    head = _begin(journal)
    state, error, undo_error = "running", "", ""
    timings: dict[str, float] = {}
    for r in records:
        if r.get("type") == "fault":
            error = str(r.get("error"))
        if r.get("type") == "rollback-begin":
            state = "rolling-back"  # until its end: a rollback cut short is not resumable
        if r.get("type") == "finalize-begin":
            state = "finalizing"  # until its end: the old root is partly deleted
        if r.get("type") in ("end", "rollback-end", "finalize-end"):
            state = str(r["state"])
            timings = r.get("timings", timings)
        if r.get("type") == "rollback-end":  # the latest rollback's own failures, if any
            undo_error = "; ".join(str(f) for f in r.get("failures") or [])
    done = {int(r["seq"]) for r in records if r.get("type") == "done"}
    plan = [S.step_from_dict(d) for d in head["steps"]]
    steps = [{"step": S.label(s), "done": i in done} for i, s in enumerate(plan)]
    bind = any(d["name"] == "bind-mount" for d in head["steps"])
    fstab = fstab_line(head["new"], head["old"]) if bind else ""
    ctd = next((s for s in plan if isinstance(s, S.Copy) and s.what == S.CONTAINERD), None)
    return RelocationView(
        journal.run_id,
        state,
        head["old"],
        head["new"],
        steps,
        undo_error or error,
        timings,
        fstab,
        _recorded_downtime(records) if state != "running" else None,
        ctd.old if ctd else "",
        ctd.new if ctd else "",
    )


DEFAULT_STATE_DIR = Path(SCHEMA["state_dir"][0])
SETTLED = ("relocated", "rolled-back", "finalized")


def command(state_dir: Path, *words: str) -> str:
    """A dockergc command line to suggest, with ``--state-dir`` unless it is the default."""
    tail = ["--state-dir", str(state_dir)] if state_dir != DEFAULT_STATE_DIR else []
    return shlex.join(["dockergc", *words, *tail])


def refuse_if_unfinished(state_dir: Path) -> None:
    """Before a new relocation (the lock held): refuse while an earlier one is unfinished
    (running after a crash or a kill, rolling-back, rollback-failed). The new one would
    start from a daemon.json, a daemon and a target in doubt, and 'relocate rollback'
    without a run id (the latest) would then pick the new run, not the one to settle."""
    for rid in list_runs_in(state_dir):
        try:
            view = view_of(journal_for(state_dir, rid))
        except UsageError:
            continue  # no begin record: it never did anything
        if view.state in SETTLED:
            continue
        how = [command(state_dir, "relocate", "rollback", rid)]
        if view.state == "finalizing":  # only forward: the old root is partly deleted
            how = [command(state_dir, "relocate", "finalize", rid)]
        if view.state == "running":  # a half rollback only goes back
            how.insert(0, command(state_dir, "relocate", "--resume", rid))
        raise RefusedError(
            f"relocation {rid} is unfinished ({view.state}); settle it first with "
            + " or ".join(f"'{c}'" for c in how)
        )


@contextmanager
def old_root_locked(journal: Journal) -> Iterator[None]:
    """Hold the old root's gc lock (lock.exclusive) for --resume, rollback and finalize,
    as the relocation itself does: no gc or apply may change what a resumed copy reads,
    what a rollback starts the daemon on again, or what finalize empties (the daemon gate
    is no help: the daemon is down).

    Not while the old path shows the copy (--bind mode, once bound; told by identity):
    the lock file would be on the bind mount, and the rollback's umount would fail
    "target is busy". What lies beneath is out of gc's reach then (a gc on that path is
    one on the copy the daemon runs on). A lock taken before this command binds it is on
    the filesystem beneath, as the relocation's own: it keeps the mount not busy."""
    view = view_of(journal)
    old = Path(view.old)
    if not old.is_dir() or _same_dir(old, Path(view.new)):
        yield  # no old root to keep, or it is hidden under the bind mount
        return
    with exclusive(old):
        yield


def _same_dir(a: Path, b: Path) -> bool:
    try:
        x, y = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def latest(state_dir: Path) -> str:
    ids = list_runs_in(state_dir)
    if not ids:
        raise UsageError(f"no relocation journal under {state_dir / RELOCATIONS}")
    return ids[-1]


def list_runs_in(state_dir: Path) -> list[str]:
    base = state_dir / RELOCATIONS
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "journal.jsonl").is_file())


def resume(journal: Journal, ctx: Context) -> RelocationView:
    """After dockergc itself died: redo the step under way and go on (all steps are
    idempotent: rsync again, verify again, rewrite the config, start if not running)."""
    view = view_of(journal)
    if view.state in ("rolling-back", "rollback-failed"):
        raise RefusedError(
            f"relocation {journal.run_id} is {view.state}; it cannot go forward",
            hint="finish the rollback: "
            + command(state_dir_of(journal), "relocate", "rollback", journal.run_id),
        )
    if view.state != "running":
        raise UsageError(f"relocation {journal.run_id} is {view.state}; nothing to resume")
    first = next((i for i, s in enumerate(view.steps) if not s["done"]), len(view.steps))
    plan = [S.step_from_dict(d) for d in _begin(journal)["steps"]]
    refuse_unsafe_resume(journal.run_id, Path(view.old), plan, first)
    journal.append({"type": "resume", "from": first})
    return run(journal, ctx, start=first)


def refuse_unsafe_resume(run_id: str, old: Path, plan: list[S.Step], first: int) -> None:
    """Before a resume writes anything: the target must be on the filesystem it was
    planned on, and once the daemon was stopped no daemon may use the old root again.

    A daemon started after dockergc died (by the operator, systemd, socket activation)
    is refused, not stopped again: rsync would copy a live root, and whoever started it
    may have meant to (service back, the move given up); a second downtime is the
    operator's call, made with the stop command, not a resume's."""
    for step in plan:  # every later step (verify, switch, start) needs the copy there
        if isinstance(step, (S.Copy, S.PreCopy)):
            refuse_if_target_moved(step)
    pending = plan[first:]
    # Up to the next stop step (the resume stops it there; a pre-copy runs beside it).
    stop_at = next((i for i, s in enumerate(pending) if isinstance(s, S.StopDaemon)), None)
    before_stop = pending if stop_at is None else pending[:stop_at]
    if not any(isinstance(s, S.NEEDS_STOPPED) for s in before_stop):
        return
    users, used = daemons_on_any(old_roots(plan) or [old])
    if users:
        stop = next((s.cmd for s in plan if isinstance(s, S.StopDaemon)), "")
        raise RefusedError(
            f"refusing to resume relocation {run_id}: {users} uses the old root {used} "
            f"again; stop it ({stop or 'the stop command'}), then resume, or roll back"
        )


def finalize_begun(journal: Journal) -> str:
    redo = command(state_dir_of(journal), "relocate", "finalize", journal.run_id)
    return (
        f"finalize of {journal.run_id} began; the old root is partly deleted; "
        f"run '{redo}' to finish it"
    )


def finalize(journal: Journal, ctx: Context) -> RelocationView:
    """Remove the old root's contents after a successful relocation; a finalize cut short
    (finalizing) is finished by running it again. Ctrl-C/SIGTERM/SIGHUP (``ctx.stop``)
    stop it between entries, saying how to finish."""
    view = view_of(journal)
    if view.state not in ("relocated", "finalizing"):
        raise RefusedError(
            f"relocation {journal.run_id} is {view.state}; only a finished "
            "relocation can be finalized"
        )
    old = Path(view.old)
    # containerd's old root too, when it moved (never in --bind mode).
    olds = [old, *([Path(view.containerd_old)] if view.containerd_old else [])]
    # In --bind mode the daemon keeps using the old *path*; what is removed is what the
    # bind mount hides, which nothing can reach. Otherwise nothing may use an old root.
    if not view.fstab:
        for root in olds:
            users = daemon.processes_using(root) if root.is_dir() else []
            if users:
                raise RefusedError(f"refusing to remove {root}: used by {', '.join(users)}")
            pins, _ = read_pins(root) if root.is_dir() else ({}, 0)
            busy = sorted(p for p in pins if p != str(root))
            if busy:
                raise RefusedError(f"refusing to remove {root}: {busy[0]} is mounted")
    if view.state == "relocated":
        journal.append({"type": "finalize-begin"})
    if view.fstab:
        _remove_shadowed(old, journal, ctx)
    else:
        for root in olds:
            if root.is_dir():
                _remove_entries(root, journal, ctx)
    journal.append({"type": "finalize-end", "state": "finalized"})
    return view_of(journal)


def _remove_entries(under: Path, journal: Journal, ctx: Context) -> None:
    for entry in sorted(os.listdir(under)):
        if ctx.stop is not None and ctx.stop.requested:
            assert ctx.stop.signum is not None
            name = signal.Signals(ctx.stop.signum).name
            raise Interrupted(f"interrupted ({name}): {finalize_begun(journal)}", ctx.stop.signum)
        safefs.remove_tree(str(under), entry)


def _remove_shadowed(old: Path, journal: Journal, ctx: Context) -> None:
    """--bind mode: the old contents lie under the bind mount. A non-recursive bind of the
    filesystem holding them shows them (submounts are not carried), so remove them there."""
    import tempfile

    holder = mount_of(str(old.parent))
    if holder is None:
        raise RelocationFailed(f"no mount holds {old.parent} in /proc/self/mountinfo")
    view = Path(tempfile.mkdtemp(prefix="dockergc-shadow-"))
    daemon.run_command(shlex.join(["mount", "--bind", holder.mount_point, str(view)]))
    try:
        rel = os.path.relpath(old, holder.mount_point)
        _remove_entries(view / rel, journal, ctx)
    finally:
        daemon.run_command(shlex.join(["umount", str(view)]))
        view.rmdir()
