"""How each operation is carried out on disk (registered with ``implementation_for``)."""

from __future__ import annotations

from dockergc.execute import safefs
from dockergc.execute.ops import GroupOp, MoveOp, PartlyMoved, PurgeOp, implementation_for


@implementation_for(MoveOp)
def do_move(op: MoveOp, root: str) -> None:
    safefs.move(root, op.src, op.dst, expect=(op.dev, op.ino))


@implementation_for(GroupOp)
def do_group(op: GroupOp, root: str) -> None:
    """All of the group's moves, or none: a failure puts back what already moved (newest
    first); if even that fails, PartlyMoved says what stays in quarantine."""
    done: list[MoveOp] = []
    for move in op.moves:
        try:
            do_move(move, root)
        except (safefs.UnsafePath, OSError) as exc:
            for i, back in enumerate(reversed(done)):
                try:
                    do_move(back.reverse(), root)
                except (safefs.UnsafePath, OSError) as undo_exc:
                    stuck = tuple(done[: len(done) - i])
                    raise PartlyMoved(
                        f"{move.src}: {exc}; putting {back.dst} back failed: {undo_exc}", stuck
                    ) from exc
            raise
        done.append(move)


@implementation_for(PurgeOp)
def do_purge(op: PurgeOp, root: str) -> int:
    return safefs.remove_tree(root, op.path)
