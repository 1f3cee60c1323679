"""Find the processes that use a data root, in one pass over /proc.

dockerd names its root with --data-root (or the old -g/--graph), else in the daemon.json
its --config-file names (default /etc/docker/daemon.json), else /var/lib/docker.
containerd matters when its root lies inside the data root (dockerd's managed containerd
keeps it in R/containerd/daemon). Both are recognised by name, loosely: any executable
whose name contains "dockerd" or "containerd" (dockerd-ce, docker-containerd), shims
aside. Every path is resolved in the daemon's own mount namespace and against its cwd,
and the directory it reaches is compared with the root by (st_dev, st_ino).

Every process not found that way, daemons by name included, is then checked by what it
holds: its cwd, its root and its open files, found by identity as ``holders_under`` finds
them (a running dockerd keeps its bbolt databases open in the root, whatever its name and
whatever its daemon.json says today). dockergc itself and its parents are never counted.

A log reader is not a user of the root for ``daemons_using`` (the gate of every command
that changes it): a process not named like a daemon whose every hold in the root is a
container's log (``containers/<id>/<id>-json.log`` and its rotations ``….N``, a file of
the local driver's ``containers/<id>/local-logs/``) or a container's dir itself, as log
shippers (filebeat, promtail, fluent-bit) keep them. gc never touches ``containers/``. A
dockerd under another name still holds its databases (volumes/metadata.db, buildkit/*.db)
and is still found. ``processes_using`` counts log readers too: moving or removing the
root must wait for them.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockergc.host.procfs import DELETED, GONE, FileId, Flags, Proc, climb, file_id, flag

DEFAULT_ROOT = "/var/lib/docker"
DEFAULT_CONFIG = "/etc/docker/daemon.json"
CONTAINERD_ROOT = "/var/lib/containerd"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
PROC = Path("/proc")
# What a log reader may hold in the root, named from the root: a container's dir, its
# json-file log and rotations, the local driver's dir and files (a removed container's
# deleted files included: they are named as they were).
_ID = "[0-9a-f]{64}"
CONTAINER_LOG = re.compile(
    rf"/containers/({_ID})(?:/\1-json\.log(?:\.[0-9]+)?|/local-logs(?:/[^/]+)?)?$"
)
# dockerd's flags as its parser (spf13/pflag) knows them: those that take no value, and
# the shorthands (-g is the hidden, deprecated --graph).
DOCKERD_FLAGS = Flags(
    bools=frozenset(
        "--" + name
        for name in [
            "cri-containerd",
            "debug",
            "experimental",
            "help",
            "icc",
            "init",
            "ip-forward",
            "ip-masq",
            "ip6tables",
            "iptables",
            "ipv6",
            "live-restore",
            "no-new-privileges",
            "raw-logs",
            "rootless",
            "selinux-enabled",
            "tls",
            "tlsverify",
            "userland-proxy",
            "version",
        ]
    ),
    shorts={
        "b": "--bridge",
        "D": "--debug",
        "G": "--group",
        "H": "--host",
        "g": "--graph",
        "h": "--help",
        "l": "--log-level",
        "p": "--pidfile",
        "s": "--storage-driver",
        "v": "--version",
    },
    values=frozenset(
        [
            "--bridge",
            "--group",
            "--host",
            "--graph",
            "--data-root",
            "--config-file",
            "--log-level",
            "--pidfile",
            "--storage-driver",
            "--exec-root",
        ]
    ),
)


@dataclass(frozen=True)
class DaemonProcess:
    pid: int
    name: str  # the program's name as it runs (dockerd, dockerd-ce, a copy's own name)
    root: str  # the path through which it reaches the root, in its own namespace
    exe: str = ""
    how: str = ""  # the rest of the sentence: "uses /srv/alias, the same directory as …"
    kind: str = "dockerd"  # dockerd, containerd, or process (found by its open files)
    held: str = ""  # a process's: "its cwd", "its root" or "fd N"

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
    for name in ("--data-root", "--graph"):
        explicit = DOCKERD_FLAGS.last(args, name)
        if explicit and explicit[0]:
            return explicit[0], f"{explicit[1]}{_relative(explicit[0], proc)}"
    named_config = DOCKERD_FLAGS.last(args, "--config-file")
    config = named_config[0] if named_config and named_config[0] else DEFAULT_CONFIG
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


@dataclass(frozen=True)
class _Named:
    """A process named like a daemon, and what its configuration says its root is."""

    kind: str  # dockerd or containerd
    name: str
    exe: str
    stated: str  # "/new (data-root in /etc/docker/daemon.json)"
    configured: bool  # named by a config file or the default, not on its command line


@dataclass
class _Scan:
    root: str
    target: FileId
    ns: str  # our own mount namespace
    seen: _Seen
    logs: bool = True  # count a process that holds only container logs (see the top)

    def check(self, p: Proc) -> DaemonProcess | None:
        """The process if it uses the root: a daemon by what it names, else (a daemon
        whose configuration names another root, or any process) by what it holds."""
        named: _Named | None = None
        known = False  # known not to be named like a daemon
        try:
            named, hit = self.named(p)
            known = named is None
        except GONE:
            hit = None  # what it names cannot be read; what it holds may still be
        if hit is not None:
            return hit
        held = self.seen.held_by(p, logs=self.logs or not known)
        if held is None:
            return None
        path, what = held
        does = {"its cwd": "has its cwd in {}", "its root": "has its root in {}"}
        done = does.get(what, "has {} open").format(path)
        if path != self.root and not path.startswith(self.root + "/"):
            done += f", inside {self.root}"  # another name for it (a bind mount, a chroot)
        if named is None:
            exe = p.exe()
            how = f"{done} (found by its files, not its name)"
            return DaemonProcess(
                p.pid, os.path.basename(exe) or p.comm(), path, exe, how, "process", what
            )
        said = (
            f"its configuration names another root, {named.stated} — it may have been "
            "edited after it started"
            if named.configured
            else f"its command line names another root, {named.stated}"
        )
        return DaemonProcess(p.pid, named.name, path, named.exe, f"{done}; {said}", named.kind)

    def named(self, p: Proc) -> tuple[_Named | None, DaemonProcess | None]:
        """(the process if it is a dockerd/containerd by name, the daemon if what it names
        is the root)."""
        exe, args = p.exe(), p.cmdline()
        names = [os.path.basename(exe), os.path.basename(args[0]) if args else ""]
        if not exe:
            names.append(p.comm())
        kind = _kind(names)
        if kind is None:
            return None, None
        name = next(n for n in names if n)
        spec, source = (_dockerd_spec if kind == "dockerd" else _containerd_spec)(p, args[1:])
        named = _Named(kind, name, exe, f"{spec} ({source})", not source.startswith("-"))
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
                return named, None
            same = "" if shown == self.root else f", the same directory as {self.root}"
            how = f"uses {shown}{same} ({'; '.join(notes)})"
        else:
            if not _under(p.where(found), self.target):
                return named, None
            notes = [n for n in notes if n != "bind mount"]
            how = f"keeps its root {shown} inside {self.root} ({'; '.join(notes)})"
        return named, DaemonProcess(p.pid, name, found.path, exe, how, kind)


def _under(path: str, target: FileId) -> bool:
    """Is the directory ``path`` (a host-side name, resolved: no symlink left) ``target``
    or under it? From its deepest existing directory, walked up by ``..`` (``climb``): a
    chrooted process's directory is followed above its root, never by names."""
    while not os.path.isdir(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    met, fd = climb(path, target)
    os.close(fd)
    return met


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


def scan(root: Path, proc: Path = PROC, logs: bool = True) -> list[DaemonProcess]:
    """Every process that uses ``root``, in one pass over /proc: a daemon by what it names
    (its root), and any process, daemons by name included, by what it holds (its cwd, its
    root or an open file in the root). Unless ``logs``, a process not named like a daemon
    that holds nothing there but container logs is left out (see the top)."""
    target = file_id(str(root))
    if target is None:
        return []
    if blind(proc):
        return [DaemonProcess(os.getpid(), "dockergc", "", "", BLIND, "process", "?")]
    ns = Proc(proc, os.getpid()).mount_ns() if proc == PROC else ""
    s = _Scan(os.path.realpath(root), target, ns, _Seen(target), logs)
    found: list[DaemonProcess] = []
    skip = _ourselves(proc) if proc == PROC else set()
    for pid in _pids(proc):
        if pid in skip:
            continue
        try:
            hit = s.check(Proc(proc, pid))
        except GONE:
            continue
        if hit is not None:
            found.append(hit)
    return found


CAP_SYS_PTRACE = 19
BLIND = (
    "dockergc itself lacks CAP_SYS_PTRACE: it cannot see other processes' cwd, root and "
    "open files, so any of them may use the root"
)


def blind(proc: Path = PROC) -> bool:
    """Whether this process may not look into others' /proc entries (their cwd, root,
    fds): without CAP_SYS_PTRACE the kernel refuses that for every process whose
    capabilities exceed ours, and an unseen holder would look like none. (A process an
    LSM or a sandbox hides even from CAP_SYS_PTRACE is a documented limit.)"""
    if proc != PROC:
        return False
    try:
        with open("/proc/self/status") as fh:
            eff = next(line for line in fh if line.startswith("CapEff:"))
        return not int(eff.split()[1], 16) >> CAP_SYS_PTRACE & 1
    except (OSError, StopIteration, ValueError, IndexError):
        return True


def daemons_using(root: Path, proc: Path = PROC) -> list[DaemonProcess]:
    """Every process that uses ``root``: a dockerd whose root is it, a containerd rooted
    inside it, or any process (a daemon by name or not) holding files in it, but for a
    log reader (a process not named like a daemon holding only container logs there)."""
    return scan(root, proc, logs=False)


def processes_using(root: Path, proc: Path = PROC) -> list[str]:
    """Every process that uses ``root``, log readers included, described: what must
    exit before the root is moved or removed."""
    return sorted({d.describe() for d in scan(root, proc)})


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
    if blind(proc):
        yield Holder(me, "dockergc", "?", BLIND)
        return
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

    def held_by(self, p: Proc, logs: bool = True) -> tuple[str, str] | None:
        """(path, what) of the first thing ``p`` holds under the target, else None; unless
        ``logs``, a container's log or dir (``CONTAINER_LOG``) is passed over."""
        root = os.readlink(p.root)
        if root == "/":
            # The top of its mount tree: nothing above it to be inside (a namespace whose
            # top is a bind mount of a dir in the data root pins that dir through the
            # mount check, which runs first). Names start from it.
            return self._files(p, p.root, root, logs)
        under, top = p.climb(self.target)
        try:
            if under:
                return root, "its root"
            # Chrooted: /proc names its files from the top of its mount tree, not its root.
            return self._files(p, f"/proc/self/fd/{top}", root, logs)
        finally:
            os.close(top)

    def _files(self, p: Proc, base: str, root: str, logs: bool) -> tuple[str, str] | None:
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
            if held and (logs or not self._log(base, named.removesuffix(DELETED))):
                return named.removesuffix(DELETED), "its cwd" if what == "cwd" else what
        return None

    def _log(self, base: str, named: str) -> bool:
        """Is ``named`` (held under the target) a container's log or dir: named so from a
        directory that is the target itself, by identity?"""
        match = CONTAINER_LOG.search(named)
        return match is not None and file_id(base + (named[: match.start()] or "/")) == self.target

    def _under(self, base: str, ns: str, link: str, named: str) -> bool:
        st = os.stat(link)
        if (st.st_dev, st.st_ino) == self.target:
            return True
        if st.st_dev != self.target[0]:
            return False  # another filesystem: a mount inside the dir is the mount check's
        # An unlinked file is named as it was: its directory is still where it was written.
        parent = os.path.dirname(named.removesuffix(DELETED))
        return _dir_inside(base, ns, parent, self.target, self.dirs)
