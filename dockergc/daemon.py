"""Is a Docker daemon using this data root? (psutil; the one place that asks the OS.)

dockerd names its root with --data-root (or the old -g/--graph), else in the
daemon.json named by --config-file, else /var/lib/docker. containerd matters when
its own --root lies inside the data root (dockerd's managed containerd does that).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

DEFAULT_ROOT = "/var/lib/docker"
DEFAULT_CONFIG = "/etc/docker/daemon.json"
DAEMON_NAMES = {"dockerd": "dockerd", "containerd": "containerd"}


@dataclass(frozen=True)
class DaemonProcess:
    pid: int
    name: str
    root: str  # the data root it uses, resolved


def _flag(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _config_root(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict):
        root = doc.get("data-root") or doc.get("graph")
        return root if isinstance(root, str) else None
    return None


def _containerd_config_root(path: str) -> str | None:
    import tomllib

    try:
        with open(path, "rb") as fh:
            root = tomllib.load(fh).get("root")
    except (OSError, ValueError):
        return None
    return root if isinstance(root, str) else None


def dockerd_root(args: list[str]) -> str:
    """The data root a dockerd command line uses."""
    explicit = _flag(args, "--data-root", "-g", "--graph")
    if explicit:
        return explicit
    config = _flag(args, "--config-file") or DEFAULT_CONFIG
    return _config_root(config) or DEFAULT_ROOT


def _resolve(path: str, cwd: str | None) -> str:
    if not os.path.isabs(path) and cwd:
        path = os.path.join(cwd, path)
    return os.path.realpath(path)


def daemons_using(root: Path) -> list[DaemonProcess]:
    """Every dockerd whose root is ``root`` and every containerd rooted inside it."""
    target = os.path.realpath(root)
    found: list[DaemonProcess] = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        info = proc.info
        name = info.get("name") or ""
        args = info.get("cmdline") or []
        exe = os.path.basename(args[0]) if args else name
        if exe not in DAEMON_NAMES and name not in DAEMON_NAMES:
            continue
        kind = DAEMON_NAMES.get(exe) or DAEMON_NAMES[name]
        if kind == "dockerd":
            used = _resolve(dockerd_root(args[1:]), info.get("cwd"))
            if used == target:
                found.append(DaemonProcess(info["pid"], kind, used))
        else:
            croot = _flag(args[1:], "--root") or _containerd_config_root(
                _flag(args[1:], "--config", "-c") or "/etc/containerd/config.toml"
            )
            if croot:
                used = _resolve(croot, info.get("cwd"))
                if used == target or used.startswith(target + "/"):
                    found.append(DaemonProcess(info["pid"], kind, used))
    return found
