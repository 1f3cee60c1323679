"""Docker daemon detection (psutil) and control (Engine API, stop/start commands).

dockerd names its root with --data-root (or the old -g/--graph), else in the
daemon.json named by --config-file, else /var/lib/docker. containerd matters when
its own --root lies inside the data root (dockerd's managed containerd does that).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dockergc.errors import DockerGCError

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


# -- control: the Engine API, and stopping/starting the daemon ---------------------------

DEFAULT_HOST = "unix:///var/run/docker.sock"
SYSTEMD_STOP = "systemctl stop docker.socket docker.service"
SYSTEMD_START = "systemctl start docker.socket docker.service"


class EngineUnavailable(DockerGCError):
    """The Engine API did not answer (or stopped answering): one line, exit 1."""


@contextmanager
def engine_errors(host: str) -> Iterator[None]:
    """Turn the SDK's transport and server errors (the daemon went away, answered 500)
    into EngineUnavailable; per-item API errors are handled where they are expected."""
    import docker.errors
    import requests

    try:
        yield
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise EngineUnavailable(f"{host}: the Docker daemon failed: {exc}") from exc


def engine_get(host: str, path: str, timeout: float = 10.0) -> Any:
    """GET ``path`` from the Engine API at ``host`` (unix:// only) and decode its JSON."""
    import http.client
    import socket

    if not host.startswith("unix://"):
        raise EngineUnavailable(f"{host}: only unix:// Docker hosts are supported")
    sock_path = host[len("unix://") :]

    class _Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(sock_path)

    conn = _Conn("localhost", timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise EngineUnavailable(f"{host}{path}: HTTP {resp.status}")
        return json.loads(body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise EngineUnavailable(f"{host}: {exc}") from exc
    finally:
        conn.close()


def engine_client(host: str, timeout: float = 120.0) -> Any:
    """A Docker SDK API client for ``host``; EngineUnavailable if it does not answer."""
    import docker
    import docker.errors

    try:
        client = docker.APIClient(base_url=host, version="auto", timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnavailable(f"{host}: the Docker daemon does not answer ({exc})") from exc
    return client


@dataclass(frozen=True)
class EngineState:
    root: str
    images: int
    containers: int
    running: tuple[str, ...]


def engine_state(host: str) -> EngineState:
    info = engine_get(host, "/info")
    running = engine_get(host, "/containers/json")
    return EngineState(
        root=str(info.get("DockerRootDir", "")),
        images=len(engine_get(host, "/images/json?all=1")),
        containers=int(info.get("Containers", 0)),
        running=tuple(sorted(str(c.get("Names", ["?"])[0]).lstrip("/") for c in running)),
    )


def run_command(cmd: str, timeout: float = 300) -> None:
    """Run an operator-given stop/start command; a failure is an EngineUnavailable."""
    import shlex
    import subprocess

    try:
        proc = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnavailable(f"{cmd!r} failed: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise EngineUnavailable(f"{cmd!r} exited {proc.returncode}: {detail[0]}")


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` with bounded exponential backoff (tenacity) for ``seconds``."""
    from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

    try:
        for attempt in Retrying(
            retry=retry_if_result(lambda ok: not ok),
            stop=stop_after_delay(seconds),
            wait=wait_exponential(multiplier=0.2, max=3),
        ):
            with attempt:
                ok = check()
            if not attempt.retry_state.outcome or not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(ok)
    except RetryError as exc:
        raise EngineUnavailable(f"timed out after {seconds:.0f}s waiting for {what}") from exc


def processes_using(root: Path) -> list[str]:
    """Daemons of this root, and any process whose cwd or open files lie under it."""
    target = os.path.realpath(root)
    users = [f"{d.name} (pid {d.pid})" for d in daemons_using(root)]
    for proc in psutil.process_iter(["pid", "name", "cwd"]):
        cwd = proc.info.get("cwd") or ""
        if cwd == target or cwd.startswith(target + "/"):
            users.append(f"{proc.info['name']} (pid {proc.info['pid']}, cwd)")
    return sorted(set(users))
