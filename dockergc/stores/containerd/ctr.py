"""The one way dockergc changes containerd's records: its own ``ctr`` client.

Why ``ctr`` and not containerd's gRPC API from Python: ``ctr`` ships with every containerd
and speaks exactly its server's API version, so no protobuf definitions have to be vendored
and kept in step with containerd releases, and no compiled gRPC stack has to be installed
on every host of a fleet for a tool that runs as root. The price is reading its text
output; dockergc reads only what it must (ids, creation times, the server's UUID) and takes
every record's content from meta.db. Each call is one short command with a time limit.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

from dockergc.errors import DockerGCError, RefusedError
from dockergc.stores.containerd.locate import ContainerdTarget, root_uuid

TIMEOUT = 120.0  # a synchronous GC of a large store takes seconds, not minutes


class CtrError(DockerGCError):
    """ctr failed or could not be run; nothing was changed by the failed call."""

    kind = "containerd"


class _Transient(Exception):
    pass


@dataclass(frozen=True)
class LiveLease:
    """A lease as containerd reports it now."""

    id: str
    created: float | None
    labels: str  # as ctr prints them ("k=v,k=v" or "-"): compared, never parsed


def _run(target: ContainerdTarget, *args: str, timeout: float = TIMEOUT) -> str:
    if not target.ctr:
        raise CtrError(
            "no ctr found to talk to containerd",
            hint="install containerd's ctr or pass --ctr PATH (it ships with containerd)",
        )
    cmd = [target.ctr, "--address", target.address, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise CtrError(f"ctr {target.ctr} cannot be run: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CtrError(f"ctr {' '.join(args)} did not finish in {timeout:.0f}s") from exc
    if done.returncode != 0:
        err = [ln for ln in done.stderr.splitlines() if "level=warning" not in ln]
        raise CtrError(f"ctr {' '.join(args)} failed: {' '.join(err).strip() or done.returncode}")
    return done.stdout


@retry(
    retry=retry_if_exception_type(_Transient),
    stop=stop_after_attempt(3),
    wait=wait_fixed(1),
    reraise=True,
)
def server_uuid(target: ContainerdTarget) -> str:
    """The UUID of the containerd answering at the address (``ctr version``)."""
    try:
        out = _run(target, "version", timeout=30)
    except CtrError as exc:
        if "connection refused" in str(exc) or "no such file" in str(exc).lower():
            raise _Transient(str(exc)) from exc  # a containerd restarting: ask again
        raise
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "UUID" and value.strip():
            return value.strip()
    raise CtrError("ctr version did not report the server's UUID (containerd 1.5 or newer)")


def check_identity(target: ContainerdTarget) -> None:
    """Refuse unless the containerd at the address is the one whose root we read."""
    on_disk = root_uuid(target.root)
    try:
        live = server_uuid(target)
    except _Transient as exc:
        raise CtrError(f"containerd at {target.address} does not answer: {exc}") from exc
    if on_disk is None:
        raise RefusedError(
            f"refusing: {target.root} has no containerd UUID; cannot prove that the "
            f"containerd at {target.address} uses it"
        )
    if on_disk != live:
        raise RefusedError(
            f"refusing: the containerd at {target.address} ({target.address_source}) is "
            f"not the one rooted at {target.root} ({target.root_source}): UUID {live} there, "
            f"{on_disk} in the root",
            hint="pass the matching --containerd-address and --containerd-root",
        )


def _when(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def leases(target: ContainerdTarget, namespace: str) -> dict[str, LiveLease]:
    """Every lease of ``namespace`` as containerd sees it now."""
    out = _run(target, "--namespace", namespace, "leases", "ls")
    found: dict[str, LiveLease] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            found[parts[0]] = LiveLease(parts[0], _when(parts[1]), " ".join(parts[2:]))
    return found


def delete_lease(target: ContainerdTarget, namespace: str, lease_id: str) -> None:
    """Delete one lease and let containerd's GC free what only it held, before returning
    (``--sync``)."""
    _run(target, "--namespace", namespace, "leases", "rm", "--sync", lease_id)


def collect(target: ContainerdTarget, namespace: str, name: str) -> None:
    """Run containerd's GC now: ``ctr`` has no GC command, but deleting a lease with
    ``--sync`` runs it. The lease is made for that, holds nothing, and expires in a minute
    by itself should dockergc be killed in between."""
    _run(target, "--namespace", namespace, "leases", "create", "--id", name, "--expires", "1m")
    _run(target, "--namespace", namespace, "leases", "rm", "--sync", name)
