"""Docker daemon control: the Engine API, and stopping/starting the daemon.

Which processes use a data root is found in ``dockergc.host.detect``; its public names
are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dockergc.errors import DockerGCError
from dockergc.host.detect import (
    DEFAULT_CONFIG,
    DEFAULT_ROOT,
    DaemonProcess,
    daemons_using,
    dockerd_root,
    processes_using,
)
from dockergc.store.fsread import parse_json

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_ROOT",
    "DaemonProcess",
    "daemons_using",
    "dockerd_root",
    "processes_using",
]

# -- control: the Engine API, and stopping/starting the daemon ---------------------------

DEFAULT_HOST = "unix:///var/run/docker.sock"
SYSTEMD_STOP = "systemctl stop docker.socket docker.service"
SYSTEMD_START = "systemctl start docker.socket docker.service"
# Moving containerd's root too (containerd image store): containerd stops after dockerd
# and starts before it.
SYSTEMD_STOP_WITH_CONTAINERD = "systemctl stop docker.socket docker.service containerd.service"
SYSTEMD_START_WITH_CONTAINERD = "systemctl start containerd.service docker.socket docker.service"


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
        return parse_json(body)
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
    image_ids: frozenset[str] = frozenset()  # "sha256:<hex>", as /images/json lists them
    container_ids: frozenset[str] = frozenset()  # every container, running or not


def engine_state(host: str) -> EngineState:
    info = _object(host, "/info")
    images = _listed(host, "/images/json?all=1")
    running = _listed(host, "/containers/json")
    every = _listed(host, "/containers/json?all=1")
    return EngineState(
        root=str(info.get("DockerRootDir", "")),
        images=len(images),
        containers=_count(info, "Containers", host),
        running=tuple(sorted(_name(c) for c in running)),
        image_ids=frozenset(str(i.get("Id", "")) for i in images),
        container_ids=frozenset(str(c.get("Id", "")) for c in every),
    )


def engine_root(host: str) -> str:
    """The data root the Engine API at ``host`` reports (one light call: /info)."""
    return str(_object(host, "/info").get("DockerRootDir", ""))


def _count(doc: dict[str, Any], key: str, host: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int):
        raise EngineUnavailable(f"{host}/info: {key} is not a number")
    return value


def _name(container: dict[str, Any]) -> str:
    names = container.get("Names")
    first = names[0] if isinstance(names, list) and names else "?"
    return str(first).lstrip("/")


# The Engine API's answers are read like the store's files: not what it writes is an
# EngineUnavailable (named, one line), never an AttributeError deep in a step.
def _object(host: str, path: str) -> dict[str, Any]:
    doc = engine_get(host, path)
    if not isinstance(doc, dict):
        raise EngineUnavailable(f"{host}{path}: not a JSON object")
    return doc


def _listed(host: str, path: str) -> list[dict[str, Any]]:
    doc = engine_get(host, path)
    if not isinstance(doc, list) or not all(isinstance(x, dict) for x in doc):
        raise EngineUnavailable(f"{host}{path}: not a list of objects")
    return doc


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


def run_start_command(cmd: str, timeout: float = 300) -> None:
    """Run an operator-given start command. ``systemctl start UNIT...`` is preceded by
    ``systemctl reset-failed UNIT...``: docker.service allows 3 starts a minute
    (StartLimitBurst=3), and counts a relocation's stop and start, its rollback's, and
    the operator's own restarts just before; a start the limit refuses would leave the
    daemon down, on the new root or, after a rollback, on the old one."""
    import shlex
    import subprocess

    argv = shlex.split(cmd)
    units = argv[2:]
    if (
        len(argv) > 2
        and os.path.basename(argv[0]) == "systemctl"
        and argv[1] == "start"
        and not any(u.startswith("-") for u in units)
    ):
        # best effort: the start itself says what is wrong
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([argv[0], "reset-failed", *units], capture_output=True, timeout=timeout)
    run_command(cmd, timeout)


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


def wait_until_none(users: Callable[[], list[str]], seconds: float, what: str) -> None:
    """``wait_until`` ``users()`` is empty; on a timeout, the message names what is left."""
    left: list[str] = []

    def none() -> bool:
        left[:] = users()
        return not left

    try:
        wait_until(none, seconds, what)
    except EngineUnavailable as exc:
        raise EngineUnavailable(f"{exc}; still using it: {'; '.join(left)}") from exc
