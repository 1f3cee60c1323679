"""Find the processes that use a data root, in one pass over /proc.

dockerd names its root with --data-root (or the old -g/--graph), else in the daemon.json
its --config-file names (default /etc/docker/daemon.json), else /var/lib/docker.
containerd matters when its root lies inside the data root (dockerd's managed containerd
keeps it in R/containerd/daemon). Both are recognised by name, loosely: any executable
whose name contains "dockerd" or "containerd" (dockerd-ce, docker-containerd), shims
aside. Every path is resolved in the daemon's own mount namespace and against its cwd,
and the directory it reaches is compared with the root by (st_dev, st_ino).

A daemon under any other name is found by what it holds: when no daemon is found by name,
every other process's cwd and open files are checked (a running dockerd keeps its bbolt
databases open in the root). dockergc itself and its parents are never counted.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dockergc.host.procfs import GONE, FileId, Proc, file_id, flag

DEFAULT_ROOT = "/var/lib/docker"
DEFAULT_CONFIG = "/etc/docker/daemon.json"
CONTAINERD_ROOT = "/var/lib/containerd"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
PROC = Path("/proc")


@dataclass(frozen=True)
class DaemonProcess:
    pid: int
    name: str  # the program's name as it runs (dockerd, dockerd-ce, a copy's own name)
    root: str  # the path through which it reaches the root, in its own namespace
    exe: str = ""
    how: str = ""  # the rest of the sentence: "uses /srv/alias, the same directory as …"
    kind: str = "dockerd"  # dockerd, containerd, or process (found by its open files)

    def describe(self) -> str:
        exe = f", {self.exe}" if self.exe and os.path.basename(self.exe) != self.exe else ""
        return f"{self.name} (pid {self.pid}{exe}) {self.how}"


def dockerd_root(args: list[str]) -> str:
    """The data root a dockerd command line uses, read in our own namespace."""
    return _dockerd_spec(None, args)[0]


def _json_root(raw: bytes | None) -> tuple[str, str] | None:
    """(root, the key that names it) from daemon.json's bytes."""
    try:
        doc = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    for key in ("data-root", "graph"):
        root = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(root, str) and root:
            return root, key
    return None


def _read(proc: Proc | None, path: str) -> bytes | None:
    if proc is not None:
        return proc.read_config(path)
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def _relative(path: str, proc: Proc | None) -> str:
    return "" if path.startswith("/") or proc is None else f", relative to its cwd {proc.cwd()}"


def _dockerd_spec(proc: Proc | None, args: list[str]) -> tuple[str, str]:
    """(the root as dockerd names it, where it is named)."""
    for name in ("--data-root", "-g", "--graph"):
        explicit = flag(args, name)
        if explicit:
            return explicit, f"{name}{_relative(explicit, proc)}"
    config = flag(args, "--config-file") or DEFAULT_CONFIG
    named = _json_root(_read(proc, config))
    if named:
        return named[0], f"{named[1]} in {config}{_relative(config, proc)}"
    return DEFAULT_ROOT, "the default root"


def _containerd_spec(proc: Proc, args: list[str]) -> tuple[str, str]:
    explicit = flag(args, "--root")
    if explicit:
        return explicit, f"--root{_relative(explicit, proc)}"
    config = flag(args, "--config", "-c") or CONTAINERD_CONFIG
    raw = proc.read_config(config)
    try:
        root = tomllib.loads(raw.decode()).get("root") if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        root = None
    if isinstance(root, str) and root:
        return root, f"root in {config}{_relative(config, proc)}"
    return CONTAINERD_ROOT, "the default root"


def _kind(names: list[str]) -> str | None:
    if any("dockerd" in n for n in names):
        return "dockerd"
    if any("containerd" in n and "shim" not in n for n in names):
        return "containerd"
    return None


@dataclass
class _Scan:
    root: str
    target: FileId
    proc: Path
    ns: str  # our own mount namespace

    def named(self, p: Proc) -> tuple[bool, DaemonProcess | None]:
        """(is it a dockerd/containerd by name, the daemon if it uses the root)."""
        exe, args = p.exe(), p.cmdline()
        names = [os.path.basename(exe), os.path.basename(args[0]) if args else ""]
        if not exe:
            names.append(p.comm())
        kind = _kind(names)
        if kind is None:
            return False, None
        name = next(n for n in names if n)
        spec, source = (_dockerd_spec if kind == "dockerd" else _containerd_spec)(p, args[1:])
        found = p.resolve(spec)
        shown = spec if spec.startswith("/") else found.path
        notes = [source]
        if found.symlinks:
            notes.append("through a symlink")
        if found.path != self.root and not found.symlinks:
            notes.append("bind mount")
        if self.ns and p.mount_ns() != self.ns:
            notes.append("in its own mount namespace")
        if kind == "dockerd":
            if not found.exists or file_id(p.where(found)) != self.target:
                return True, None
            same = "" if shown == self.root else f", the same directory as {self.root}"
            how = f"uses {shown}{same} ({'; '.join(notes)})"
        else:
            if not self._dir_inside(p, "", found.path, {}):
                return True, None
            notes = [n for n in notes if n != "bind mount"]
            how = f"keeps its root {shown} inside {self.root} ({'; '.join(notes)})"
        return True, DaemonProcess(p.pid, name, found.path, exe, how, kind)

    def holding(self, p: Proc, cache: dict[tuple[str, str], bool]) -> DaemonProcess | None:
        """The process if its cwd or an open file lies in the root."""
        files = p.files_on(self.target[0])
        if not files:
            return None
        ns = p.mount_ns() + "|" + os.readlink(p.root)
        for kind, path, ident in files:
            if ident == self.target or self._dir_inside(p, ns, os.path.dirname(path), cache):
                exe = p.exe()
                name = os.path.basename(exe) or p.comm()
                what = f"has its cwd in {path}" if kind == "cwd" else f"has {path} open"
                how = f"{what}, inside {self.root} (found by its files, not its name)"
                return DaemonProcess(p.pid, name, path, exe, how, "process")
        return None

    def _dir_inside(self, p: Proc, ns: str, path: str, cache: dict[tuple[str, str], bool]) -> bool:
        """Is ``path`` (in p's namespace) the root or under it? Each ancestor's identity
        is compared; answers are cached per namespace."""
        seen: list[str] = []
        answer = False
        while True:
            if (ns, path) in cache:
                answer = cache[(ns, path)]
                break
            seen.append(path)
            if file_id(p.root + path) == self.target:
                answer = True
                break
            if path == "/":
                break
            path = os.path.dirname(path)
        for walked in seen:
            cache[(ns, walked)] = answer
        return answer


def _pids(proc: Path) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return []


def _ourselves(proc: Path) -> set[int]:
    """This process and its parents (a shell cd'ed into the root is not a daemon)."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            pid = Proc(proc, pid).ppid()
        except (OSError, ValueError):
            break
    return pids


def scan(root: Path, proc: Path = PROC, every_file: bool = False) -> list[DaemonProcess]:
    """Daemons using ``root`` by what they name; then, when none is found (or always,
    with ``every_file``), processes whose cwd or open files lie in it."""
    target = file_id(str(root))
    if target is None:
        return []
    ns = Proc(proc, os.getpid()).mount_ns() if proc == PROC else ""
    s = _Scan(os.path.realpath(root), target, proc, ns)
    found: list[DaemonProcess] = []
    rest: list[Proc] = []
    skip = _ourselves(proc) if proc == PROC else set()
    for pid in _pids(proc):
        if pid in skip:
            continue
        p = Proc(proc, pid)
        try:
            is_daemon, hit = s.named(p)
        except GONE:
            continue
        if hit is not None:
            found.append(hit)
        elif not is_daemon:
            rest.append(p)
    if found and not every_file:
        return found
    cache: dict[tuple[str, str], bool] = {}
    for p in rest:
        try:
            holder = s.holding(p, cache)
        except GONE:
            continue
        if holder is not None:
            found.append(holder)
    return found


def daemons_using(root: Path, proc: Path = PROC) -> list[DaemonProcess]:
    """Every daemon that uses ``root``: a dockerd whose root is it, a containerd rooted
    inside it, or (when neither is found) any process holding files in it."""
    return scan(root, proc)


def processes_using(root: Path, proc: Path = PROC) -> list[str]:
    """Daemons of this root, and every process whose cwd or open files lie in it."""
    return sorted({d.describe() for d in scan(root, proc, every_file=True)})
