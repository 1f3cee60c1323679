"""The containerd family's re-checks while a plan is carried out, and its record ops.

Before each action the store is read again and planned again with the plan's own policy
(the grace period, the excludes): an action is carried out only if a fresh plan still
holds it as it was planned — a lease with the same id and creation time, a dir with the
same identity. A lease is also checked in containerd's live view (``ctr leases ls``), and
the containerd at the address must be the one whose root was read (its UUID). A running
dockerd that appears mid-run stops every offline step. The renames (orphan snapshot dirs,
ingests, a gone container's dirs) are re-checked for mounts in every namespace and for
open files, as the overlay2 family's are.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from dockergc.errors import DockerGCError, RefusedError
from dockergc.execute.checks import Roots
from dockergc.execute.journal import Journal
from dockergc.execute.ops import RecordOp
from dockergc.execute.verify import _unchanged, fs_now, held_open, mounted_under
from dockergc.measure import measure_all
from dockergc.plan import RECORD_KINDS, Action, Plan, Policy
from dockergc.store.mountinfo import MountTable
from dockergc.stores.containerd import ctr
from dockergc.stores.containerd.candidates import ingest_dir, ingest_dir_name, snapshot_dir
from dockergc.stores.containerd.clock import stepped_since_last_run
from dockergc.stores.containerd.gcmirror import mark
from dockergc.stores.containerd.records import CONTENT_DIR, OVERLAYFS, CtdFacts, Lease

if TYPE_CHECKING:
    from dockergc.stores.containerd.family import ContainerdStore


class ContainerdChecks:
    def __init__(
        self, store: ContainerdStore, live: bool, mounts: MountTable | None, slack: float
    ) -> None:
        self.store = store
        self.live = live
        self.mounts = mounts
        self.slack = slack
        self.roots = Roots(store.root, {"containerd": store.target.root})
        self.policy = Policy()
        self.fresh: dict[str, Action] = {}
        self.identity: str | None = None  # why containerd may not be changed, if so
        self.started = 0.0
        self.facts: CtdFacts
        self.frozen: tuple[str, ...] = ()
        self.daemon: str | None = None
        self.clock: str | None = None  # --live: why lease times cannot be trusted now

    def accepts(self, plan: Plan) -> None:
        if plan.store != "containerd" or plan.containerd_root != str(self.store.target.root):
            raise RefusedError(
                f"the plan is for store {plan.store} at {plan.containerd_root or plan.root}, "
                f"not the containerd root {self.store.target.root}"
            )

    def begin(self, journal: Journal, plan: Plan) -> None:
        self.accepts(plan)
        self.policy = Policy(min_age=plan.min_age_seconds, excludes=plan.excludes)
        if self.live:  # the filesystem's clock, whatever the process clock says
            self.started = fs_now(journal.dir)
            self.clock = stepped_since_last_run(self.store.root)
        try:
            ctr.check_identity(self.store.target)
        except DockerGCError as exc:
            self.identity = str(exc)
        self._replan()

    def _replan(self) -> None:
        from dockergc import api

        now = self.started or None
        policy = replace(self.policy, now=now) if now else replace(self.policy)
        self.facts = self.store.gather(self.mounts)
        fresh = self.store.plan_from(self.facts, policy)
        self.fresh = {a.id: a for a in fresh.actions}
        self.frozen = fresh.frozen
        self.daemon = None if self.live else api.daemon_on(self.store.root)

    def why_not(self, action: Action, moved: set[str], planned_at: float, n: int) -> str | None:
        if n > 1:
            self._replan()  # what the engine did meanwhile, and what this run already did
        if self.frozen:
            return f"the store is frozen now: {self.frozen[0]}"
        if self.daemon:
            return f"a daemon uses the data root now: {self.daemon}"
        if action.kind in RECORD_KINDS and self.identity:
            return self.identity
        now = self.fresh.get(action.id)
        if now is None:
            return "no longer a candidate in a fresh plan of the store"
        if (now.kind, now.path, now.base, now.dev, now.ino) != (
            action.kind,
            action.path,
            action.base,
            action.dev,
            action.ino,
        ):
            return "a fresh plan holds it differently (another entry by that name)"
        if action.kind == "stale-lease":
            return self._live_lease(action) or self._lease_differs(action, planned_at)
        if action.kind in RECORD_KINDS:
            return None
        home = self.roots.of(action.base)
        return (
            _unchanged(home, action.path, action.dev, action.ino, planned_at)
            or mounted_under(home, action.path, self.mounts)
            or held_open(home, action.path)
        )

    def _lease(self, path: str) -> Lease | None:
        _, namespace, lease_id = path.split("/", 2)
        return next(
            (x for x in self.facts.meta.leases if x.namespace == namespace and x.id == lease_id),
            None,
        )

    def _live_lease(self, action: Action) -> str | None:
        """--live: a lease of an operation is deleted only if it was made at least the
        grace period before the running dockerd started, and the clock was not stepped
        since the last run (dockergc.stores.containerd.clock)."""
        if not self.live:
            return None
        if self.clock:
            return self.clock
        lease = self._lease(action.path)
        started = self.facts.dockerd_started
        if lease is None or lease.created is None or started is None:
            return None  # no dockerd runs: the planner's own rules decide
        if lease.created > started - self.policy.min_age:
            return (
                "--live: made within the grace period before the running dockerd started; "
                "kept (a clock stepped during its run could make an in-flight lease look old)"
            )
        return None

    def _lease_differs(self, action: Action, planned_at: float) -> str | None:
        lease = self._lease(action.path)
        if lease is None or lease.created is None:
            return "the lease is gone from meta.db"
        if abs(lease.created - (planned_at - action.age_seconds)) > 2:
            return "the lease is not the one planned (created at another time)"
        namespace, lease_id = action.path.split("/")[1:3]
        try:
            live = ctr.leases(self.store.target, namespace)
        except DockerGCError as exc:
            return f"containerd cannot list leases now: {exc}"
        if lease_id not in live:
            return "containerd no longer has this lease"
        return None

    def after_move(self, action: Action) -> None:
        pass

    def record_op(self, action: Action) -> RecordOp | None:
        if action.kind == "stale-lease":
            _, namespace, lease_id = action.path.split("/", 2)
            lease = self._lease(action.path)
            holds: tuple[str, ...] = ()
            labels: tuple[tuple[str, str], ...] = ()
            created = None
            if lease is not None:
                holds = (
                    tuple(f"snapshot {s}/{k}" for s, k in lease.snapshots)
                    + tuple(f"blob {d}" for d in lease.content)
                    + tuple(f"ingest {r}" for r in lease.ingests)
                )
                labels = tuple(sorted(lease.labels.items()))
                created = lease.created
            return RecordOp("delete-lease", namespace, lease_id, created, labels, holds)
        if action.kind == "containerd-gc":
            namespace = action.path.split("/", 1)[1]
            return RecordOp("collect", namespace, f"dockergc-gc-{action.id}")
        return None

    def _held_paths(self, op: RecordOp) -> list[str]:
        """The dirs and files (under containerd's root) of what ``op`` may free: a lease's
        snapshots and blobs; for containerd's GC, everything nothing reaches."""
        if op.name == "delete-lease":
            held = [h.split(" ", 1) for h in op.holds]
            snaps = {tuple(v.split("/", 1)) for k, v in held if k == "snapshot"}
            blobs = {v for k, v in held if k == "blob"}
            ingests = {v for k, v in held if k == "ingest"}
        else:
            graph = mark(self.facts.meta, time.time())
            snaps = {(s, k) for (ns, s, k) in graph.unreached_snapshots(op.namespace)}
            blobs = {d for (ns, d) in graph.unreached_blobs(op.namespace)}
            ingests = {r for (ns, r) in graph.unreached_ingests(op.namespace)}
        names = {r.name: r for r in self.facts.meta.snapshots if r.namespace == op.namespace}
        dirs = {b.key: b.id for b in self.facts.backend.records}
        out = []
        for snapshotter, key in sorted(snaps):
            rec = next(
                (r for r in names.values() if r.snapshotter == snapshotter and r.key == key), None
            )
            if rec is not None and rec.name in dirs and snapshotter == OVERLAYFS:
                out.append(snapshot_dir(dirs[rec.name]))
        out += [f"{CONTENT_DIR}/blobs/{d.replace(':', '/', 1)}" for d in sorted(blobs)]
        # An unfinished upload's dir: content/local names it by the sha256 of the backend
        # reference its meta.db record keeps (of the client's own, if there is none).
        backend = {
            i.ref: i.backend_ref for i in self.facts.meta.ingests if i.namespace == op.namespace
        }
        out += [ingest_dir(ingest_dir_name(backend.get(r) or r)) for r in sorted(ingests)]
        return out

    def perform_record(self, op: RecordOp) -> int:
        """Delete through containerd, which runs its GC before answering (``--sync``);
        the bytes freed are those of the held dirs and files that are gone afterwards."""
        root = str(self.store.target.root)
        paths = self._held_paths(op)
        before = measure_all(root, paths)
        if op.name == "delete-lease":
            ctr.delete_lease(self.store.target, op.namespace, op.id)
        else:
            ctr.collect(self.store.target, op.namespace, op.id)
        gone = [p for p in paths if before.get(p) and not os.path.lexists(os.path.join(root, p))]
        return sum(u.bytes for p in gone if (u := before[p]) is not None)

    def settle_record(self, op: RecordOp) -> tuple[str, str]:
        if op.name == "collect":
            return "deleted", "settled after a crash: containerd's GC runs again on its own"
        try:
            live = ctr.leases(self.store.target, op.namespace)
        except DockerGCError as exc:
            return "unknown", f"settled after a crash: containerd cannot say ({exc})"
        if op.id in live:
            return "not-moved", "settled after a crash: the lease is still there"
        return "deleted", "settled after a crash: containerd no longer has the lease"
