"""How each operation is carried out on disk (registered with ``implementation_for``)."""

from __future__ import annotations

from dockergc.execute import safefs
from dockergc.execute.ops import MoveOp, PurgeOp, implementation_for


@implementation_for(MoveOp)
def do_move(op: MoveOp, root: str) -> None:
    safefs.move(root, op.src, op.dst, expect=(op.dev, op.ino))


@implementation_for(PurgeOp)
def do_purge(op: PurgeOp, root: str) -> int:
    return safefs.remove_tree(root, op.path)
