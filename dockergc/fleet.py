"""The fleet report: many hosts' saved plans (and refusals) added up. No typer here.

The Ansible dry-run playbook saves each host's ``dockergc plan --json`` output. That is
a plan, or, when dockergc refused or failed on the host, the JSON error object every
``--json`` command prints then (``{"error": {"type", "message", "exit_code"}, "host"}``).
``fleet_report`` turns them into one row per host and the fleet's totals; a file that
is neither is named, skipped and counted in ``bad_files``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dockergc.errors import EXIT_REFUSED, PlanFileError
from dockergc.plan import Plan
from dockergc.store.fsread import parse_json


def load_plan_file(path: Path) -> Plan:
    """A saved plan; any problem is a PlanFileError naming the file and the field."""
    return _plan_of(path, _read(path))


def _read(path: Path) -> object:
    try:
        return parse_json(path.read_bytes())
    except OSError as exc:
        raise PlanFileError(f"cannot read plan {path}: {exc.strerror}") from exc
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError, too deep
        raise PlanFileError(f"{path} is not JSON: {exc}") from exc


def _plan_of(path: Path, doc: object) -> Plan:
    try:
        return Plan.from_dict(doc)  # type: ignore[arg-type]
    except PlanFileError as exc:
        raise PlanFileError(f"{path} is not a dockergc plan: {exc}") from exc


@dataclass(frozen=True)
class HostRow:
    """One host of the fleet: what its plan would do, or why there is no plan."""

    host: str
    file: str
    status: str  # "ok", "frozen" (plan frozen: nothing removed), "refused", "error"
    actions: int = 0
    bytes: int = 0
    frozen: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    dockergc_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("frozen", "refusals", "notes"):
            d[key] = list(d[key])
        return d


@dataclass(frozen=True)
class BadFile:
    file: str
    problem: str


@dataclass(frozen=True)
class FleetReport:
    hosts: tuple[HostRow, ...]
    bad_files: tuple[BadFile, ...] = field(default=())

    def totals(self) -> dict[str, int]:
        return {
            "hosts": len(self.hosts),
            "actions": sum(h.actions for h in self.hosts),
            "bytes": sum(h.bytes for h in self.hosts),
            "frozen_hosts": sum(1 for h in self.hosts if h.status == "frozen"),
            "refused_hosts": sum(1 for h in self.hosts if h.status == "refused"),
            "error_hosts": sum(1 for h in self.hosts if h.status == "error"),
            "bad_files": len(self.bad_files),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "hosts": [h.as_dict() for h in self.hosts],
            "totals": self.totals(),
            "bad_files": [asdict(b) for b in self.bad_files],
        }


def host_row(path: Path) -> HostRow:
    """The row one saved file gives; a PlanFileError when it is neither a plan nor a
    dockergc error object."""
    doc = _read(path)
    host = _host_of(doc, path)
    version = doc.get("dockergc_version") if isinstance(doc, dict) else None
    version = version if isinstance(version, str) else None
    if isinstance(doc, dict) and "error" in doc and "actions" not in doc:
        return _error_row(path, doc["error"], host, version)
    plan = _plan_of(path, doc)
    return HostRow(
        host=host,
        file=str(path),
        status="frozen" if plan.frozen else "ok",
        actions=len(plan.actions),
        bytes=plan.bytes,
        frozen=plan.frozen,
        notes=plan.notes,
        dockergc_version=version,
    )


def _host_of(doc: object, path: Path) -> str:
    """The host the plan names (plans made before it did: the file's name, as the
    playbook saves plans/<inventory_hostname>.json)."""
    host = doc.get("host") if isinstance(doc, dict) else None
    return host if isinstance(host, str) and host else path.stem


def _error_row(path: Path, error: object, host: str, version: str | None) -> HostRow:
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        raise PlanFileError(f"{path}: error.message must be a string")
    refused = error.get("exit_code") == EXIT_REFUSED or error.get("type") == "refused"
    return HostRow(
        host=host,
        file=str(path),
        status="refused" if refused else "error",
        refusals=(error["message"],),
        dockergc_version=version,
    )


def fleet_report(paths: list[Path]) -> FleetReport:
    """Every file's row, in the order given; bad files named and skipped."""
    rows: list[HostRow] = []
    bad: list[BadFile] = []
    for path in paths:
        try:
            rows.append(host_row(path))
        except PlanFileError as exc:
            bad.append(BadFile(str(path), str(exc)))
    return FleetReport(tuple(rows), tuple(bad))
