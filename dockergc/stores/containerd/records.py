"""Typed records of a containerd root, as its readers found them. Nothing is trusted:
a record that could not be parsed is a ``Finding`` and whatever it might hold is kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dockergc.store.findings import Finding

MOBY = "moby"  # the namespace dockerd uses; the only one dockergc ever acts on
MOBY_HISTORY = "moby_history"  # BuildKit's build history: kept whole
OVERLAYFS = "overlayfs"
SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1.overlayfs"
CONTENT_DIR = "io.containerd.content.v1.content"
METADATA_DIR = "io.containerd.metadata.v1.bolt"

# containerd's GC labels (core/metadata/gc.go)
GC_ROOT = "containerd.io/gc.root"
GC_REF_CONTENT = "containerd.io/gc.ref.content"
GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
GC_EXPIRE = "containerd.io/gc.expire"
GC_FLAT = "containerd.io/gc.flat"


@dataclass(frozen=True)
class Image:
    namespace: str
    name: str
    target: str  # the target descriptor's digest ("sha256:…")
    media_type: str
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float | None = None
    updated: float | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)  # the target's


@dataclass(frozen=True)
class Container:
    namespace: str
    id: str
    image: str
    snapshotter: str
    snapshot_key: str
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float | None = None


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot as meta.db knows it; ``name`` is the backend key (``ns/N/key``)."""

    namespace: str
    snapshotter: str
    key: str
    name: str
    parent: str  # the parent's key in the same namespace, "" for none
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float | None = None
    updated: float | None = None
    # keys in its "children" bucket; containerd does not always prune them (seen: keys
    # of snapshots long removed), so they are evidence, never references
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Blob:
    namespace: str
    digest: str
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float | None = None
    updated: float | None = None


@dataclass(frozen=True)
class Ingest:
    namespace: str
    ref: str  # the ingest reference the client used
    backend_ref: str  # "ref" field: the reference in the content store
    expire_at: float | None = None
    expected: str = ""  # "expected" field: the digest the ingest is to commit, if set


@dataclass(frozen=True)
class Lease:
    namespace: str
    id: str
    created: float | None
    labels: Mapping[str, str] = field(default_factory=dict)
    snapshots: tuple[tuple[str, str], ...] = ()  # (snapshotter, key)
    content: tuple[str, ...] = ()  # digests
    ingests: tuple[str, ...] = ()  # ingest references
    images: tuple[str, ...] = ()  # image names (the lease's "images" bucket)


@dataclass(frozen=True)
class MetaDB:
    """Everything in ``io.containerd.metadata.v1.bolt/meta.db``, by namespace."""

    namespaces: tuple[str, ...]
    images: tuple[Image, ...] = ()
    containers: tuple[Container, ...] = ()
    snapshots: tuple[SnapshotRecord, ...] = ()
    blobs: tuple[Blob, ...] = ()
    ingests: tuple[Ingest, ...] = ()
    leases: tuple[Lease, ...] = ()
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class BackendSnapshot:
    """A record of the overlayfs snapshotter's own ``metadata.db``: backend key -> dir id."""

    key: str  # the backend key, meta.db's ``name`` ("moby/12/sha256:…")
    id: str  # the dir: snapshots/<id>
    kind: str  # "active", "committed", "view", or "unknown(N)"
    parent: str  # the parent's backend key, "" for none
    created: float | None = None
    size: int | None = None  # usage the snapshotter recorded at commit, if any
    inodes: int | None = None
    updated: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotterDB:
    """The overlayfs snapshotter: its records and the dirs under ``snapshots/``."""

    records: tuple[BackendSnapshot, ...] = ()
    dirs: tuple[str, ...] = ()  # names under snapshots/ (ids, and new-*/rm-* temp dirs)
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class ContentStore:
    """What is on disk under ``io.containerd.content.v1.content``."""

    blobs: Mapping[str, int] = field(default_factory=dict)  # "sha256:…" -> bytes on disk
    ingests: tuple[str, ...] = ()  # dir names under ingest/
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class DataRootContainers:
    """What dockerd's data root says about containers on this store."""

    ids: frozenset[str] = frozenset()  # containers/<id> with a readable config.v2.json
    unreadable: frozenset[str] = frozenset()  # containers/<id> whose config is there but bad
    without_config: frozenset[str] = frozenset()  # containers/<id> with no config.v2.json
    rootfs: frozenset[str] = frozenset()  # names under rootfs/overlayfs/
    # Each readable container's storage driver: dockerd skips, without a word, containers
    # of another driver (overlay2 ones from before the switch to the containerd store).
    drivers: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class CtdFacts:
    """Every fact the containerd family plans from; gathered read-only, then pure."""

    data_root: str  # dockerd's data root (journal, containers/, rootfs/)
    ctd_root: str  # containerd's root (meta.db, snapshots, content)
    meta: MetaDB
    backend: SnapshotterDB
    content: ContentStore
    containers: DataRootContainers
    # When the dockerd using this store started (epoch seconds), None if none runs. A lease
    # made by an operation of an earlier dockerd is provably abandoned.
    dockerd_started: float | None
    pinned: Mapping[str, str] = field(default_factory=dict)  # absolute path -> why (mounts)
    findings: tuple[Finding, ...] = ()
    # Other running dockerds on this containerd (another data root, the same namespace):
    # whose lease is whose cannot be told, so no lease is judged abandoned.
    shared_with: tuple[str, ...] = ()
