"""The containerd image store (Docker Engine 29's default): images, snapshots, content
and leases live in the containerd dockerd talks to, not under the data root.

Top to bottom: ``locate`` (which store, which socket, which root) -> ``records`` (typed,
frozen) read by ``metadb`` (meta.db) and ``snapshotter`` (the overlayfs snapshotter's
metadata.db and dirs) -> ``gcmirror`` (containerd's GC, mirrored and explained) ->
``candidates`` (what may go, with evidence) -> ``ctr`` (the one way dockergc changes
containerd's records).
"""
