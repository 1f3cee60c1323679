"""What every store family gives the planner, the executor and the CLI.

A family reads its store (read-only), marks what its own GC semantics reach, and plans
what nothing reaches (a ``dockergc.plan.Plan``: one JSON shape for every store). While a
plan is carried out the runner asks the family's ``RunChecks`` (``dockergc.execute.checks``)
about each action. The CLI picks a family once (``dockergc.api.open_store``, from
``dockergc.store.rootinfo.detect_store``) and never branches on the store again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dockergc.execute.checks import RunChecks
from dockergc.plan import Plan, Policy
from dockergc.store.mountinfo import MountTable


class Store(Protocol):
    name: str  # "overlay2" or "containerd": Plan.store
    root: Path  # dockerd's data root: the lock, the journal and `runs` live here

    def describe(self) -> str:
        """One line for reports: what is read and where."""

    def other_roots(self) -> tuple[Path, ...]:
        """Directories a run changes besides the data root (containerd's root)."""

    def inventory(self) -> dict[str, Any]:
        """What the store holds, from its records alone (``dockergc scan``)."""

    def plan(self, policy: Policy, mounts: MountTable | None = None) -> Plan:
        """Read, mark, measure what nothing reaches, and plan (a dry run's whole work)."""

    def checks(self, live: bool, mounts: MountTable | None, slack: float) -> RunChecks:
        """The re-checks and record ops the runner needs for this store's plans."""

    def refuse_unsafe(self, live: bool) -> None:
        """Raise RefusedError if changing the store now is unsafe (a daemon on it)."""
