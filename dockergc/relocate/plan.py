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
) -> list[S.Step]:
    """The steps; with ``bind`` the path stays: the copy is bind-mounted over the old root
    and daemon.json is left alone. ``config_sha256`` is the sha256 of daemon.json as
    preflight read it, None when there is none: the journal's record of the original,
    against which every later write and undo of daemon.json is checked. ``target_fs`` is
    the filesystem preflight found the target on (targetfs.filesystem_of). With ``precopy``
    (the CLI's default) the root is copied while the daemon runs and the daemon is stopped
    only for the final pass and the verification; without it (``--offline``) the plan is
    the one dockergc always made: stop, copy, verify."""
    config, backup = str(control.config), f"{control.config}.dockergc-{run_id}.bak"
    marker = S.marker_for(run_id)
    plan: list[S.Step] = []
    if precopy:
        plan.append(S.PreCopy(str(old), str(new), target_fs, marker))
    plan += [
        S.StopDaemon(control.stop_cmd, control.start_cmd, control.host, str(old)),
        S.WaitIdle(str(old)),
        S.Copy(str(old), str(new), target_fs, marker),
        S.VerifyCopy(str(old), str(new), marker if precopy else ""),
    ]
    if not bind:
        plan.append(S.RewritePaths(str(old), str(new)))
    if selinux:
        plan.append(S.Relabel(str(new)))
    if bind:
        plan.append(S.BindMount(str(new), str(old)))
    else:
        plan += [
            S.BackupConfig(config, backup, config_sha256),  # done before the switch's intent
            S.SwitchConfig(config, str(new), backup, config_sha256),
        ]
    root = old if bind else new
    plan += [
        S.StartDaemon(control.start_cmd, control.stop_cmd, control.host, str(root)),
        S.PostVerify(control.host, str(root), images, containers),
    ]
    return plan
