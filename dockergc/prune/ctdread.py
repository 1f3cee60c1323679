"""Read, for prune on the containerd image store, which containerd dockerd uses and the
graph of what its records keep (dockergc.prune.ctdgraph), with each blob's and each
snapshot's allocated bytes measured on disk. Read-only: everything that goes, goes
through the daemon.

The records come from the containerd store family's readers (``read_metadb``,
``read_snapshotter``, ``read_content``) and its GC labels from ``gcmirror.label_refs``;
which containerd from ``locate_containerd``, checked with ``check_identity``. What the
readers could not trust is reported, and what it might hold is never counted as freed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dockergc.api import ContainerdFlags
from dockergc.errors import RootError
from dockergc.measure import measure
from dockergc.prune.ctdgraph import CtdGraph, blob_file, content, snapshot
from dockergc.store.findings import Finding
from dockergc.stores.containerd import gcmirror, metadb, snapshotter
from dockergc.stores.containerd.content import SHA256, read_content
from dockergc.stores.containerd.ctr import check_identity
from dockergc.stores.containerd.locate import (
    DEFAULT_ADDRESS,
    ContainerdTarget,
    locate_containerd,
    root_serving,
)
from dockergc.stores.containerd.records import (
    CONTENT_DIR,
    MOBY,
    OVERLAYFS,
    SNAPSHOTTER_DIR,
    MetaDB,
    SnapshotterDB,
)

TEMPORARY = "buildkit/lease.temporary"
# Fields whose damage changes no reference: a finding there keeps nothing.
HARMLESS = ("/createdat", "/updatedat")


def is_containerd_store(info: Mapping[str, Any]) -> bool:
    """``docker info`` of a daemon on the containerd image store (driver-type
    io.containerd.snapshotter.v1; Driver is the snapshotter's name)."""
    status = info.get("DriverStatus") or []
    return any(
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and pair[0] == "driver-type"
        and str(pair[1]).startswith("io.containerd.snapshotter")
        for pair in status
    )


# -- which containerd ---------------------------------------------------------------------


def locate_daemon_containerd(
    info: Mapping[str, Any], flags: ContainerdFlags | None = None
) -> ContainerdTarget:
    """The containerd the daemon uses: its socket from --containerd-address, else the
    daemon's Containerd.Address, else containerd's default; its root from
    --containerd-root, else --containerd-config, else the running containerd serving that
    socket, else containerd's defaults. With a ctr at hand, the pair must be one
    containerd (its UUID), or prune refuses."""
    flags = flags or ContainerdFlags()
    told = str((info.get("Containerd") or {}).get("Address") or "").removeprefix("unix://")
    address = flags.address or told or None
    found = None
    if flags.root is None and flags.config is None:
        found = root_serving(address or DEFAULT_ADDRESS)
    target = locate_containerd(
        address=address, root=found[0] if found else flags.root, config=flags.config, ctr=None
    )
    if address and not flags.address:
        target = replace(target, address_source="the daemon's Containerd.Address")
    if found:
        target = replace(target, root_source=found[1])
    if target.ctr:
        check_identity(target)
    return target


# -- records ------------------------------------------------------------------------------


def _refs(labels: Mapping[str, str]) -> list[str]:
    """The nodes containerd's gc.ref labels name (gcmirror's reading of them)."""
    out = []
    for (kind, _ns, key), _how in gcmirror.label_refs(MOBY, labels):
        if kind == gcmirror.CONTENT:
            out.append(content(key))
        elif kind == gcmirror.SNAPSHOT and key.startswith(OVERLAYFS + "/"):
            out.append(snapshot(key.removeprefix(OVERLAYFS + "/")))
    return out


def build_graph(
    meta: MetaDB,
    backend: SnapshotterDB,
    blob_bytes: Callable[[str], int | None],
    snapshot_bytes: Callable[[str], int | None],
) -> CtdGraph:
    """The graph of dockerd's namespace (pure but for the two measures given)."""
    edges: dict[str, set[str]] = {}
    roots: dict[str, set[str]] = {f"ns:{ns}": set() for ns in meta.namespaces if ns != MOBY}
    images: dict[str, list[str]] = {}
    cache_leases: dict[str, list[str]] = {}
    transient: list[str] = []
    for blob in meta.blobs:
        if blob.namespace != MOBY:
            # Another namespace's record of a blob keeps the file (content is shared on
            # disk); its snapshots are its own (other backend keys): not ours to count.
            roots.setdefault(f"ns:{blob.namespace}", set()).add(blob_file(blob.digest))
            continue
        refs = {blob_file(blob.digest), *_refs(blob.labels)}
        edges.setdefault(content(blob.digest), set()).update(refs)
    dirs = {r.key: r.id for r in backend.records if r.id}
    ids: dict[str, str] = {}
    for snap in meta.snapshots:
        if snap.namespace == MOBY and snap.snapshotter == OVERLAYFS:
            kept = set(_refs(snap.labels)) | ({snapshot(snap.parent)} if snap.parent else set())
            edges.setdefault(snapshot(snap.key), set()).update(kept)
            ids[snap.key] = dirs.get(snap.name, "")
    for image in (i for i in meta.images if i.namespace == MOBY):
        holder = f"image:{image.name}"
        roots[holder] = {content(image.target)} | set(_refs(image.labels))
        images.setdefault(image.target, []).append(holder)
    for lease in (x for x in meta.leases if x.namespace == MOBY):
        holder = f"lease:{lease.id}"
        roots[holder] = {content(d) for d in lease.content} | {
            snapshot(key) for sn, key in lease.snapshots if sn == OVERLAYFS
        }
        if TEMPORARY in lease.labels:
            transient.append(holder)
            continue
        # BuildKit names a cache record's lease by the record's id (and adds
        # "<id>-variants", "<id>-view"); dockerd a container's by the container's id.
        cache_leases.setdefault(lease.id.split("-", 1)[0], []).append(holder)
    for ctr in (c for c in meta.containers if c.namespace == MOBY):
        roots[f"container:{ctr.id}"] = {snapshot(ctr.snapshot_key)} if ctr.snapshot_key else set()
        cache_leases.setdefault(ctr.id, []).append(f"container:{ctr.id}")
    nodes = set(edges) | {n for kept in [*roots.values(), *edges.values()] for n in kept}
    kept_by_findings, notes = _findings(meta.findings, backend.findings, nodes)
    roots |= kept_by_findings
    sizes: dict[str, int] = {}
    for node in nodes:
        kind, _, ident = node.partition(":")
        if kind == "content":
            continue  # the record: its file (blob_file) holds the bytes
        got = blob_bytes(ident) if kind == "blob" else snapshot_bytes(ids.get(ident, ""))
        if got is not None:
            sizes[node] = got
    return CtdGraph(
        sizes=sizes,
        edges={k: tuple(sorted(v)) for k, v in edges.items()},
        roots={k: tuple(sorted(v)) for k, v in roots.items()},
        images={k: tuple(v) for k, v in images.items()},
        cache={k: tuple(v) for k, v in cache_leases.items()},
        containers={k: tuple(v) for k, v in cache_leases.items() if len(k) == 64},
        transient=tuple(sorted(transient)),
        findings=tuple(notes),
    )


def _findings(
    meta: Sequence[Finding], backend: Sequence[Finding], nodes: set[str]
) -> tuple[dict[str, set[str]], list[str]]:
    """(holders that keep what meta.db's untrusted records might hold, a note for each
    finding). A record in dockerd's namespace, or one outside any namespace, might hold
    anything: it keeps every node. One in another namespace might keep any blob's file.
    The snapshotter's findings only hide a snapshot's size: it is then not counted."""
    roots: dict[str, set[str]] = {}
    notes = [f"containerd {f.path}: {f.message}" for f in [*meta, *backend]]
    for f in meta:
        where = f.message.partition(": ")[0]
        if f.kind == "metadb-version" or where.endswith(HARMLESS):
            continue
        top, _, rest = where.partition("/")
        ns = rest.partition("/")[0] if top == "v1" else ""
        blobs = {n for n in nodes if n.startswith("blob:")}
        roots[f"finding:{where}"] = blobs if ns and ns != MOBY else set(nodes)
    if roots:
        notes.append(
            "containerd's records could not all be read: what they might hold is kept and "
            "not counted as freed"
        )
    return roots, notes


def read_graph(ctd_root: Path) -> CtdGraph:
    meta = metadb.read_metadb(ctd_root)
    backend = snapshotter.read_snapshotter(ctd_root)
    unreadable = [
        f
        for f in [*meta.findings, *backend.findings]
        if f.kind in (metadb.UNREADABLE, snapshotter.UNREADABLE)
    ]
    if not backend.records and not unreadable and not (ctd_root / SNAPSHOTTER_DIR).is_dir():
        unreadable.append(Finding(SNAPSHOTTER_DIR, "missing", "no overlayfs snapshotter here"))
    if unreadable:
        raise RootError(
            f"{ctd_root}: containerd's records cannot be read: {unreadable[0].path}: "
            f"{unreadable[0].message}"
        )
    snaps = ctd_root / snapshotter.SNAPSHOTS

    def snapshot_bytes(ident: str) -> int | None:
        if not ident.isdigit():
            return None
        usage = measure(str(snaps / ident))
        return usage.bytes if usage is not None else None

    return build_graph(meta, backend, read_content(ctd_root).blobs.get, snapshot_bytes)


def check_root(ctd_root: Path, how: str, image_ids: Iterable[str]) -> None:
    """Refuse a root that is not the containerd dockerd uses: it must hold the content of
    every image the daemon lists (by its target digest)."""
    missing = [i for i in image_ids if not (ctd_root / SHA256 / i[7:]).exists()]
    if missing:
        raise RootError(
            f"{ctd_root} ({how}) lacks the content of image {missing[0][7:19]}: "
            "not the containerd this daemon uses",
            hint="give --containerd-root as containerd's root (its config.toml 'root')",
        )


# -- what a run really freed --------------------------------------------------------------


def disk_bytes(ctd_root: Path, data_root: Path) -> int:
    """Allocated bytes (du -sxB1, each inode once) of what image, container and
    build-cache removals free on this store: containerd's content and snapshots, and
    the containers' dirs under the data root (volumes are counted apart)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in (
        ctd_root / CONTENT_DIR,
        ctd_root / snapshotter.SNAPSHOTS,
        data_root / "containers",
    ):
        usage = measure(str(path), seen)
        total += usage.bytes if usage is not None else 0
    return total


def settled_disk_bytes(ctd_root: Path, data_root: Path, wait: float = 15.0) -> int:
    """disk_bytes once containerd's garbage collector is done: it frees asynchronously
    after the daemon's deletes, so measure until two readings half a second apart agree
    (or ``wait`` seconds passed)."""
    deadline = time.monotonic() + wait
    last = disk_bytes(ctd_root, data_root)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = disk_bytes(ctd_root, data_root)
        if now == last:
            return now
        last = now
    return last
