"""One process as /proc shows it, with paths resolved the way that process resolves them.

A path a daemon names (``--data-root``, ``--config-file``, daemon.json's ``data-root``)
means what it means in the daemon's mount namespace, against its cwd and its root:
``/proc/PID/root`` and ``/proc/PID/cwd`` lead there, and an absolute symlink met on the
way is resolved against the daemon's root again, never against ours. Directories are
compared by (st_dev, st_ino), never by path strings: a bind mount, a symlink or a private
mount namespace gives one directory many names.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# A process that ends while it is read (ENOENT, ESRCH), that we may not read (EACCES), or
# whose /proc files make no sense is skipped: it is never an internal error.
GONE = (OSError, ValueError)
FileId = tuple[int, int]
MAX_SYMLINKS = 40
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 4096  # directory levels climbed by '..' before giving up
DELETED = " (deleted)"  # what /proc adds to the name of an unlinked file


def file_id(path: str) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class Resolved:
    path: str  # absolute, in the process's namespace, no symlink left
    exists: bool
    symlinks: int  # how many were followed on the way


def resolve(base: str, path: str, cwd: str = "/") -> Resolved:
    """Resolve ``path`` as a process whose root directory is ``base`` would (``cwd`` is
    its cwd, in its own terms). Nothing outside ``base`` is ever reached: ``..`` stops at
    its root and an absolute symlink starts again from it."""
    pending = deque(part for part in path.split("/") if part)
    if not path.startswith("/"):
        pending.extendleft(reversed([p for p in cwd.split("/") if p]))
    parts: list[str] = []
    followed = 0
    while pending:
        part = pending.popleft()
        if part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        here = os.path.join(base, *parts, part)
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            parts.append(part)
            rest = "/".join(pending)
            return Resolved(os.path.normpath("/" + "/".join(parts) + "/" + rest), False, followed)
        if stat.S_ISLNK(mode):
            followed += 1
            try:
                target = os.readlink(here)
            except OSError:
                return Resolved("/" + "/".join([*parts, part]), False, followed)
            if followed > MAX_SYMLINKS:
                return Resolved("/" + "/".join([*parts, part]), False, followed)
            if target.startswith("/"):
                parts = []
            pending.extendleft(reversed([p for p in target.split("/") if p]))
            continue
        parts.append(part)
    return Resolved("/" + "/".join(parts), True, followed)


def flag(args: list[str], *names: str) -> str | None:
    """The value of the last of ``names`` given as ``--x V`` or ``--x=V`` (Go's flag
    package keeps the last one)."""
    found: str | None = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


@dataclass(frozen=True)
class Flags:
    """A command line's flag set as spf13/pflag (dockerd's parser) reads it: the long
    names that take no value, and what each one-letter shorthand stands for."""

    bools: frozenset[str]
    shorts: dict[str, str]
    values: frozenset[str] = frozenset()  # long names that always take the next argument

    def parse(self, args: list[str]) -> list[tuple[str, str, str]]:
        """(long name, name as typed, value) of each flag, in order: ``--x=V``, ``--x V``,
        ``-xV``, ``-x=V``, ``-x V``, and grouped shorthands (``-Dg V``, ``-DgV``) where
        each letter before the one that takes a value is a boolean. ``--`` ends the flags.
        An unknown long flag takes the next argument unless that looks like a flag; an
        unknown letter is read as a boolean (pflag would refuse both)."""
        out: list[tuple[str, str, str]] = []
        i = 0
        while i < len(args):
            arg, i = args[i], i + 1
            if arg == "--":
                break
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                takes = name in self.values or i < len(args) and not args[i].startswith("-")
                if not eq and name not in self.bools and i < len(args) and takes:
                    value, i = args[i], i + 1
                out.append((name, name, value))
                continue
            rest = arg[1:] if arg.startswith("-") else ""
            while rest:
                letter, rest = rest[0], rest[1:]
                name = self.shorts.get(letter, "-" + letter)
                if name in self.bools or letter not in self.shorts:  # unknown: pflag fails
                    if rest.startswith("="):  # -D=true
                        out.append((name, "-" + letter, rest[1:]))
                        break
                    out.append((name, "-" + letter, ""))
                    continue
                if len(rest) > 1 and rest[0] == "=":
                    value = rest[1:]
                elif rest:
                    value = rest
                elif i < len(args):
                    value, i = args[i], i + 1
                else:
                    value = ""
                out.append((name, "-" + letter, value))
                break
        return out

    def last(self, args: list[str], name: str) -> tuple[str, str] | None:
        """(value, name as typed) of the last ``name`` given (pflag keeps the last)."""
        found = None
        for long, typed, value in self.parse(args):
            if long == name:
                found = value, typed
        return found


class Proc:
    """One process under ``proc`` (normally /proc). Reads raise ``GONE`` errors when the
    process ended or may not be read; callers skip it then."""

    def __init__(self, proc: Path, pid: int) -> None:
        self.pid = pid
        self.dir = f"{proc}/{pid}"
        self.root = self.dir + "/root"

    def _read(self, name: str) -> bytes:
        # os.read, not open(): this runs for every process on the host, on every check.
        fd = os.open(f"{self.dir}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = [os.read(fd, 65536)]
            while chunks[-1]:
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
        return b"".join(chunks)

    def cmdline(self) -> list[str]:
        raw = self._read("cmdline")
        return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]

    def ppid(self) -> int:
        raw = self._read("stat")
        return int(raw[raw.rindex(b")") + 2 :].split()[1])

    def exe(self) -> str:
        """The executable's path ('' for a kernel thread); ' (deleted)' is dropped."""
        try:
            target = os.readlink(self.dir + "/exe")
        except FileNotFoundError:
            return ""
        return target.removesuffix(DELETED)

    def comm(self) -> str:
        return self._read("comm").decode(errors="replace").strip()

    def cwd(self) -> str:
        return os.readlink(self.dir + "/cwd")

    def mount_ns(self) -> str:
        try:
            return os.readlink(self.dir + "/ns/mnt")
        except OSError:
            return ""

    def resolve(self, path: str) -> Resolved:
        """``path`` as this process would resolve it."""
        return resolve(self.root, path, "/" if path.startswith("/") else self.cwd())

    def where(self, resolved: Resolved) -> str:
        """The host-side name of a resolved path (through /proc/PID/root)."""
        return self.root + resolved.path

    def read_config(self, path: str) -> bytes | None:
        """A config file the process names, read in its namespace (None if unreadable)."""
        try:
            found = self.resolve(path)
            if not found.exists:
                return None
            with open(self.where(found), "rb") as fh:
                return fh.read(MAX_CONFIG_BYTES)
        except OSError:
            return None

    def links(self) -> list[tuple[str, str]]:
        """("cwd" or "fd N", its /proc link) for its cwd and each open file."""
        fds = os.listdir(self.dir + "/fd")
        return [("cwd", self.dir + "/cwd"), *((f"fd {n}", f"{self.dir}/fd/{n}") for n in fds)]

    def climb(self, target: FileId) -> tuple[bool, int]:
        """``climb`` from its root directory: unless ``target`` was met, the fd is the top
        of its mount tree, where the names /proc gives its files start from when it runs
        chrooted (its own namespace has no name for what lies above its root)."""
        return climb(self.root, target)


def climb(start: str, target: FileId) -> tuple[bool, int]:
    """Walk up from the directory ``start`` by ``..``, in whatever mount tree it lies
    (one mount's root leads to where it is mounted), comparing each directory with
    ``target`` by identity: (whether it was met, an O_PATH fd where the walk stopped, the
    top of that tree unless ``target`` was met). The caller closes the fd."""
    fd = os.open(start, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        last: FileId | None = None
        for _ in range(MAX_DEPTH):
            st = os.fstat(fd)
            here = (st.st_dev, st.st_ino)
            if here in (target, last):  # met, or ".." led back: the top
                return here == target, fd
            last = here
            up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = up
    except BaseException:
        os.close(fd)
        raise
    return False, fd
