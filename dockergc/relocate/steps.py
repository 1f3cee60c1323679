"""Relocation steps. Each is a record with ``reverse()``; the executor journals each
before running it, and rollback runs the reverses of the finished ones, newest first."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dockergc.errors import UsageError

# The copy step writes ``<new>/.dockergc-relocation-<run>`` before rsync writes anything;
# the undo removes the target's contents only while it holds it (last of all), so never
# what someone put at the target after a rollback or in place of the copy.
MARKER_PREFIX = ".dockergc-relocation-"


def marker_for(run_id: str) -> str:
    return MARKER_PREFIX + run_id


# What a step that exists once per root acts on: "" the data root, CONTAINERD containerd's
# root (moved with the data root on a containerd image store host, --containerd-to).
CONTAINERD = "containerd"


@dataclass(frozen=True)
class StopDaemon:
    """Run the stop command and wait until no daemon uses ``root`` (nor, when moving it
    too, containerd's root ``ctd_root``: the command stops dockerd and containerd)."""

    cmd: str
    start_cmd: str
    host: str
    root: str  # the root it ran on, where the reverse starts it again
    ctd_root: str = ""  # containerd's root it ran on ("" when containerd's is not moved)
    name: str = "stop-daemon"

    def reverse(self) -> Step:
        return StartDaemon(self.start_cmd, self.cmd, self.host, self.root, self.ctd_root)


@dataclass(frozen=True)
class StartDaemon:
    """Run the start command and wait for the Engine API to answer on ``expect_root``
    (and, when containerd's root moves, for a containerd to run on ``expect_ctd_root``)."""

    cmd: str
    stop_cmd: str
    host: str
    expect_root: str
    expect_ctd_root: str = ""
    name: str = "start-daemon"

    def reverse(self) -> Step:
        return StopDaemon(
            self.stop_cmd, self.cmd, self.host, self.expect_root, self.expect_ctd_root
        )


@dataclass(frozen=True)
class WaitIdle:
    root: str
    what: str = ""  # "" the data root, CONTAINERD containerd's root
    name: str = "wait-idle"

    def reverse(self) -> Step:
        return Noop()


@dataclass(frozen=True)
class Copy:
    """rsync the old root into ``new``, on the filesystem ``fs`` preflight found it on
    (targetfs.filesystem_of; "" in journals from before it was recorded): never onto the
    filesystem beneath a disk that is no longer mounted. ``marker`` (marker_for(run); ""
    in journals from before it) is the file that says the target is this run's copy."""

    old: str
    new: str
    fs: str = ""
    marker: str = ""
    what: str = ""  # "" the data root, CONTAINERD containerd's root
    name: str = "copy"

    def reverse(self) -> Step:
        return RemoveCopy(self.new, self.marker, self.what)


@dataclass(frozen=True)
class PreCopy:
    """rsync the old root into ``new`` while the daemon still runs, in passes until the
    delta stops shrinking or is small, then flush the new disk: the daemon is stopped
    only for the final pass (Copy). Same target checks and marker as Copy; its undo
    removes the partial copy (the daemon was never stopped: nothing else to undo)."""

    old: str
    new: str
    fs: str = ""
    marker: str = ""
    what: str = ""
    name: str = "pre-copy"

    def reverse(self) -> Step:
        return RemoveCopy(self.new, self.marker, self.what)


@dataclass(frozen=True)
class RemoveCopy:
    """Empty ``new``, only if it holds ``marker`` (removed last); a journal from before
    markers ("") removes it unchecked, as that dockergc did."""

    new: str
    marker: str = ""
    what: str = ""
    name: str = "remove-copy"

    def reverse(self) -> Step:
        return Noop()


@dataclass(frozen=True)
class VerifyCopy:
    """Compare both trees in one walk. ``changed_since`` (after a pre-copy: the marker's
    name, "" otherwise) also hashes, in both trees, every file the old root changed since
    the marker was written, i.e. since the pre-copy began."""

    old: str
    new: str
    changed_since: str = ""
    what: str = ""
    name: str = "verify-copy"

    def reverse(self) -> Step:
        return Noop()


@dataclass(frozen=True)
class RewritePaths:
    """Point the copy's container configs at the copy: dockerd 20.10 keeps volume sources
    and log paths from config.v2.json, which name the old root."""

    old: str
    new: str
    name: str = "rewrite-paths"

    def reverse(self) -> Step:
        return Noop()  # only the copy was changed; removing the copy undoes it


@dataclass(frozen=True)
class Relabel:
    """SELinux: label the copy as the old root's path is labelled (an equivalence rule,
    then restorecon). ``old`` is "" in journals from before the rule."""

    new: str
    what: str = ""
    name: str = "selinux-relabel"
    old: str = ""

    def reverse(self) -> Step:
        return Noop()


@dataclass(frozen=True)
class BindMount:
    """--bind mode: keep the path; mount the new disk's copy over the old root."""

    new: str
    old: str
    name: str = "bind-mount"

    def reverse(self) -> Step:
        return Unmount(self.old, self.new)


@dataclass(frozen=True)
class Unmount:
    old: str
    new: str
    name: str = "unmount"

    def reverse(self) -> Step:
        return BindMount(self.new, self.old)


# The operator's files a relocation switches, by ``kind`` (relocate.configs): daemon.json's
# ``data-root`` (JSON, the default: journals from before kinds name none) and containerd's
# config.toml ``root`` (TOML). Backed up, switched and restored by the same three steps.
DAEMON_JSON = "daemon.json"
CONTAINERD_TOML = "containerd.toml"


@dataclass(frozen=True)
class BackupConfig:
    """Keep the config's original bytes (file and directory fsync'd) before the switch is
    journaled. ``original_sha256`` is what preflight read, journaled with the plan; None
    records that there was no file (nothing to keep)."""

    config: str
    backup: str
    original_sha256: str | None
    kind: str = DAEMON_JSON
    name: str = "backup-config"

    def reverse(self) -> Step:
        return Noop()  # the backup is the operator's config: it is never removed


@dataclass(frozen=True)
class SwitchConfig:
    config: str
    new_root: str
    backup: str
    original_sha256: str | None
    kind: str = DAEMON_JSON
    name: str = "switch-config"

    def reverse(self) -> Step:
        return RestoreConfig(
            self.config, self.backup, self.new_root, self.original_sha256, self.kind
        )


@dataclass(frozen=True)
class RestoreConfig:
    """Put the original config back, judged by what is on disk against the journaled
    hashes; it never deletes or overwrites a config it cannot account for."""

    config: str
    backup: str
    new_root: str
    original_sha256: str | None
    kind: str = DAEMON_JSON
    name: str = "restore-config"

    def reverse(self) -> Step:
        return Noop()


@dataclass(frozen=True)
class PostVerify:
    host: str
    root: str
    images: int  # at preflight; -1: not checked (containerd store). With ``old``: recounted
    containers: int  # at preflight (journals without ``old``)
    name: str = "post-verify"
    old: str = ""  # the old root, counted again when the step runs (relocate/counts.py)

    def reverse(self) -> Step:
        return Noop()


@dataclass(frozen=True)
class Noop:
    name: str = "noop"

    def reverse(self) -> Step:
        return self


Step = (
    StopDaemon
    | StartDaemon
    | WaitIdle
    | PreCopy
    | Copy
    | RemoveCopy
    | VerifyCopy
    | RewritePaths
    | Relabel
    | BindMount
    | Unmount
    | BackupConfig
    | SwitchConfig
    | RestoreConfig
    | PostVerify
    | Noop
)
# Steps that need the daemon stopped. The executor re-checks before each that no daemon
# uses the old root (someone may have started it again), and a resume refuses if one does.
# WaitIdle is not one: it waits for the root's users to go.
NEEDS_STOPPED = (
    Copy,
    VerifyCopy,
    RewritePaths,
    Relabel,
    BindMount,
    BackupConfig,
    SwitchConfig,
)
STEP_TYPES: dict[str, type[Step]] = {
    t.name: t
    for t in (
        StopDaemon,
        StartDaemon,
        WaitIdle,
        PreCopy,
        Copy,
        RemoveCopy,
        VerifyCopy,
        RewritePaths,
        Relabel,
        BindMount,
        Unmount,
        BackupConfig,
        SwitchConfig,
        RestoreConfig,
        PostVerify,
        Noop,
    )
}


def label(step: Step) -> str:
    """The step's name as shown and timed: a step that runs once per root says which
    ("copy (containerd)"); the config steps say which file ("switch-config
    (containerd.toml)"). The data root's and daemon.json's keep the bare name."""
    kind = getattr(step, "kind", DAEMON_JSON)
    what = getattr(step, "what", "") or ("" if kind == DAEMON_JSON else kind)
    return f"{step.name} ({what})" if what else step.name


def step_dict(step: Step) -> dict[str, Any]:
    return asdict(step)


def step_from_dict(doc: dict[str, Any]) -> Step:
    try:
        return STEP_TYPES[str(doc["name"])](**doc)
    except (KeyError, TypeError) as exc:
        raise UsageError(
            f"relocation step {doc.get('name')!r} in the journal is not one this dockergc "
            f"knows ({exc}); finish the run with the dockergc version that started it"
        ) from exc
