"""What removing things frees on the containerd image store (pure).

containerd frees a blob or a snapshot once nothing reaches it any more: its garbage
collector marks from the roots (image records, leases, container records) along
``containerd.io/gc.ref.*`` labels and snapshot parents, and sweeps the rest. The graph
here is that one, read from containerd's own records, with each node's allocated bytes
on disk; a ``Ledger`` counts references the same way, so releasing a holder (an image's
records, a build-cache record's leases, a container's record and lease) frees exactly
the nodes only it reached, each once, whatever the order. (Counting cannot free a cycle,
which containerd's mark and sweep would: such a node is under-counted, never over.)

The daemon's own per-image figures do not give this: ``Size`` (system df, docker
images) adds the image's content blobs and its chain's snapshot usage, ``SharedSize``
only the snapshots other images share, so a base image's layer blob is counted in every
image built on it, and the build containers' ``-init`` snapshots the classic builder
commits images onto are counted nowhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def content(digest: str) -> str:
    return f"content:{digest}"


def blob_file(digest: str) -> str:
    """The blob's file: dockerd's record of it keeps it, and so does any other
    namespace's (content is shared on disk across namespaces)."""
    return f"blob:{digest}"


def snapshot(name: str) -> str:
    return f"snapshot:{name}"


@dataclass(frozen=True)
class CtdGraph:
    sizes: Mapping[str, int]  # node -> allocated bytes on disk (du -sxB1)
    edges: Mapping[str, tuple[str, ...]]  # node -> the nodes it keeps (gc refs, parent)
    roots: Mapping[str, tuple[str, ...]]  # holder -> the nodes it keeps
    # Engine API ids -> holders: an image id (its target digest) -> "image:<name>" for
    # each name; a build-cache record -> its leases; a container -> record and lease.
    images: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cache: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    containers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # BuildKit's temporary leases (label buildkit/lease.temporary): left over from builds,
    # holding the blobs and snapshots of what was just built; BuildKit drops them when
    # it prunes (seen on 28.5), so they go with the first build-cache record pruned.
    transient: tuple[str, ...] = ()
    # What containerd's readers could not trust (a note each); what it might hold is a
    # root of its own ("finding:<where>"), so it is never counted as freed.
    findings: tuple[str, ...] = ()

    def holders(self, kind: str, ident: str) -> tuple[str, ...]:
        if kind == "build-cache":
            return self.cache.get(ident, ()) + self.transient
        table = {"image": self.images, "container": self.containers}
        return table.get(kind, {}).get(ident, ())


class Ledger:
    """Reference counts over a CtdGraph; ``release`` returns the bytes a removal frees."""

    def __init__(self, graph: CtdGraph) -> None:
        self.graph = graph
        self.refs: Counter[str] = Counter()
        live: set[str] = set()
        pending: list[str] = []
        for nodes in graph.roots.values():
            self.refs.update(set(nodes))
            pending.extend(nodes)
        while pending:  # only what a root reaches holds anything: the rest is garbage
            node = pending.pop()
            if node in live:
                continue
            live.add(node)
            kept = set(graph.edges.get(node, ())) - {node}  # a label naming its own blob
            self.refs.update(kept)
            pending.extend(kept)
        self.released: set[str] = set()
        self.freed_nodes: set[str] = set()

    def release(self, holders: Iterable[str]) -> int:
        freed = 0
        pending: list[str] = []
        for holder in holders:
            if holder in self.released or holder not in self.graph.roots:
                continue
            self.released.add(holder)
            pending.extend(set(self.graph.roots[holder]))
        while pending:  # a worklist: snapshot chains can be long
            node = pending.pop()
            self.refs[node] -= 1
            if self.refs[node] > 0 or node in self.freed_nodes:
                continue
            self.freed_nodes.add(node)
            freed += self.graph.sizes.get(node, 0)
            pending.extend(set(self.graph.edges.get(node, ())) - {node})
        return freed

    def release_item(self, kind: str, ident: str) -> int:
        return self.release(self.graph.holders(kind, ident))
