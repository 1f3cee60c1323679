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
) -> list[S.Step]:
    """The steps; with ``bind`` the path stays: the copy is bind-mounted over the old root
    and daemon.json is left alone."""
    backup = f"{control.config}.dockergc-{run_id}.bak"
    plan: list[S.Step] = [
        S.StopDaemon(control.stop_cmd, control.start_cmd, control.host, str(old)),
        S.WaitIdle(str(old)),
        S.Copy(str(old), str(new)),
        S.VerifyCopy(str(old), str(new)),
    ]
    if not bind:
        plan.append(S.RewritePaths(str(old), str(new)))
    if selinux:
        plan.append(S.Relabel(str(new)))
    root = old if bind else new
    plan += [
        S.BindMount(str(new), str(old))
        if bind
        else S.SwitchConfig(str(control.config), str(new), backup),
        S.StartDaemon(control.start_cmd, control.stop_cmd, control.host, str(root)),
        S.PostVerify(control.host, str(root), images, containers),
    ]
    return plan
