"""Relocation steps carried out: one implementation per step kind, registered in one
Registry (the only relocation code that changes disk or runs commands). ``executor``
journals each step before it calls ``perform``."""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dockergc import daemon
from dockergc.errors import DockerGCError, RefusedError
from dockergc.execute import safefs
from dockergc.execute.runner import _Stop
from dockergc.registry import Registry
from dockergc.relocate import configs, counts, daemonjson
from dockergc.relocate import progress as P
from dockergc.relocate import steps as S
from dockergc.relocate.targetfs import filesystem_of
from dockergc.relocate.verify import SKIP_TOP, compare, is_metadata
from dockergc.render.interface import human_bytes
from dockergc.store.fsread import parse_json
from dockergc.store.snapshot import read_pins

RELOCATIONS = "relocations"
LOCK = "lock"  # <state-dir>/relocations/lock: one relocation command at a time
# --delete makes a re-run converge on an exact copy (a killed rsync leaves its temp files,
# ".<name>.XXXXXX", in the target); the excluded /.dockergc and the run's marker are
# protected from it (and an old root's own marker from an earlier move is not copied).
RSYNC = [
    "rsync",
    "-aHAX",
    "--numeric-ids",
    "--sparse",
    "-x",
    "--delete",
    "--exclude=/.dockergc",
    f"--exclude=/{S.MARKER_PREFIX}*",
    *P.RSYNC_PROGRESS,
]
PR_SET_PDEATHSIG = 1
# rsync's exit codes a pre-copy pass of a live root shrugs off: files vanished (24) or
# could not be read whole (23) while the daemon changed them. The final pass, with the
# daemon stopped, must exit 0.
LIVE_RSYNC_OK = (0, 23, 24)
# Pre-copy passes: after the first (everything), go on while the delta shrinks, until
# a pass takes at most PASS_SMALL_SECONDS or moves at most PASS_SMALL_BYTES.
MAX_PASSES = 5
PASS_SMALL_SECONDS = 5.0
PASS_SMALL_BYTES = 64 * 2**20
SHRINKING = 0.8  # a delta shrinks when it is at most this fraction of the previous one
# What the ctime of a file the old root changed may lag behind the marker's mtime (both
# the kernel's coarse clock): hash from this much before.
CHANGED_SLACK = 2.0


class RelocationFailed(DockerGCError):
    """A step failed; the relocation was rolled back (the message says how far)."""


class ConfigConflict(RefusedError):
    """daemon.json is in a state the journal cannot account for: left exactly as it is."""

    hint = (
        "compare the two files, put the right daemon.json in place by hand, then run "
        "'dockergc relocate rollback RUN' (or --resume RUN) again"
    )


@dataclass
class Context:
    run_id: str
    progress: Callable[[str], None] = lambda _: None
    # Test hook, called before each step runs (fault injection).
    before_step: Callable[[S.Step], None] | None = None
    timeout: float = 180.0
    timings: dict[str, float] = field(default_factory=dict)
    # SIGINT/SIGTERM seen (runner's handler); ``run`` installs one if the caller did not.
    stop: _Stop | None = None
    # Where the copy's progress is shown (None: nowhere), and its journal record: the
    # executor points ``record`` at the journal for each step (a ``progress`` record).
    copy_display: P.Display | None = None
    record: Callable[[dict[str, Any]], None] = lambda _: None
    journal_every: float = P.JOURNAL_EVERY
    max_passes: int = MAX_PASSES
    # What the daemon listed before the stop (journaled by it), for post-verify.
    listed: counts.Listed | None = None


STEPS = Registry("relocation step")
implementation_for = STEPS.implementation_for


@implementation_for(S.StopDaemon)
def _stop(step: S.StopDaemon, ctx: Context) -> None:
    if step.root:  # the move's own stop (a rollback's has none): what post-verify expects
        # (The listing's milliseconds count in the downtime, measured from this step's
        # intent: over-reported, never under.)
        listed = counts.listed_now(step.host, step.root)
        if listed is not None:
            ctx.record({"step": S.label(step), **listed.record()})
    daemon.run_command(step.cmd, ctx.timeout)
    for root in [Path(r) for r in (step.root, step.ctd_root) if r]:
        _wait_no_daemon(root, ctx.timeout)


def _wait_no_daemon(root: Path, timeout: float) -> None:
    daemon.wait_until_none(
        lambda: [d.describe() for d in daemon.daemons_using(root)],
        timeout,
        f"every daemon using {root} to exit",
    )


@implementation_for(S.WaitIdle)
def _wait_idle(step: S.WaitIdle, ctx: Context) -> None:
    root = Path(step.root)
    daemon.wait_until_none(
        lambda: daemon.processes_using(root), ctx.timeout, f"no process using {root}"
    )
    pins, _ = read_pins(root)
    busy = sorted(p for p in pins if p != str(root))
    if busy:
        raise RefusedError(f"{root} still has mounts in use: {busy[0]} (+{len(busy) - 1} more)")


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when dockergc dies, even by SIGKILL, so a
    killed dockergc never leaves a copy running into the target (prctl is resolved here,
    before the fork)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    args = [ctypes.c_ulong(v) for v in (signal.SIGKILL, 0, 0, 0)]  # prctl(2) takes longs

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, *args) != 0 or os.getppid() != parent:
            os._exit(127)  # no guarantee, or dockergc died before it took hold: no copy

    return preexec


def refuse_if_target_moved(step: S.Copy | S.PreCopy) -> None:
    """Refuse unless the target is on the filesystem preflight found it on: with its disk
    not mounted, mkdir -p and rsync would fill the filesystem beneath (often /)."""
    if not step.fs:
        return  # a journal from before the filesystem was recorded
    now = filesystem_of(Path(step.new))
    if now != step.fs:
        raise RefusedError(
            f"the target {step.new} is no longer on the filesystem it was planned on "
            f"(planned: {step.fs}; now: {now}); mount it again"
        )


def _holds_marker(new: Path, marker: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(new / marker).st_mode)
    except FileNotFoundError:
        return False


def _write_marker(new: Path, marker: str, run_id: str) -> None:
    """Made in place, not by rename: a kill leaves it (maybe empty) or nothing, never a
    temp file that would make the target neither empty nor marked. fsync'd, file and
    directory, before rsync writes anything: whatever the target holds from here on is
    this run's copy, and the undo may remove it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(new / marker, flags, 0o600)
    try:
        os.write(fd, f"relocation {run_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    daemonjson.fsync_dir(new)


def _prepare_target(step: S.Copy | S.PreCopy, ctx: Context) -> None:
    refuse_if_target_moved(step)
    new = Path(step.new)
    new.mkdir(parents=True, exist_ok=True, mode=0o710)
    if step.marker and not _holds_marker(new, step.marker):
        if any(new.iterdir()):  # preflight found it empty: someone else's files since
            raise RefusedError(
                f"the target {new} is no longer empty and holds no {step.marker}; left as it is"
            )
        _write_marker(new, step.marker, ctx.run_id)


@implementation_for(S.Copy)
def _copy(step: S.Copy, ctx: Context) -> None:
    """The final pass (--delete, the daemon stopped). After a pre-copy (the target holds
    the marker already) a second pass rewrites in place, times ignored, the files rsync's
    quick check (size and mtime) cannot be trusted with: the metadata files the daemons
    keep in bbolt (written through mmap, their mtime may lag their contents: seen on
    BuildKit's history_c8d.db of a 28.5 dockerd) and every file whose ctime is at or after
    the pre-copy's start. They are the ones the verification hashes."""
    marked_before = bool(step.marker) and _holds_marker(Path(step.new), step.marker)
    _prepare_target(step, ctx)
    returncode, errors, _ = _rsync([*RSYNC, f"{step.old}/", f"{step.new}/"], ctx, S.label(step))
    if returncode != 0:
        raise RelocationFailed(f"copy failed (rsync exit {returncode}): {said(errors)}")
    if marked_before:
        since = os.lstat(Path(step.new, step.marker)).st_mtime - CHANGED_SLACK
        _force_changed(step, ctx, since)


def said(errors: str) -> str:
    """rsync's error output in one line: its first line (often the cause, e.g. an option
    this rsync refuses) and its last (the summary, e.g. 'rsync error: ... (code 23)')."""
    lines = [line.strip() for line in errors.strip().splitlines() if line.strip()] or ["?"]
    return lines[-1] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


# The forced pass: in place (hard links and the target's inode kept), times ignored.
RSYNC_FORCED = [
    "rsync",
    "-aHAX",
    "--numeric-ids",
    "--sparse",
    "--inplace",
    "-I",
    "--from0",
    *P.RSYNC_PROGRESS,
]


def _force_changed(step: S.Copy, ctx: Context, since: float) -> None:
    files = changed_files(step.old, since)
    if not files:
        return
    with tempfile.NamedTemporaryFile(prefix="dockergc-forced-") as listing:
        listing.write(b"".join(os.fsencode(f) + b"\0" for f in files))
        listing.flush()
        argv = [*RSYNC_FORCED, f"--files-from={listing.name}", f"{step.old}/", f"{step.new}/"]
        returncode, errors, _ = _rsync(argv, ctx, S.label(step) + " (changed files)")
    if returncode != 0:
        raise RelocationFailed(
            f"copy of changed files failed (rsync exit {returncode}): {said(errors)}"
        )
    ctx.record({"step": S.label(step), "forced_files": len(files)})


def changed_files(old: str, since: float) -> list[str]:
    """Regular files under ``old`` (relative) that are metadata (verify.is_metadata) or
    whose ctime is at or after ``since``: one walk, never across a filesystem or through
    a symlink, the top-level .dockergc and markers skipped (as rsync and verify do)."""
    dev = os.lstat(old).st_dev
    out: list[str] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(old, rel_dir)) as it:
            entries = list(it)
        for entry in entries:
            if not rel_dir and (entry.name in SKIP_TOP or entry.name.startswith(S.MARKER_PREFIX)):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode) and (
                st.st_ctime >= since or is_metadata(rel, st.st_size)
            ):
                out.append(rel)
    return sorted(out)


@dataclass(frozen=True)
class Pass:
    seconds: float
    bytes: int


def enough_passes(passes: list[Pass], most: int = MAX_PASSES) -> bool:
    """Whether the pre-copy may stop: the last pass was small, or the delta stopped
    shrinking (the daemon writes as fast as a pass copies), or ``most`` passes ran. The
    first pass copies everything and never counts as small: a second one measures the
    delta the final pass will meet."""
    if len(passes) >= most:
        return True
    if len(passes) < 2:
        return False
    last, before = passes[-1], passes[-2]
    if last.seconds <= PASS_SMALL_SECONDS or last.bytes <= PASS_SMALL_BYTES:
        return True
    return last.bytes > before.bytes * SHRINKING


def downtime_estimate(last: Pass, stop_start: float = 5.0) -> float:
    """Seconds the daemon will be down: the final pass meets at most what changed during
    the last pre-copy pass (so it takes at most about as long), the verification walks
    both trees about as long again, plus stopping and starting the daemon
    (``stop_start``; dockerd also waits up to 10 s for containers that ignore SIGTERM)."""
    return round(2 * last.seconds + stop_start, 1)


@implementation_for(S.PreCopy)
def _precopy(step: S.PreCopy, ctx: Context) -> None:
    """Copy while the daemon runs, pass after pass, then flush the new disk: the final
    pass then writes only the delta, and the daemon's first fsync on the new root does not
    wait for gigabytes of the pre-copy's dirty pages (that wait would be downtime)."""
    _prepare_target(step, ctx)
    passes: list[Pass] = []
    while not enough_passes(passes, ctx.max_passes):
        if ctx.stop is not None and ctx.stop.requested:
            return  # Ctrl-C/SIGTERM/SIGHUP: no further pass; the run rolls back after it
        label = f"pre-copy pass {len(passes) + 1}" + (f" ({step.what})" if step.what else "")
        t0 = time.monotonic()
        returncode, errors, copied = _rsync(
            [*RSYNC, f"{step.old}/", f"{step.new}/"], ctx, label=label
        )
        if returncode not in LIVE_RSYNC_OK:
            raise RelocationFailed(f"{label} failed (rsync exit {returncode}): {said(errors)}")
        passes.append(Pass(round(time.monotonic() - t0, 3), copied or 0))
        ctx.record({"step": label, "seconds": passes[-1].seconds, "bytes": passes[-1].bytes})
    t0 = time.monotonic()
    syncfs(Path(step.new))
    flushed = round(time.monotonic() - t0, 3)
    estimate = downtime_estimate(passes[-1])
    ctx.record({"step": S.label(step), "flush_seconds": flushed, "downtime_estimate": estimate})
    ctx.progress(
        f"{S.label(step)}: {len(passes)} pass(es), the last {human_bytes(passes[-1].bytes)} in "
        f"{passes[-1].seconds:.1f} s; new disk flushed in {flushed:.1f} s; estimated "
        f"downtime about {estimate:.0f} s (plus up to 10 s for containers that ignore SIGTERM)"
    )


def syncfs(path: Path) -> None:
    """Flush the filesystem ``path`` is on (syncfs(2), as ``sync -f``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _rsync(argv: list[str], ctx: Context, label: str = "copy") -> tuple[int, str, int | None]:
    """Run rsync to its end, with no time limit (Ctrl-C at a terminal reaches it too: it
    stops, the copy fails and the relocation rolls back); its progress lines go to
    ``ctx.copy_display`` and, throttled, to the journal. Its stderr is spooled to a file,
    so neither pipe can fill and stall it. (exit code, stderr, bytes rsync last reported
    copied or None)."""
    watcher = P.Watcher(ctx.copy_display, ctx.record, ctx.journal_every, label=label)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=errors,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        assert proc.stdout is not None
        try:
            fd = proc.stdout.fileno()
            watching = True
            while chunk := os.read(fd, 65536):
                watching = watching and _watched(watcher.feed, chunk)
            returncode = proc.wait()
        except BaseException:
            proc.kill()  # never leave a copy running into the target
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if watching:
            _watched(watcher.finish, returncode == 0)
        copied = watcher.latest.bytes if watcher.latest else None
        return returncode, _first_and_last(errors).decode("utf-8", "replace"), copied


def _first_and_last(spool: IO[bytes], most: int = 65536) -> bytes:
    """All of rsync's stderr, or, past ``most`` bytes, its first line and its last
    ``most`` bytes (whole lines): the cause and the summary both count."""
    size = os.fstat(spool.fileno()).st_size
    spool.seek(0)
    if size <= most:
        return spool.read()
    first = spool.readline(4096).rstrip(b"\n")
    spool.seek(size - most)
    return first + b"\n" + spool.read().split(b"\n", 1)[-1]


def _watched(call: Callable[[Any], None], arg: Any) -> bool:
    """Whether showing the copy's progress still works: a fault in it (rsync printed
    what no one foresaw) ends the progress, never the copy."""
    try:
        call(arg)
    except Exception:  # whatever it was: progress is never worth a copy
        return False
    return True


@implementation_for(S.RemoveCopy)
def _remove_copy(step: S.RemoveCopy, ctx: Context) -> None:
    """Empty the target only while it holds this run's marker, which goes last (a removal
    cut short is finished by the next rollback); without it, remove nothing: the target
    is not (or no longer) the copy this run made, e.g. its disk is not mounted, or
    someone made it anew."""
    new = Path(step.new)
    if not new.is_dir():
        return
    users = daemon.daemons_using(new)
    if users:  # e.g. started on it by hand since, or the bind mounted again at boot
        raise RefusedError(
            f"refusing to remove the copy at {new}: {users[0].describe()}; left as it is "
            "(stop it, then roll back again)"
        )
    entries = sorted(os.listdir(new))
    if step.marker:
        if not _holds_marker(new, step.marker):
            if entries:
                raise RefusedError(
                    f"refusing to remove the contents of {new}: it does not hold "
                    f"{step.marker}, so it is not the copy this relocation made; left as it "
                    "is (remove it by hand if it is, then roll back again)"
                )
            return
        entries.remove(step.marker)
    for entry in entries:
        safefs.remove_tree(str(new), entry)
    if step.marker:
        daemonjson.fsync_dir(new)  # the contents durably gone before the marker goes
        daemonjson.remove(new / step.marker)


@implementation_for(S.VerifyCopy)
def _verify(step: S.VerifyCopy, ctx: Context) -> None:
    since = None
    if step.changed_since:  # the marker's mtime: when the pre-copy began
        since = os.lstat(Path(step.new, step.changed_since)).st_mtime - CHANGED_SLACK
    count, diffs = compare(step.old, step.new, since=since)
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
        try:
            doc = parse_json(path.read_bytes())
        except ValueError as exc:
            # dockerd does not load a container it cannot read either; the file stays as
            # copied (byte for byte), named so the operator can see to it.
            ctx.progress(f"rewrite-paths: {path} left as copied: not JSON ({exc})")
            continue
        moved = rebase(doc, step.old, step.new)
        if moved != doc:
            text = json.dumps(moved, separators=(",", ":"))
            daemonjson.write_atomic(path, text.encode(), like=os.stat(path))


@implementation_for(S.Relabel)
def _relabel(step: S.Relabel, ctx: Context) -> None:
    """restorecon labels by path: on a new path without a rule it would give the copy
    that path's default labels (not container_var_lib_t), undoing what rsync -X copied.
    So the new path is first made equivalent to the old (``semanage fcontext -a -e OLD
    NEW``, the documented way to move a labelled tree); without semanage the copied
    labels are kept as they are and restorecon is not run."""
    if not step.old:  # a journal from before the rule: as it was then
        if shutil.which("restorecon"):
            daemon.run_command(shlex.join(["restorecon", "-R", step.new]), ctx.timeout * 10)
        return
    if not shutil.which("semanage") or not shutil.which("restorecon"):
        ctx.progress(f"{S.label(step)}: no semanage/restorecon: the labels rsync copied kept")
        return
    rule = ["semanage", "fcontext", "-a", "-e", step.old, step.new]
    try:
        daemon.run_command(shlex.join(rule), ctx.timeout)
    except daemon.EngineUnavailable:  # a rule for the path already: make it this one
        rule[2] = "-m"
        daemon.run_command(shlex.join(rule), ctx.timeout)
    daemon.run_command(shlex.join(["restorecon", "-R", step.new]), ctx.timeout * 10)


def _shows(old: str, new: str) -> bool:
    """Whether ``old`` shows ``new`` (the bind mount is in place): the same dir by device
    and inode. Not merely 'something is mounted there': that may be another filesystem,
    which must never be taken for the bind, nor unmounted."""
    try:
        a, b = os.stat(old), os.stat(new)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@implementation_for(S.BindMount)
def _bind(step: S.BindMount, ctx: Context) -> None:
    if not _shows(step.old, step.new):  # a resumed step finds its mount made
        daemon.run_command(shlex.join(["mount", "--bind", step.new, step.old]), ctx.timeout)


@implementation_for(S.Unmount)
def _unmount(step: S.Unmount, ctx: Context) -> None:
    if not _shows(step.old, step.new):  # not ours (or gone): never unmount another
        return
    try:
        daemon.run_command(shlex.join(["umount", step.old]), ctx.timeout)
    except daemon.EngineUnavailable as exc:
        raise RefusedError(
            f"cannot unmount the bind mount {step.old} ({exc}); find what holds it with "
            f"'fuser -vm {step.old}' or 'lsof {step.old}', end it"
        ) from exc


def fstab_line(new: str, old: str) -> str:
    return f"{new} {old} none bind 0 0"


def _conflict(step: S.SwitchConfig | S.RestoreConfig, what: str, current: str | None) -> None:
    raise ConfigConflict(
        f"{what}: {step.config} (sha256 {current or 'absent'}) is neither the original "
        f"(sha256 {step.original_sha256 or 'absent'}) nor what this relocation wrote; "
        f"left as it is; the original is kept at {step.backup}"
    )


def _verified_backup(step: S.SwitchConfig | S.RestoreConfig, what: str) -> bytes:
    """The backup's bytes, if they are the journaled original; else refuse."""
    data = daemonjson.read(Path(step.backup))
    if data is None or daemonjson.digest(data) != step.original_sha256:
        found = "missing" if data is None else f"sha256 {daemonjson.digest(data)}"
        raise ConfigConflict(
            f"{what}: the backup {step.backup} is not the original ({found}; the journal "
            f"records sha256 {step.original_sha256}); {step.config} left as it is"
        )
    return data


@implementation_for(S.BackupConfig)
def _backup(step: S.BackupConfig, ctx: Context) -> None:
    config, backup = Path(step.config), Path(step.backup)
    if step.original_sha256 is not None and daemonjson.sha256_of(backup) == step.original_sha256:
        return  # kept already
    data = daemonjson.read(config)
    if daemonjson.digest(data) != step.original_sha256:
        raise ConfigConflict(
            f"{config} changed since preflight (sha256 {daemonjson.digest(data) or 'absent'}, "
            f"preflight read {step.original_sha256 or 'no file'}); nothing was switched; "
            "run the relocation again"
        )
    if data is None:
        return  # there is nothing to keep: the journal says so (original_sha256 null)
    daemonjson.write_atomic(backup, data, like=os.stat(config))
    if daemonjson.sha256_of(backup) != step.original_sha256:
        raise RelocationFailed(f"the backup {backup} does not read back as {config}")


@implementation_for(S.SwitchConfig)
def _switch(step: S.SwitchConfig, ctx: Context) -> None:
    config = Path(step.config)
    current = daemonjson.read(config)
    now = daemonjson.digest(current)
    if now != step.original_sha256:
        original = None if step.original_sha256 is None else _verified_backup(step, "switch")
        if now == daemonjson.digest(configs.switched(step.kind, original, step.new_root)):
            return  # switched already (a resumed run)
        _conflict(step, "refusing to switch", now)
    if step.original_sha256 is not None:
        _verified_backup(step, "refusing to switch")  # never switch without a good backup
    like = os.stat(config) if current is not None else None
    daemonjson.write_atomic(config, configs.switched(step.kind, current, step.new_root), like)


def restorable(step: S.RestoreConfig) -> tuple[bool, bytes | None]:
    """(whether the config (daemon.json, containerd's config.toml) needs restoring, the
    original's bytes or None for no file); ConfigConflict when the journal cannot account
    for it. Writes nothing: rollback asks it before any undo runs."""
    config = Path(step.config)
    now = daemonjson.sha256_of(config)
    if now == step.original_sha256:
        return False, None  # the original is in place (or, as before, there is no file)
    what = f"cannot restore {config}"
    original = None if step.original_sha256 is None else _verified_backup(step, what)
    if now != daemonjson.digest(configs.switched(step.kind, original, step.new_root)) and (
        original is None or now is not None  # only a missing file is safe to put back
    ):
        _conflict(step, what, now)
    return True, original


@implementation_for(S.RestoreConfig)
def _restore(step: S.RestoreConfig, ctx: Context) -> None:
    needed, original = restorable(step)
    if not needed:
        return
    config = Path(step.config)
    if original is None:
        daemonjson.remove(config)  # the journal records there was none; this is ours
    else:
        daemonjson.write_atomic(config, original, like=os.stat(step.backup))


@implementation_for(S.StartDaemon)
def _start(step: S.StartDaemon, ctx: Context) -> None:
    daemon.run_start_command(step.cmd, ctx.timeout)
    daemon.wait_until(
        lambda: answers_on(step.host, step.expect_root),
        ctx.timeout,
        f"the daemon to answer on {step.expect_root}",
    )
    if step.expect_ctd_root:
        ctd_root = Path(step.expect_ctd_root)
        daemon.wait_until(
            lambda: containerd_on(ctd_root), ctx.timeout, f"containerd to run on {ctd_root}"
        )


def answers_on(host: str, root: str) -> bool:
    """Whether the Engine API at ``host`` answers, on ``root``."""
    try:
        return os.path.realpath(daemon.engine_root(host)) == root
    except daemon.EngineUnavailable:
        return False


def started(step: S.StartDaemon) -> bool:
    """Whether what ``step`` starts runs now as it left it: the daemon answering on its
    root, and containerd on its own when it moves."""
    if not answers_on(step.host, step.expect_root):
        return False
    return not step.expect_ctd_root or containerd_on(Path(step.expect_ctd_root))


def containerd_on(root: Path) -> bool:
    """Whether a running containerd uses ``root`` as its root (found by identity in its
    own mount namespace, as every daemon check)."""
    return any(d.kind == "containerd" for d in daemon.daemons_using(root))


@implementation_for(S.PostVerify)
def _post_verify(step: S.PostVerify, ctx: Context) -> None:
    state = daemon.engine_state(step.host)
    on = os.path.realpath(state.root)
    if step.old:
        want = counts.expected_from(Path(step.old), step.images >= 0, ctx.listed)
        if on != step.root:
            raise RelocationFailed(
                f"after the move the daemon reports root {on}, expected {step.root}"
            )
        missing = want.missing(state)
        if missing:
            raise RelocationFailed(
                f"after the move the daemon on {on} does not list all it must: {missing} "
                f"(of {want} in {step.old}, unchanged since the daemon stopped on it)"
            )
        return
    # A journal from before the recount: the counts planned at preflight.
    got = (on, state.images, state.containers)
    wanted = (step.root, step.images, step.containers)
    if step.images < 0:  # not known before the move (containerd store, daemon stopped)
        got, wanted = (got[0], -1, got[2]), (wanted[0], -1, wanted[2])
    if got != wanted:
        raise RelocationFailed(
            f"after the move the daemon reports root, images, containers {got}, expected {wanted}"
        )


@implementation_for(S.Noop)
def _noop(step: S.Noop, ctx: Context) -> None:
    pass


def perform(step: S.Step, ctx: Context) -> None:
    STEPS.perform(step, ctx)
