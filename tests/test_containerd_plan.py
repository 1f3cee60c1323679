"""Table-driven cases for the containerd store's planner and its mirror of containerd's
GC, over constructed records: what is planned, what is kept and why, who keeps what."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from dockergc.measure import Usage
from dockergc.plan import KIND_ORDER, Plan, Policy, action_id
from dockergc.store.findings import Finding
from dockergc.stores.containerd.candidates import (
    LIVE_CONTAINER,
    LIVE_FLAT,
    LIVE_TEMPORARY,
    LIVE_VARIANTS,
    LIVE_VIEW,
    ingest_dir,
    ingest_dir_name,
    plan_containerd,
    snapshot_dir,
    usage_paths,
)
from dockergc.stores.containerd.gcmirror import exclusive, mark
from dockergc.stores.containerd.records import (
    GC_EXPIRE,
    GC_FLAT,
    GC_ROOT,
    MOBY,
    BackendSnapshot,
    Blob,
    Container,
    ContentStore,
    CtdFacts,
    DataRootContainers,
    Image,
    Ingest,
    Lease,
    MetaDB,
    SnapshotRecord,
    SnapshotterDB,
)

NOW = 1_800_000_000.0
HOUR = 3600.0
OLD = NOW - 48 * HOUR
STARTED = NOW - 24 * HOUR  # the running dockerd
FUTURE = "2030-01-01T00:00:00Z"
TEMP = "buildkit/lease.temporary"
PRUNE = "moby/prune.images"
BK_ID, BK_ID2 = (
    "k3x0c5a1v4pq9z8w7m2n6b5l3",
    "p0o9i8u7y6t5r4e3w2q1a2s3d",
)  # gc.expire ahead of NOW (2027)
PAST = "2026-01-01T00:00:00Z"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
CTD_ROOT = "/var/lib/containerd"
DATA_ROOT = "/var/lib/docker"


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def cid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


INDEX, MANIFEST, CONFIG, LAYER1, LAYER2 = (
    dg(n) for n in ("index", "manifest", "config", "layer1", "layer2")
)
CHAIN1, CHAIN2 = dg("chain1"), dg("chain2")
WEB = cid("web")  # a running container
BLOB_SIZES = {INDEX: 500, MANIFEST: 700, CONFIG: 1500, LAYER1: 10_000, LAYER2: 20_000}


def usage(size: int = 4096, age: float = 2 * HOUR, **kw: object) -> Usage:
    base = Usage(size, NOW - age, 1, 1, 1, (), ())
    return replace(base, **kw)  # type: ignore[arg-type]


@dataclass
class W:
    """A healthy moby namespace: image busybox:1 (index -> manifest -> config -> chain of
    two snapshots) and a running container WEB with its lease, snapshot and -init."""

    namespaces: list[str] = field(default_factory=lambda: [MOBY])
    images: list[Image] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    snaps: list[SnapshotRecord] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    ingests: list[Ingest] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    meta_findings: list[Finding] = field(default_factory=list)
    backend: list[BackendSnapshot] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    backend_findings: list[Finding] = field(default_factory=list)
    disk_blobs: dict[str, int] = field(default_factory=dict)
    ingest_dirs: list[str] = field(default_factory=list)
    ctr_ids: set[str] = field(default_factory=set)
    ctr_unreadable: set[str] = field(default_factory=set)
    ctr_without_config: set[str] = field(default_factory=set)
    rootfs: set[str] = field(default_factory=set)
    dockerd_started: float | None = STARTED
    pinned: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Usage | None] = field(default_factory=dict)
    expect: set[tuple[str, str]] = field(default_factory=set)
    keep: dict[str, str] = field(default_factory=dict)  # path -> part of the reason
    # the one note on understood, live leases: category -> count (no note when empty)
    live: dict[str, int] = field(default_factory=lambda: {LIVE_CONTAINER: 1})
    # each readable container config's Driver (ctr_ids default to overlayfs); None: unknown
    drivers: dict[str, str | None] | None = field(default_factory=dict)
    next_id: int = 1

    def blob(self, digest: str, size: int, ns: str = MOBY, **labels: str) -> None:
        self.blobs.append(Blob(ns, digest, size, dict(labels)))
        self.disk_blobs[digest] = size

    def snap(
        self,
        key: str,
        parent: str = "",
        ns: str = MOBY,
        size: int = 4096,
        labels: dict[str, str] | None = None,
    ) -> str:
        """A snapshot with its backend record and dir; returns the dir id."""
        n = str(self.next_id)
        self.next_id += 1
        name = f"{ns}/{n}/{key}"
        parent_name = next(
            (s.name for s in self.snaps if s.key == parent and s.namespace == ns), ""
        )
        self.snaps.append(SnapshotRecord(ns, "overlayfs", key, name, parent, dict(labels or {})))
        self.backend.append(BackendSnapshot(name, n, "committed", parent_name))
        self.dirs.append(n)
        self.usage[snapshot_dir(n)] = usage(size)
        return n

    def facts(self) -> CtdFacts:
        return CtdFacts(
            data_root=DATA_ROOT,
            ctd_root=CTD_ROOT,
            meta=MetaDB(
                tuple(self.namespaces),
                tuple(self.images),
                tuple(self.containers),
                tuple(self.snaps),
                tuple(self.blobs),
                tuple(self.ingests),
                tuple(self.leases),
                tuple(self.meta_findings),
            ),
            backend=SnapshotterDB(
                tuple(self.backend), tuple(self.dirs), tuple(self.backend_findings)
            ),
            content=ContentStore(dict(self.disk_blobs), tuple(self.ingest_dirs)),
            containers=DataRootContainers(
                frozenset(self.ctr_ids),
                frozenset(self.ctr_unreadable),
                frozenset(self.ctr_without_config),
                frozenset(self.rootfs),
            ),
            dockerd_started=self.dockerd_started,
            pinned=dict(self.pinned),
        )


def world() -> W:
    w = W()
    w.images.append(Image(MOBY, "busybox:1", INDEX, INDEX_MT, 500))
    w.blob(INDEX, 500, **{"containerd.io/gc.ref.content.m.0": MANIFEST})
    w.blob(
        MANIFEST,
        700,
        **{
            "containerd.io/gc.ref.content.config": CONFIG,
            "containerd.io/gc.ref.content.l.0": LAYER1,
            "containerd.io/gc.ref.content.l.1": LAYER2,
        },
    )
    w.blob(CONFIG, 1500, **{"containerd.io/gc.ref.snapshot.overlayfs": CHAIN2})
    w.blob(LAYER1, 10_000)
    w.blob(LAYER2, 20_000)
    w.snap(CHAIN1)
    w.snap(CHAIN2, CHAIN1)
    w.snap(f"{WEB}-init", CHAIN2, size=100)
    w.snap(WEB, f"{WEB}-init", size=5000)
    w.leases.append(Lease(MOBY, WEB, OLD, {}, (("overlayfs", WEB), ("overlayfs", f"{WEB}-init"))))
    w.ctr_ids.add(WEB)
    w.rootfs.add(WEB)
    w.usage[f"rootfs/overlayfs/{WEB}"] = usage()
    return w


def drivers_of(w: W) -> dict[str, str | None] | None:
    if w.drivers is None:
        return None
    return {**dict.fromkeys(w.ctr_ids, "overlayfs"), **w.drivers}


def plan_of(w: W, min_age: float = HOUR, excludes: tuple[str, ...] = ()) -> Plan:
    policy = Policy(min_age=min_age, excludes=excludes, now=NOW)
    return plan_containerd(w.facts(), w.usage, policy, drivers_of(w))


def lease_note(p: Plan) -> str | None:
    notes = [n for n in p.notes if n.startswith("moby leases understood and in use: ")]
    assert len(notes) <= 1
    return notes[0] if notes else None


def expected_note(live: dict[str, int]) -> str | None:
    order = (LIVE_FLAT, LIVE_VARIANTS, LIVE_VIEW, LIVE_TEMPORARY, LIVE_CONTAINER)
    counts = ", ".join(f"{live[c]} {c}" for c in order if live.get(c))
    return f"moby leases understood and in use: {counts}" if counts else None


def got(p: Plan) -> set[tuple[str, str]]:
    return {(a.kind, a.path) for a in p.actions}


def kept_reason(p: Plan, path: str) -> str:
    reasons = [k.reason for k in p.kept if k.path == path]
    assert reasons, f"{path} is neither acted on nor kept"
    return " | ".join(reasons)


def lease(w: W, lid: str, created: float | None = OLD, **kw: object) -> str:
    w.leases.append(Lease(MOBY, lid, created, **kw))  # type: ignore[arg-type]
    return f"leases/moby/{lid}"


# -- scenarios: each mutates a healthy world and says what is planned or kept -------------


def healthy(w: W) -> None:
    pass


def container_gone(w: W) -> None:
    w.ctr_ids.discard(WEB)
    w.rootfs.discard(WEB)
    w.live = {}
    w.expect.add(("stale-lease", f"leases/moby/{WEB}"))


def container_dir_unreadable(w: W) -> None:
    w.ctr_ids.discard(WEB)
    w.ctr_unreadable.add(WEB)  # its lease: live, in the note


def container_dir_without_config(w: W) -> None:
    w.ctr_ids.discard(WEB)
    w.ctr_without_config.add(WEB)
    w.usage[f"containers/{WEB}"] = usage()
    w.expect.add(("gone-container", f"containers/{WEB}"))
    w.expect.add(("orphan-rootfs", f"rootfs/overlayfs/{WEB}"))  # no live container


def container_in_containerd(w: W) -> None:
    w.ctr_ids.discard(WEB)
    w.containers.append(Container(MOBY, WEB, "busybox:1", "overlayfs", WEB))
    w.live = {}
    w.keep[f"leases/moby/{WEB}"] = "which containerd still has"
    w.keep[f"rootfs/overlayfs/{WEB}"] = "containerd still has a container"


def container_lease_young(w: W) -> None:
    w.ctr_ids.discard(WEB)
    w.rootfs.discard(WEB)
    w.live = {}
    w.leases[0] = replace(w.leases[0], created=NOW - 60)
    w.keep[f"leases/moby/{WEB}"] = "younger than the grace period"


def container_lease_no_created(w: W) -> None:
    w.ctr_ids.discard(WEB)
    w.rootfs.discard(WEB)
    w.live = {}
    w.leases[0] = replace(w.leases[0], created=None)
    w.keep[f"leases/moby/{WEB}"] = "creation time unknown"


GONE = cid("gone")  # containers/<id> with its config: lease and snapshots gone


def rw_layer_gone(w: W) -> None:
    """SIGKILL during docker rm -f: lease and snapshots gone, containers/<id> left."""
    for name in ("gone", "young", "mounted"):
        w.ctr_ids.add(cid(name))
        w.usage[f"containers/{cid(name)}"] = usage(age=10 if name == "young" else 2 * HOUR)
    w.pinned[f"{DATA_ROOT}/containers/{cid('mounted')}/shm"] = "shm mount"
    w.rootfs.add(GONE)
    w.usage[f"rootfs/overlayfs/{GONE}"] = usage()
    w.expect |= {
        ("gone-container", f"containers/{GONE}"),
        ("orphan-rootfs", f"rootfs/overlayfs/{GONE}"),
    }
    w.keep[f"containers/{cid('young')}"] = "younger than the grace period"
    w.keep[f"containers/{cid('mounted')}"] = "mounted: shm mount"


def rw_layer_still_there(w: W) -> None:
    """Each of lease, snapshot, -init snapshot, containerd record alone keeps it live."""
    ids = {n: cid(n) for n in ("lease", "snap", "init", "record", "overlay2")}
    for c in ids.values():
        w.ctr_ids.add(c)
        w.usage[f"containers/{c}"] = usage()
    lease(w, ids["lease"])
    w.snap(ids["snap"], CHAIN2)
    w.snap(f"{ids['init']}-init", CHAIN2)
    w.containers.append(Container(MOBY, ids["record"], "busybox:1", "", ""))
    w.drivers = {ids["overlay2"]: "overlay2"}  # a container of the graph driver store
    w.live = {LIVE_CONTAINER: 2}
    w.expect.add(("containerd-gc", "gc/moby"))  # the two snapshots no lease holds


def rw_layer_gone_driver_unknown(w: W) -> None:
    w.ctr_ids.add(GONE)
    w.usage[f"containers/{GONE}"] = usage()
    w.drivers = None
    w.keep[f"containers/{GONE}"] = "storage driver its config.v2.json names is not known"


def load_lease_of_earlier_dockerd(w: W) -> None:
    path = lease(w, "moby-load-1", content=(dg("half"),), labels={GC_EXPIRE: FUTURE})
    w.blob(dg("half"), 333)
    w.expect.add(("stale-lease", path))


def pull_lease_of_earlier_dockerd(w: W) -> None:
    path = lease(w, "moby-pull-1", labels={GC_EXPIRE: FUTURE, PRUNE: "true"})
    w.expect.add(("stale-lease", path))


def operation_lease_with_foreign_label(w: W) -> None:
    path = lease(w, "moby-pull-2", labels={GC_EXPIRE: FUTURE, "example.com/x": "1"})
    w.keep[path] = "not understood: labels containerd.io/gc.expire="


def load_lease_of_running_dockerd(w: W) -> None:
    path = lease(w, "moby-load-2", created=STARTED + 60, labels={GC_EXPIRE: FUTURE})
    w.keep[path] = "of the running dockerd"


def load_lease_no_dockerd(w: W) -> None:
    w.dockerd_started = None
    path = lease(w, "moby-load-3", created=NOW - 2 * HOUR, labels={GC_EXPIRE: FUTURE})
    w.expect.add(("stale-lease", path))


def load_lease_young(w: W) -> None:
    w.dockerd_started = None
    path = lease(w, "moby-load-4", created=NOW - 60, labels={GC_EXPIRE: FUTURE})
    w.keep[path] = "younger than the grace period"


def load_lease_unknown_age(w: W) -> None:
    path = lease(w, "moby-load-5", created=None, labels={GC_EXPIRE: FUTURE})
    w.keep[path] = "creation time unknown"


def load_lease_bad_expiry(w: W) -> None:
    path = lease(w, "moby-load-6", labels={GC_EXPIRE: "tomorrow"})
    w.keep[path] = "not understood"


def buildkit_temporary(w: W) -> None:
    path = lease(w, "bk-tmp", labels={TEMP: "2026-01-01", GC_EXPIRE: FUTURE})
    w.expect.add(("stale-lease", path))
    view = {TEMP: "x", GC_FLAT: "x"}
    w.expect.add(("stale-lease", lease(w, f"{BK_ID}-view", labels=view)))
    # of the running dockerd: BuildKit deletes them at its next start
    lease(w, "bk-tmp-now", created=STARTED + 1, labels={TEMP: "x", GC_EXPIRE: FUTURE})
    lease(w, "bk-tmp-now2", created=NOW - 5, labels={TEMP: "x"})
    lease(w, f"{BK_ID2}-view", created=STARTED + 1, labels=view)
    w.live = {LIVE_TEMPORARY: 2, LIVE_VIEW: 1, LIVE_CONTAINER: 1}


def buildkit_temporary_no_dockerd(w: W) -> None:
    w.dockerd_started = None
    w.expect.add(("stale-lease", lease(w, "bk-tmp-1", created=NOW - 2 * HOUR, labels={TEMP: "x"})))
    w.keep[lease(w, "bk-tmp-2", created=NOW - 60, labels={TEMP: "x"})] = "younger than"


def buildkit_temporary_start_unknown(w: W) -> None:
    w.dockerd_started = 0.0  # a dockerd runs; when it started is not known
    path = lease(w, "bk-tmp-3", labels={TEMP: "x"})
    w.keep[path] = "when it started is not known"


def buildkit_cache_flat(w: W) -> None:
    lease(w, "bk-cache", created=0.0, labels={GC_FLAT: "", GC_EXPIRE: FUTURE})
    lease(w, BK_ID, labels={GC_FLAT: "2026-01-01T00:00:00Z"})
    w.live = {LIVE_FLAT: 2, LIVE_CONTAINER: 1}


def buildkit_variants(w: W) -> None:
    lease(w, BK_ID, labels={GC_FLAT: "x"})
    lease(w, f"{BK_ID}-variants")
    orphan = lease(w, f"{BK_ID2}-variants")
    w.keep[orphan] = f"cache record {BK_ID2}, whose own lease does not exist"
    w.live = {LIVE_FLAT: 1, LIVE_VARIANTS: 1, LIVE_CONTAINER: 1}


def unknown_lease(w: W) -> None:
    path = lease(w, "someone-else", labels={"example.com/owner": "x"})
    w.keep[path] = "not understood: labels example.com/owner=x"


def expired_lease(w: W) -> None:
    w.snap(dg("loaded"), size=7777)
    lease(w, "moby-load-old", snapshots=(("overlayfs", dg("loaded")),), labels={GC_EXPIRE: PAST})
    w.expect.add(("containerd-gc", "gc/moby"))


def unreached_records(w: W) -> None:
    w.blob(dg("lost"), 100)
    w.snap(dg("lost-snap"))
    w.expect.add(("containerd-gc", "gc/moby"))


def expired_image(w: W) -> None:
    w.images.append(Image(MOBY, "tmp:1", dg("tmpcfg"), INDEX_MT, 1, {GC_EXPIRE: PAST}))
    w.expect.add(("containerd-gc", "gc/moby"))


def other_namespaces(w: W) -> None:
    w.namespaces += ["k8s.io", "moby_history"]
    w.blob(dg("k8s-orphan"), 5, ns="k8s.io")
    w.snap(dg("k8s-snap"), ns="k8s.io")
    lease(w, "x" * 64, created=OLD)
    w.leases[-1] = replace(w.leases[-1], namespace="k8s.io")
    w.images.append(Image("moby_history", "build-1", dg("hist"), INDEX_MT, 1))


def orphan_snapshot_dir(w: W) -> None:
    w.dirs += ["90", "new-1234", "rm-5"]
    for d in ("90", "new-1234", "rm-5"):
        w.usage[snapshot_dir(d)] = usage()
        w.expect.add(("orphan-snapshot", snapshot_dir(d)))


def orphan_snapshot_kept(w: W) -> None:
    cases = {"91": usage(age=60), "92": None, "93": usage(other_mounts=("x",))}
    cases["94"] = usage(errors=("x: Permission denied",))
    cases["95"] = usage()
    for d, u in cases.items():
        w.dirs.append(d)
        w.usage[snapshot_dir(d)] = u
    w.pinned[f"{CTD_ROOT}/{snapshot_dir('95')}/fs"] = "mounted at /x"
    w.keep[snapshot_dir("91")] = "younger than the grace period"
    w.keep[snapshot_dir("92")] = "vanished while measured"
    w.keep[snapshot_dir("93")] = "contains another filesystem"
    w.keep[snapshot_dir("94")] = "could not be measured"
    w.keep[snapshot_dir("95")] = "mounted: mounted at /x"


def snapshotter_db_unreliable(w: W) -> None:
    w.dirs.append("96")
    w.usage[snapshot_dir("96")] = usage()
    w.backend_findings.append(Finding("x/metadata.db", "bad", "bucket v1/snapshots unreadable"))
    w.keep[snapshot_dir("96")] = "records are incomplete"


def snapshotter_db_empty(w: W) -> None:
    w.backend.clear()
    w.keep[snapshot_dir("1")] = "lists no snapshot at all"


def unrecorded_backend_and_blob(w: W) -> None:
    w.backend.append(BackendSnapshot("moby/77/gone", "77", "committed", "", size=1234))
    w.dirs.append("77")
    w.disk_blobs[dg("stray")] = 4321
    w.keep[snapshot_dir("77")] = "1,234 bytes recorded) has no meta.db record"
    w.keep[f"io.containerd.content.v1.content/blobs/sha256/{dg('stray')[7:]}"] = "4,321 bytes"


def ingests(w: W) -> None:
    live = Ingest(MOBY, "pull-1", "moby-1-pull-1", NOW + HOUR)
    dead = Ingest(MOBY, "pull-2", "moby-2-pull-2", NOW - HOUR)
    leased = Ingest(MOBY, "pull-3", "moby-3-pull-3", None)
    unleased = Ingest(MOBY, "load-4", "moby-4-load-4", None)  # its lease is gone
    w.ingests += [live, dead, leased, unleased]
    lease(w, "pull-lease", created=NOW - 60, labels={GC_EXPIRE: FUTURE}, ingests=("pull-3",))
    w.keep["leases/moby/pull-lease"] = "of the running dockerd"
    names = {i.ref: ingest_dir_name(i.backend_ref) for i in (live, dead, leased, unleased)}
    names["stray"] = "ab" * 32
    names["young"] = "cd" * 32
    for ref, name in names.items():
        w.ingest_dirs.append(name)
        w.usage[ingest_dir(name)] = usage(age=60 if ref == "young" else 2 * HOUR)
    w.keep[ingest_dir(names["pull-1"])] = (
        "held by ingest record moby/pull-1 (expires 2027-01-15 09:00:00 UTC): a GC root until "
        "then; containerd's first GC after that removes the record and its content "
        "collection this dir"
    )
    w.keep[ingest_dir(names["pull-3"])] = (
        "held by lease moby/pull-lease (ingest record moby/pull-3, no expiry: made under a "
        "lease): freed when that lease is deleted or expires; containerd's GC then removes "
        "the record and its content collection this dir"
    )
    gone = (
        "which no lease holds: not a GC root (gc.go scanRoots roots an ingest only while its "
        "expireat is ahead); containerd's GC removes the record at its next run (gc/moby) and "
        "its content collection then this dir"
    )
    w.keep[ingest_dir(names["pull-2"])] = (
        f"named by ingest record moby/pull-2 (expired 2027-01-15 07:00:00 UTC), {gone}"
    )
    w.keep[ingest_dir(names["load-4"])] = (
        f"named by ingest record moby/load-4 (no expiry: made under a lease), {gone}"
    )
    w.keep[ingest_dir(names["young"])] = "younger than the grace period"
    w.expect |= {
        ("stale-ingest", ingest_dir(names["stray"])),
        ("containerd-gc", "gc/moby"),  # the expired and the no-expiry unleased records
    }


def rootfs_and_container_dirs(w: W) -> None:
    for name in ("a", "b", "c"):
        w.rootfs.add(cid(name))
        w.usage[f"rootfs/overlayfs/{cid(name)}"] = usage()
    w.pinned[f"{DATA_ROOT}/rootfs/overlayfs/{cid('b')}"] = "overlay mount"
    w.usage[f"rootfs/overlayfs/{cid('c')}"] = usage(age=10)
    w.ctr_without_config |= {cid("d"), cid("e")}
    w.usage[f"containers/{cid('d')}"] = usage()
    w.usage[f"containers/{cid('e')}"] = usage(age=10)
    w.expect |= {
        ("orphan-rootfs", f"rootfs/overlayfs/{cid('a')}"),
        ("gone-container", f"containers/{cid('d')}"),
    }
    w.keep[f"rootfs/overlayfs/{cid('b')}"] = "mounted: overlay mount"
    w.keep[f"rootfs/overlayfs/{cid('c')}"] = "younger"
    w.keep[f"containers/{cid('e')}"] = "younger"


def excluded(w: W) -> None:
    container_gone(w)
    orphan_snapshot_dir(w)
    w.expect = {
        ("orphan-snapshot", snapshot_dir("new-1234")),
        ("orphan-snapshot", snapshot_dir("rm-5")),
    }
    w.keep[f"leases/moby/{WEB}"] = "excluded by --exclude leases/moby/*"
    w.keep[snapshot_dir("90")] = "excluded by --exclude 90"


def malformed_label(w: W) -> None:
    w.blob(dg("lost"), 100, **{"containerd.io/gc.ref.content.l.0": "not-a-digest"})
    container_gone(w)
    w.expect.clear()
    w.keep[f"leases/moby/{WEB}"] = "is not a digest; everything in namespace moby is kept"


def dead_reference(w: W) -> None:
    # An index lists a manifest for another platform that was never pulled: normal.
    w.blobs[0] = replace(
        w.blobs[0],
        labels={**w.blobs[0].labels, "containerd.io/gc.ref.content.m.1": dg("arm64")},
    )


def duplicate_backend_key(w: W) -> None:
    w.snaps.append(SnapshotRecord(MOBY, "overlayfs", dg("twin"), w.snaps[0].name, ""))
    container_gone(w)
    w.expect.clear()
    w.keep[f"leases/moby/{WEB}"] = "frozen: meta.db snapshots"


def parent_cycle(w: W) -> None:
    w.snaps[0] = replace(w.snaps[0], parent=CHAIN2)
    container_gone(w)
    w.expect.clear()
    w.keep[f"leases/moby/{WEB}"] = "parent chain cycles"


def missing_parent(w: W) -> None:
    w.snaps[0] = replace(w.snaps[0], parent=dg("nowhere"))
    orphan_snapshot_dir(w)
    w.expect.clear()
    w.keep[snapshot_dir("90")] = "which has no record"


def two_records_one_dir(w: W) -> None:
    w.backend.append(BackendSnapshot("moby/99/x", "1", "committed", ""))
    orphan_snapshot_dir(w)
    w.expect.clear()
    w.keep[snapshot_dir("90")] = "both claim dir 1"


def metadb_unreadable(w: W) -> None:
    orphan_snapshot_dir(w)
    w.expect.clear()
    w.images.clear()
    w.blobs.clear()
    w.snaps.clear()
    w.leases.clear()
    w.live = {}
    w.meta_findings.append(Finding("meta.db", "unreadable-metadb", "bad magic"))
    w.keep[snapshot_dir("90")] = "frozen: meta.db could not be read: bad magic"
    w.keep["meta.db"] = "bad magic"


Scenario = Callable[[W], None]
SCENARIOS: list[Scenario] = [
    healthy,
    container_gone,
    container_dir_unreadable,
    container_dir_without_config,
    container_in_containerd,
    container_lease_young,
    container_lease_no_created,
    rw_layer_gone,
    rw_layer_still_there,
    rw_layer_gone_driver_unknown,
    load_lease_of_earlier_dockerd,
    pull_lease_of_earlier_dockerd,
    operation_lease_with_foreign_label,
    load_lease_of_running_dockerd,
    load_lease_no_dockerd,
    load_lease_young,
    load_lease_unknown_age,
    load_lease_bad_expiry,
    buildkit_temporary,
    buildkit_temporary_no_dockerd,
    buildkit_temporary_start_unknown,
    buildkit_cache_flat,
    buildkit_variants,
    unknown_lease,
    expired_lease,
    unreached_records,
    expired_image,
    other_namespaces,
    orphan_snapshot_dir,
    orphan_snapshot_kept,
    snapshotter_db_unreliable,
    snapshotter_db_empty,
    unrecorded_backend_and_blob,
    ingests,
    rootfs_and_container_dirs,
    excluded,
    malformed_label,
    dead_reference,
    duplicate_backend_key,
    parent_cycle,
    missing_parent,
    two_records_one_dir,
    metadb_unreadable,
]
EXCLUDES = {"excluded": ("leases/moby/*", "90")}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_scenario(scenario: Scenario) -> None:
    w = world()
    scenario(w)
    p = plan_of(w, excludes=EXCLUDES.get(scenario.__name__, ()))
    assert got(p) == w.expect
    for path, why in w.keep.items():
        assert why in kept_reason(p, path), (path, kept_reason(p, path))
    # Leases: only those with a reason are kept (kind "lease"); the live ones are one note.
    kept_leases = {k.path for k in p.kept if k.path.startswith("leases/")}
    assert kept_leases == {k for k in w.keep if k.startswith("leases/")}
    assert all(k.kind == "lease" for k in p.kept if k.path.startswith("leases/"))
    assert lease_note(p) == expected_note(w.live)
    # Every action is of this store's kinds, sorted, with its id and base.
    assert [KIND_ORDER[a.kind] for a in p.actions] == sorted(KIND_ORDER[a.kind] for a in p.actions)
    for a in p.actions:
        assert a.base == ("" if a.kind in ("orphan-rootfs", "gone-container") else "containerd")
        assert a.id == action_id(a.kind, f"{a.base}:{a.path}" if a.base else a.path)
    assert p.store == "containerd" and p.containerd_root == CTD_ROOT and p.root == DATA_ROOT


# -- the mirror: who keeps what, and the path that says how ----------------------------------


def test_attribution_follows_index_manifest_config_snapshot() -> None:
    g = mark(world().facts().meta, NOW)
    top = g.snapshots[(MOBY, "overlayfs", CHAIN2)]
    assert top.by == ("image", "busybox:1")
    assert top.path == (
        f"image busybox:1 -> index {INDEX[:19]}… -> manifest {MANIFEST[:19]}… -> "
        f"config {CONFIG[:19]}… -> snapshot overlayfs/{CHAIN2[:19]}…"
    )
    assert g.snapshots[(MOBY, "overlayfs", CHAIN1)].path.endswith(f"-> parent {CHAIN1[:19]}…")
    assert g.blobs[(MOBY, LAYER2)].path.endswith(f"-> layer {LAYER2[:19]}…")
    assert g.snapshots[(MOBY, "overlayfs", WEB)].by == ("lease", WEB)
    assert not g.freeze and not g.unread


def test_container_record_reaches_its_snapshot_before_its_lease() -> None:
    w = world()
    w.containers.append(Container(MOBY, WEB, "busybox:1", "overlayfs", WEB))
    g = mark(w.facts().meta, NOW)
    assert g.snapshots[(MOBY, "overlayfs", WEB)].by == ("container", WEB)
    assert g.snapshots[(MOBY, "overlayfs", f"{WEB}-init")].path.startswith(
        f"container {WEB[:12]}… -> snapshot overlayfs/{WEB[:12]}… -> parent"
    )


def test_flat_lease_holds_only_what_it_names() -> None:
    w = world()
    w.images.clear()  # nothing else keeps the image's records
    w.leases.clear()
    lease(
        w, "bk-cache", labels={GC_FLAT: ""}, content=(CONFIG,), snapshots=(("overlayfs", CHAIN2),)
    )
    g = mark(w.facts().meta, NOW)
    assert g.blobs[(MOBY, CONFIG)].by == ("lease", "bk-cache")
    # CHAIN2 is held directly; its parent is still followed (gc.go keeps the flat type).
    assert g.snapshots[(MOBY, "overlayfs", CHAIN1)].by == ("lease", "bk-cache")
    assert not g.blobs[(MOBY, INDEX)].reached
    # Without gc.flat the same lease follows the config's gc.ref.snapshot label too.
    w.leases[-1] = replace(w.leases[-1], labels={}, snapshots=())
    g = mark(w.facts().meta, NOW)
    assert g.snapshots[(MOBY, "overlayfs", CHAIN2)].by == ("lease", "bk-cache")
    w.leases[-1] = replace(w.leases[-1], labels={GC_FLAT: ""})
    g = mark(w.facts().meta, NOW)
    assert not g.snapshots[(MOBY, "overlayfs", CHAIN2)].reached


def test_back_reference_keeps_the_labelled_blob() -> None:
    w = world()
    w.blob(dg("sbom"), 9, **{"containerd.io/gc.bref.snapshot.overlayfs": CHAIN2})
    g = mark(w.facts().meta, NOW)
    assert g.blobs[(MOBY, dg("sbom"))].by == ("image", "busybox:1")
    assert "(back ref) content" in g.blobs[(MOBY, dg("sbom"))].path
    w.images.clear()
    w.leases.clear()
    assert not mark(w.facts().meta, NOW).blobs[(MOBY, dg("sbom"))].reached


def test_gc_root_label_and_unexpired_ingest_are_roots() -> None:
    w = world()
    w.snap(dg("pinned"), labels={GC_ROOT: "2026-01-01T00:00:00Z"})
    w.blob(dg("wanted"), 3)
    w.ingests.append(Ingest(MOBY, "up", "moby-9-up", NOW + HOUR, expected=dg("wanted")))
    g = mark(w.facts().meta, NOW)
    assert g.snapshots[(MOBY, "overlayfs", dg("pinned"))].by[0] == "gc-root"
    assert g.blobs[(MOBY, dg("wanted"))].by == ("ingest", "up")
    w.ingests[-1] = replace(w.ingests[-1], expire_at=NOW - 1)
    g = mark(w.facts().meta, NOW)
    assert not g.blobs[(MOBY, dg("wanted"))].reached
    assert not g.ingests[(MOBY, "up")].reached


def test_expired_lease_is_listed_and_holds_nothing() -> None:
    w = world()
    expired_lease(w)
    g = mark(w.facts().meta, NOW)
    assert [x.id for x in g.expired_leases] == ["moby-load-old"]
    assert not g.snapshots[(MOBY, "overlayfs", dg("loaded"))].reached
    p = plan_of(w)
    (gc,) = p.actions
    assert gc.bytes == 7777
    assert any("lease moby-load-old expired at 2026-01-01 00:00:00 UTC" in e for e in gc.evidence)


def test_history_namespace_is_attributed_as_history() -> None:
    w = world()
    other_namespaces(w)
    g = mark(w.facts().meta, NOW)
    assert g.images[("moby_history", "build-1")].by == ("history", "image build-1")
    p = plan_of(w)
    assert not p.actions
    notes = "\n".join(p.notes)
    assert "namespace k8s.io: 0 image(s), 0 container(s), 1 snapshot(s), 1 blob(s)" in notes
    assert "namespace moby_history:" in notes and "kept whole" in notes
    assert not any("k8s" in k.path for k in p.kept)


# -- exclusivity: what removing a lease lets containerd free ---------------------------------


def test_exclusive_bytes_with_a_shared_snapshot() -> None:
    w = world()
    shared = dg("shared")
    w.snap(shared, size=50_000)
    w.blob(dg("a-only"), 111)
    w.blob(dg("b-only"), 222)
    both = (("overlayfs", shared),)
    lease(w, "a", labels={GC_EXPIRE: FUTURE}, snapshots=both, content=(dg("a-only"), LAYER1))
    lease(w, "b", labels={GC_EXPIRE: FUTURE}, snapshots=both, content=(dg("b-only"),))
    only = exclusive(w.facts().meta, NOW, MOBY, ["b", "a"])
    assert only["a"].snapshots == (("overlayfs", shared),)
    assert only["a"].blobs == (dg("a-only"),)  # LAYER1 is the image's
    assert only["b"].snapshots == () and only["b"].blobs == (dg("b-only"),)
    assert only["b"].shared_with == (("a", 1),)
    p = plan_of(w)
    by_path = {a.path: a for a in p.actions}
    assert by_path["leases/moby/a"].bytes == 50_000 + 111
    assert by_path["leases/moby/b"].bytes == 222
    assert "shared with lease a: 1 record(s)" in by_path["leases/moby/b"].evidence
    ev = by_path["leases/moby/a"].evidence
    assert "only it keeps 1 snapshot(s) (50,000 bytes), 1 blob(s) (111 bytes), 0 ingest(s)" in ev


def test_stale_container_lease_frees_its_snapshots() -> None:
    w = world()
    container_gone(w)
    (a,) = plan_of(w).actions
    assert a.bytes == 5000 + 100 and a.dev == a.ino == 0 and a.age_seconds == 48 * 3600
    assert a.evidence[0] == "created 2027-01-13 08:00:00 UTC (2d ago)"
    assert "no labels" in a.evidence
    assert any("provably gone: no containers/" in e for e in a.evidence)


def test_blob_recorded_in_another_namespace_frees_no_bytes() -> None:
    w = world()
    w.namespaces.append("k8s.io")
    w.blob(dg("both"), 900)
    w.blob(dg("both"), 900, ns="k8s.io")
    (gc,) = plan_of(w).actions
    assert gc.bytes == 0
    assert any("its file stays: also recorded in k8s.io" in e for e in gc.evidence)


def test_containerd_gc_evidence_is_capped() -> None:
    w = world()
    for i in range(30):
        w.blob(dg(f"lost{i}"), 10)
    (gc,) = plan_of(w).actions
    assert gc.bytes == 300
    assert gc.evidence[0].startswith("0 snapshot(s), 30 blob(s)")
    assert len(gc.evidence) == 1 + 20 + 1 and gc.evidence[-1] == "and 10 more"


def test_malformed_label_keeps_its_namespace_whole() -> None:
    w = world()
    malformed_label(w)
    w.snap(dg("unreached"))
    g = mark(w.facts().meta, NOW)
    r = g.snapshots[(MOBY, "overlayfs", dg("unreached"))]
    assert r.reached and r.by == ("unread-labels", MOBY)
    p = plan_of(w)
    assert not p.actions
    assert any("containerd.io/gc.ref.content.l.0='not-a-digest'" in n for n in p.notes)


def test_frozen_plan_keeps_everything() -> None:
    w = world()
    duplicate_backend_key(w)
    orphan_snapshot_dir(w)
    p = plan_of(w)
    assert not p.actions and p.frozen
    assert p.frozen[0].startswith("meta.db snapshots")
    assert "frozen:" in kept_reason(p, snapshot_dir("90"))


def test_usage_paths_cover_what_the_planner_reads() -> None:
    w = world()
    container_gone(w)
    orphan_snapshot_dir(w)
    ingests(w)
    rootfs_and_container_dirs(w)
    ctd, data = usage_paths(w.facts(), NOW)
    dirs = {s.key: b.id for s, b in zip(w.snaps, w.backend, strict=True)}
    assert snapshot_dir(dirs[WEB]) in ctd and snapshot_dir("90") in ctd
    assert snapshot_dir(dirs[CHAIN1]) not in ctd  # the image keeps it: not walked
    assert all(ingest_dir(n) in ctd for n in w.ingest_dirs)
    assert f"rootfs/overlayfs/{cid('a')}" in data and f"containers/{cid('d')}" in data


def test_json_round_trip() -> None:
    w = world()
    container_gone(w)
    orphan_snapshot_dir(w)
    ingests(w)
    rootfs_and_container_dirs(w)
    unreached_records(w)
    w.namespaces.append("k8s.io")
    w.blob(dg("k"), 1, ns="k8s.io")
    p = plan_of(w, excludes=("nothing-*",))
    assert {a.kind for a in p.actions} == {
        "stale-lease",
        "containerd-gc",
        "orphan-snapshot",
        "stale-ingest",
        "orphan-rootfs",
        "gone-container",
    }
    back = Plan.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p


# -- leases: the note, what made a stale one, containers whose rw layer is gone ------------


def test_idle_engine_leases_are_one_note() -> None:
    w = world()
    w.ctr_ids.add(cid("stopped"))
    lease(w, cid("stopped"))
    for i in range(12):
        lease(w, f"{i:02d}" + BK_ID[2:], labels={GC_FLAT: "2026-01-01T00:00:00Z"})
    for i in range(3):
        lease(w, f"{i:02d}{BK_ID[2:]}-variants")
    lease(w, f"{BK_ID}-view", created=STARTED + 5, labels={GC_FLAT: "x", TEMP: "x"})
    for i in range(7):
        lease(w, f"tmp-{i}", created=NOW - 60, labels={TEMP: "x", GC_EXPIRE: FUTURE})
    p = plan_of(w)
    assert not p.actions and not any(k.path.startswith("leases/") for k in p.kept)
    assert lease_note(p) == (
        "moby leases understood and in use: 12 BuildKit cache record(s) (gc.flat), "
        "3 BuildKit -variants, 1 BuildKit -view of the running dockerd, "
        "7 BuildKit temporary of the running dockerd (deleted at its next start), "
        "2 container lease(s)"
    )


@pytest.mark.parametrize(
    ("lid", "labels", "made_by"),
    [
        (
            "pull",
            {GC_EXPIRE: FUTURE, PRUNE: "true"},
            "made by a dockerd pull, commit, save or legacy build "
            "(moby/prune.images, containerd.io/gc.expire)",
        ),
        (
            "load",
            {GC_EXPIRE: FUTURE},
            "made by a dockerd load or import (containerd.io/gc.expire only, no "
            "moby/prune.images: no docker prune removes it)",
        ),
        (
            "tmp",
            {GC_EXPIRE: FUTURE, TEMP: "x"},
            "made by BuildKit, for one build step or resolve (buildkit/lease.temporary)",
        ),
        (
            f"{BK_ID}-view",
            {GC_FLAT: "x", TEMP: "x"},
            "made by BuildKit, for a mounted cache record (buildkit/lease.temporary, -view)",
        ),
    ],
)
def test_stale_operation_lease_names_its_operation(
    lid: str, labels: dict[str, str], made_by: str
) -> None:
    w = world()
    lease(w, lid, labels=labels)
    (a,) = plan_of(w).actions
    assert a.kind == "stale-lease" and a.path == f"leases/moby/{lid}"
    assert made_by in a.evidence
    assert (
        "provably gone: created before the running dockerd started (2027-01-14 08:00:00 UTC): "
        "the operation ended with the daemon that ran it"
    ) in a.evidence


def test_gone_container_evidence_says_which_rule() -> None:
    w = world()
    rw_layer_gone(w)
    w.ctr_without_config.add(cid("noconf"))
    w.usage[f"containers/{cid('noconf')}"] = usage()
    by_path = {a.path: a for a in plan_of(w).actions}
    b = by_path[f"containers/{GONE}"]
    assert b.reason == (
        'container whose rw layer is gone: dockerd skips it at every start ("failed to load '
        'container mount")'
    )
    assert b.evidence[:4] == (
        f"(b) containers/{GONE}/config.v2.json names storage driver overlayfs",
        f"no moby lease with id {GONE[:12]}…",
        f"no moby snapshot record {GONE[:12]}… or {GONE[:12]}…-init",
        "no meta.db container record with that id",
    )
    a = by_path[f"containers/{cid('noconf')}"]
    assert a.evidence[0] == f"(a) containers/{cid('noconf')}/config.v2.json does not exist"
    r = by_path[f"rootfs/overlayfs/{GONE}"]
    assert r.evidence[0].startswith(f"containers/{GONE} is itself a gone container")


def test_other_driver_containers_are_one_note() -> None:
    w = world()
    rw_layer_still_there(w)
    p = plan_of(w)
    assert not any(k.path.startswith("containers/") for k in p.kept)
    assert any(
        n.startswith("containers of another storage driver (1 of overlay2)") for n in p.notes
    )


def test_usage_paths_cover_gone_containers() -> None:
    w = world()
    rw_layer_gone(w)
    _, data = usage_paths(w.facts(), NOW, drivers_of(w))
    assert f"containers/{GONE}" in data and f"rootfs/overlayfs/{GONE}" in data
    assert f"containers/{WEB}" not in data
    _, data = usage_paths(w.facts(), NOW)  # drivers unknown: none is a candidate
    assert f"containers/{GONE}" not in data


def test_ingest_without_expiry_is_no_root() -> None:
    """gc.go scanRoots: ``if ea == nil || expThreshold.After(*ea) { return nil }``."""
    w = world()
    w.blob(dg("wanted"), 3)
    w.ingests.append(Ingest(MOBY, "up", "moby-9-up", None, expected=dg("wanted")))
    g = mark(w.facts().meta, NOW)
    assert not g.ingests[(MOBY, "up")].reached and not g.blobs[(MOBY, dg("wanted"))].reached
    (gc,) = plan_of(w).actions
    assert "ingest up: no expiry (made under a lease that is gone), no lease holds it" in (
        gc.evidence
    )
    lease(w, "load", created=NOW - 60, labels={GC_EXPIRE: FUTURE}, ingests=("up",))
    g = mark(w.facts().meta, NOW)
    assert g.ingests[(MOBY, "up")].by == ("lease", "load")
    assert g.blobs[(MOBY, dg("wanted"))].by == ("lease", "load")


def test_another_dockerd_on_the_same_containerd_keeps_every_lease() -> None:
    """A second dockerd (another data root) on this containerd shares namespace moby:
    whose lease is whose cannot be told, so a lease that looks abandoned is kept."""
    w = world()
    container_gone(w)
    load = lease(w, "123-load", **{"labels": {"containerd.io/gc.expire": "2099-01-01T00:00:00Z"}})
    assert {("stale-lease", f"leases/moby/{WEB}"), ("stale-lease", load)} <= got(plan_of(w))
    facts = replace(
        w.facts(), shared_with=("dockerd pid 42 (/usr/bin/dockerd) with another data root",)
    )
    p = plan_containerd(facts, w.usage, Policy(min_age=HOUR, now=NOW), drivers_of(w))
    assert not [a for a in p.actions if a.kind == "stale-lease"]
    assert "another dockerd uses this containerd" in kept_reason(p, load)
