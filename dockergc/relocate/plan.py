"""The relocation plan: pure, from the preflight and the operator's flags to steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dockergc.relocate import steps as S


@dataclass(frozen=True)
class Control:
    stop_cmd: str
    start_cmd: str
    host: str
    config: Path


@dataclass(frozen=True)
class ContainerdMove:
    """containerd's root moved with the data root (a containerd image store host): its
    config.toml's ``root`` switched like daemon.json's ``data-root``. ``config_sha256``
    is config.toml as preflight read it (None: no file), ``target_fs`` the filesystem
    preflight found ``new`` on."""

    old: Path
    new: Path
    config: Path
    config_sha256: str | None
    target_fs: str = ""


def plan_relocation(
    old: Path,
    new: Path,
    control: Control,
    run_id: str,
    images: int,
    containers: int,
    selinux: bool,
    bind: bool = False,
    *,
    config_sha256: str | None,
    target_fs: str = "",
    precopy: bool = False,
    containerd: ContainerdMove | None = None,
) -> list[S.Step]:
    """The steps; with ``bind`` the path stays: the copy is bind-mounted over the old root
    and daemon.json is left alone. ``config_sha256`` is the sha256 of daemon.json as
    preflight read it, None when there is none: the journal's record of the original,
    against which every later write and undo of daemon.json is checked. ``target_fs`` is
    the filesystem preflight found the target on (targetfs.filesystem_of). With ``precopy``
    (the CLI's default) the root is copied while the daemon runs and the daemon is stopped
    only for the final pass and the verification; without it (``--offline``) the plan is
    the one dockergc always made: stop, copy, verify.

    With ``containerd`` (not with ``bind``) containerd's root moves too, each step that
    acts on a root done for both, the data root's first: the stop and start commands
    stop and start dockerd and containerd, and both configs are backed up before either
    is switched."""
    if bind and containerd:
        raise ValueError("--bind does not move containerd's root")
    config, backup = str(control.config), f"{control.config}.dockergc-{run_id}.bak"
    marker = S.marker_for(run_id)
    ctd = containerd
    pairs = [(str(old), str(new), target_fs, "")]
    if ctd:
        pairs.append((str(ctd.old), str(ctd.new), ctd.target_fs, S.CONTAINERD))
    plan: list[S.Step] = []
    if precopy:
        plan += [S.PreCopy(o, n, fs, marker, what) for o, n, fs, what in pairs]
    ctd_old, ctd_new = (str(ctd.old), str(ctd.new)) if ctd else ("", "")
    plan.append(S.StopDaemon(control.stop_cmd, control.start_cmd, control.host, str(old), ctd_old))
    plan += [S.WaitIdle(o, what) for o, _, _, what in pairs]
    plan += [S.Copy(o, n, fs, marker, what) for o, n, fs, what in pairs]
    plan += [S.VerifyCopy(o, n, marker if precopy else "", what) for o, n, _, what in pairs]
    if not bind:
        plan.append(S.RewritePaths(str(old), str(new)))
    if selinux:
        plan += [S.Relabel(n, what, old=o) for o, n, _, what in pairs]
    if bind:
        plan.append(S.BindMount(str(new), str(old)))
    else:
        files = [(config, backup, str(new), config_sha256, S.DAEMON_JSON)]
        if ctd:
            ctd_backup = f"{ctd.config}.dockergc-{run_id}.bak"
            toml = (str(ctd.config), ctd_backup, ctd_new, ctd.config_sha256, S.CONTAINERD_TOML)
            files.append(toml)
        # Every backup done before any switch's intent: a rollback restores each file from
        # a backup it can check.
        plan += [S.BackupConfig(c, b, sha, kind) for c, b, _, sha, kind in files]
        plan += [S.SwitchConfig(c, r, b, sha, kind) for c, b, r, sha, kind in files]
    root = old if bind else new
    plan += [
        S.StartDaemon(control.start_cmd, control.stop_cmd, control.host, str(root), ctd_new),
        # Images in containerd's root are containerd's, not counted (-1): that root is
        # verified byte for byte and must be the one containerd serves after the start.
        S.PostVerify(control.host, str(root), -1 if ctd else images, containers, old=str(old)),
    ]
    return plan
