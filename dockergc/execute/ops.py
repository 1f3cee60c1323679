"""Operations: the only things the executor does, each knowing its inverse.

Deleting is a move into the run's quarantine; its reverse is the move back. Purging
quarantine is the one irreversible operation, and says so. Rollback is the journal
replayed backwards through ``reverse()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dockergc.registry import Registry


class Irreversible(Exception):
    """The operation cannot be undone (purge)."""


@dataclass(frozen=True)
class MoveOp:
    """Rename ``src`` to ``dst`` (relative to the root); ``dev``/``ino`` pin the source."""

    src: str
    dst: str
    dev: int
    ino: int
    name: str = "move"

    def reverse(self) -> MoveOp:
        return MoveOp(src=self.dst, dst=self.src, dev=self.dev, ino=self.ino)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PurgeOp:
    """Remove a quarantined tree for good."""

    path: str
    name: str = "purge"

    def reverse(self) -> PurgeOp:
        raise Irreversible(f"{self.path} was purged; it cannot be restored")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Op = MoveOp | PurgeOp
OPS: dict[str, type[MoveOp] | type[PurgeOp]] = {"move": MoveOp, "purge": PurgeOp}


def op_from_dict(doc: dict[str, Any]) -> Op:
    kind = doc.get("name")
    factory = OPS.get(str(kind))
    if factory is None:
        raise ValueError(f"unknown operation {kind!r}")
    return factory(**doc)


OPERATIONS = Registry("gc operation")
implementation_for = OPERATIONS.implementation_for


def perform(root: str, op: Op) -> Any:
    """Carry out ``op`` under ``root`` (implementations: execute/impl.py)."""
    return OPERATIONS.perform(op, root)
