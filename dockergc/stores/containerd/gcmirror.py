"""containerd's garbage collector, mirrored: what each record is kept by, and why.

Follows ``core/metadata/gc.go`` (``scanRoots``, ``references``, ``sendLabelRefs``) per
namespace. Roots: images (unless ``containerd.io/gc.expire`` has passed), containers,
unexpired leases and what they hold (a ``containerd.io/gc.flat`` lease holds its content
and snapshots but not what their labels name; its snapshots still hold their parents),
content and snapshots labelled ``containerd.io/gc.root``, and ingests whose expireat has
not passed. Edges: an image's target, a container's snapshot, a snapshot's parent, the
``containerd.io/gc.ref.{content,image,snapshot.<snapshotter>}`` labels, and back
references (``containerd.io/gc.bref.*``: the labelled object is kept by what it names).

Pure: ``mark`` reads records and a clock and returns a frozen ``CtdGraph``. Conflicting
records freeze the plan; labels this mirror cannot read keep their whole namespace.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dockergc.stores.containerd.records import (
    GC_EXPIRE,
    GC_FLAT,
    GC_REF_CONTENT,
    GC_REF_SNAPSHOT,
    GC_ROOT,
    MOBY_HISTORY,
    Image,
    Lease,
    MetaDB,
    SnapshotRecord,
)

GC_REF_IMAGE = "containerd.io/gc.ref.image"
GC_BREF_CONTAINER = "containerd.io/gc.bref.container"
GC_BREF_CONTENT = "containerd.io/gc.bref.content"
GC_BREF_IMAGE = "containerd.io/gc.bref.image"
GC_BREF_SNAPSHOT = "containerd.io/gc.bref.snapshot."
GC_COND = "containerd.io/gc.cond."

# The OCI digest grammar (algorithm:encoded); sha256 must be 64 lowercase hex.
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PATH_HOPS = 8  # longer paths are shown as their ends with "… N more" between

SnapKey = tuple[str, str, str]  # (namespace, snapshotter, key)
BlobKey = tuple[str, str]  # (namespace, digest)
# A gc node: (type, namespace, key); snapshot keys are "snapshotter/key" as in gc.go.
Node = tuple[str, str, str]
CONTENT, CONTENT_FLAT = "content", "content-flat"
SNAPSHOT, SNAPSHOT_FLAT = "snapshot", "snapshot-flat"
IMAGE, IMAGE_FLAT = "image", "image-flat"
CONTAINER, INGEST = "container", "ingest"
_RESOURCE = {
    CONTENT_FLAT: CONTENT,
    SNAPSHOT_FLAT: SNAPSHOT,
    IMAGE_FLAT: IMAGE,
}
NOTHING = ("nothing", "")


@dataclass(frozen=True)
class Reach:
    """Who keeps a record (the first root whose walk reaches it) and the walk's path."""

    by: tuple[str, str]  # ("image", name), ("container", id), ("lease", id), ("gc-root", …),
    # ("ingest", ref), ("history", "<root>"), ("unread-labels", ns), or NOTHING
    path: str  # "image busybox:1 -> manifest sha256:ab12… -> config … -> snapshot …"

    @property
    def reached(self) -> bool:
        return self.by != NOTHING


UNREACHED = Reach(NOTHING, "nothing reaches it: containerd's GC frees it at its next run")


@dataclass(frozen=True)
class CtdGraph:
    """containerd's view of every record: kept by what, or freed at its next GC."""

    snapshots: Mapping[SnapKey, Reach]
    blobs: Mapping[BlobKey, Reach]
    ingests: Mapping[tuple[str, str], Reach]  # (namespace, ref)
    images: Mapping[tuple[str, str], Reach]  # only an expired image can be unreached
    expired_leases: tuple[Lease, ...]  # containerd deletes these at its next GC
    expired_images: tuple[Image, ...]
    # Conflicting records (the planner then plans nothing), and namespaces whose labels
    # this mirror could not read (everything in them is kept, reason given).
    freeze: tuple[str, ...] = ()
    unread: Mapping[str, str] = field(default_factory=dict)

    def unreached_snapshots(self, ns: str) -> list[SnapKey]:
        return sorted(k for k, r in self.snapshots.items() if k[0] == ns and not r.reached)

    def unreached_blobs(self, ns: str) -> list[BlobKey]:
        return sorted(k for k, r in self.blobs.items() if k[0] == ns and not r.reached)

    def unreached_ingests(self, ns: str) -> list[tuple[str, str]]:
        return sorted(k for k, r in self.ingests.items() if k[0] == ns and not r.reached)


@dataclass(frozen=True)
class Exclusive:
    """What deleting one lease (with the other candidates) lets containerd's GC free."""

    lease: str
    snapshots: tuple[tuple[str, str], ...]  # (snapshotter, key)
    blobs: tuple[str, ...]
    ingests: tuple[str, ...]
    shared_with: tuple[tuple[str, int], ...] = ()  # (earlier candidate lease, records it took)


def parse_time(text: str) -> float | None:
    """An RFC 3339 time as Go's time.Parse(time.RFC3339) accepts it, else None."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", text):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp()


def lease_expiry(lease: Lease) -> tuple[bool, float | None]:
    """(has a valid gc.expire, when). An invalid value is ignored by containerd."""
    text = lease.labels.get(GC_EXPIRE)
    if text is None:
        return False, None
    when = parse_time(text)
    return when is not None, when


def lease_expired(lease: Lease, now: float) -> bool:
    valid, when = lease_expiry(lease)
    return valid and when is not None and now > when


def _image_expired(image: Image, now: float) -> bool:
    text = image.labels.get(GC_EXPIRE)
    when = parse_time(text) if text is not None else None
    return when is not None and now > when


def short(name: str) -> str:
    """A digest or key short enough for a line of evidence."""
    algo, sep, rest = name.partition(":")
    if sep and len(rest) > 16 and re.fullmatch(r"[0-9a-f]+", rest):
        return f"{algo}:{rest[:12]}…"
    if re.match(r"[0-9a-f]{64}", name):  # a container id, maybe with "-init"
        return name[:12] + "…" + name[64:]
    return name if len(name) <= 48 else name[:47] + "…"


def _named(key: str, prefix: str) -> bool:
    """gc.go: ``prefix`` alone, or followed by '.' or '/' (other names are ignored)."""
    return key == prefix or (key.startswith(prefix) and key[len(prefix)] in "./")


def _snapshotter_of(key: str, prefix: str) -> str:
    return key[len(prefix) :].split("/", 1)[0]


def _role(label: str) -> str:
    """What a gc.ref.content label's name says its target is (containerd's own names)."""
    rest = label[len(GC_REF_CONTENT) :].lstrip("./")
    if rest.startswith("m."):
        return "manifest"
    if rest == "config":
        return "config"
    if rest.startswith("l."):
        return "layer"
    return "content"


def _target_role(media_type: str) -> str:
    if "index" in media_type or "manifest.list" in media_type:
        return "index"
    if "manifest" in media_type:
        return "manifest"
    return "content"


Edge = tuple[Node, str]  # the node reached and how it is shown in a path


def label_refs(ns: str, labels: Mapping[str, str]) -> list[Edge]:
    """The forward references in ``labels`` (sendLabelRefs with fn set)."""
    out: list[Edge] = []
    for key in sorted(labels):
        value = labels[key]
        if key.startswith(GC_REF_CONTENT) and _named(key, GC_REF_CONTENT):
            out.append(((CONTENT, ns, value), f"{_role(key)} {short(value)}"))
        elif key.startswith(GC_REF_IMAGE) and _named(key, GC_REF_IMAGE):
            out.append(((IMAGE, ns, value), f"image {value}"))
        elif key.startswith(GC_REF_SNAPSHOT):
            ss = _snapshotter_of(key, GC_REF_SNAPSHOT)
            out.append(((SNAPSHOT, ns, f"{ss}/{value}"), f"snapshot {ss}/{short(value)}"))
    return out


def _back_refs(ns: str, labels: Mapping[str, str]) -> list[Node]:
    """The objects that keep the labelled one (sendLabelRefs with bref set)."""
    out: list[Node] = []
    for key in sorted(labels):
        value = labels[key]
        if key.startswith(GC_BREF_CONTAINER) and _named(key, GC_BREF_CONTAINER):
            out.append((CONTAINER, ns, value))
        elif key.startswith(GC_BREF_CONTENT) and _named(key, GC_BREF_CONTENT):
            out.append((CONTENT, ns, value))
        elif key.startswith(GC_BREF_IMAGE) and _named(key, GC_BREF_IMAGE):
            out.append((IMAGE, ns, value))
        elif key.startswith(GC_BREF_SNAPSHOT):
            out.append((SNAPSHOT, ns, f"{_snapshotter_of(key, GC_BREF_SNAPSHOT)}/{value}"))
    return out


def _bad_label(key: str, value: str) -> str | None:
    """Why this mirror cannot follow a gc label as containerd would, or None."""
    if key.startswith(GC_COND):
        return "conditional references (containerd.io/gc.cond.*) are not mirrored"
    is_content = any(
        key.startswith(p) and _named(key, p) for p in (GC_REF_CONTENT, GC_BREF_CONTENT)
    )
    is_snap = key.startswith(GC_REF_SNAPSHOT) or key.startswith(GC_BREF_SNAPSHOT)
    is_other = any(
        key.startswith(p) and _named(key, p)
        for p in (GC_REF_IMAGE, GC_BREF_IMAGE, GC_BREF_CONTAINER)
    )
    if is_content:
        if not _DIGEST.match(value) or (value.startswith("sha256:") and not _SHA256.match(value)):
            return "its value is not a digest"
    elif is_snap:
        prefix = GC_REF_SNAPSHOT if key.startswith(GC_REF_SNAPSHOT) else GC_BREF_SNAPSHOT
        if not _snapshotter_of(key, prefix):
            return "it names no snapshotter"
        if not value or _CONTROL.search(value):
            return "its value is not a snapshot key"
    elif is_other and (not value or _CONTROL.search(value)):
        return "its value names nothing"
    return None


class _Index:
    """meta.db's records by gc node, with the back references gc.go collects at scan."""

    def __init__(self, meta: MetaDB, now: float) -> None:
        self.meta = meta
        self.now = now
        self.images = {(i.namespace, i.name): i for i in meta.images}
        self.containers = {(c.namespace, c.id): c for c in meta.containers}
        self.snapshots = {(s.namespace, f"{s.snapshotter}/{s.key}"): s for s in meta.snapshots}
        self.blobs = {(b.namespace, b.digest): b for b in meta.blobs}
        self.ingests = {(i.namespace, i.ref): i for i in meta.ingests}
        self.back: dict[Node, list[Node]] = {}
        for blob in meta.blobs:
            self._add_back(blob.namespace, blob.labels, (CONTENT, blob.namespace, blob.digest))
        for snap in meta.snapshots:
            node = (SNAPSHOT, snap.namespace, f"{snap.snapshotter}/{snap.key}")
            self._add_back(snap.namespace, snap.labels, node)
        for ctr in meta.containers:
            self._add_back(ctr.namespace, ctr.labels, (CONTAINER, ctr.namespace, ctr.id))
        for image in meta.images:
            if _image_expired(image, now):  # a root image needs no back reference
                self._add_back(image.namespace, image.labels, (IMAGE, image.namespace, image.name))

    def _add_back(self, ns: str, labels: Mapping[str, str], holder: Node) -> None:
        for target in _back_refs(ns, labels):
            self.back.setdefault(target, []).append(holder)

    def references(self, node: Node) -> list[Edge]:
        kind, ns, key = node
        out: list[Edge] = [(n, "(back ref) " + _describe(n)) for n in self.back.get(node, ())]
        if kind == CONTENT:
            blob = self.blobs.get((ns, key))
            if blob is not None:
                out += label_refs(ns, blob.labels)
        elif kind in (SNAPSHOT, SNAPSHOT_FLAT):
            snap = self.snapshots.get((ns, key))
            if snap is not None:
                if snap.parent:
                    target = (kind, ns, f"{snap.snapshotter}/{snap.parent}")
                    out.append((target, f"parent {short(snap.parent)}"))
                if kind == SNAPSHOT:
                    out += label_refs(ns, snap.labels)
        elif kind in (IMAGE, IMAGE_FLAT):
            image = self.images.get((ns, key))
            if image is not None:
                if image.target:
                    ctype = CONTENT if kind == IMAGE else CONTENT_FLAT
                    role = _target_role(image.media_type)
                    out.append(((ctype, ns, image.target), f"{role} {short(image.target)}"))
                if kind == IMAGE:
                    out += label_refs(ns, image.labels)
        elif kind == CONTAINER:
            ctr = self.containers.get((ns, key))
            if ctr is not None:
                if ctr.snapshotter:
                    target = (SNAPSHOT, ns, f"{ctr.snapshotter}/{ctr.snapshot_key}")
                    out.append((target, f"snapshot {ctr.snapshotter}/{short(ctr.snapshot_key)}"))
                out += label_refs(ns, ctr.labels)
        elif kind == INGEST:
            ing = self.ingests.get((ns, key))
            if ing is not None and ing.expected:
                out.append(((CONTENT, ns, ing.expected), f"expected {short(ing.expected)}"))
        # content-flat references nothing.
        return out


def _describe(node: Node) -> str:
    kind, _, key = node
    kind = _RESOURCE.get(kind, kind)
    if kind == SNAPSHOT:
        ss, _, name = key.partition("/")
        return f"snapshot {ss}/{short(name)}"
    return f"{kind} {short(key)}"


Root = tuple[tuple[str, str], str, list[Edge]]  # (attribution, root text, first edges)


def lease_edges(lease: Lease) -> list[Edge]:
    """What a lease holds, as gc.go emits it (flat types for a gc.flat lease)."""
    flat = GC_FLAT in lease.labels
    ns = lease.namespace
    ctype, stype = (CONTENT_FLAT, SNAPSHOT_FLAT) if flat else (CONTENT, SNAPSHOT)
    edges: list[Edge] = [((ctype, ns, d), f"content {short(d)}") for d in lease.content]
    edges += [((stype, ns, f"{ss}/{k}"), f"snapshot {ss}/{short(k)}") for ss, k in lease.snapshots]
    edges += [((INGEST, ns, r), f"ingest {short(r)}") for r in lease.ingests]
    itype = IMAGE_FLAT if flat else IMAGE
    edges += [((itype, ns, name), f"image {name}") for name in lease.images]
    return edges


def _roots(index: _Index, now: float, leases: Iterable[Lease]) -> list[Root]:
    """Every root, in the order attributions prefer: images, containers, gc.root
    records, ingests, then leases."""
    meta = index.meta
    roots: list[Root] = []
    for image in sorted(meta.images, key=lambda i: (i.namespace, i.name)):
        if not _image_expired(image, now):
            node = (IMAGE, image.namespace, image.name)
            roots.append((("image", image.name), f"image {image.name}", [(node, "")]))
    for ctr in sorted(meta.containers, key=lambda c: (c.namespace, c.id)):
        node = (CONTAINER, ctr.namespace, ctr.id)
        roots.append((("container", ctr.id), f"container {short(ctr.id)}", [(node, "")]))
    for blob in sorted(meta.blobs, key=lambda b: (b.namespace, b.digest)):
        if any(k.startswith(GC_ROOT) for k in blob.labels):
            node = (CONTENT, blob.namespace, blob.digest)
            text = f"content {short(blob.digest)}"
            roots.append((("gc-root", text), f"{GC_ROOT} on {text}", [(node, "")]))
    for snap in sorted(meta.snapshots, key=lambda s: (s.namespace, s.snapshotter, s.key)):
        if any(k.startswith(GC_ROOT) for k in snap.labels):
            node = (SNAPSHOT, snap.namespace, f"{snap.snapshotter}/{snap.key}")
            text = _describe(node)
            roots.append((("gc-root", text), f"{GC_ROOT} on {text}", [(node, "")]))
    for ing in sorted(meta.ingests, key=lambda i: (i.namespace, i.ref)):
        if ing.expire_at is not None and not now > ing.expire_at:
            node = (INGEST, ing.namespace, ing.ref)
            text = f"ingest {short(ing.ref)} (expires later)"
            roots.append((("ingest", ing.ref), text, [(node, "")]))
    for lease in sorted(leases, key=lambda x: (x.namespace, x.id)):
        flat = " (gc.flat)" if GC_FLAT in lease.labels else ""
        roots.append((("lease", lease.id), f"lease {lease.id}{flat}", lease_edges(lease)))
    return roots


def _ns_of(root: Root) -> str:
    edges = root[2]
    return edges[0][0][1] if edges else ""


Walked = dict[tuple[str, str, str], tuple[tuple[str, str], list[str]]]


def _walk(index: _Index, roots: list[Root]) -> Walked:
    """Each resource (type without flat, ns, key) -> (first root's attribution, path)."""
    seen: set[Node] = set()
    reached: Walked = {}
    for by, text, first in roots:
        if not first:
            continue
        if _ns_of((by, text, first)) == MOBY_HISTORY:
            by = ("history", text)
        # BFS from this root only; a node seen by an earlier root is not walked again.
        queue: deque[tuple[Node, list[str]]] = deque()
        for node, how in first:
            if node not in seen:
                seen.add(node)
                queue.append((node, [text, how] if how else [text]))
        while queue:
            node, path = queue.popleft()
            res = (_RESOURCE.get(node[0], node[0]), node[1], node[2])
            if res not in reached:
                reached[res] = (by, path)
            for nxt, how in index.references(node):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, [*path, how]))
    return reached


def _path_text(parts: list[str]) -> str:
    if len(parts) > PATH_HOPS:
        hidden = len(parts) - 6
        parts = [*parts[:4], f"… {hidden} more", *parts[-2:]]
    return " -> ".join(parts)


def _conflicts(meta: MetaDB) -> list[str]:
    """Records that contradict each other: nothing may be planned from them."""
    out: list[str] = []

    def dupes(what: str, keys: Iterable[tuple[str, ...]]) -> None:
        seen: set[tuple[str, ...]] = set()
        for key in keys:
            if key in seen:
                out.append(f"two meta.db {what} records for {'/'.join(key)}")
            seen.add(key)

    dupes("image", ((i.namespace, i.name) for i in meta.images))
    dupes("container", ((c.namespace, c.id) for c in meta.containers))
    dupes("snapshot", ((s.namespace, s.snapshotter, s.key) for s in meta.snapshots))
    dupes("content", ((b.namespace, b.digest) for b in meta.blobs))
    dupes("lease", ((x.namespace, x.id) for x in meta.leases))
    owner: dict[tuple[str, str], SnapshotRecord] = {}
    for s in meta.snapshots:
        if not s.name:
            out.append(
                f"meta.db snapshot {s.namespace}/{s.snapshotter}/{s.key} names no backend key"
            )
            continue
        other = owner.setdefault((s.snapshotter, s.name), s)
        if other is not s:
            out.append(
                f"meta.db snapshots {other.namespace}/{other.key} and {s.namespace}/{s.key} "
                f"both claim backend key {s.name} ({s.snapshotter})"
            )
    by_key = {(s.namespace, s.snapshotter, s.key): s for s in meta.snapshots}
    for s in meta.snapshots:
        if s.parent and (s.namespace, s.snapshotter, s.parent) not in by_key:
            out.append(
                f"meta.db snapshot {s.namespace}/{s.snapshotter}/{s.key} names parent "
                f"{s.parent}, which has no record"
            )
    for s in meta.snapshots:
        chain = {s.key}
        cur = s
        while cur.parent:
            nxt = by_key.get((cur.namespace, cur.snapshotter, cur.parent))
            if nxt is None:
                break
            if nxt.key in chain:
                out.append(
                    f"meta.db snapshot {s.namespace}/{s.snapshotter}/{s.key}: its parent "
                    f"chain cycles at {nxt.key}"
                )
                break
            chain.add(nxt.key)
            cur = nxt
    return sorted(set(out))


def _unread_labels(meta: MetaDB) -> dict[str, str]:
    """Namespace -> the first gc label this mirror cannot follow (holder named)."""
    out: dict[str, str] = {}
    holders: list[tuple[str, str, Mapping[str, str]]] = []
    holders += [(i.namespace, f"image {i.name}", i.labels) for i in meta.images]
    holders += [(c.namespace, f"container {c.id}", c.labels) for c in meta.containers]
    holders += [(b.namespace, f"content {b.digest}", b.labels) for b in meta.blobs]
    holders += [
        (s.namespace, f"snapshot {s.snapshotter}/{s.key}", s.labels) for s in meta.snapshots
    ]
    for ns, holder, labels in holders:
        for key in sorted(labels):
            why = _bad_label(key, labels[key])
            if why and ns not in out:
                out[ns] = (
                    f"{holder} has label {key}={labels[key]!r}: {why}; everything in "
                    f"namespace {ns} is kept"
                )
    return out


def mark(meta: MetaDB, now: float) -> CtdGraph:
    """Mirror containerd's mark phase at time ``now`` over every namespace."""
    index = _Index(meta, now)
    expired = tuple(
        sorted((x for x in meta.leases if lease_expired(x, now)), key=lambda x: (x.namespace, x.id))
    )
    live = [x for x in meta.leases if not lease_expired(x, now)]
    reached = _walk(index, _roots(index, now, live))
    unread = _unread_labels(meta)

    def reach(kind: str, ns: str, key: str) -> Reach:
        hit = reached.get((kind, ns, key))
        if hit is not None:
            return Reach(hit[0], _path_text(hit[1]))
        if ns in unread:
            return Reach(("unread-labels", ns), unread[ns])
        return UNREACHED

    snapshots = {
        (s.namespace, s.snapshotter, s.key): reach(
            SNAPSHOT, s.namespace, f"{s.snapshotter}/{s.key}"
        )
        for s in meta.snapshots
    }
    blobs = {(b.namespace, b.digest): reach(CONTENT, b.namespace, b.digest) for b in meta.blobs}
    ingests = {(i.namespace, i.ref): reach(INGEST, i.namespace, i.ref) for i in meta.ingests}
    images = {(i.namespace, i.name): reach(IMAGE, i.namespace, i.name) for i in meta.images}
    return CtdGraph(
        snapshots=snapshots,
        blobs=blobs,
        ingests=ingests,
        images=images,
        expired_leases=expired,
        expired_images=tuple(
            i
            for i in meta.images
            if _image_expired(i, now) and not images[(i.namespace, i.name)].reached
        ),
        freeze=tuple(_conflicts(meta)),
        unread=unread,
    )


def exclusive(
    meta: MetaDB, now: float, namespace: str, lease_ids: Iterable[str]
) -> dict[str, Exclusive]:
    """For each candidate lease in ``namespace``: the records only it keeps.

    Marks with every candidate removed, then walks each candidate alone (in id order)
    over what is left; a record two candidates hold goes to the first, and the other
    says so in ``shared_with``."""
    wanted = set(lease_ids)
    index = _Index(meta, now)
    live = [x for x in meta.leases if not lease_expired(x, now)]
    others = [x for x in live if not (x.namespace == namespace and x.id in wanted)]
    base = _walk(index, _roots(index, now, others))
    taken: dict[tuple[str, str, str], str] = {}
    out: dict[str, Exclusive] = {}
    for lease in sorted(
        (x for x in live if x.namespace == namespace and x.id in wanted), key=lambda x: x.id
    ):
        alone = _walk(index, [(("lease", lease.id), f"lease {lease.id}", lease_edges(lease))])
        mine = [res for res in alone if res not in base and _recorded(index, res)]
        shared: dict[str, int] = {}
        own: list[tuple[str, str, str]] = []
        for res in mine:
            first = taken.setdefault(res, lease.id)
            if first == lease.id:
                own.append(res)
            else:
                shared[first] = shared.get(first, 0) + 1
        snaps = tuple(
            sorted(
                (k.partition("/")[0], k.partition("/")[2])
                for kind, _, k in own
                if kind == SNAPSHOT and (namespace, k) in index.snapshots
            )
        )
        out[lease.id] = Exclusive(
            lease=lease.id,
            snapshots=snaps,
            blobs=tuple(
                sorted(k for kind, _, k in own if kind == CONTENT and (namespace, k) in index.blobs)
            ),
            ingests=tuple(
                sorted(
                    k for kind, _, k in own if kind == INGEST and (namespace, k) in index.ingests
                )
            ),
            shared_with=tuple(sorted(shared.items())),
        )
    return out


def _recorded(index: _Index, res: tuple[str, str, str]) -> bool:
    kind, ns, key = res
    if kind == SNAPSHOT:
        return (ns, key) in index.snapshots
    if kind == CONTENT:
        return (ns, key) in index.blobs
    if kind == INGEST:
        return (ns, key) in index.ingests
    return False


def blob_namespaces(meta: MetaDB) -> dict[str, set[str]]:
    """Digest -> every namespace with a record of it (the file stays while any has one)."""
    out: dict[str, set[str]] = {}
    for b in meta.blobs:
        out.setdefault(b.digest, set()).add(b.namespace)
    return out
