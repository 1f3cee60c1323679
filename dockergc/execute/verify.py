"""Re-check a planned action right before it is carried out: a saved plan can be stale."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from dockergc.execute import safefs
from dockergc.graph import Graph, mark
from dockergc.plan import Action, Candidate, candidates
from dockergc.store.mountinfo import MountTable, read_all_namespaces
from dockergc.store.snapshot import Snapshot, gather, read_pins

# Where a new reference to an existing dir can appear: a layer committed to layerdb, a
# mount record, an image, a container, a BuildKit record. Each such write changes one of
# these entries' times (bbolt files are rewritten in place). overlay2/ and l/ are left
# out: gc's own moves change them, and a new dir can only build on a registered layer.
REFERENCE_SOURCES = (
    "image/overlay2/repositories.json",
    "image/overlay2/imagedb/content/sha256",
    "image/overlay2/layerdb/sha256",
    "image/overlay2/layerdb/mounts",
    "containers",
    "buildkit",
    "buildkit/snapshots.db",
    "buildkit/metadata_v2.db",
    "buildkit/cache.db",
)
# Re-read at least this often anyway: a record being written when the graph was read
# (a mount dir whose mount-id file came later) changes no time listed above.
FACTS_MAX_AGE = 30.0


def fingerprint(root: Path) -> tuple[tuple[int, int, int, int], ...]:
    out = []
    for rel in REFERENCE_SOURCES:
        try:
            st = os.lstat(root / rel)
            out.append((st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
        except OSError:
            out.append((0, 0, 0, 0))
    return tuple(out)


@dataclass
class Facts:
    """What is true now: a fresh graph and its candidates."""

    snap: Snapshot
    graph: Graph
    candidates: dict[str, Candidate]  # by path
    sources: tuple[tuple[int, int, int, int], ...] = ()
    read_at: float = 0.0

    @classmethod
    def read(cls, root: Path, mounts: MountTable | None = None) -> Facts:
        sources, read_at = fingerprint(root), time.monotonic()
        snap = gather(root, mounts)
        graph = mark(snap)
        cands = {c.path: c for c in candidates(snap, graph)}
        return cls(snap, graph, cands, sources, read_at)

    def current(self, root: Path, mounts: MountTable | None = None) -> Facts:
        """These facts if nothing that can add a reference has changed since they were
        read (and they are recent), else a fresh read. Saves a full re-read per action
        on a large live root; mounts are re-read before every action regardless."""
        if time.monotonic() - self.read_at < FACTS_MAX_AGE and fingerprint(root) == self.sources:
            return self
        return Facts.read(root, mounts)


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
