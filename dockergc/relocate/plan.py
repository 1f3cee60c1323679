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
) -> list[S.Step]:
    backup = f"{control.config}.dockergc-{run_id}.bak"
    plan: list[S.Step] = [
        S.StopDaemon(control.stop_cmd, control.start_cmd, control.host, str(old)),
        S.WaitIdle(str(old)),
        S.Copy(str(old), str(new)),
        S.VerifyCopy(str(old), str(new)),
        S.RewritePaths(str(old), str(new)),
    ]
    if selinux:
        plan.append(S.Relabel(str(new)))
    plan += [
        S.SwitchConfig(str(control.config), str(new), backup),
        S.StartDaemon(control.start_cmd, control.stop_cmd, control.host, str(new)),
        S.PostVerify(control.host, str(new), images, containers),
    ]
    return plan
