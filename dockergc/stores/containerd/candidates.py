"""Plan for the containerd image store: facts + measurements + policy -> Plan. Pure.

Acts in namespace ``moby`` only. A lease goes only when whatever made it is provably
gone; records nothing keeps go through containerd's own GC (one ``containerd-gc``
action); files go only when no record of containerd's names them. Leases understood
and in use (BuildKit's, live containers') are counted in one note; everything else is
kept with its reason, and conflicting records freeze the whole plan.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dockergc.durations import format_duration
from dockergc.measure import Usage
from dockergc.plan import (
    KIND_ORDER,
    PLAN_VERSION,
    YOUNG,
    Action,
    Kept,
    Plan,
    Policy,
    action_id,
)
from dockergc.stores.containerd.gcmirror import (
    CtdGraph,
    Exclusive,
    blob_namespaces,
    exclusive,
    lease_expired,
    lease_expiry,
    mark,
    short,
)
from dockergc.stores.containerd.records import (
    CONTENT_DIR,
    GC_EXPIRE,
    GC_FLAT,
    MOBY,
    MOBY_HISTORY,
    OVERLAYFS,
    SNAPSHOTTER_DIR,
    CtdFacts,
    Lease,
)

CTD = "containerd"  # Action.base of everything under containerd's root
BUILDKIT_TEMPORARY = "buildkit/lease.temporary"
PRUNE_IMAGES = "moby/prune.images"  # dockerd's pull/commit/save/legacy-build leases
LEASE = "lease"  # Kept.kind of a lease that stays
STALE_LEASE = "stale-lease"  # the action that deletes one
# The lease categories of Plan.notes' one summary line, in its order.
LIVE_FLAT = "BuildKit cache record(s) (gc.flat)"
LIVE_VARIANTS = "BuildKit -variants"
LIVE_VIEW = "BuildKit -view of the running dockerd"
LIVE_TEMPORARY = "BuildKit temporary of the running dockerd (deleted at its next start)"
LIVE_CONTAINER = "container lease(s)"
LIVE_ORDER = (LIVE_FLAT, LIVE_VARIANTS, LIVE_VIEW, LIVE_TEMPORARY, LIVE_CONTAINER)
UNREADABLE_METADB = "unreadable-metadb"
EVIDENCE_LINES = 20  # containerd-gc lists this many records, then "and N more"
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
_BUILDKIT_VARIANTS = re.compile(r"^([0-9a-z]{25})-variants$")  # identity.NewID() + suffix
_BAD_PATH_PART = re.compile(r"[/\x00-\x1f\x7f]")
UNLISTED = "*"  # DataRootContainers.unreadable: containers/ itself could not be listed


def snapshot_dir(dir_id: str) -> str:
    return f"{SNAPSHOTTER_DIR}/snapshots/{dir_id}"


def ingest_dir(name: str) -> str:
    return f"{CONTENT_DIR}/ingest/{name}"


def ingest_dir_name(ref: str) -> str:
    """content/local's ingestRoot: the dir is named by the sha256 of the reference."""
    return hashlib.sha256(ref.encode("utf-8", "surrogateescape")).hexdigest()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float) -> str:
    return format_duration(max(0.0, seconds))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return "no labels"
    return "labels " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _frozen_reason(frozen: list[str]) -> str:
    more = f" (+{len(frozen) - 1} more)" if len(frozen) > 1 else ""
    return f"frozen: {frozen[0]}{more}"


@dataclass(frozen=True)
class _Live:
    """Understood and legitimately in use: counted in one note, not listed."""

    category: str


@dataclass(frozen=True)
class _Keep:
    reason: str


@dataclass(frozen=True)
class _Stale:
    who: str  # what made it
    gone: str  # why that is provably gone


_Verdict = _Live | _Keep | _Stale


@dataclass
class _Planner:
    facts: CtdFacts
    usage: Mapping[str, Usage | None]
    policy: Policy
    graph: CtdGraph
    actions: list[Action] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    moby_snapshots: dict[tuple[str, str], str] = field(default_factory=dict)  # -> backend key
    backend: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # key -> (dir, size)
    lease_ids: set[str] = field(default_factory=set)  # every moby lease, expired or not
    drivers: Mapping[str, str | None] | None = None  # container id -> config's Driver

    def __post_init__(self) -> None:
        self.moby_snapshots = {
            (s.snapshotter, s.key): s.name for s in self.facts.meta.snapshots if s.namespace == MOBY
        }
        self.backend = {r.key: (r.id, r.size) for r in self.facts.backend.records}
        self.lease_ids = {x.id for x in self.facts.meta.leases if x.namespace == MOBY}

    # -- sizes --------------------------------------------------------------------------

    def snapshot_bytes(self, snapshotter: str, key: str) -> tuple[int, bool]:
        """Bytes of the dir behind a moby snapshot record, and whether they are known."""
        name = self.moby_snapshots.get((snapshotter, key))
        if name is None or snapshotter != OVERLAYFS:
            return 0, False
        found = self.backend.get(name)
        if found is None:
            return 0, False
        dir_id, recorded = found
        u = self.usage.get(snapshot_dir(dir_id))
        if u is not None and not u.errors:
            return u.bytes, True
        return (recorded, True) if recorded is not None else (0, False)

    def blob_bytes(self, digest: str, owners: Mapping[str, set[str]]) -> int:
        """Bytes freed with moby's record: none while another namespace records it."""
        if owners.get(digest, set()) - {MOBY}:
            return 0
        return self.facts.content.blobs.get(digest, 0)

    # -- checks -------------------------------------------------------------------------

    def pinned(self, base: str, path: str) -> str | None:
        root = self.facts.ctd_root if base == CTD else self.facts.data_root
        absolute = os.path.join(root, path)
        for pin, why in self.facts.pinned.items():
            if pin == absolute or pin.startswith(absolute + "/"):
                return why
        return None

    def dir_keep(self, base: str, path: str) -> str | None:
        """Why a dir candidate stays, or None: excluded, mounted, unmeasured, young."""
        pattern = self.policy.excluded(path)
        if pattern:
            return f"excluded by --exclude {pattern}"
        pin = self.pinned(base, path)
        if pin:
            return f"mounted: {pin}"
        u = self.usage.get(path)
        if u is None:
            return "vanished while measured" if path in self.usage else "not measured"
        if u.other_mounts:
            return f"contains another filesystem at {u.other_mounts[0]}"
        if u.errors:
            return f"could not be measured: {u.errors[0]}"
        age = self.policy.now - u.newest_change
        if age < self.policy.min_age:
            return (
                f"{YOUNG} ({_ago(age)} < {format_duration(self.policy.min_age)}): "
                "an in-flight pull, build or create may own it"
            )
        return None

    def offer_dir(
        self, kind: str, base: str, path: str, reason: str, evidence: Iterable[str]
    ) -> None:
        why = self.dir_keep(base, path)
        if why:
            self.kept.append(Kept(path, kind, why))
            return
        u = self.usage[path]
        assert u is not None  # dir_keep keeps a path without usage
        age = int(max(0.0, self.policy.now - u.newest_change))
        self.add(
            kind,
            base,
            path,
            u.bytes,
            age,
            reason,
            (*evidence, f"newest change {_ago(age)} ago"),
            u.dev,
            u.ino,
        )

    def add(
        self,
        kind: str,
        base: str,
        path: str,
        size: int,
        age: int,
        reason: str,
        evidence: tuple[str, ...],
        dev: int = 0,
        ino: int = 0,
    ) -> None:
        self.actions.append(
            Action(
                id=action_id(kind, f"{base}:{path}" if base else path),
                kind=kind,
                path=path,
                bytes=size,
                age_seconds=age,
                reason=reason,
                evidence=evidence,
                dev=dev,
                ino=ino,
                base=base,
            )
        )

    # -- leases -------------------------------------------------------------------------

    def classify(self, lease: Lease) -> _Verdict:
        """Live (a note category), Keep (a reason), or Stale (who made it, why gone)."""
        labels = lease.labels
        if BUILDKIT_TEMPORARY in labels:
            if set(labels) - {BUILDKIT_TEMPORARY, GC_EXPIRE, GC_FLAT}:
                return _Keep(f"not understood: {_labels(labels)}")
            view = lease.id.endswith("-view")
            who = (
                f"BuildKit, for a mounted cache record ({BUILDKIT_TEMPORARY}, -view)"
                if view
                else f"BuildKit, for one build step or resolve ({BUILDKIT_TEMPORARY})"
            )
            return self.operation(lease, who, LIVE_VIEW if view else LIVE_TEMPORARY)
        if GC_FLAT in labels:
            return _Live(LIVE_FLAT)
        valid, _ = lease_expiry(lease)
        if GC_EXPIRE in labels and not valid:
            return _Keep(
                f"not understood: {GC_EXPIRE}={labels[GC_EXPIRE]!r} is not an RFC 3339 time"
            )
        if GC_EXPIRE in labels:
            if set(labels) - {GC_EXPIRE, PRUNE_IMAGES}:
                return _Keep(f"not understood: {_labels(labels)}")
            who = (
                f"a dockerd pull, commit, save or legacy build ({PRUNE_IMAGES}, {GC_EXPIRE})"
                if labels.get(PRUNE_IMAGES) == "true"
                else f"a dockerd load or import ({GC_EXPIRE} only, no {PRUNE_IMAGES}: no "
                "docker prune removes it)"
            )
            return self.operation(lease, who, None)
        if labels:
            return _Keep(f"not understood: {_labels(labels)}")
        variants = _BUILDKIT_VARIANTS.match(lease.id)
        if variants:
            if variants.group(1) in self.lease_ids:
                return _Live(LIVE_VARIANTS)
            return _Keep(
                f"BuildKit's compression variants of cache record {variants.group(1)}, whose "
                "own lease does not exist: BuildKit deletes both together, not understood"
            )
        if _CONTAINER_ID.match(lease.id):
            return self.container_lease(lease)
        return _Keep(f"not understood: {_labels(labels)}")

    def operation(self, lease: Lease, who: str, live: str | None) -> _Verdict:
        """A lease made for one operation: it ends with the dockerd that ran it."""
        started = self.facts.dockerd_started
        if lease.created is None:
            return _Keep(f"made by {who}; creation time unknown")
        if started == 0.0:
            return _Keep(
                f"made by {who}; a dockerd runs on this store but when it started is not "
                "known: the operation may be in flight"
            )
        if started is not None and lease.created >= started:
            if live is not None:
                return _Live(live)
            return _Keep(
                f"made by {who} of the running dockerd (created {_when(lease.created)}, "
                f"dockerd started {_when(started)}): it may be in flight"
            )
        age = self.policy.now - lease.created
        if age < self.policy.min_age:
            return _Keep(
                f"made by {who}; {YOUNG} ({_ago(age)} < {format_duration(self.policy.min_age)})"
            )
        gone = (
            "no dockerd runs on this store, so no operation is in flight"
            if started is None
            else f"created before the running dockerd started ({_when(started)}): "
            "the operation ended with the daemon that ran it"
        )
        return _Stale(who, gone)

    def container_lease(self, lease: Lease) -> _Verdict:
        cid = lease.id
        dirs = self.facts.containers
        if cid in dirs.ids | dirs.unreadable | dirs.without_config:
            return _Live(LIVE_CONTAINER)
        if UNLISTED in dirs.unreadable:
            return _Keep(
                f"dockerd's lease of container {short(cid)}; the data root's containers/ "
                "cannot be listed, so whether that container exists is not known"
            )
        if any(c.id == cid for c in self.facts.meta.containers):
            return _Keep(f"dockerd's lease of container {short(cid)}, which containerd still has")
        if lease.created is None:
            return _Keep(f"dockerd's lease of container {short(cid)}; creation time unknown")
        age = self.policy.now - lease.created
        if age < self.policy.min_age:
            return _Keep(f"{YOUNG} ({_ago(age)} < {format_duration(self.policy.min_age)})")
        return _Stale(
            f"dockerd, for container {cid} (its snapshot and -init)",
            f"no containers/{cid} dir in the data root (with, without or with a bad "
            "config) and no meta.db container record with that id",
        )

    def leases(self) -> None:
        meta = self.facts.meta
        stale: dict[str, tuple[Lease, str, str]] = {}
        live: dict[str, int] = {}
        blockers = self.lease_blockers()
        for lease in sorted(meta.leases, key=lambda x: x.id):
            if lease.namespace != MOBY or lease_expired(lease, self.policy.now):
                continue  # expired ones: containerd-gc's evidence
            path = f"leases/{MOBY}/{lease.id}"
            verdict = self.classify(lease)
            if isinstance(verdict, _Live):
                live[verdict.category] = live.get(verdict.category, 0) + 1
                continue
            if isinstance(verdict, _Keep):
                self.kept.append(Kept(path, LEASE, verdict.reason))
                continue
            why = blockers or self.lease_path_problem(lease.id)
            pattern = self.policy.excluded(path)
            if pattern:
                why = f"excluded by --exclude {pattern}"
            if why:
                self.kept.append(Kept(path, LEASE, f"made by {verdict.who}; kept: {why}"))
                continue
            stale[lease.id] = (lease, verdict.who, verdict.gone)
        if live:
            counts = ", ".join(f"{live[c]} {c}" for c in LIVE_ORDER if c in live)
            self.notes.append(f"{MOBY} leases understood and in use: {counts}")
        holds = exclusive(meta, self.policy.now, MOBY, stale)
        owners = blob_namespaces(meta)
        for lease_id, (lease, who, gone) in stale.items():
            self.stale_lease(lease, who, gone, holds[lease_id], owners)

    def lease_blockers(self) -> str | None:
        if self.facts.shared_with:
            return (
                f"another dockerd uses this containerd ({'; '.join(self.facts.shared_with)}): "
                "its leases share namespace moby with this root's and cannot be told apart"
            )
        meta = self.facts.meta
        if MOBY in self.graph.unread:
            return self.graph.unread[MOBY]
        if meta.findings:
            f = meta.findings[0]
            return (
                f"meta.db has records that could not be read ({f.path}: {f.message}): what "
                "a lease alone holds, and whether its owner is gone, is not known"
            )
        return None

    @staticmethod
    def lease_path_problem(lease_id: str) -> str | None:
        if lease_id in ("", ".", "..") or _BAD_PATH_PART.search(lease_id):
            return f"lease id {lease_id!r} cannot name a plan path"
        return None

    def stale_lease(
        self, lease: Lease, who: str, gone: str, only: Exclusive, owners: Mapping[str, set[str]]
    ) -> None:
        assert lease.created is not None  # classify keeps a lease of unknown age
        snap_bytes, unknown = 0, 0
        for ss, key in only.snapshots:
            size, known = self.snapshot_bytes(ss, key)
            snap_bytes += size
            unknown += not known
        blob_bytes = sum(self.blob_bytes(d, owners) for d in only.blobs)
        age = int(max(0.0, self.policy.now - lease.created))
        evidence = [
            f"created {_when(lease.created)} ({_ago(age)} ago)",
            _labels(lease.labels),
            f"made by {who}",
            f"provably gone: {gone}",
            f"holds {len(lease.snapshots)} snapshot(s), {len(lease.content)} blob(s), "
            f"{len(lease.ingests)} ingest(s)",
            f"only it keeps {len(only.snapshots)} snapshot(s) ({snap_bytes:,} bytes"
            + (f", {unknown} of unknown size" if unknown else "")
            + f"), {len(only.blobs)} blob(s) ({blob_bytes:,} bytes), "
            f"{len(only.ingests)} ingest(s)",
        ]
        evidence += [f"shared with lease {other}: {n} record(s)" for other, n in only.shared_with]
        evidence += [f"keeps snapshot {ss}/{short(k)}" for ss, k in only.snapshots[:5]]
        self.add(
            "stale-lease",
            CTD,
            f"leases/{MOBY}/{lease.id}",
            snap_bytes + blob_bytes,
            age,
            "lease whose owner is provably gone: it alone keeps what it holds",
            tuple(evidence),
        )

    # -- containerd's own GC ------------------------------------------------------------

    def containerd_gc(self) -> None:
        g, path = self.graph, f"gc/{MOBY}"
        snaps, blobs = g.unreached_snapshots(MOBY), g.unreached_blobs(MOBY)
        ingests = g.unreached_ingests(MOBY)
        expired = [x for x in g.expired_leases if x.namespace == MOBY]
        images = [i for i in g.expired_images if i.namespace == MOBY]
        if not (snaps or blobs or ingests or expired or images):
            return
        if MOBY in g.unread:
            self.kept.append(Kept(path, "containerd-gc", g.unread[MOBY]))
            return
        pattern = self.policy.excluded(path)
        if pattern:
            self.kept.append(Kept(path, "containerd-gc", f"excluded by --exclude {pattern}"))
            return
        owners = blob_namespaces(self.facts.meta)
        lines: list[str] = []
        total = 0
        for x in expired:
            when = lease_expiry(x)[1]
            at = _when(when) if when is not None else "?"
            lines.append(
                f"lease {x.id} expired at {at} (held {len(x.snapshots)} snapshot(s), "
                f"{len(x.content)} blob(s))"
            )
        lines += [f"image {i.name}: its {GC_EXPIRE} has passed" for i in images]
        for _, ss, key in snaps:
            size, known = self.snapshot_bytes(ss, key)
            total += size
            lines.append(
                f"snapshot {ss}/{short(key)} ({f'{size:,} bytes' if known else 'size unknown'})"
                ": nothing keeps it"
            )
        for _, digest in blobs:
            size = self.blob_bytes(digest, owners)
            total += size
            also = sorted(owners.get(digest, set()) - {MOBY})
            stays = f"; its file stays: also recorded in {', '.join(also)}" if also else ""
            lines.append(f"blob {short(digest)} ({size:,} bytes): nothing keeps it{stays}")
        expire_at = {(i.namespace, i.ref): i.expire_at for i in self.facts.meta.ingests}
        for ns, ref in ingests:
            when = expire_at.get((ns, ref))
            state = (
                f"expired at {_when(when)}"
                if when is not None
                else "no expiry (made under a lease that is gone)"
            )
            lines.append(f"ingest {short(ref)}: {state}, no lease holds it")
        if len(lines) > EVIDENCE_LINES:
            lines = [*lines[:EVIDENCE_LINES], f"and {len(lines) - EVIDENCE_LINES} more"]
        self.add(
            "containerd-gc",
            CTD,
            path,
            total,
            0,
            "records containerd's GC frees at its next run: run it now",
            (
                f"{len(snaps)} snapshot(s), {len(blobs)} blob(s), {len(ingests)} ingest(s), "
                f"{len(expired)} expired lease(s), {len(images)} expired image(s)",
                *lines,
            ),
        )

    # -- files no record names ----------------------------------------------------------

    def orphan_snapshots(self) -> None:
        backend = self.facts.backend
        ids = {r.id for r in backend.records}
        block = None
        if backend.findings:
            f = backend.findings[0]
            block = f"the snapshotter's records are incomplete ({f.path}: {f.message})"
        elif not backend.records and backend.dirs:
            block = "the snapshotter's metadata.db lists no snapshot at all: not trusted"
        for name in sorted(backend.dirs):
            if name in ids:
                continue
            path = snapshot_dir(name)
            if block:
                self.kept.append(Kept(path, "orphan-snapshot", block))
                continue
            temp = name.startswith(("new-", "rm-"))
            self.offer_dir(
                "orphan-snapshot",
                CTD,
                path,
                "temp dir of an interrupted snapshot create or remove"
                if temp
                else "snapshot dir no snapshotter record names",
                (
                    f"no record in the overlayfs snapshotter's metadata.db has id {name} "
                    f"({len(backend.records)} records read)",
                    "containerd's snapshotter removes such dirs only during a collection "
                    "that follows a snapshot removal",
                ),
            )

    def unrecorded(self) -> None:
        """Records containerd's own GC removes: kept (and reported), never acted on."""
        backend = self.facts.backend
        meta_names = {s.name for s in self.facts.meta.snapshots if s.snapshotter == OVERLAYFS}
        for rec in sorted(backend.records, key=lambda r: r.id):
            if rec.key in meta_names:
                continue
            u = self.usage.get(snapshot_dir(rec.id))
            size = (
                f"{u.bytes:,} bytes"
                if u is not None
                else f"{rec.size:,} bytes recorded"
                if rec.size is not None
                else "size unknown"
            )
            self.kept.append(
                Kept(
                    snapshot_dir(rec.id),
                    "unrecorded-snapshot",
                    f"snapshotter record {rec.key} ({rec.kind}, {size}) has no meta.db record "
                    "in any namespace: containerd's snapshotter GC owns it and removes it at "
                    "its next snapshot collection",
                )
            )
        recorded = blob_namespaces(self.facts.meta)
        for digest, size_on_disk in sorted(self.facts.content.blobs.items()):
            if digest in recorded:
                continue
            algo, _, hexpart = digest.partition(":")
            self.kept.append(
                Kept(
                    f"{CONTENT_DIR}/blobs/{algo}/{hexpart}",
                    "unrecorded-blob",
                    f"blob {digest} ({size_on_disk:,} bytes) has no meta.db record in any "
                    "namespace: containerd's content GC owns it and removes it at its next run",
                )
            )

    def stale_ingests(self) -> None:
        """An ingest dir a record names goes with that record (containerd's content
        collection aborts ingests no record names); only unnamed dirs are acted on."""
        now = self.policy.now
        held: dict[str, str] = {}
        by_ref = {(i.namespace, i.ref): i for i in self.facts.meta.ingests}
        leased: dict[tuple[str, str], Lease] = {}
        for lease in sorted(self.facts.meta.leases, key=lambda x: (x.namespace, x.id)):
            if not lease_expired(lease, now):
                for ref in lease.ingests:
                    leased.setdefault((lease.namespace, ref), lease)
        after = "containerd's GC then removes the record and its content collection this dir"
        for ing in sorted(self.facts.meta.ingests, key=lambda i: (i.namespace, i.ref)):
            rec = f"ingest record {ing.namespace}/{ing.ref}"
            holder = leased.get((ing.namespace, ing.ref))
            if ing.expire_at is None:
                state = "no expiry: made under a lease"
            else:
                verb = "expired" if now > ing.expire_at else "expires"
                state = f"{verb} {_when(ing.expire_at)}"
            if holder is not None:
                why = (
                    f"held by lease {holder.namespace}/{holder.id} ({rec}, {state}): freed "
                    f"when that lease is deleted or expires; {after}"
                )
            elif ing.expire_at is not None and not now > ing.expire_at:
                why = (
                    f"held by {rec} ({state}): a GC root until then; containerd's first GC "
                    "after that removes the record and its content collection this dir"
                )
            else:
                why = (
                    f"named by {rec} ({state}), which no lease holds: not a GC root "
                    "(gc.go scanRoots roots an ingest only while its expireat is ahead); "
                    f"containerd's GC removes the record at its next run (gc/{ing.namespace}) "
                    "and its content collection then this dir"
                )
            for ref in (ing.backend_ref, ing.ref):
                held.setdefault(ingest_dir_name(ref), why)
        for (ns, ref), lease in leased.items():
            if (ns, ref) not in by_ref:  # a lease naming an ingest no record has
                why = f"held by lease {ns}/{lease.id}: freed when that lease is deleted or expires"
                held.setdefault(ingest_dir_name(ref), why)
        for name in sorted(self.facts.content.ingests):
            path = ingest_dir(name)
            if name in held:
                self.kept.append(Kept(path, "stale-ingest", held[name]))
                continue
            self.offer_dir(
                "stale-ingest",
                CTD,
                path,
                "unfinished upload no ingest record or lease names",
                (
                    f"no ingest record's reference hashes to {short(name)}",
                    "no unexpired lease holds an ingest that does",
                ),
            )

    def data_root(self) -> None:
        gone, keep, other = gone_containers(self.facts, self.drivers)
        dirs = self.facts.containers
        recorded = {c.id for c in self.facts.meta.containers}
        live = (dirs.ids | dirs.unreadable) - set(gone)
        for cid in sorted(dirs.rootfs - live):
            path = f"rootfs/overlayfs/{cid}"
            if UNLISTED in dirs.unreadable:
                why = "the data root's containers/ cannot be listed: whose dir this is is not known"
                self.kept.append(Kept(path, "orphan-rootfs", why))
                continue
            if cid in recorded:
                self.kept.append(
                    Kept(path, "orphan-rootfs", "containerd still has a container with this id")
                )
                continue
            if cid in gone:
                why = f"containers/{cid} is itself a gone container ({gone[cid][0]})"
            elif cid in dirs.without_config:
                why = f"containers/{cid} has no config.v2.json"
            else:
                why = f"no containers/{cid} dir"
            self.offer_dir(
                "orphan-rootfs",
                "",
                path,
                "mount point of a container dockerd no longer has",
                (why, "no meta.db container record with that id"),
            )
        for cid, why in sorted(keep.items()):
            self.kept.append(Kept(f"containers/{cid}", "gone-container", why))
        for cid, (reason, evidence) in sorted(gone.items()):
            self.offer_dir("gone-container", "", f"containers/{cid}", reason, evidence)
        if other:
            by_driver: dict[str, int] = {}
            for driver in other.values():
                by_driver[driver] = by_driver.get(driver, 0) + 1
            counts = ", ".join(f"{n} of {d}" for d, n in sorted(by_driver.items()))
            self.notes.append(
                f"containers of another storage driver ({counts}): dockerd skips them while "
                "it runs on the containerd store and loads them again on that driver; never "
                "acted on"
            )

    # -- namespaces ---------------------------------------------------------------------

    def namespace_notes(self) -> None:
        meta = self.facts.meta
        names = set(meta.namespaces)
        groups: dict[str, list[tuple[str, ...]]] = {
            "image(s)": [(i.namespace,) for i in meta.images],
            "container(s)": [(c.namespace,) for c in meta.containers],
            "snapshot(s)": [(s.namespace,) for s in meta.snapshots],
            "blob(s)": [(b.namespace,) for b in meta.blobs],
            "lease(s)": [(x.namespace,) for x in meta.leases],
            "ingest(s)": [(i.namespace,) for i in meta.ingests],
        }
        for items in groups.values():
            names |= {ns for (ns,) in items}
        for ns in sorted(names - {MOBY}):
            counts = ", ".join(
                f"{sum(1 for (n,) in items if n == ns)} {what}" for what, items in groups.items()
            )
            why = (
                "BuildKit's build history, kept whole"
                if ns == MOBY_HISTORY
                else "not dockerd's: dockergc acts on namespace moby only"
            )
            self.notes.append(f"namespace {ns}: {counts}; never acted on ({why})")
        for ns, why in sorted(self.graph.unread.items()):
            self.notes.append(f"namespace {ns}: {why}")


def gone_containers(
    facts: CtdFacts, drivers: Mapping[str, str | None] | None
) -> tuple[dict[str, tuple[str, tuple[str, ...]]], dict[str, str], dict[str, str]]:
    """containers/<id> dirs dockerd can never load again: {id: (reason, evidence)}; those
    that look so but stay {id: why}; and containers of another storage driver {id: driver}.

    (a) no config.v2.json; (b) a container of this store (config Driver overlayfs) whose
    lease (id = container id), snapshots <id> and <id>-init and containerd record are all
    gone: dockerd's restore fails "failed to load container mount" and skips it at every
    start (seen after a SIGKILL during ``docker rm -f``). Age and mounts: ``offer_dir``."""
    dirs = facts.containers
    meta = facts.meta
    recorded = {c.id for c in meta.containers}
    # Any namespace: a dockerd run with --containerd-namespace keeps its containers'
    # leases and snapshots there, and such a container is not lost.
    leases = {x.id for x in meta.leases}
    snaps = {s.key for s in meta.snapshots}
    gone: dict[str, tuple[str, tuple[str, ...]]] = {}
    keep: dict[str, str] = {}
    other: dict[str, str] = {}
    for cid in sorted(dirs.without_config):
        if cid in recorded:
            keep[cid] = "containerd still has a container with this id"
            continue
        gone[cid] = (
            "container dir without config.v2.json: dockerd cannot load it",
            (
                f"(a) containers/{cid}/config.v2.json does not exist",
                "no meta.db container record with that id",
            ),
        )
    for cid in sorted(dirs.ids - dirs.without_config):
        if cid in recorded or cid in leases or cid in snaps or f"{cid}-init" in snaps:
            continue
        driver = drivers.get(cid) if drivers is not None else None
        if drivers is not None and driver is not None and driver != OVERLAYFS:
            other[cid] = driver
            continue
        if driver is None:
            keep[cid] = (
                "no lease, snapshot or containerd record of this container, but the storage "
                "driver its config.v2.json names is not known here: a container of another "
                "driver (e.g. overlay2, before the containerd store) has none either"
            )
            continue
        gone[cid] = (
            "container whose rw layer is gone: dockerd skips it at every start "
            '("failed to load container mount")',
            (
                f"(b) containers/{cid}/config.v2.json names storage driver {driver}",
                f"no {MOBY} lease with id {short(cid)}",
                f"no {MOBY} snapshot record {short(cid)} or {short(cid)}-init",
                "no meta.db container record with that id",
            ),
        )
    return gone, keep, other


def _backend_conflicts(facts: CtdFacts) -> list[str]:
    out: list[str] = []
    by_id: dict[str, str] = {}
    by_key: dict[str, str] = {}
    for rec in facts.backend.records:
        if rec.id in by_id:
            out.append(f"snapshotter records {by_id[rec.id]} and {rec.key} both claim dir {rec.id}")
        if rec.key in by_key:
            out.append(f"two snapshotter records for key {rec.key}")
        by_id.setdefault(rec.id, rec.key)
        by_key.setdefault(rec.key, rec.parent)
    meta = {(s.namespace, s.key): s for s in facts.meta.snapshots if s.snapshotter == OVERLAYFS}
    for s in meta.values():
        parent = meta.get((s.namespace, s.parent)) if s.parent else None
        if parent is None or s.name not in by_key or parent.name not in by_key:
            continue
        if by_key[s.name] != parent.name:
            out.append(
                f"meta.db snapshot {s.namespace}/{s.key} has parent {parent.name}, the "
                f"snapshotter's record {s.name} has parent {by_key[s.name] or '(none)'}"
            )
    return sorted(set(out))


def usage_paths(
    facts: CtdFacts, now: float, drivers: Mapping[str, str | None] | None = None
) -> tuple[list[str], list[str]]:
    """What ``plan_containerd`` reads usage of: (under containerd's root, under the data
    root). Only dirs a lease or nothing keeps, so the image store is not walked whole."""
    graph = mark(facts.meta, now)
    ids = {r.id for r in facts.backend.records}
    by_key = {r.key: r.id for r in facts.backend.records}
    meta_names = {s.name for s in facts.meta.snapshots if s.snapshotter == OVERLAYFS}
    ctd = [snapshot_dir(d) for d in facts.backend.dirs if d not in ids]
    ctd += [snapshot_dir(r.id) for r in facts.backend.records if r.key not in meta_names]
    for s in facts.meta.snapshots:
        reach = graph.snapshots[(s.namespace, s.snapshotter, s.key)]
        if s.namespace == MOBY and s.name in by_key and reach.by[0] in ("lease", "nothing"):
            ctd.append(snapshot_dir(by_key[s.name]))
    ctd += [ingest_dir(n) for n in facts.content.ingests]
    dirs = facts.containers
    gone, _, _ = gone_containers(facts, drivers)
    live = (dirs.ids | dirs.unreadable) - set(gone)
    data = [f"rootfs/overlayfs/{c}" for c in sorted(dirs.rootfs - live)]
    data += [f"containers/{c}" for c in sorted(gone)]
    return sorted(set(ctd)), sorted(set(data))


def plan_containerd(
    facts: CtdFacts,
    usage: Mapping[str, Usage | None],
    policy: Policy,
    drivers: Mapping[str, str | None] | None = None,
) -> Plan:
    """Decide every candidate of the containerd store: act, or keep with a reason.

    ``drivers``: each readable container config's ``Driver``; without it a container
    with no lease, snapshot or record is kept, never planned (another driver's looks so)."""
    meta = facts.meta
    graph = mark(meta, policy.now)
    p = _Planner(facts, usage, policy, graph, drivers=drivers)
    findings = [*facts.findings, *meta.findings, *facts.backend.findings, *facts.content.findings]
    p.kept += [Kept(f.path, f.kind, f.message) for f in findings]
    unreadable = [f for f in findings if f.kind == UNREADABLE_METADB]
    frozen = [f"meta.db could not be read: {f.message}" for f in unreadable]
    frozen += [*graph.freeze, *_backend_conflicts(facts)]
    p.namespace_notes()
    p.leases()
    p.containerd_gc()
    p.orphan_snapshots()
    if not unreadable:  # with no records read, everything would look unrecorded
        p.unrecorded()
    p.stale_ingests()
    p.data_root()
    actions = p.actions
    if frozen:
        why = _frozen_reason(frozen)
        p.kept += [Kept(a.path, LEASE if a.kind == STALE_LEASE else a.kind, why) for a in actions]
        actions = []
    actions.sort(key=lambda a: (KIND_ORDER[a.kind], a.path))
    return Plan(
        version=PLAN_VERSION,
        root=facts.data_root,
        created=datetime.fromtimestamp(policy.now, UTC).isoformat(timespec="seconds"),
        min_age_seconds=policy.min_age,
        excludes=policy.excludes,
        actions=tuple(actions),
        kept=tuple(sorted(p.kept, key=lambda k: (k.path, k.kind, k.reason))),
        frozen=tuple(frozen),
        notes=tuple(p.notes),
        store="containerd",
        containerd_root=facts.ctd_root,
    )
