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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockergc.host.procfs import DELETED, GONE, FileId, Proc, file_id, flag

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
            if not _dir_inside(p.root, "", found.path, self.target, {}):
                return True, None
            notes = [n for n in notes if n != "bind mount"]
            how = f"keeps its root {shown} inside {self.root} ({'; '.join(notes)})"
        return True, DaemonProcess(p.pid, name, found.path, exe, how, kind)

    def holding(self, p: Proc, cache: dict[tuple[str, str], bool]) -> DaemonProcess | None:
        """The process if its cwd or an open file lies in the root."""
        files = p.files_on(self.target[0])
        if not files:
            return None
        ns = _namespace(p)
        for kind, path, ident in files:
            if ident == self.target or _dir_inside(
                p.root, ns, os.path.dirname(path), self.target, cache
            ):
                exe = p.exe()
                name = os.path.basename(exe) or p.comm()
                what = f"has its cwd in {path}" if kind == "cwd" else f"has {path} open"
                how = f"{what}, inside {self.root} (found by its files, not its name)"
                return DaemonProcess(p.pid, name, path, exe, how, "process")
        return None


def _namespace(p: Proc) -> str:
    """What a path in ``p``'s terms depends on: its mount namespace and its root."""
    return p.mount_ns() + "|" + os.readlink(p.root)


def _dir_inside(
    base: str, ns: str, path: str, target: FileId, cache: dict[tuple[str, str], bool]
) -> bool:
    """Is ``path`` (a name in namespace ``ns``, resolved from ``base``: a process's root)
    the directory ``target`` or under it? Each ancestor is compared by identity; answers
    are cached per namespace (one cache per ``target``)."""
    seen: list[str] = []
    answer = False
    while True:
        if (ns, path) in cache:
            answer = cache[(ns, path)]
            break
        seen.append(path)
        if file_id(base + path) == target:
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


@dataclass(frozen=True)
class Holder:
    """A process that holds something inside a directory."""

    pid: int
    comm: str
    path: str  # as the process names it
    what: str  # "fd K", "its cwd" or "its root"

    def describe(self) -> str:
        return f"pid {self.pid} ({self.comm}) holds {self.path} ({self.what})"


def holders_under(target: FileId, proc: Path = PROC) -> Iterator[Holder]:
    """Each process whose cwd, root or an open file is the directory ``target`` (st_dev,
    st_ino) or lies under it, in one pass over /proc, found lazily (a caller that needs
    one stops there). Names are never compared: an open file's ancestors are resolved in
    its process's own namespace and compared by identity, so a bind alias or a private
    mount namespace hides nothing. Only files on ``target``'s device are walked up. A
    process that ends or cannot be read meanwhile is skipped; so is this one.

    Mounts are not looked at: a namespace whose top, or a mount in it, is ``target`` or
    lies in it (a bind mount of a dir inside it, say) is what ``read_pins`` reports, and
    callers check that first."""
    seen = _Seen(target)
    me = os.getpid()
    for pid in _pids(proc):
        if pid == me:
            continue
        p = Proc(proc, pid)
        try:
            held = seen.held_by(p)
        except GONE:
            continue
        if held is not None:
            try:
                comm = p.comm()
            except GONE:
                comm = "?"
            yield Holder(pid, comm, *held)


@dataclass
class _Seen:
    """One pass of ``holders_under``: what each name means, per namespace.

    A name in a namespace (its mount namespace and root) is one place for the whole
    pass: most processes share their cwd and many share files, so each is stat'ed and
    walked up once. Links are read before they are stat'ed: pipes, sockets and anonymous
    inodes (half of all fds) then cost one readlink, no more than a name comparison."""

    target: FileId
    names: dict[tuple[str, str], bool] = field(default_factory=dict)  # (ns, link text)
    dirs: dict[tuple[str, str], bool] = field(default_factory=dict)  # _dir_inside's

    def held_by(self, p: Proc) -> tuple[str, str] | None:
        """(path, what) of the first thing ``p`` holds under the target, else None."""
        root = os.readlink(p.root)
        if root == "/":
            # The top of its mount tree: nothing above it to be inside (a namespace whose
            # top is a bind mount of a dir in the data root pins that dir through the
            # mount check, which runs first). Names start from it.
            return self._files(p, p.root, root)
        under, top = p.climb(self.target)
        try:
            if under:
                return root, "its root"
            # Chrooted: /proc names its files from the top of its mount tree, not its root.
            return self._files(p, f"/proc/self/fd/{top}", root)
        finally:
            os.close(top)

    def _files(self, p: Proc, base: str, root: str) -> tuple[str, str] | None:
        ns = ""
        for what, link in p.links():
            try:
                named = os.readlink(link)
                if named == "/" or not named.startswith("/"):
                    continue  # the top (see above), or pipe:[…], socket:[…], anon_inode:…
                ns = ns or p.mount_ns() + "|" + root
                held = self.names.get((ns, named))
                if held is None:
                    held = self.names[(ns, named)] = self._under(base, ns, link, named)
            except OSError:
                continue  # closed meanwhile
            if held:
                return named.removesuffix(DELETED), "its cwd" if what == "cwd" else what
        return None

    def _under(self, base: str, ns: str, link: str, named: str) -> bool:
        st = os.stat(link)
        if (st.st_dev, st.st_ino) == self.target:
            return True
        if st.st_dev != self.target[0]:
            return False  # another filesystem: a mount inside the dir is the mount check's
        # An unlinked file is named as it was: its directory is still where it was written.
        parent = os.path.dirname(named.removesuffix(DELETED))
        return _dir_inside(base, ns, parent, self.target, self.dirs)
