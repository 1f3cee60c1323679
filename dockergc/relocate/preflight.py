"""Preflight: everything that must hold before a data root is moved, gathered read-only.

The one write is a probe in a temp dir on the target, removed after: the only way to
know a file system supports what overlay2 needs (trusted.* xattrs, 0/0 whiteout
devices, hard links, an overlay mount) is to try them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dockergc.host.detect import scan
from dockergc.measure import measure
from dockergc.relocate import daemonjson
from dockergc.relocate.targetfs import filesystem_of
from dockergc.render.interface import human_bytes
from dockergc.store.fsread import UnreadableFile, read_text

# Free space wanted beyond the bytes to copy: a share of them (metadata blocks, what the
# daemon writes during a pre-copy), at least a floor (a small root on a small disk).
MARGIN_RATIO = 0.05
MARGIN_FLOOR = 64 * 2**20


def margin_for(bytes_to_copy: int) -> int:
    return max(int(bytes_to_copy * MARGIN_RATIO), MARGIN_FLOOR)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    blocking: bool = True  # a failed blocking check refuses the relocation


@dataclass
class Preflight:
    old: str
    new: str
    bytes_to_copy: int
    entries: int
    checks: list[Check] = field(default_factory=list)
    not_moving: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    selinux: bool = False
    config_sha256: str | None = None  # daemon.json as read here; None: there is none
    target_fs: str = ""  # the filesystem the target is on (targetfs.filesystem_of)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.blocking)

    def add(self, name: str, ok: bool, detail: str, blocking: bool = True) -> None:
        self.checks.append(Check(name, ok, detail, blocking))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_paths(pf: Preflight, old: Path, new: Path) -> None:
    pf.add("target differs", old != new, f"{new} vs {old}")
    pf.add("target not inside old root", not _inside(new, old), f"{new}")
    pf.add("old root not inside target", not _inside(old, new), f"{old}")
    if new.exists():
        empty = new.is_dir() and not new.is_symlink() and not any(new.iterdir())
        pf.add("target empty", empty, f"{new} exists" + ("" if empty else " and is not empty"))
    else:
        parent = new.parent
        pf.add("target parent exists", parent.is_dir(), f"{parent}")


def _probe_dir(new: Path) -> Path:
    base = new if new.exists() else new.parent
    return Path(tempfile.mkdtemp(prefix=".dockergc-probe-", dir=base))


def check_capabilities(pf: Preflight, new: Path) -> None:
    """Try on the target what overlay2 needs; each failure names what is missing."""
    try:
        probe = _probe_dir(new)
    except OSError as exc:
        pf.add("target writable", False, f"cannot create a probe dir: {exc.strerror}")
        return
    try:
        pf.add("target writable", True, str(probe.parent))
        f = probe / "f"
        f.write_text("x")
        try:
            os.setxattr(f, "trusted.overlay.opaque", b"y")
            ok = os.getxattr(f, "trusted.overlay.opaque") == b"y"
            pf.add("trusted.* xattrs", ok, "overlay opaque/redirect dirs keep their meaning")
        except OSError as exc:
            pf.add("trusted.* xattrs", False, f"not supported: {exc.strerror}")
        try:
            os.mknod(probe / "wh", 0o600 | 0o020000, os.makedev(0, 0))
            pf.add("device nodes", True, "0/0 whiteouts can be created")
        except OSError as exc:
            pf.add("device nodes", False, f"cannot create whiteouts: {exc.strerror}")
        try:
            os.link(f, probe / "hard")
            pf.add("hard links", os.stat(f).st_nlink == 2, "hard links kept as links")
        except OSError as exc:
            pf.add("hard links", False, f"not supported: {exc.strerror}")
        pf.add(*_overlay_mount(probe))
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _overlay_mount(probe: Path) -> tuple[str, bool, str]:
    dirs = {n: probe / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs["merged"])],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return ("overlay mount (d_type)", False, proc.stderr.strip() or "mount failed")
    subprocess.run(["umount", str(dirs["merged"])], capture_output=True)
    return ("overlay mount (d_type)", True, "an overlay with its upper dir here mounts")


def check_space(pf: Preflight, old: Path, new: Path) -> None:
    usage = measure(str(old))
    pf.bytes_to_copy = usage.bytes if usage else 0
    pf.entries = usage.entries if usage else 0
    if usage and usage.other_mounts:
        pf.not_moving += [f"{m} (another filesystem under the root)" for m in usage.other_mounts]
    base = new if new.exists() else new.parent
    free = psutil.disk_usage(str(base)).free
    margin = margin_for(pf.bytes_to_copy)
    need = pf.bytes_to_copy + margin
    pf.add(
        "free space",
        free >= need,
        f"{human_bytes(free)} free on target, need {human_bytes(need)} "
        f"({human_bytes(pf.bytes_to_copy)} to copy + {human_bytes(margin)} margin: "
        f"{MARGIN_RATIO:.0%} of it, at least {human_bytes(MARGIN_FLOOR)})",
    )


def check_config(pf: Preflight, config: Path) -> None:
    try:
        pf.config_sha256 = daemonjson.sha256_of(config)
    except OSError as exc:
        pf.add("daemon config readable", False, f"{config}: {exc.strerror}")
        return
    if pf.config_sha256 is not None:
        try:
            doc = json.loads(read_text(config) or "{}")
            ok = isinstance(doc, dict)
            pf.add("daemon config parses", ok, str(config))
        except (UnreadableFile, ValueError) as exc:
            pf.add("daemon config parses", False, f"{config}: {exc}")
    # The backup and every atomic replace of daemon.json are made in its directory.
    detail = f"{config}, backup and replace in {config.parent}"
    if pf.config_sha256 is None:
        detail = f"{config} will be created"
    pf.add("daemon config writable", os.access(config.parent, os.W_OK), detail)


def find_not_moving(pf: Preflight, old: Path) -> None:
    """Absolute paths the daemon uses that a new data-root does not bring along."""
    for cfg in sorted((old / "containers").glob("*/config.v2.json")):
        try:
            doc = json.loads(read_text(cfg))
        except (UnreadableFile, ValueError):
            continue
        for mp in (doc.get("MountPoints") or {}).values():
            src = mp.get("Source") or ""
            if mp.get("Type") == "bind" and src and not src.startswith(str(old) + "/"):
                name = str(doc.get("Name", "?")).lstrip("/")
                pf.not_moving.append(f"bind mount {src} of container {name}")
    for opts in sorted((old / "volumes").glob("*/opts.json")):
        try:
            doc = json.loads(read_text(opts))
        except (UnreadableFile, ValueError):
            continue
        mount_opts = str(doc.get("MountOpts", "")) + str(doc.get("MountDevice", ""))
        if "device=" in mount_opts or doc.get("MountDevice"):
            pf.not_moving.append(f"volume {opts.parent.name} with device options {mount_opts}")
    if Path("/var/lib/containerd").is_dir():
        pf.not_moving.append(
            "/var/lib/containerd (containerd's own root; data-root does not move it)"
        )


def check_holders(pf: Preflight, old: Path) -> None:
    """Processes not named like a daemon that hold files in the old root (log shippers
    reading container logs included): the relocation waits for them to exit after the
    daemon is stopped, then rolls back. A container's own processes (their root is in the
    old root) stop with the daemon and are only counted."""
    others = [d for d in scan(old) if d.kind == "process"]
    mine = [d for d in others if d.held == "its root"]
    holders = sorted({d.describe() for d in others if d.held != "its root"})
    detail = (
        "stop them before relocating (log shippers tailing container logs included): after "
        "stopping the daemon the relocation waits for them to exit, then rolls back: "
        + "; ".join(holders)
        if holders
        else "none"
    )
    if mine:
        detail += f" ({len(mine)} processes rooted in it, containers', stop with the daemon)"
    pf.add("no other process uses the old root", not holders, detail, blocking=False)


def selinux_enforcing() -> bool:
    try:
        return Path("/sys/fs/selinux/enforce").read_text().strip() == "1"
    except OSError:
        return False


def preflight(old: Path, new: Path, config: Path, running: list[str]) -> Preflight:
    pf = Preflight(old=str(old), new=str(new), bytes_to_copy=0, entries=0, running=running)
    check_paths(pf, old, new)
    pf.target_fs = filesystem_of(new)
    if pf.ok:
        check_capabilities(pf, new)
        check_space(pf, old, new)
    check_config(pf, config)
    find_not_moving(pf, old)
    check_holders(pf, old)
    pf.selinux = selinux_enforcing()
    if running:
        pf.add(
            "running containers",
            True,
            "these are stopped with the daemon and start again only if their restart "
            "policy says so: " + ", ".join(running),
            blocking=False,
        )
    return pf
