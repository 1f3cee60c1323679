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
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockergc import daemon
from dockergc.errors import DockerGCError, RefusedError, UsageError
from dockergc.execute import safefs
from dockergc.execute.journal import Journal
from dockergc.registry import Registry
from dockergc.relocate import steps as S
from dockergc.relocate.verify import compare
from dockergc.store.snapshot import read_pins

RELOCATIONS = "relocations"
RSYNC = ["rsync", "-aHAX", "--numeric-ids", "--sparse", "-x", "--exclude=/.dockergc"]


class RelocationFailed(DockerGCError):
    """A step failed; the relocation was rolled back (the message says how far)."""


@dataclass
class Context:
    run_id: str
    progress: Callable[[str], None] = lambda _: None
    # Test hook, called before each step runs (fault injection).
    before_step: Callable[[S.Step], None] | None = None
    timeout: float = 180.0
    timings: dict[str, float] = field(default_factory=dict)


STEPS = Registry("relocation step")
implementation_for = STEPS.implementation_for


@implementation_for(S.StopDaemon)
def _stop(step: S.StopDaemon, ctx: Context) -> None:
    daemon.run_command(step.cmd, ctx.timeout)
    root = Path(step.root)
    daemon.wait_until(
        lambda: not daemon.daemons_using(root), ctx.timeout, f"every daemon using {root} to exit"
    )


@implementation_for(S.WaitIdle)
def _wait_idle(step: S.WaitIdle, ctx: Context) -> None:
    root = Path(step.root)
    daemon.wait_until(
        lambda: not daemon.processes_using(root), ctx.timeout, f"no process using {root}"
    )
    pins, _ = read_pins(root)
    busy = sorted(p for p in pins if p != str(root))
    if busy:
        raise RefusedError(f"{root} still has mounts in use: {busy[0]} (+{len(busy) - 1} more)")


@implementation_for(S.Copy)
def _copy(step: S.Copy, ctx: Context) -> None:
    Path(step.new).mkdir(parents=True, exist_ok=True, mode=0o710)
    proc = subprocess.run([*RSYNC, f"{step.old}/", f"{step.new}/"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RelocationFailed(f"copy failed (rsync exit {proc.returncode}): {last}")


@implementation_for(S.RemoveCopy)
def _remove_copy(step: S.RemoveCopy, ctx: Context) -> None:
    new = Path(step.new)
    if not new.is_dir():
        return
    for entry in sorted(os.listdir(new)):
        safefs.remove_tree(str(new), entry)


@implementation_for(S.VerifyCopy)
def _verify(step: S.VerifyCopy, ctx: Context) -> None:
    count, diffs = compare(step.old, step.new)
    if diffs:
        first = diffs[0]
        raise RelocationFailed(
            f"the copy differs from the original at {first.path}: {first.what} "
            f"({len(diffs)} difference(s) in {count} entries)"
        )


def rebase(value: Any, old: str, new: str) -> Any:
    """Every string equal to ``old`` or under ``old/`` moved to ``new``, recursively."""
    if isinstance(value, str):
        if value == old or value.startswith(old + "/"):
            return new + value[len(old) :]
        return value
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: rebase(v, old, new) for k, v in value.items()}
    return value


@implementation_for(S.RewritePaths)
def _rewrite(step: S.RewritePaths, ctx: Context) -> None:
    for path in sorted(Path(step.new, "containers").glob("*/*.json")):
        if path.is_symlink() or path.name not in ("config.v2.json", "hostconfig.json"):
            continue
        doc = json.loads(path.read_text())
        moved = rebase(doc, step.old, step.new)
        if moved != doc:
            _write_atomic(path, json.dumps(moved, separators=(",", ":")))


@implementation_for(S.Relabel)
def _relabel(step: S.Relabel, ctx: Context) -> None:
    if shutil.which("restorecon"):
        daemon.run_command(shlex.join(["restorecon", "-R", step.new]), ctx.timeout * 10)


def _mounted_at(path: str) -> bool:
    with open("/proc/self/mountinfo", errors="surrogateescape") as fh:
        return any(line.split()[4] == path for line in fh)


@implementation_for(S.BindMount)
def _bind(step: S.BindMount, ctx: Context) -> None:
    if not _mounted_at(step.old):
        daemon.run_command(shlex.join(["mount", "--bind", step.new, step.old]), ctx.timeout)


@implementation_for(S.Unmount)
def _unmount(step: S.Unmount, ctx: Context) -> None:
    if _mounted_at(step.old):
        daemon.run_command(shlex.join(["umount", step.old]), ctx.timeout)


def fstab_line(new: str, old: str) -> str:
    return f"{new} {old} none bind 0 0"


@implementation_for(S.SwitchConfig)
def _switch(step: S.SwitchConfig, ctx: Context) -> None:
    config = Path(step.config)
    doc: dict[str, Any] = {}
    if config.exists():
        if not Path(step.backup).exists():
            shutil.copy2(config, step.backup)
            _fsync_file(Path(step.backup))
        doc = json.loads(config.read_text() or "{}")
    doc.pop("graph", None)
    doc["data-root"] = step.new_root
    _write_atomic(config, json.dumps(doc, indent=2) + "\n")


@implementation_for(S.RestoreConfig)
def _restore(step: S.RestoreConfig, ctx: Context) -> None:
    config, backup = Path(step.config), Path(step.backup)
    if backup.exists():
        _write_atomic(config, backup.read_text())
    elif config.exists():
        # There was no config before the switch: the reverse is no config.
        config.unlink()


@implementation_for(S.StartDaemon)
def _start(step: S.StartDaemon, ctx: Context) -> None:
    daemon.run_command(step.cmd, ctx.timeout)

    def on_root() -> bool:
        try:
            return os.path.realpath(daemon.engine_state(step.host).root) == step.expect_root
        except daemon.EngineUnavailable:
            return False

    daemon.wait_until(on_root, ctx.timeout, f"the daemon to answer on {step.expect_root}")


@implementation_for(S.PostVerify)
def _post_verify(step: S.PostVerify, ctx: Context) -> None:
    state = daemon.engine_state(step.host)
    got = (os.path.realpath(state.root), state.images, state.containers)
    want = (step.root, step.images, step.containers)
    if got != want:
        raise RelocationFailed(
            f"after the move the daemon reports root, images, containers {got}, expected {want}"
        )


@implementation_for(S.Noop)
def _noop(step: S.Noop, ctx: Context) -> None:
    pass


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.dockergc-tmp")
    tmp.write_text(text)
    _fsync_file(tmp)
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def perform(step: S.Step, ctx: Context) -> None:
    STEPS.perform(step, ctx)


# -- the run ------------------------------------------------------------------------------


@dataclass
class RelocationView:
    run_id: str
    state: str  # planned|running|relocated|rolled-back|rollback-failed|finalized|interrupted
    old: str
    new: str
    steps: list[dict[str, Any]]
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    fstab: str = ""  # --bind mode: the line that makes the mount permanent


def journal_for(state_dir: Path, run_id: str) -> Journal:
    return Journal(state_dir, run_id, base=RELOCATIONS)


def begin(state_dir: Path, run_id: str, old: Path, new: Path, plan: list[S.Step]) -> Journal:
    journal = journal_for(state_dir, run_id)
    journal.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    journal.append(
        {"type": "begin", "old": str(old), "new": str(new), "steps": [S.step_dict(s) for s in plan]}
    )
    return journal


def run(journal: Journal, ctx: Context, start: int = 0) -> RelocationView:
    """Perform the planned steps from ``start``; roll back on the first failure."""
    plan = [S.step_from_dict(d) for d in _begin(journal)["steps"]]
    for i in range(start, len(plan)):
        step = plan[i]
        journal.append({"type": "intent", "seq": i, "step": S.step_dict(step)})
        ctx.progress(f"[{i + 1}/{len(plan)}] {step.name}")
        t0 = time.monotonic()
        try:
            if ctx.before_step:
                ctx.before_step(step)
            perform(step, ctx)
        except (DockerGCError, daemon.EngineUnavailable, OSError, ValueError) as exc:
            journal.append({"type": "fault", "seq": i, "error": str(exc)})
            ctx.progress(f"{step.name} failed: {exc}; rolling back")
            view = rollback(journal, ctx)
            raise RelocationFailed(
                f"relocation failed at {step.name}: {exc}; rolled back "
                f"({view.state}): the daemon runs on {view.old} again"
            ) from exc
        ctx.timings[step.name] = round(time.monotonic() - t0, 3)
        journal.append({"type": "done", "seq": i, "seconds": ctx.timings[step.name]})
    journal.append({"type": "end", "state": "relocated", "timings": ctx.timings})
    return view_of(journal)


def rollback(journal: Journal, ctx: Context) -> RelocationView:
    """Undo every started step, newest first; the old root is left as it was."""
    records = journal.records()
    started = sorted({int(r["seq"]) for r in records if r.get("type") == "intent"}, reverse=True)
    plan = [S.step_from_dict(d) for d in _begin(journal)["steps"]]
    journal.append({"type": "rollback-begin"})
    failures: list[str] = []
    ran_on_new = any(isinstance(plan[i], S.StartDaemon) for i in started)
    if ran_on_new:
        stop = next(s for s in plan if isinstance(s, S.StopDaemon))
        _best_effort(journal, ctx, S.StopDaemon(stop.cmd, stop.start_cmd, stop.host, ""), failures)
    for i in started:
        back = plan[i].reverse()
        if isinstance(back, S.StopDaemon) and ran_on_new:
            continue  # already stopped above, even if its start never answered
        _best_effort(journal, ctx, back, failures)
    state = "rollback-failed" if failures else "rolled-back"
    journal.append({"type": "rollback-end", "state": state, "failures": failures})
    return view_of(journal)


def _best_effort(journal: Journal, ctx: Context, step: S.Step, failures: list[str]) -> None:
    if isinstance(step, S.Noop):
        return
    journal.append({"type": "undo-intent", "step": S.step_dict(step)})
    ctx.progress(f"rollback: {step.name}")
    try:
        if isinstance(step, S.StopDaemon) and not step.root:
            daemon.run_command(step.cmd, ctx.timeout)  # the root it runs on is in doubt
        else:
            perform(step, ctx)
        journal.append({"type": "undo-done", "step": step.name})
    except (DockerGCError, daemon.EngineUnavailable, OSError, ValueError) as exc:
        failures.append(f"{step.name}: {exc}")
        journal.append({"type": "undo-fault", "step": step.name, "error": str(exc)})


def _begin(journal: Journal) -> dict[str, Any]:
    for r in journal.records():
        if r.get("type") == "begin":
            return r
    raise UsageError(f"relocation {journal.run_id} has no begin record")


def view_of(journal: Journal) -> RelocationView:
    records = journal.records()
    head = _begin(journal)
    state, error = "running", ""
    timings: dict[str, float] = {}
    for r in records:
        if r.get("type") == "fault":
            error = str(r.get("error"))
        if r.get("type") in ("end", "rollback-end", "finalize-end"):
            state = str(r["state"])
            timings = r.get("timings", timings)
    done = {int(r["seq"]) for r in records if r.get("type") == "done"}
    steps = [{"step": d["name"], "done": i in done} for i, d in enumerate(head["steps"])]
    bind = any(d["name"] == "bind-mount" for d in head["steps"])
    fstab = fstab_line(head["new"], head["old"]) if bind else ""
    return RelocationView(
        journal.run_id, state, head["old"], head["new"], steps, error, timings, fstab
    )


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
    if view.state != "running":
        raise UsageError(f"relocation {journal.run_id} is {view.state}; nothing to resume")
    first = next((i for i, s in enumerate(view.steps) if not s["done"]), len(view.steps))
    journal.append({"type": "resume", "from": first})
    return run(journal, ctx, start=first)


def finalize(journal: Journal, ctx: Context) -> RelocationView:
    """Remove the old root's contents after a successful relocation."""
    view = view_of(journal)
    if view.state != "relocated":
        raise RefusedError(
            f"relocation {journal.run_id} is {view.state}; only a finished "
            "relocation can be finalized"
        )
    old = Path(view.old)
    # In --bind mode the daemon keeps using the old *path*; what is removed is what the
    # bind mount hides, which nothing can reach. Otherwise nothing may use the old root.
    if not view.fstab:
        users = daemon.processes_using(old)
        if users:
            raise RefusedError(f"refusing to remove {old}: used by {', '.join(users)}")
        pins, _ = read_pins(old)
        busy = sorted(p for p in pins if p != str(old))
        if busy:
            raise RefusedError(f"refusing to remove {old}: {busy[0]} is mounted")
    journal.append({"type": "finalize-begin"})
    if view.fstab:
        _remove_shadowed(old)
    else:
        for entry in sorted(os.listdir(old)):
            safefs.remove_tree(str(old), entry)
    journal.append({"type": "finalize-end", "state": "finalized"})
    return view_of(journal)


def _remove_shadowed(old: Path) -> None:
    """--bind mode: the old contents lie under the bind mount. A non-recursive bind of the
    filesystem holding them shows them (submounts are not carried), so remove them there."""
    import tempfile

    from dockergc.store.mountinfo import parse_mountinfo

    with open("/proc/self/mountinfo", errors="surrogateescape") as fh:
        entries = parse_mountinfo(fh.read())
    parent = str(old.parent)
    holder = max(
        (
            e
            for e in entries
            if parent == e.mount_point or parent.startswith(e.mount_point.rstrip("/") + "/")
        ),
        key=lambda e: len(e.mount_point),
    )
    view = Path(tempfile.mkdtemp(prefix="dockergc-shadow-"))
    daemon.run_command(shlex.join(["mount", "--bind", holder.mount_point, str(view)]))
    try:
        rel = os.path.relpath(old, holder.mount_point)
        under = view / rel
        for entry in sorted(os.listdir(under)):
            safefs.remove_tree(str(under), entry)
    finally:
        daemon.run_command(shlex.join(["umount", str(view)]))
        view.rmdir()
