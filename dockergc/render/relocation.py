"""Relocation preflight and runs, for people and as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from dockergc.relocate.executor import RelocationView
from dockergc.relocate.preflight import Preflight
from dockergc.render.interface import human_bytes


def preflight_text(pf: Preflight) -> str:
    lines = [
        f"relocate {pf.old} -> {pf.new}: {human_bytes(pf.bytes_to_copy)} in {pf.entries} entries"
    ]
    if pf.ctd_new:
        lines.append(
            f"     and containerd's root {pf.ctd_old} -> {pf.ctd_new}: "
            f"{human_bytes(pf.ctd_bytes)} in {pf.ctd_entries} entries "
            f"(its config {pf.ctd_config})"
        )
    for c in pf.checks:
        mark = "ok  " if c.ok else ("FAIL" if c.blocking else "note")
        lines.append(f"  [{mark}] {c.name}: {c.detail}")
    if pf.not_moving:
        lines.append("  paths that do NOT move with data-root (check them yourself):")
        lines += [f"    - {p}" for p in pf.not_moving]
    if pf.selinux:
        lines.append("  SELinux is enforcing: the copy will be relabelled (restorecon -R)")
    lines.append("preflight " + ("passed" if pf.ok else "FAILED: nothing will be changed"))
    return "\n".join(lines)


def view_dict(view: RelocationView) -> dict[str, Any]:
    return asdict(view)


def view_text(view: RelocationView) -> str:
    done = sum(1 for s in view.steps if s["done"])
    text = (
        f"relocation {view.run_id}: {view.state} ({view.old} -> {view.new}); "
        f"{done}/{len(view.steps)} steps done"
    )
    if view.containerd_old:
        text += f"\n  containerd's root: {view.containerd_old} -> {view.containerd_new}"
    if view.error:
        text += f"\n  fault: {view.error}"
    if view.fstab and view.state in ("relocated", "finalizing", "finalized"):
        text += "\n  --bind: add this line to /etc/fstab to keep the mount across reboots:"
        text += f"\n    {view.fstab}"
    elif view.fstab and view.state == "rolled-back":
        text += f"\n  --bind rolled back: remove the fstab line for {view.old} if you added it"
    if view.downtime_seconds is not None:
        down = view.downtime_seconds
        text += f"\n  downtime {down:.1f}s (stop issued -> daemon answering on its new root)"
    if view.timings:
        text += "\n  " + ", ".join(f"{k} {v:.1f}s" for k, v in view.timings.items())
    return text
