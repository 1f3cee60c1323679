"""Re-check a planned action right before it is carried out: a saved plan can be stale."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from dockergc.execute import safefs
from dockergc.graph import Graph, mark
from dockergc.plan import Action, Candidate, candidates
from dockergc.store.mountinfo import MountTable, read_all_namespaces
from dockergc.store.snapshot import Snapshot, gather, read_pins


@dataclass
class Facts:
    """What is true now: a fresh graph and its candidates."""

    snap: Snapshot
    graph: Graph
    candidates: dict[str, Candidate]  # by path

    @classmethod
    def read(cls, root: Path, mounts: MountTable | None = None) -> Facts:
        snap = gather(root, mounts)
        graph = mark(snap)
        return cls(snap, graph, {c.path: c for c in candidates(snap, graph)})


def why_not(
    root: Path,
    action: Action,
    facts: Facts,
    moved: set[str],
    planned_at: float,
    mounts: MountTable | None = None,
) -> str | None:
    """None if the action may go ahead now, else the reason to skip it."""
    if facts.graph.freeze:
        return "frozen: " + facts.graph.freeze[0]
    if action.depends_on and action.depends_on not in moved:
        return f"goes with {action.depends_on}, which was not removed in this run"
    cand = facts.candidates.get(action.path)
    # Once its dir is in quarantine, an orphan link is seen as dangling: the same verdict.
    same = cand is not None and (
        cand.kind == action.kind or (action.kind, cand.kind) == ("orphan-link", "dangling-link")
    )
    if not same:
        parts = action.path.split("/")
        live = (
            facts.graph.live.get(parts[1]) if parts[0] == "overlay2" and len(parts) == 2 else None
        )
        if live:
            return f"no longer unreferenced: {live}"
        return "no longer unreferenced (a fresh graph reaches it, or it is gone)"
    try:
        st = safefs.lstat_at(str(root), action.path)
    except (safefs.UnsafePath, OSError) as exc:
        return f"cannot be reached safely: {exc}"
    if st is None:
        return "vanished since planned"
    if (st.st_dev, st.st_ino) != (action.dev, action.ino):
        return "is no longer the entry that was planned (different inode)"
    if max(st.st_mtime, st.st_ctime) > planned_at + 1:
        return "changed since planned"
    if stat.S_ISDIR(st.st_mode):
        diff = safefs.lstat_at(str(root), action.path + "/diff")
        if diff is not None and max(diff.st_mtime, diff.st_ctime) > planned_at + 1:
            return "its diff/ changed since planned"
    return mounted_under(root, action.path, mounts)


def mounted_under(root: Path, rel: str, mounts: MountTable | None = None) -> str | None:
    """Why ``rel`` (or anything below it) is in use by a mount right now, re-read from
    every mount namespace; None if nothing is."""
    pins, _ = read_pins(root, mounts or read_all_namespaces())
    absolute = f"{root}/{rel}"
    for path, why in pins.items():
        if path == absolute or path.startswith(absolute + "/"):
            return f"mounted now: {why}"
    return None
