"""Which containerd a containerd-store dockerd uses: its socket, its root, and proof that
the two belong together.

The socket and the root are named in different places (dockerd's ``--containerd`` flag or
daemon.json ``containerd``; containerd's config.toml ``root``), and a wrong pair would make
dockergc read one containerd's records and act through another. So the pair is checked:
containerd writes a UUID into ``<root>/io.containerd.grpc.v1.introspection/uuid`` and
reports the same UUID over its API (``ctr version``); they must match before anything is
changed through that socket.
"""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dockergc.errors import RefusedError, RootError, UsageError
from dockergc.host.detect import CONTAINERD_CONFIG, DOCKERD_FLAGS, PROC, _containerd_spec
from dockergc.host.procfs import GONE, Proc, flag
from dockergc.stores.containerd.records import METADATA_DIR

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_ROOT = Path("/var/lib/containerd")
DEFAULT_CONFIG = Path("/etc/containerd/config.toml")
UUID_FILE = "io.containerd.grpc.v1.introspection/uuid"


@dataclass(frozen=True)
class ContainerdTarget:
    address: str
    address_source: str  # "--containerd-address", "dockerd --containerd", ...
    root: Path  # resolved
    root_source: str
    ctr: str  # the ctr binary every change goes through

    def describe(self) -> str:
        return (
            f"containerd at {self.address} ({self.address_source}), "
            f"root {self.root} ({self.root_source})"
        )


def read_containerd_config(path: Path) -> dict[str, object] | None:
    """containerd's config.toml; missing is None, unreadable or malformed is a usage error
    naming the file (the operator's file: a symlink to it is followed)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read((1 << 20) + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"containerd config {path} cannot be read: {exc.strerror}") from exc
    if len(data) > 1 << 20:
        raise UsageError(f"containerd config {path} is over 1 MiB; not a config.toml")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"containerd config {path} is not valid TOML: {exc}") from exc


def containerd_flag(
    dockerd_args: list[str] | None, daemon_json: dict[str, object] | None
) -> tuple[str, str] | None:
    """(socket, where it is named) from a dockerd command line, then daemon.json."""
    if dockerd_args:
        found = DOCKERD_FLAGS.last(dockerd_args, "--containerd")
        if found and found[0]:
            return found[0], f"dockerd {found[1]}"
    named = (daemon_json or {}).get("containerd")
    if isinstance(named, str) and named:
        return named, "daemon.json containerd"
    return None


def locate_containerd(
    *,
    address: str | None,
    root: Path | None,
    config: Path | None,
    ctr: str | None,
    dockerd_args: list[str] | None = None,
    daemon_json: dict[str, object] | None = None,
) -> ContainerdTarget:
    """The socket and root from flags, else from what dockerd and containerd's config say,
    else containerd's defaults. Nothing is checked against the running containerd here
    (``check_identity`` does that before any change)."""
    if address:
        addr, addr_source = address, "--containerd-address"
    else:
        addr, addr_source = containerd_flag(dockerd_args, daemon_json) or (
            DEFAULT_ADDRESS,
            "default",
        )
    if root is not None:
        chosen, root_source = root, "--containerd-root"
    else:
        cfg_path = config or DEFAULT_CONFIG
        doc = read_containerd_config(cfg_path)
        named = doc.get("root") if doc else None
        if isinstance(named, str) and named:
            chosen, root_source = Path(named), f"root in {cfg_path}"
        elif config is not None and doc is None:
            raise UsageError(f"containerd config {config} does not exist")
        else:
            chosen, root_source = DEFAULT_ROOT, "default"
    if not chosen.is_absolute():
        raise UsageError(f"containerd root {chosen} ({root_source}) is not an absolute path")
    if not chosen.is_dir():
        raise RootError(
            f"containerd root {chosen} ({root_source}) does not exist",
            hint="pass --containerd-root DIR or --containerd-config FILE",
        )
    resolved = Path(os.path.realpath(chosen))
    if not (resolved / METADATA_DIR).is_dir():
        raise RefusedError(
            f"refusing {resolved} ({root_source}): no {METADATA_DIR}/ here; not a containerd root",
            hint="pass --containerd-root DIR (containerd's 'root' in its config.toml)",
        )
    if not addr.startswith("/"):
        addr = addr.removeprefix("unix://")
    tool = ctr or ctr_beside(resolved) or shutil.which("ctr") or ""
    return ContainerdTarget(addr, addr_source, resolved, root_source, tool)


def _processes(named: Callable[[str], bool]) -> Iterator[tuple[Proc, str, list[str]]]:
    """(process, executable, arguments) of each running process whose executable's name
    passes ``named``; one that ends or cannot be read meanwhile is skipped."""
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            p = Proc(PROC, int(entry.name))
            exe = p.exe()
            if named(os.path.basename(exe)):
                yield p, exe, p.cmdline()[1:]
        except (*GONE, OSError):
            continue


def _containerds() -> Iterator[tuple[Proc, str, list[str]]]:
    """(process, executable, arguments) of each running containerd."""
    return _processes(lambda name: name == "containerd")


def other_dockerds(data_root: Path, address: str) -> tuple[str, ...]:
    """Each running dockerd that talks to the containerd at ``address`` but keeps another
    data root: its leases share namespace ``moby`` with ours and cannot be told apart,
    so none may be judged abandoned while one runs. Compared by the socket's and the
    root's device and inode, in each process's own mount namespace."""
    from dockergc.host.detect import DEFAULT_CONFIG as DOCKERD_CONFIG
    from dockergc.host.detect import _dockerd_spec

    try:
        sock, ours = os.stat(address), os.stat(data_root)
    except OSError:
        return ()
    found = []
    for p, exe, args in _processes(lambda name: "dockerd" in name):
        try:
            named = DOCKERD_FLAGS.last(args, "--containerd")
            if named and named[0]:
                socket = named[0]
            else:
                config = DOCKERD_FLAGS.last(args, "--config-file")
                raw = p.read_config(config[0] if config and config[0] else DOCKERD_CONFIG)
                doc = {} if raw is None else _json_object(raw)
                socket = str(doc.get("containerd") or "")
            if not socket:
                continue  # a dockerd that runs its own containerd
            st = os.stat(p.where(p.resolve(socket.removeprefix("unix://"))))
            if (st.st_dev, st.st_ino) != (sock.st_dev, sock.st_ino):
                continue
            root = os.stat(p.where(p.resolve(_dockerd_spec(p, args)[0])))
        except (*GONE, OSError):
            continue
        if (root.st_dev, root.st_ino) != (ours.st_dev, ours.st_ino):
            found.append(f"dockerd pid {p.pid} ({exe}) with another data root")
    return tuple(found)


def _json_object(raw: bytes) -> dict[str, object]:
    import json

    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def ctr_beside(root: Path) -> str | None:
    """The ``ctr`` installed beside the running containerd whose root is ``root``: the
    client of the same release as the server. None if no such containerd runs."""
    target = os.stat(root)
    for p, exe, args in _containerds():
        try:
            st = os.stat(p.where(p.resolve(_containerd_spec(p, args)[0])))
        except (*GONE, OSError):
            continue
        tool = os.path.join(os.path.dirname(exe), "ctr")
        same = (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)
        real = os.path.realpath(tool)  # what is run: a link may not be swapped after
        if same and _runs_as_root(p.pid) and trusted_executable(real):
            return real
    return None


def _runs_as_root(pid: int) -> bool:
    try:
        return os.stat(f"{PROC}/{pid}").st_uid == 0
    except OSError:
        return False


def trusted_executable(path: str) -> bool:
    """Would running ``path`` as root run only what root put there? Any user can start a
    process named ``containerd`` whose command line names the real root: the ``ctr``
    beside it is run only if it and every directory above it belong to root and no one
    else may write them. ``path`` is resolved: a symlink in it is refused."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
            return False
        here = path
        while True:
            st = os.lstat(here)
            if st.st_uid != 0 or st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
                return False
            parent = os.path.dirname(here)
            if parent == here:
                return True
            here = parent
    except OSError:
        return False


@dataclass(frozen=True)
class Serving:
    """The running containerd listening on a socket, as relocation must know it."""

    root: Path  # as seen here (through /proc/PID/root)
    how: str  # where the root is named
    config: str  # the config file it reads, in its own terms (it may not exist)
    config_here: Path  # the same, as seen here
    root_flag: bool  # --root on its command line: config.toml's root is not what it uses


def containerd_serving(address: str) -> Serving | None:
    """The running containerd listening on ``address`` (its --address, else grpc.address
    in its config, else the default), or None if none listens there."""
    try:
        want = os.stat(address.removeprefix("unix://"))
    except OSError:
        return None
    for p, _exe, args in _containerds():
        try:
            config = flag(args, "--config", "-c") or CONTAINERD_CONFIG
            raw = p.read_config(config)
            grpc = tomllib.loads(raw.decode()).get("grpc") if raw else None
            named = grpc.get("address") if isinstance(grpc, dict) else None
            sock = flag(args, "--address", "-a") or str(named or DEFAULT_ADDRESS)
            st = os.stat(p.where(p.resolve(sock)))
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                root, how = _containerd_spec(p, args)
                named_config = p.resolve(config)
                return Serving(
                    Path(p.where(p.resolve(root))),
                    f"{how} of containerd {p.pid} at {address}",
                    named_config.path,
                    Path(p.where(named_config)),
                    bool(flag(args, "--root")),
                )
        except GONE:  # gone, unreadable, or a config that is not TOML
            continue
    return None


def root_serving(address: str) -> tuple[Path, str] | None:
    """(root as seen here, where it is named) of the running containerd listening on
    ``address``; None if no running containerd listens there."""
    found = containerd_serving(address)
    return None if found is None else (found.root, found.how)


def root_uuid(root: Path) -> str | None:
    """The UUID containerd wrote under its root, or None if there is none to read."""
    try:
        fd = os.open(root / UUID_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 128).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return text or None
