"""Apply a plan, resume or roll back a run, purge quarantine: journaled, step by step.

Every move is announced in the journal (fsync'd) before it happens and confirmed
after. A crash between the two leaves an in-doubt step; renames are atomic, so
looking at the disk settles it (``settle``).

Ctrl-C or SIGTERM finishes the current step, writes an ``end`` record with state
``interrupted`` (and the signal) and returns: the handler is installed before a run's
``begin`` record, so no signal can leave a run ``running``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from dockergc.errors import DockerGCError, RefusedError, UsageError
from dockergc.execute import impl as _impl  # noqa: F401  (registers implementations)
from dockergc.execute import safefs
from dockergc.execute.checks import Overlay2Checks, Roots, RunChecks
from dockergc.execute.journal import (
    Journal,
    RunView,
    Step,
    list_runs,
    load,
    new_run_id,
    quarantine_rel,
    run_dir_rel,
)
from dockergc.execute.ops import (
    Change,
    GroupOp,
    MoveOp,
    PartlyMoved,
    PurgeOp,
    RecordOp,
    moves_of,
    perform,
)
from dockergc.execute.verify import LIVE_SLACK, mounted_under
from dockergc.plan import Action, Plan
from dockergc.store.mountinfo import MountTable

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Options:
    live: bool = False
    mounts: MountTable | None = None  # tests may pin the mount table
    progress: Progress = _quiet
    # Test hook: called after each journal record is written (crash injection).
    after_record: Callable[[dict[str, object]], None] | None = None
    # --live: how close to the run's start (filesystem clock) a change counts as during it.
    live_slack: float = LIVE_SLACK
    # The store family's re-checks (dockergc.stores); None: the overlay2 graphdriver's.
    checks: RunChecks | None = None


def _checks(root: Path, opts: Options) -> RunChecks:
    return opts.checks or Overlay2Checks(root, opts.live, opts.mounts, opts.live_slack)


def run_roots(root: Path, run_id: str) -> Roots:
    """The roots a run's paths are under, from the plan it saved: a containerd-store run
    also quarantines under containerd's root (renames never cross filesystems)."""
    try:
        doc = json.loads((Journal(root, run_id).dir / "plan.json").read_text())
    except (OSError, ValueError):
        return Roots(root)
    other = doc.get("containerd_root") if isinstance(doc, dict) else None
    if isinstance(other, str) and other.startswith("/"):
        return Roots(root, {"containerd": Path(other)})
    return Roots(root)


def _perform(roots: Roots, op: Change | PurgeOp, base: str = "") -> Any:
    if isinstance(op, MoveOp):
        base = op.base
    elif isinstance(op, GroupOp):
        base = op.moves[0].base
    return perform(str(roots.of(base)), op)


DEFAULT_ROOT = Path("/var/lib/docker")


def command(root: Path, *words: str) -> str:
    """A dockergc command line to suggest, with ``--root`` unless it is the default."""
    tail = ["--root", str(root)] if root != DEFAULT_ROOT else []
    return shlex.join(["dockergc", *words, *tail])


def resume_hint(root: Path, view: RunView) -> str:
    live = ["--live"] if view.mode == "live" else []
    return command(root, "apply", "--resume", view.run_id, *live)


class _Stop:
    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def record(self, state: str) -> dict[str, object]:
        """The end record of a run this stop interrupted."""
        assert self.signum is not None
        return {"type": "end", "state": state, "signal": signal.Signals(self.signum).name}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A relocation stopped by a dropped SSH session would leave the daemon down, silently.
RELOCATION_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)


@contextmanager
def _stop_between_steps(
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> Iterator[_Stop]:
    """Turn SIGINT/SIGTERM (or ``signals``) into a request to stop after the current step."""
    flag = _Stop()

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.signum = flag.signum or signum

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _write(journal: Journal, opts: Options, record: dict[str, object]) -> None:
    journal.append(record)
    if opts.after_record:
        opts.after_record(record)


def unfinished_runs(root: Path) -> list[RunView]:
    """Runs a crash or a kill left without an end record (call with the lock held)."""
    views = [load(root, r) for r in list_runs(root)]
    return [v for v in views if v.state == "running" or v.in_doubt]


def interrupted_notes(root: Path) -> list[str]:
    """One line per run a signal ended: purge skips their quarantine until they are
    resumed or rolled back, so say so on every gc rather than keep it silently."""
    notes = []
    for view in (load(root, r) for r in list_runs(root)):
        if view.state == "interrupted" and view.quarantined:
            notes.append(
                f"note: run {view.run_id} was interrupted; its quarantine "
                f"({len(view.quarantined)} item(s)) stays until '{resume_hint(root, view)}' "
                f"or '{command(root, 'rollback', view.run_id)}'"
            )
    return notes


def refuse_if_unfinished(root: Path) -> None:
    for view in unfinished_runs(root):
        raise RefusedError(
            f"run {view.run_id} did not finish; resume it with '{resume_hint(root, view)}' "
            f"or undo it with '{command(root, 'rollback', view.run_id)}'"
        )


def _planned_at(plan: Plan) -> float:
    return datetime.fromisoformat(plan.created).timestamp()


def start_run(root: Path, plan: Plan, opts: Options) -> RunView:
    """Create a run for ``plan`` and apply it."""
    if Path(plan.root) != root:
        raise RefusedError(f"the plan is for {plan.root}, not {root}")
    checks = _checks(root, opts)
    checks.accepts(plan)  # before the run exists: a refused plan leaves nothing behind
    # Signals are caught from before the run exists: none can leave it 'running'.
    with _stop_between_steps() as stop:
        run_id = new_run_id()
        safefs.makedirs(str(root), run_dir_rel(run_id) + "/q")
        journal = Journal(root, run_id)
        (journal.dir / "plan.json").write_text(json.dumps(plan.to_dict()) + "\n")
        for base, other in checks.roots.others.items():  # its quarantine, on its filesystem
            if any(a.base == base for a in plan.actions):
                safefs.makedirs(str(other), run_dir_rel(run_id) + "/q")
        _write(
            journal,
            opts,
            {
                "type": "begin",
                "run_id": run_id,
                "root": str(root),
                "mode": "live" if opts.live else "offline",
                "plan_created": plan.created,
                "actions": len(plan.actions),
            },
        )
        return _apply(root, journal, plan, opts, set(), set(), 1, stop)


def resume_run(root: Path, run_id: str, opts: Options) -> RunView:
    """Settle in-doubt steps, then carry out what the run has not done yet."""
    journal = Journal(root, run_id)
    view = load(root, run_id)
    if view.state not in ("running", "interrupted") and not view.in_doubt:
        raise UsageError(f"run {run_id} is {view.state}; there is nothing to resume")
    with _stop_between_steps() as stop:
        settle(root, journal, view, opts)
        view = load(root, run_id)
        plan = Plan.from_dict(json.loads((journal.dir / "plan.json").read_text()))
        # A step settled as never moved is tried again; everything else was decided.
        handled = {s.action_id for s in view.steps if s.status != "not-moved"}
        handled |= {s["action_id"] for s in view.skipped}
        moved = {s.path for s in view.steps if s.status == "moved"}
        _write(journal, opts, {"type": "resume"})
        next_seq = max((s.seq for s in view.steps), default=0) + 1
        return _apply(root, journal, plan, opts, handled, moved, next_seq, stop)


def _place(roots: Roots, move: MoveOp) -> str | None:
    """Where a move's entry is now, by identity: "dst", "src", or None (neither)."""
    ident = (move.dev, move.ino)
    for where, rel in (("dst", move.dst), ("src", move.src)):
        st = safefs.lstat_at(str(roots.of(move.base)), rel)
        if st is not None and (st.st_dev, st.st_ino) == ident:
            return where
    return None


def settle(root: Path, journal: Journal, view: RunView, opts: Options) -> None:
    """Decide each in-doubt step from the disk: renames happen entirely or not at all.
    A group a crash left half-moved is put back (newest first), so it counts as never
    moved: its parts are quarantined together or not at all."""
    roots = _checks(root, opts).roots if opts.checks else run_roots(root, view.run_id)
    for step in view.in_doubt:
        if isinstance(step.op, RecordOp):  # containerd knows whether it happened
            if opts.checks is None:
                outcome = "unknown"
                reason = (
                    "settled after a crash without asking containerd: the lease may or may "
                    "not be deleted ('ctr -n moby leases ls' tells; 'apply --resume' asks)"
                )
            else:
                outcome, reason = opts.checks.settle_record(step.op)
            record = {"type": "done", "seq": step.seq, "outcome": outcome, "reason": reason}
            _write(journal, opts, record)
            continue
        moves = moves_of(step.op)
        places = [_place(roots, m) for m in moves]
        if all(p == "dst" for p in places):
            outcome, reason = "moved", "settled after a crash: found in quarantine"
        elif all(p == "src" for p in places):
            outcome, reason = "not-moved", "settled after a crash: never moved"
        elif opts.live and step.kind == "unreferenced-layer":
            # Putting a layer record back under a running daemon breaks every pull of it
            # (the daemon renames its write-set onto that path): leave it for an offline
            # rollback, which puts the whole group back.
            outcome = "partly-moved"
            reason = "settled after a crash: partly in quarantine (roll back, daemon stopped)"
        elif None not in places and _put_back(roots, journal, step, moves, places, opts):
            outcome = "not-moved"
            reason = "settled after a crash: the half-moved group was put back"
        elif None in places:
            gone = moves[places.index(None)]
            outcome, reason = (
                "lost" if "dst" not in places else "partly-moved",
                "settled after a crash: found in neither place (looked "
                f"for {gone.src} and {gone.dst} under {root})",
            )
        else:
            outcome, reason = "partly-moved", "settled after a crash: partly in quarantine"
        record = {"type": "done", "seq": step.seq, "outcome": outcome, "reason": reason}
        _write(journal, opts, record)


def _put_back(
    roots: Roots,
    journal: Journal,
    step: Step,
    moves: tuple[MoveOp, ...],
    places: list[str | None],
    opts: Options,
) -> bool:
    """Move a half-moved group's quarantined parts back; False if one could not be."""
    for move, place in reversed(list(zip(moves, places, strict=True))):
        if place != "dst":
            continue
        back = move.reverse()
        _write(journal, opts, {"type": "settle-undo", "seq": step.seq, "op": back.as_dict()})
        try:
            _perform(roots, back)
        except (safefs.UnsafePath, OSError):
            return False
    return True


def _apply(
    root: Path,
    journal: Journal,
    plan: Plan,
    opts: Options,
    done: set[str],
    moved: set[str],
    next_seq: int,
    stop: _Stop,
) -> RunView:
    planned_at = _planned_at(plan)
    checks = _checks(root, opts)
    checks.begin(journal, plan)
    seq = next_seq
    todo = [a for a in plan.actions if a.id not in done]
    for n, action in enumerate(todo, 1):
        if stop.requested:
            _write(journal, opts, stop.record("interrupted"))
            return load(root, journal.run_id)
        reason = checks.why_not(action, moved, planned_at, n)
        if reason:
            _write(
                journal,
                opts,
                {
                    "type": "skip",
                    "action_id": action.id,
                    "kind": action.kind,
                    "path": action.path,
                    "reason": reason,
                },
            )
            opts.progress(f"[{n}/{len(todo)}] kept {action.path}: {reason}")
            continue
        op = checks.record_op(action) or _change(journal.run_id, seq, action)
        _write(
            journal,
            opts,
            {
                "type": "intent",
                "seq": seq,
                "action_id": action.id,
                "kind": action.kind,
                "path": action.path,
                "bytes": action.bytes,
                "op": op.as_dict(),
            },
        )
        freed: dict[str, object] = {}
        try:
            if isinstance(op, RecordOp):
                freed["freed"] = checks.perform_record(op)
            else:
                _perform(checks.roots, op)
        except PartlyMoved as exc:  # rollback puts back what is in quarantine
            _write(
                journal,
                opts,
                {"type": "done", "seq": seq, "outcome": "partly-moved", "reason": str(exc)},
            )
            opts.progress(f"[{n}/{len(todo)}] partly quarantined {action.path}: {exc}")
        except (safefs.UnsafePath, OSError, DockerGCError) as exc:
            _write(
                journal,
                opts,
                {
                    "type": "done",
                    "seq": seq,
                    "outcome": "not-moved",
                    "reason": f"{'failed' if isinstance(op, RecordOp) else 'move failed'}: {exc}",
                },
            )
            opts.progress(f"[{n}/{len(todo)}] kept {action.path}: {exc}")
        else:
            outcome = "deleted" if isinstance(op, RecordOp) else "moved"
            _write(journal, opts, {"type": "done", "seq": seq, "outcome": outcome, **freed})
            moved.add(action.path)
            checks.after_move(action)
            did = "deleted through containerd" if outcome == "deleted" else "quarantined"
            opts.progress(f"[{n}/{len(todo)}] {did} {action.path}")
        seq += 1
    _write(journal, opts, {"type": "end", "state": "applied"})
    return load(root, journal.run_id)


def _change(run_id: str, seq: int, action: Action) -> Change:
    """The step that quarantines ``action``: one move, or one group with its parts
    (quarantined as q/<seq>, q/<seq>-1, ...)."""
    dst = quarantine_rel(run_id, seq)
    first = MoveOp(src=action.path, dst=dst, dev=action.dev, ino=action.ino, base=action.base)
    if not action.parts:
        return first
    rest = (
        MoveOp(p.path, f"{dst}-{i}", p.dev, p.ino, base=action.base)
        for i, p in enumerate(action.parts, 1)
    )
    return GroupOp((first, *rest))


def rollback_run(root: Path, run_id: str, opts: Options) -> RunView:
    """Move every quarantined entry of the run back, newest first. Ctrl-C or SIGTERM
    stops after the current step (state partially-rolled-back; run rollback again)."""
    journal = Journal(root, run_id)
    view = load(root, run_id)
    with _stop_between_steps() as stop:
        if view.in_doubt:
            settle(root, journal, view, opts)
            view = load(root, run_id)
        _write(journal, opts, {"type": "rollback-begin"})
        failed = 0
        roots = run_roots(root, run_id)
        for step in reversed(view.quarantined):
            if stop.requested:
                _write(
                    journal, opts, {**stop.record("partially-rolled-back"), "type": "rollback-end"}
                )
                return load(root, run_id)
            failed += not _undo(roots, journal, step, opts)
        state = "partially-rolled-back" if failed else "rolled-back"
        _write(journal, opts, {"type": "rollback-end", "state": state})
    return load(root, run_id)


def _undo(roots: Roots, journal: Journal, step: Step, opts: Options) -> bool:
    """Move one quarantined entry (or group) back; False if it had to stay in quarantine.
    A group comes back whole or not at all: every part is checked before any moves."""
    back = step.op.reverse()
    todo = []
    root = roots.data
    held = _layer_not_restorable(root, step, opts)
    if held:
        _write(journal, opts, {"type": "undo-skip", "seq": step.seq, "reason": held})
        opts.progress(f"left {step.path} in quarantine: {held}")
        return False
    for move in moves_of(back):
        place = _place(roots, move.reverse())
        home = roots.of(move.base)
        if place == "src":  # never moved, or already put back
            continue
        if place is None:
            reason = f"{move.src} is missing from quarantine; left as it is"
        elif safefs.lstat_at(str(home), move.dst) is not None:
            reason = f"{move.dst} exists again; left in quarantine"
        else:
            reason = mounted_under(home, move.src, opts.mounts) or ""
            todo.append(move)
        if reason:
            _write(journal, opts, {"type": "undo-skip", "seq": step.seq, "reason": reason})
            opts.progress(f"left {step.path} in quarantine: {reason}")
            return False
    _write(journal, opts, {"type": "undo-intent", "seq": step.seq, "op": back.as_dict()})
    try:
        for move in todo:
            _perform(roots, move)
    except (safefs.UnsafePath, OSError) as exc:
        _write(journal, opts, {"type": "undo-skip", "seq": step.seq, "reason": str(exc)})
        return False
    _write(journal, opts, {"type": "undo-done", "seq": step.seq})
    opts.progress(f"restored {step.path}")
    return True


def _layer_not_restorable(root: Path, step: Step, opts: Options) -> str | None:
    """Why a quarantined layer must stay in quarantine for now: a running daemon (a record
    put back under it breaks every pull of that layer), or a parent that is not back (its
    record, or an ``l/`` link the dir's lower file names): the layer would load on a
    missing or different parent. Rollback restores parents first, so a parent moved in the
    same run is back by then."""
    if step.kind != "unreferenced-layer":
        return None
    if opts.live:
        return "a layer is put back only with the daemon stopped (run rollback without --live)"
    moves = moves_of(step.op)
    record = moves[0].dst
    parent = _read_small(root, f"{record}/parent")
    if parent is None and safefs.lstat_at(str(root), f"{record}/parent") is not None:
        return "its parent file cannot be read, so its parent is unknown"
    parent_rel = f"image/overlay2/layerdb/sha256/{(parent or '')[7:]}"
    if parent and parent.startswith("sha256:") and safefs.lstat_at(str(root), parent_rel) is None:
        return f"its parent layer {parent[7:19]} is not in layerdb"
    lower = _read_small(root, f"{moves[1].dst}/lower") if len(moves) > 1 else None
    for entry in (lower or "").split(":"):
        if entry and safefs.lstat_at(str(root), f"overlay2/{entry}") is None:
            return f"its lower file names overlay2/{entry}, which is not there"
    return None


def _read_small(root: Path, rel: str) -> str | None:
    """A small regular file's text; None if it is missing or not a readable regular file
    (O_NONBLOCK: a FIFO planted in quarantine must not stall a rollback)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        with safefs.open_parent(str(root), rel) as (fd, name):
            ffd = os.open(name, flags, dir_fd=fd)
            try:
                if not stat.S_ISREG(os.fstat(ffd).st_mode):
                    return None
                return os.read(ffd, 4096).decode(errors="replace").strip()
            finally:
                os.close(ffd)
    except (safefs.UnsafePath, OSError):
        return None


def purgeable(
    root: Path, older_than: float, run_id: str | None, now: float | None = None
) -> list[RunView]:
    """The runs a purge with these arguments frees, oldest first (``purge --dry-run``
    shows them): finished runs that ended at least ``older_than`` seconds ago and still
    hold quarantine; ``run_id`` names one run whatever its age, and an unfinished run
    named that way is refused."""
    now = time.time() if now is None else now
    chosen: list[RunView] = []
    for rid in [run_id] if run_id else list_runs(root):
        view = load(root, rid)
        if view.state in ("running", "interrupted") or view.in_doubt:
            if run_id:
                raise RefusedError(
                    f"run {rid} is unfinished; resume it with '{resume_hint(root, view)}' "
                    f"or undo it with '{command(root, 'rollback', rid)}' first"
                )
            continue
        if not run_id and (view.ended is None or now - view.ended < older_than):
            continue
        if view.quarantined:
            chosen.append(view)
    return chosen


def purge_runs(root: Path, older_than: float, run_id: str | None, opts: Options) -> list[RunView]:
    """Remove quarantined entries of the runs ``purgeable`` picks. Ctrl-C or SIGTERM
    stops after the current entry (the run's purge-end says so)."""
    purged: list[RunView] = []
    with _stop_between_steps() as stop:
        for view in purgeable(root, older_than, run_id):
            purged.append(_purge_one(root, view, opts, stop))
            if stop.requested:
                break
    return purged


def _purge_one(root: Path, view: RunView, opts: Options, stop: _Stop) -> RunView:
    journal = Journal(root, view.run_id)
    roots = run_roots(root, view.run_id)
    for step in view.quarantined:
        if stop.requested:
            _write(journal, opts, {**stop.record(view.state), "type": "purge-end"})
            return load(root, view.run_id)
        # A group's parts a crash already purged are gone: purge what is left of it.
        moves = moves_of(step.op)
        paths = [(m.base, m.dst) for m in moves if safefs.lstat_at(str(roots.of(m.base)), m.dst)]
        busy = next(
            filter(None, (mounted_under(roots.of(b), p, opts.mounts) for b, p in paths)), None
        )
        if busy:
            _write(journal, opts, {"type": "purge-skip", "seq": step.seq, "reason": busy})
            opts.progress(f"kept {moves[0].dst} in quarantine: {busy}")
            continue
        ops = [(b, PurgeOp(p)) for b, p in paths]
        _write(
            journal,
            opts,
            {
                "type": "purge-intent",
                "seq": step.seq,
                "ops": [{**op.as_dict(), "base": b} for b, op in ops],
            },
        )
        freed = 0
        try:
            for b, op in ops:
                freed += int(_perform(roots, op, b) or 0)
        except (safefs.UnsafePath, OSError) as exc:
            _write(journal, opts, {"type": "purge-skip", "seq": step.seq, "reason": str(exc)})
            opts.progress(f"could not purge {moves[0].dst}: {exc}")
            continue
        _write(journal, opts, {"type": "purge-done", "seq": step.seq, "freed": freed})
    _write(journal, opts, {"type": "purge-end", "state": view.state})
    return load(root, view.run_id)


def purge_until(
    root: Path, low: float, used: Callable[[Path], float], opts: Options
) -> list[RunView]:
    """Disk pressure: purge finished runs' quarantine, oldest first, until ``used(root)``
    is below ``low`` percent (the run just made included, last). Stops at a signal."""
    views = sorted((load(root, r) for r in list_runs(root)), key=lambda v: (v.created, v.run_id))
    purged: list[RunView] = []
    for view in views:
        if used(root) < low:
            break
        if view.quarantined and view.state not in ("running", "interrupted") and not view.in_doubt:
            purged += purge_runs(root, 0, view.run_id, opts)
            if purged and purged[-1].signal:
                break
    return purged
