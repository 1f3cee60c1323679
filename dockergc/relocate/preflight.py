"""Preflight: everything that must hold before a data root is moved, gathered read-only.

The one write is a probe in a temp dir on the target, removed after: the only way to
know a file system supports what overlay2 needs (trusted.* xattrs, 0/0 whiteout
devices, hard links, an overlay mount) is to try them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dockergc.host.detect import scan
from dockergc.measure import measure
from dockergc.relocate import ctdconfig, daemonjson, takes
from dockergc.relocate.targetfs import filesystem_of
from dockergc.render.interface import human_bytes
from dockergc.store.fsread import UnreadableFile, parse_json, read_text
from dockergc.stores.containerd.metadb import read_metadb
from dockergc.stores.containerd.records import MOBY, MOBY_HISTORY

# Free space wanted beyond the bytes to copy: a share of them (metadata blocks, what the
# daemon writes during a pre-copy), at least a floor (a small root on a small disk).
MARGIN_RATIO = 0.05
MARGIN_FLOOR = 64 * 2**20
# The copy's rsync flags: --info=progress2 came with 3.1.0, --sparse with --inplace (the
# final pass's rewrite) with 3.1.3 (3.1.2, RHEL 7's and Ubuntu 18.04's, refuses the pair);
# -A and -X need rsync built with ACL and xattr support (else refused only once it runs).
RSYNC_MIN = (3, 1, 3)


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
    store: str = "overlay2"  # the image store: overlay2 (graphdriver) or containerd
    # containerd's root, moved too on a containerd image store host (--containerd-to):
    ctd_old: str = ""
    ctd_new: str = ""
    ctd_config: str = ""
    ctd_config_sha256: str | None = None  # config.toml as read here; None: there is none
    ctd_target_fs: str = ""
    ctd_bytes: int = 0
    ctd_entries: int = 0
    # containerd namespaces other than dockerd's (k8s.io, default, ...): other clients of
    # the containerd that is stopped and moved; "name (N images, M containers)".
    other_namespaces: list[str] = field(default_factory=list)
    # What the downtime estimate is made of: seconds the walk of the roots took here, the
    # rate their files were read at here (bytes/s, None: too little to tell), and the
    # estimates (seconds) with the pre-copy (the default) and --offline.
    walk_seconds: float = 0.0
    read_rate: float | None = None
    downtime_precopy: float | None = None
    downtime_offline: float | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.blocking)

    def add(self, name: str, ok: bool, detail: str, blocking: bool = True) -> None:
        self.checks.append(Check(name, ok, detail, blocking))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check_rsync(pf: Preflight) -> None:
    """The copy is rsync's: found too late, a missing or unfit one fails the first pass
    (rolled back, but after the operator was told the preflight passed)."""
    path = shutil.which("rsync")
    if path is None:
        pf.add("rsync", False, "not found on PATH: install rsync (3.1.3 or later)")
        return
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        pf.add("rsync", False, f"{path} --version failed: {exc}")
        return
    pf.add("rsync", *rsync_fit(path, out))


def rsync_fit(path: str, version_output: str) -> tuple[bool, str]:
    """Whether ``rsync --version``'s output names a version and build the copy can use."""
    # "rsync  version 3.2.7  protocol version 32" (openrsync and others differ: not it)
    m = re.match(r"rsync\s+version\s+v?((\d+)\.(\d+)\.(\d+)\S*)", version_output)
    if m is None:
        return False, f"{path}: cannot tell its version from --version"
    version = m.group(1)
    found = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    if found < RSYNC_MIN:
        return False, f"{path} is {version}; the copy needs 3.1.3 or later"
    lacking = [w for w in ("ACLs", "xattrs") if f"no {w}" in version_output]
    if lacking:
        return False, f"{path} {version} is built without {' and '.join(lacking)}"
    return True, f"{path} {version}"


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


def check_bind(pf: Preflight, old: Path) -> None:
    """--bind mounts the copy over the old root's path. Over a mount point (the old root a
    disk or LV of its own) that would hide the disk rather than a dir, its fstab line
    would stack on the disk's own, and undoing it could unmount the disk itself."""
    own = os.path.ismount(old) or _mount_point(old)
    pf.add(
        "old root is a plain dir (--bind)",
        not own,
        f"{old}"
        + (
            " is itself a mount point: bind-mounting the copy over it would hide that "
            "filesystem; relocate without --bind (daemon.json's data-root is switched)"
            if own
            else ""
        ),
    )


def _mount_point(path: Path) -> bool:
    """Whether something is mounted at ``path`` (a bind of a dir on the same filesystem
    included, which ``os.path.ismount`` cannot tell by its device)."""
    from dockergc.store.mountinfo import parse_mountinfo

    try:
        with open("/proc/self/mountinfo", errors="surrogateescape") as fh:
            entries = parse_mountinfo(fh.read())
    except OSError:
        return True  # cannot tell: as if it were (refused, named)
    at = [e for e in entries if e.mount_point == str(path)]
    if not at:
        return False
    # dockerd bind-mounts its data root onto itself (to make it a shared mount): that is
    # the same dir of the same filesystem, not another one mounted there.
    covering = [
        e
        for e in entries
        if e.mount_point != str(path)
        and (e.mount_point == "/" or str(path).startswith(e.mount_point.rstrip("/") + "/"))
    ]
    if not covering:
        return True
    under = max(reversed(covering), key=lambda e: len(e.mount_point))  # the longest, last listed
    same = os.path.normpath(os.path.join(under.root, os.path.relpath(path, under.mount_point)))
    return any(e.device != under.device or e.root != same for e in at)


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
    try:
        proc = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs["merged"])],
            capture_output=True,
            text=True,
        )
    except OSError as exc:  # no mount(8) on PATH: untested is not passed
        return ("overlay mount (d_type)", False, f"cannot run mount: {exc.strerror}")
    if proc.returncode != 0:
        return ("overlay mount (d_type)", False, proc.stderr.strip() or "mount failed")
    subprocess.run(["umount", str(dirs["merged"])], capture_output=True)
    return ("overlay mount (d_type)", True, "an overlay with its upper dir here mounts")


def _measured(pf: Preflight, old: Path) -> tuple[int, int]:
    """(bytes, entries) of a root to copy; mounts under it are noted as not moving. The
    walk's time is added to ``pf.walk_seconds`` (the downtime estimate's)."""
    t0 = time.monotonic()
    usage = measure(str(old))
    pf.walk_seconds += time.monotonic() - t0
    if usage and usage.other_mounts:
        pf.not_moving += [f"{m} (another filesystem under the root)" for m in usage.other_mounts]
        foreign = [m for m in usage.other_mounts if not _daemons_own(old, Path(m))]
        if foreign:
            pf.add(
                "mounts under the root",
                False,
                "not ones the daemons make and remove as they stop: "
                + ", ".join(foreign)
                + "; unless unmounted by then, the move waits for them after the stop, "
                "then rolls back: unmount them (and their fstab lines) first",
                blocking=False,
            )
    return (usage.bytes, usage.entries) if usage else (0, 0)


# Mounts dockerd and containerd make under their roots and remove when they stop (or
# when the container using them stops): relative paths, fnmatch patterns.
DAEMON_MOUNTS = (
    "overlay2/*/merged",
    "containers/*/mounts/*",
    "volumes/*/_data",  # a local volume with mount options, while a container uses it
    "plugins/*/rootfs",
    "plugins/*/propagated-mount",
    "rootfs/overlayfs/*",
    "buildkit/*",
    "io.containerd.runtime.v2.task/*/*/rootfs",
    "io.containerd.grpc.v1.cri/sandboxes/*/shm",
    "tmpmounts/*",
)


def _daemons_own(root: Path, mount: Path) -> bool:
    try:
        rel = str(mount.relative_to(root))
    except ValueError:
        return False
    if fnmatch.fnmatch(rel, "volumes/*/_data"):  # only a volume with options is mounted
        return (root / rel).parent.joinpath("opts.json").exists()
    return any(fnmatch.fnmatch(rel, pattern) for pattern in DAEMON_MOUNTS)


def check_space(
    pf: Preflight, old: Path, new: Path, also: list[tuple[Path, int, str]] | None = None
) -> None:
    """Measure ``old`` and check the free space for it at ``new`` and for ``also``
    (containerd's root: target, bytes, what), summed per filesystem."""
    pf.bytes_to_copy, pf.entries = _measured(pf, old)
    check_free_space(pf, [(new, pf.bytes_to_copy, "data root"), *(also or [])])


def _base(new: Path) -> Path:
    return new if new.exists() else new.parent


def check_free_space(pf: Preflight, targets: list[tuple[Path, int, str]]) -> None:
    """Free space for each filesystem the targets are on: what is copied there (both
    roots' bytes when both targets share a disk) plus one margin of it. ``targets``:
    (target, bytes to copy, what it is)."""
    disks: dict[int, list[tuple[Path, int, str]]] = {}
    for target in targets:
        disks.setdefault(os.stat(_base(target[0])).st_dev, []).append(target)
    for group in disks.values():
        free = psutil.disk_usage(str(_base(group[0][0]))).free
        copy = sum(b for _, b, _ in group)
        margin = margin_for(copy)
        need = copy + margin
        what = " + ".join(f"{human_bytes(b)} {w}" for _, b, w in group) if len(targets) > 1 else ""
        name = "free space" if len(targets) == 1 else f"free space on {_base(group[0][0])}"
        pf.add(
            name,
            free >= need,
            f"{human_bytes(free)} free on target, need {human_bytes(need)} "
            f"({human_bytes(copy)} to copy{f' ({what})' if what else ''} + "
            f"{human_bytes(margin)} margin: "
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
    unparsable: list[str] = []
    for cfg in sorted((old / "containers").glob("*/config.v2.json")):
        doc = _json_object(cfg, unparsable)
        mounts = doc.get("MountPoints")
        for mp in mounts.values() if isinstance(mounts, dict) else ():
            src = mp.get("Source") if isinstance(mp, dict) else None
            if not isinstance(src, str) or not src or mp.get("Type") != "bind":
                continue
            if not src.startswith(str(old) + "/"):
                name = str(doc.get("Name", "?")).lstrip("/")
                pf.not_moving.append(f"bind mount {src} of container {name}")
    for opts in sorted((old / "volumes").glob("*/opts.json")):
        doc = _json_object(opts, unparsable)
        mount_opts = str(doc.get("MountOpts", "")) + str(doc.get("MountDevice", ""))
        if "device=" in mount_opts or doc.get("MountDevice"):
            pf.not_moving.append(f"volume {opts.parent.name} with device options {mount_opts}")
    if unparsable:  # copied byte for byte; the daemon will not load them either
        pf.add(
            "metadata parses",
            False,
            "not JSON objects, copied as they are and left unrewritten: " + ", ".join(unparsable),
            blocking=False,
        )
    moved = pf.ctd_old and os.path.realpath("/var/lib/containerd") == pf.ctd_old
    if Path("/var/lib/containerd").is_dir() and not moved:
        pf.not_moving.append(
            "/var/lib/containerd (containerd's own root; data-root does not move it)"
        )


def _json_object(path: Path, unparsable: list[str]) -> dict[str, Any]:
    """The JSON object in ``path``; {} (and its name in ``unparsable``) for anything else."""
    try:
        doc = parse_json(read_text(path))
    except (UnreadableFile, ValueError):
        doc = None
    if isinstance(doc, dict):
        return doc
    unparsable.append(str(path))
    return {}


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


# The read-rate sample: at most this much of the roots' files, for at most this long.
READ_SAMPLE_BYTES = 256 * 2**20
READ_SAMPLE_SECONDS = 2.0
STOP_START_SECONDS = 5.0  # stopping and starting the daemons (as impl.downtime_estimate)


def read_rate(roots: list[Path]) -> float | None:
    """Bytes/s at which the roots' regular files read here (a sample: the first files met
    breadth-first, up to READ_SAMPLE_BYTES or READ_SAMPLE_SECONDS); None when under 1 MiB
    could be read. Never follows a symlink, never leaves a root's filesystem, opens only
    regular files (O_NOFOLLOW | O_NONBLOCK: a file swapped for a fifo does not block)."""
    total, t0 = 0, time.monotonic()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for root in roots:
        try:
            dev = os.lstat(root).st_dev
        except OSError:
            continue
        queue = [str(root)]
        while queue and total < READ_SAMPLE_BYTES:
            try:
                with os.scandir(queue.pop(0)) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                if time.monotonic() - t0 > READ_SAMPLE_SECONDS or total >= READ_SAMPLE_BYTES:
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                    if st.st_dev != dev:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        queue.append(entry.path)
                    elif entry.is_file(follow_symlinks=False) and st.st_size:
                        total += _read_some(entry.path, flags, READ_SAMPLE_BYTES - total)
                except OSError:
                    continue
            if time.monotonic() - t0 > READ_SAMPLE_SECONDS:
                break
    elapsed = time.monotonic() - t0
    return total / elapsed if total >= 2**20 and elapsed > 0 else None


def _read_some(path: str, flags: int, most: int) -> int:
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        got = 0
        while got < most and (chunk := os.read(fd, min(1 << 20, most - got))):
            got += len(chunk)
        return got
    finally:
        os.close(fd)


def downtime_estimates(
    total_bytes: int, walk_seconds: float, rate: float | None
) -> tuple[float, float | None]:
    """(seconds down with the pre-copy, with --offline; None: no read rate measured).

    With the pre-copy the daemons are down for the final pass (rsync walks both trees,
    then the old one is walked again for the files it rewrites regardless) and the
    verification (both trees): 5 walks, each about what preflight's walk of the old roots
    took, plus the delta written during the last pre-copy pass (unknown here: the
    pre-copy prints the estimate from its measured last pass), plus stopping and
    starting. Offline, the whole copy (the bytes at the read rate measured here; a slower
    target disk makes it longer) and the verification's 2 walks."""
    walks = 5 * walk_seconds
    precopy = round(walks + STOP_START_SECONDS, 1)
    if rate is None:
        return precopy, None
    return precopy, round(total_bytes / rate + 2 * walk_seconds + STOP_START_SECONDS, 1)


def check_downtime(pf: Preflight, roots: list[Path]) -> None:
    pf.read_rate = read_rate(roots)
    total = pf.bytes_to_copy + pf.ctd_bytes
    pf.downtime_precopy, pf.downtime_offline = downtime_estimates(
        total, pf.walk_seconds, pf.read_rate
    )
    offline = (
        f"; --offline about {pf.downtime_offline:.0f} s ({human_bytes(total)} at "
        f"{human_bytes(int(pf.read_rate or 0))}/s read here)"
        if pf.downtime_offline is not None
        else ""
    )
    pf.add(
        "downtime estimate",
        True,
        f"about {pf.downtime_precopy:.0f} s with the pre-copy (the final pass and the "
        f"verification walk the {pf.entries + pf.ctd_entries} entries 5 times: "
        f"{pf.walk_seconds:.1f} s a walk here; plus what the daemon writes during the "
        "pre-copy's last pass, printed once it is measured; plus up to 10 s for "
        f"containers that ignore SIGTERM){offline}",
        blocking=False,
    )


@dataclass(frozen=True)
class ContainerdPlan:
    """containerd's side of a containerd image store host: its root (as located), where
    it moves (None: --containerd-to not given), its config.toml and socket."""

    old: Path
    new: Path | None
    config: Path  # resolved: the file that is backed up and replaced
    address: str
    # The path as containerd is given it: its relative imports resolve from that path's
    # directory, symlinks not followed ("" : ``config``).
    config_named: str = ""


def _nested(a: Path, b: Path) -> bool:
    return _inside(a, b) or _inside(b, a)


def check_containerd_paths(pf: Preflight, old: Path, new: Path, ctd: ContainerdPlan) -> None:
    assert ctd.new is not None
    cn, co = ctd.new, ctd.old
    pf.add(
        "containerd root apart from the data root",
        not _inside(co, old),
        f"{co} is inside {old}: dockerd's own (managed) containerd, which moves with the data "
        "root; drop --containerd-to"
        if _inside(co, old)
        else f"{co}",
    )
    pf.add("containerd target differs", cn != co, f"{cn} vs {co}")
    clash = [str(p) for p in (old, new, co) if _nested(cn, p)]
    pf.add(
        "containerd target apart",
        not clash,
        f"{cn} is, holds or lies in {', '.join(clash)}" if clash else f"{cn}",
    )
    pf.add(
        "data-root target apart from containerd's root",
        not _nested(new, co),
        f"{new} vs {co}",
    )
    if cn.exists():
        empty = cn.is_dir() and not cn.is_symlink() and not any(cn.iterdir())
        detail = f"{cn} exists" + ("" if empty else " and is not empty")
        pf.add("containerd target empty", empty, detail)
    else:
        pf.add("containerd target parent exists", cn.parent.is_dir(), f"{cn.parent}")


def check_containerd_config(pf: Preflight, ctd: ContainerdPlan) -> None:
    """config.toml must name the root that moves, parse, and switch to the new root with
    every other byte kept; its directory must take the backup and the atomic replace."""
    config = ctd.config
    try:
        data = daemonjson.read(config)
    except OSError as exc:
        pf.add("containerd config readable", False, f"{config}: {exc.strerror}")
        return
    pf.ctd_config_sha256 = daemonjson.digest(data)
    try:
        named = os.path.realpath(ctdconfig.root_of(data))
        pf.add(
            "containerd config names the root",
            named == str(ctd.old),
            f"{config} names {named}"
            + ("" if data is not None else " (no file: containerd's default)")
            + ("" if named == str(ctd.old) else f", not {ctd.old} (the root being moved)"),
        )
        imported = ctdconfig.roots_in_imports(ctd.config_named or str(config), data)
        if imported:
            pf.add(
                "containerd config imports",
                False,
                "; ".join(
                    f"{path} (imported by {config}) sets root = {root}" for path, root in imported
                )
                + ": containerd takes that root over the main file's, so switching it would "
                "not move containerd; edit that file by hand, or pass it as --containerd-config",
            )
        if ctd.new is not None:
            ctdconfig.switched(data, str(ctd.new))
            detail = f"{config}: only 'root' changes"
            if data is None:
                detail = f"{config} does not exist: one naming only 'root' will be created"
            pf.add("containerd config switches", True, detail)
    except ctdconfig.ConfigError as exc:
        pf.add("containerd config switches", False, f"{config}: {exc}")
    pf.add(
        "containerd config writable",
        os.access(config.parent, os.W_OK),
        f"{config}, backup and replace in {config.parent}",
    )


def check_namespaces(pf: Preflight, ctd: ContainerdPlan) -> None:
    """containerd namespaces besides dockerd's own: other clients (the kubelet's k8s.io,
    ctr's default) that stop with containerd and move with its root."""
    db = read_metadb(ctd.old)
    if db.findings and not db.namespaces:
        pf.add(
            "other containerd clients",
            True,
            f"meta.db unreadable ({db.findings[0].message}): other namespaces unknown",
            blocking=False,
        )
        return
    for ns in db.namespaces:
        if ns in (MOBY, MOBY_HISTORY):
            continue
        images = sum(1 for i in db.images if i.namespace == ns)
        containers = sum(1 for c in db.containers if c.namespace == ns)
        pf.other_namespaces.append(f"{ns} ({images} images, {containers} containers)")
    if pf.other_namespaces:
        pf.add(  # a note ([note]), not a failure: --yes moves it anyway
            "other containerd clients",
            False,
            "WARNING: containerd also serves namespaces other than moby: "
            + ", ".join(pf.other_namespaces)
            + "; their containers stop with containerd and their images move with its "
            "root (a kubelet on this host loses its runtime during the downtime); "
            "relocate needs --yes to go on",
            blocking=False,
        )
    else:
        pf.add("other containerd clients", True, "none (only moby, moby_history)")


def check_containerd(pf: Preflight, old: Path, new: Path, ctd: ContainerdPlan) -> None:
    pf.ctd_old, pf.ctd_config = str(ctd.old), str(ctd.config)
    if ctd.new is None:
        pf.add(
            "containerd root moves",
            False,
            f"this host uses the containerd image store: images and containers' layers live "
            f"in containerd's root {ctd.old}, which data-root does not move (the data root "
            f"holds little); pass --containerd-to NEW (and --containerd-config, default "
            f"/etc/containerd/config.toml) to move both",
        )
        check_namespaces(pf, ctd)
        return
    pf.ctd_new = str(ctd.new)
    check_containerd_paths(pf, old, new, ctd)
    pf.ctd_target_fs = filesystem_of(ctd.new)
    if all(
        c.ok for c in pf.checks if c.blocking and c.name.startswith(("containerd", "data-root"))
    ):
        probe = Preflight(old=str(ctd.old), new=str(ctd.new), bytes_to_copy=0, entries=0)
        check_capabilities(probe, ctd.new)
        for c in probe.checks:
            pf.add(f"containerd target: {c.name}", c.ok, c.detail, c.blocking)
        pf.ctd_bytes, pf.ctd_entries = _measured(pf, ctd.old)
    check_containerd_config(pf, ctd)
    takes.check_containerd_serving(pf, ctd)
    check_namespaces(pf, ctd)


def preflight(
    old: Path,
    new: Path,
    config: Path,
    running: list[str],
    *,
    store: str = "overlay2",
    containerd: ContainerdPlan | None = None,
    bind: bool = False,
) -> Preflight:
    """Everything that must hold before ``old`` moves to ``new``; on a containerd image
    store host (``store``), ``containerd`` says where containerd's root is and whether
    (and where) it moves too."""
    pf = Preflight(old=str(old), new=str(new), bytes_to_copy=0, entries=0, running=running)
    pf.store = store
    check_paths(pf, old, new)
    if bind:
        check_bind(pf, old)
    pf.target_fs = filesystem_of(new)
    paths_ok = pf.ok
    if paths_ok:
        check_capabilities(pf, new)
    also: list[tuple[Path, int, str]] = []
    if containerd is not None:
        check_containerd(pf, old, new, containerd)
        if pf.ctd_entries:  # measured: its paths passed
            also.append((Path(pf.ctd_new), pf.ctd_bytes, "containerd root"))
        elif pf.ctd_new:
            paths_ok = False  # the containerd target's paths failed: no sum to check
    if paths_ok:
        check_space(pf, old, new, also)
        check_downtime(pf, [old, *([Path(pf.ctd_old)] if pf.ctd_new else [])])
    check_rsync(pf)
    check_config(pf, config)
    if not bind:  # --bind leaves daemon.json as it is
        takes.check_dockerd(pf, old, config)
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
