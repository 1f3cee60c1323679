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
    base: str = ""  # which root both paths are under: "" the data root (Plan.base)

    def reverse(self) -> MoveOp:
        return MoveOp(src=self.dst, dst=self.src, dev=self.dev, ino=self.ino, base=self.base)

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


@dataclass(frozen=True)
class GroupOp:
    """Moves that stand or fall together: a layerdb layer with its overlay2 dir and its
    short link. Carried out in order (the record first, so the daemon never loads a layer
    whose dir is gone), undone in reverse (the dir first, the record last)."""

    moves: tuple[MoveOp, ...]
    name: str = "group"

    def reverse(self) -> GroupOp:
        return GroupOp(tuple(m.reverse() for m in reversed(self.moves)))

    @property
    def src(self) -> str:
        return self.moves[0].src

    @property
    def dst(self) -> str:
        return self.moves[0].dst

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "moves": [m.as_dict() for m in self.moves]}


@dataclass(frozen=True)
class RecordOp:
    """A change to a store's records made through the store's own client (the containerd
    family: delete a lease, run containerd's GC). It cannot be undone: the journal keeps
    what the record was and what it held, and the dry run is the safeguard."""

    name: str  # "delete-lease" or "collect"
    namespace: str
    id: str
    created: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    holds: tuple[str, ...] = ()  # what it held, as "snapshot overlayfs/KEY" / "blob sha256:…"

    def reverse(self) -> RecordOp:
        raise Irreversible(f"{self.name} {self.namespace}/{self.id} cannot be undone")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = dict(self.labels)
        d["holds"] = list(self.holds)
        return d


RECORD_OPS = ("delete-lease", "collect")


class PartlyMoved(Exception):
    """A group failed midway and could not be put back: ``moved`` are in quarantine."""

    def __init__(self, message: str, moved: tuple[MoveOp, ...]) -> None:
        super().__init__(message)
        self.moved = moved


Op = MoveOp | PurgeOp | GroupOp | RecordOp
Change = MoveOp | GroupOp | RecordOp  # what a gc step does; its reverse is what rollback does


def moves_of(op: Change) -> tuple[MoveOp, ...]:
    """The renames a step made: none for a record op."""
    if isinstance(op, RecordOp):
        return ()
    return op.moves if isinstance(op, GroupOp) else (op,)


def change_from_dict(doc: dict[str, Any]) -> Change:
    """A step's operation as the journal recorded it."""
    if doc.get("name") == "group":
        return GroupOp(tuple(move_from_dict(m) for m in doc["moves"]))
    if doc.get("name") in RECORD_OPS:
        return RecordOp(
            name=str(doc["name"]),
            namespace=str(doc["namespace"]),
            id=str(doc["id"]),
            created=doc.get("created"),
            labels=tuple(sorted((str(k), str(v)) for k, v in dict(doc.get("labels", {})).items())),
            holds=tuple(str(h) for h in doc.get("holds", [])),
        )
    return move_from_dict(doc)


def move_from_dict(doc: dict[str, Any]) -> MoveOp:
    return MoveOp(**{k: v for k, v in doc.items() if k != "name"})


OPERATIONS = Registry("gc operation")
implementation_for = OPERATIONS.implementation_for


def perform(root: str, op: Op) -> Any:
    """Carry out ``op`` under ``root`` (implementations: execute/impl.py)."""
    return OPERATIONS.perform(op, root)
