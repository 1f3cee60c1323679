"""What the runner asks a store family before and while it carries out a plan.

The runner (journal, quarantine, settle, rollback, purge) is the same for every store;
what differs is where each action's path lives (``roots``), how an action is re-checked
against the store as it is now (``why_not``), and the changes that are not renames (a
containerd lease deleted through containerd). The overlay2 family's checks are the
graphdriver's own (``dockergc.execute.verify``); the containerd family's live in
``dockergc.stores.containerd.verify``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dockergc.execute.journal import Journal
from dockergc.execute.ops import RecordOp
from dockergc.plan import Action, Plan
from dockergc.store.mountinfo import MountTable


@dataclass(frozen=True)
class Roots:
    """The directories action paths are relative to, by ``Action.base``."""

    data: Path
    others: Mapping[str, Path] = field(default_factory=dict)

    def of(self, base: str) -> Path:
        if not base:
            return self.data
        try:
            return self.others[base]
        except KeyError:
            raise ValueError(f"no root is known for base {base!r}") from None

    def all(self) -> tuple[Path, ...]:
        return (self.data, *self.others.values())


class RunChecks(Protocol):
    roots: Roots

    def accepts(self, plan: Plan) -> None:
        """Raise a DockerGCError if ``plan`` is not this store's: before any run exists."""

    def begin(self, journal: Journal, plan: Plan) -> None:
        """Called once before the first action (a run, or a resumed one)."""

    def why_not(self, action: Action, moved: set[str], planned_at: float, n: int) -> str | None:
        """Why ``action`` must be kept now (re-checked against the store as it is)."""

    def after_move(self, action: Action) -> None:
        """The run itself just changed ``action``'s path."""

    def record_op(self, action: Action) -> RecordOp | None:
        """The record op that carries out ``action``; None for a rename into quarantine."""

    def perform_record(self, op: RecordOp) -> int:
        """Carry out a record op through the store's own client; the bytes it really
        freed (what it held that is gone from disk afterwards)."""

    def settle_record(self, op: RecordOp) -> tuple[str, str]:
        """After a crash: (outcome, reason) of an in-doubt record op, from the store."""


class Overlay2Checks:
    """The graphdriver family: every re-check of ``dockergc.execute.verify``."""

    def __init__(self, root: Path, live: bool, mounts: MountTable | None, slack: float) -> None:
        self.roots = Roots(root)
        self.root = root
        self.live = live
        self.mounts = mounts
        self.slack = slack
        self.facts: object = None
        self.watch: object = None

    def accepts(self, plan: Plan) -> None:
        from dockergc.errors import RefusedError

        if plan.store != "overlay2" or any(a.base for a in plan.actions):
            raise RefusedError(f"the plan is for the {plan.store} store, not overlay2")

    def begin(self, journal: Journal, plan: Plan) -> None:
        from dockergc.execute.verify import Facts, LiveWatch

        if self.live:  # the run's start on the filesystem's clock, and the grace period
            self.watch = LiveWatch.begin(self.root, journal.dir, plan.min_age_seconds, self.slack)
        self.facts = Facts.read(self.root, self.mounts)

    def why_not(self, action: Action, moved: set[str], planned_at: float, n: int) -> str | None:
        from dockergc.execute.verify import Facts, LiveWatch, why_not

        assert isinstance(self.facts, Facts)
        if self.live and n > 1:
            self.facts = self.facts.current(self.root, self.mounts)  # the daemon moved on
        watch = self.watch if isinstance(self.watch, LiveWatch) else None
        if action.base:
            return f"an overlay2 run has no root {action.base!r}"
        return why_not(self.root, action, self.facts, moved, planned_at, self.mounts, watch)

    def after_move(self, action: Action) -> None:
        from dockergc.execute.verify import LiveWatch

        if isinstance(self.watch, LiveWatch):
            self.watch.after_own_move(action.path)

    def record_op(self, action: Action) -> RecordOp | None:
        return None

    def perform_record(self, op: RecordOp) -> int:
        raise ValueError(f"an overlay2 run has no record op {op.name}")

    def settle_record(self, op: RecordOp) -> tuple[str, str]:
        return "not-moved", f"an overlay2 run has no record op {op.name}"
