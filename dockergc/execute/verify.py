"""Re-check a planned action right before it is carried out: a saved plan can be stale.

With ``--live`` the daemon runs alongside, and the grace period (measured on the process
clock when planning) is not enough on its own: a wrong clock or a tiny grace would let a
dir a pull, build or commit is writing look old. ``LiveWatch`` re-checks, right before
each move, what an in-flight operation can own, on the filesystem's own clock.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from dockergc.execute import safefs
from dockergc.graph import Graph, mark
from dockergc.host.detect import daemons_using, holders_under
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
    "image/overlay2/layerdb/tmp",
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
    watch: LiveWatch | None = None,
) -> str | None:
    """None if the action may go ahead now, else the reason to skip it."""
    if facts.graph.freeze:
        return "frozen: " + facts.graph.freeze[0]
    if action.depends_on and action.depends_on not in moved:
        return f"goes with {action.depends_on}, which was not removed in this run"
    cand = facts.candidates.get(action.path)
    if action.parts or action.after or (cand is not None and cand.parts):
        reason = _group_differs(action, cand, moved)
        if reason:
            return reason
    if action.kind == "unreferenced-layer":
        # The daemon loaded this layer at start and keeps it in memory: a pull of the
        # same layer would reuse it after its files had gone. Offline, one may have
        # started since the run began (socket activation, a restart policy): look again.
        if watch is not None:
            return "the running daemon holds this layer in memory: only an offline gc removes it"
        users = daemons_using(root)
        if users:
            return f"a daemon runs on the root now: {users[0].describe()}"
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
    idents = [(action.path, action.dev, action.ino)]
    idents += [(p.path, p.dev, p.ino) for p in action.parts]
    for path, dev, ino in idents:
        reason = _unchanged(root, path, dev, ino, planned_at)
        if reason:
            return reason if path == action.path else f"{path} {reason}"
    if watch is not None:
        reason = watch.in_flight(action)
        if reason:
            return reason
    for path in action.paths:
        reason = mounted_under(root, path, mounts) or (
            held_open(root, path) if watch is not None else None
        )
        if reason:
            return reason
    return None


def _group_differs(action: Action, cand: Candidate | None, moved: set[str]) -> str | None:
    """What the plan carries with an item (its parts, the children that must go first) is
    taken from a fresh graph, never from the plan file: a plan edited to add a path to an
    item's parts, or to drop a child, is refused."""
    if cand is None or cand.kind != action.kind:
        return None  # the same-candidate check below says why
    if tuple(p.path for p in action.parts) != cand.parts:
        return "its parts are not what a fresh graph groups with it"
    for child in cand.after:
        if child not in moved:
            return f"its child layer {child} was not removed in this run"
    return None


def _unchanged(root: Path, path: str, dev: int, ino: int, planned_at: float) -> str | None:
    """None if ``path`` is still the entry planned, untouched since; else what changed."""
    try:
        st = safefs.lstat_at(str(root), path)
    except (safefs.UnsafePath, OSError) as exc:
        return f"cannot be reached safely: {exc}"
    if st is None:
        return "vanished since planned"
    if (st.st_dev, st.st_ino) != (dev, ino):
        return "is no longer the entry that was planned (different inode)"
    if max(st.st_mtime, st.st_ctime) > planned_at + 1:
        return "changed since planned"
    if stat.S_ISDIR(st.st_mode):
        diff = safefs.lstat_at(str(root), path + "/diff")
        if diff is not None and max(diff.st_mtime, diff.st_ctime) > planned_at + 1:
            return "its diff/ changed since planned"
    return None


def mounted_under(root: Path, rel: str, mounts: MountTable | None = None) -> str | None:
    """Why ``rel`` (or anything below it) is in use by a mount right now, re-read from
    every mount namespace; None if nothing is."""
    pins, _ = read_pins(root, mounts or read_all_namespaces())
    absolute = f"{root}/{rel}"
    for path, why in pins.items():
        if path == absolute or path.startswith(absolute + "/"):
            return f"mounted now: {why}"
    return None


# A write racing the run's start can carry a filesystem time a little before the probe's
# (timestamps come from a coarse clock): anything changed this close to the start, or
# after it, counts as changed during the run.
LIVE_SLACK = 5.0
# What an in-flight layer registration, container create or build step produces.
IN_FLIGHT_KINDS = ("orphan-layer", "stale-init")
WRITE_SETS = "image/overlay2/layerdb/tmp"
PROBE = "clock"


def fs_now(state_dir: Path) -> float:
    """The filesystem's "now": write a probe file and read back the time the kernel
    stamped on it. File times come from the kernel's clock, whatever the process clock
    says (a skewed or faked clock, a clock moved by hand)."""
    fd = os.open(
        state_dir / PROBE,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return max(st.st_mtime, st.st_ctime)


def _newest(st: os.stat_result) -> float:
    return max(st.st_mtime, st.st_ctime)


def shallow_newest(root: Path, rel: str) -> float:
    """Newest mtime/ctime of ``rel``, its direct entries, and the direct entries of its
    ``diff/`` and ``work/``.

    Cheap, not complete, on purpose: a full walk per candidate would measure every
    candidate a second time (the planner already walked each one for its newest time,
    moments earlier in a ``gc`` run). A writer that starts on a dir creates its top-level
    entries first (``diff``, ``work``, ``link``, the first entries under ``diff/``), and
    every create changes its parent's mtime and ctime; a writer busy deeper down holds a
    file open there (``held_open``) and, when it is a layer registration, has a
    ``write-set`` in layerdb (``in_flight``). The three together cover what the walk would.
    """
    with safefs.open_parent(str(root), rel) as (pfd, name):
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        newest = _newest(st)
        if not stat.S_ISDIR(st.st_mode):
            return newest
        fd = safefs.open_dir_at(pfd, name)
    try:
        return max(newest, _entries_newest(fd, descend=("diff", "work")))
    finally:
        os.close(fd)


def _entries_newest(fd: int, descend: tuple[str, ...] = ()) -> float:
    newest = 0.0
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we looked: its parent's times say so
        newest = max(newest, _newest(st))
        if entry.name in descend and stat.S_ISDIR(st.st_mode):
            try:
                sub = safefs.open_dir_at(fd, entry.name)
            except (FileNotFoundError, safefs.UnsafePath):
                continue  # gone, or a mount point: the mount check keeps it
            try:
                newest = max(newest, _entries_newest(sub))
            finally:
                os.close(sub)
    return newest


def _ago(seconds: float) -> str:
    return f"{max(0, int(seconds))}s" if seconds < 120 else f"{int(seconds // 60)}m"


@dataclass
class LiveWatch:
    """Re-checks, right before each move of a ``--live`` run, for what an in-flight
    operation can own. Times are compared on the filesystem's clock: ``start`` is the
    time the kernel stamped on a probe file when the run (or its resume) began."""

    root: Path
    start: float  # the run's start, by the filesystem's clock
    grace: float  # the plan's grace period, re-applied on the filesystem's clock
    slack: float = LIVE_SLACK
    # The activity sources (REFERENCE_SOURCES) as of the last check, and those that had
    # already changed at the run's start (reported once, at the first check).
    seen: tuple[tuple[int, int, int, int], ...] = ()
    early: tuple[str, ...] = ()

    @classmethod
    def begin(
        cls, root: Path, state_dir: Path, grace: float, slack: float = LIVE_SLACK
    ) -> LiveWatch:
        watch = cls(root, fs_now(state_dir), grace, slack, fingerprint(root))
        cutoff = watch.start - slack
        watch.early = tuple(
            rel
            for rel, cur in zip(REFERENCE_SOURCES, watch.seen, strict=True)
            if cur != (0, 0, 0, 0) and max(cur[1], cur[2]) / 1e9 >= cutoff
        )
        return watch

    def after_own_move(self, rel: str) -> None:
        """gc's own move of ``rel`` changed its parent dir (a ``-removing`` entry leaving
        layerdb, a write-set leaving layerdb/tmp): that is not the daemon's activity."""
        parent = rel.rpartition("/")[0]
        if parent in REFERENCE_SOURCES:
            i = REFERENCE_SOURCES.index(parent)
            now = fingerprint(self.root)
            self.seen = (*self.seen[:i], now[i], *self.seen[i + 1 :])

    def in_flight(self, action: Action) -> str | None:
        """Why an in-flight operation may own ``action``'s path now; None if nothing says so."""
        try:
            newest = shallow_newest(self.root, action.path)
        except (safefs.UnsafePath, OSError) as exc:
            return f"cannot be checked for in-flight writes: {exc}"
        if newest >= self.start - self.slack:
            return "changed during this run (by the filesystem's clock)"
        if newest > self.start - self.grace:
            return (
                f"younger than the grace period by the filesystem's clock (changed "
                f"{_ago(self.start - newest)} before this run began; the process clock disagrees)"
            )
        if action.kind not in IN_FLIGHT_KINDS:
            return None
        return self._registration() or self._activity()

    def _registration(self) -> str | None:
        """A young ``layerdb/tmp/write-set-*`` is a layer being registered (a pull, load
        or build commit): its overlay2 dir exists, unreferenced, until the commit. Its
        dir's birth time is not readable here, so every orphan-layer and -init candidate
        is kept while any young write-set exists (young: changed within the grace
        period, or during this run, by the filesystem's clock)."""
        try:
            names = [n for n in os.listdir(self.root / WRITE_SETS) if n.startswith("write-set-")]
        except OSError:
            return None
        for name in sorted(names):
            try:
                newest = shallow_newest(self.root, f"{WRITE_SETS}/{name}")
            except (safefs.UnsafePath, OSError):
                continue
            if newest >= self.start - max(self.grace, self.slack):
                return (
                    f"a layer registration is in flight ({WRITE_SETS}/{name} changed "
                    f"{_ago(self.start - newest)} before this run began or during it)"
                )
        return None

    def _activity(self) -> str | None:
        """The daemon changed where references come from (layerdb, mount records, tags,
        containers, BuildKit's dbs) since the last check, not by our own move: a create,
        commit or build step is under way, and a dir it made may not be recorded yet."""
        now = fingerprint(self.root)
        changed = list(self.early) + [
            rel
            for rel, cur, old in zip(REFERENCE_SOURCES, now, self.seen, strict=True)
            if cur != old and rel not in self.early
        ]
        self.seen, self.early = now, ()
        if changed:
            return (
                f"the daemon is changing {', '.join(changed)} during this run "
                "(a build, commit or create in flight)"
            )
        return None


def held_open(root: Path, rel: str) -> str | None:
    """Which process has ``rel`` or anything under it as its cwd, its root or an open
    file now; None if none. Compared by identity in each process's own mount namespace
    (a bind alias of the root, a private namespace), one pass over /proc per call."""
    try:
        st = safefs.lstat_at(str(root), rel)
    except (safefs.UnsafePath, OSError) as exc:
        return f"cannot be checked for open files: {exc}"
    if st is None:
        return None  # gone: the move finds out and says so
    holder = next(holders_under((st.st_dev, st.st_ino)), None)
    return f"in use now: {holder.describe()}" if holder else None
