"""Mark: which overlay2 dirs and short links does anything still reference?

Roots are every layerdb layer, every layerdb mount record (containers, builders,
type=image mounts alike), every BuildKit record, and every live mount in any mount
namespace. From live dirs, ``lower`` files reach their parents. Whatever is reached
is kept, with the reason it was reached.

Inconsistent state (an image naming a layer layerdb lacks, a container without a
mount record, records we cannot read) *freezes* deletion of layer dirs: we cannot
tell which dir the missing record meant, so we refuse rather than guess.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dockergc.store.ids import is_hex64
from dockergc.store.layers import MountRecord
from dockergc.store.overlay import LAYER_NAME
from dockergc.store.snapshot import Snapshot

# Where a symlink can hide records (what they name would look unreferenced): the graph
# freezes on one met there. overlay2/<layer dir> counts too: its lower file is unread.
REFERENCE_DIRS = ("image", "containers", "buildkit", "overlay2")


@dataclass(frozen=True)
class Graph:
    live: dict[str, str]  # overlay2 dir name -> first reason it is kept
    live_links: dict[str, str]  # short link name -> reason
    pending: dict[str, str]  # dir name -> "-removing" layerdb entry that still names it
    link_owner: dict[str, str]  # short link -> dir name (from link files, then l/ targets)
    freeze: tuple[str, ...]  # why no layer dir may be deleted in this run
    broken: tuple[str, ...]  # references to things that do not exist (reported)
    # dir name -> why it is kept though no record names it (also in ``live``): it may be
    # the dir of a mount record whose mount-id or init-id names no dir.
    guarded: dict[str, str] = field(default_factory=dict)


def is_layer_dir_name(name: str) -> bool:
    """Names dockergc may ever delete: the daemon's 64-hex ids and their -init twins."""
    base = name[:-5] if name.endswith("-init") else name
    return is_hex64(base)


def _short(name: str) -> str:
    return name[:12]


class _Marker:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.dirs = {d.name: d for d in snap.overlay.dirs}
        self.live: dict[str, str] = {}
        self.live_links: dict[str, str] = {}
        self.freeze: list[str] = []
        self.broken: list[str] = []
        self.link_owner: dict[str, str] = {}
        owner = self.link_owner
        for link in snap.overlay.links:
            if link.target_dir:
                owner[link.short] = link.target_dir
        for d in snap.overlay.dirs:
            if d.link:  # a dir's own link file wins over what l/ says
                was = owner.get(d.link)
                if was is not None and was != d.name:
                    # Two link files, or a link file and l/'s target, disagree: a lower
                    # file naming it may mean either dir (the kernel follows l/).
                    self.freeze.append(
                        f"short link l/{d.link} names both overlay2/{was} and "
                        f"overlay2/{d.name} (link files or l/ disagree)"
                    )
                owner[d.link] = d.name
        self.queue: deque[str] = deque()
        self.layer_by_chain = {layer.chain_id: layer for layer in snap.layers.layers}
        # Dirs a -removing layerdb record names: accounted for (being deleted).
        self.pending_dirs = {r.cache_id for r in snap.layers.removing if r.cache_id}

    def keep(self, name: str, reason: str) -> None:
        if name not in self.live:
            self.live[name] = reason
            self.queue.append(name)

    def claim(self, name: str, reason: str) -> None:
        """Keep a dir a layerdb record names. Each dir belongs to one record: a second
        claim means some record's id was copied or changed, and the dir it meant before
        may now look unreferenced. Which one cannot be told, so nothing is deleted."""
        if name in self.live:
            self.freeze.append(
                f"overlay2/{name} is claimed by two records: {self.live[name]}, and {reason}"
            )
        else:
            self.live[name] = reason
            self.queue.append(name)

    def mark_roots(self) -> None:
        snap = self.snap
        tags_by_image: dict[str, list[str]] = {}
        for ref, image_id in snap.images.tags.items():
            tags_by_image.setdefault(image_id, []).append(ref)
        users: dict[str, str] = {}
        for image in snap.images.images:
            label = ", ".join(sorted(tags_by_image.get(image.id, []))) or _short(image.id[7:])
            for chain in image.chain_ids:
                users.setdefault(chain, f"image {label}")
        # Layers and mount records first, while only their claims are in self.live.
        for layer in snap.layers.layers:
            who = users.get(layer.chain_id, "no image (kept while layerdb holds it)")
            self.claim(layer.cache_id, f"layer {_short(layer.chain_id[7:])} of {who}")
            if layer.cache_id not in self.dirs:
                # moby renames a layer -removing before deleting its dir, so a plain
                # entry without its dir is corruption or a hand deletion: its cache-id
                # may be wrong, and the dir it meant would look orphaned.
                self.freeze.append(
                    f"layer {_short(layer.chain_id[7:])} names overlay2/{layer.cache_id}, "
                    "which is missing"
                )
        containers = {c.id: c for c in snap.containers.containers}
        for mount in snap.layers.mounts:
            owner = containers.get(mount.name)
            who = (
                f"container {owner.name or _short(owner.id)}"
                if owner
                else (
                    f"mount record {_short(mount.name)} (builder or image mount; no container dir)"
                )
            )
            self.claim(mount.mount_id, f"rw layer of {who} (mount-id)")
            if mount.init_id:
                self.claim(mount.init_id, f"init layer of {who} (init-id)")
                if mount.init_id != mount.mount_id + "-init":
                    # moby always names it <mount-id>-init: one of the two was changed.
                    self.freeze.append(
                        f"mount record {_short(mount.name)}'s init-id is not its mount-id + '-init'"
                    )
        for key in sorted(snap.buildkit.snapshot_keys):
            if key in self.dirs:
                self.keep(key, "BuildKit snapshot (buildkit/snapshots.db)")
        for name in self.dirs:
            base = name[:-5] if name.endswith("-init") else name
            if base in snap.buildkit.hex_ids:
                self.keep(name, "its id occurs in BuildKit's records (buildkit/*.db)")
        self._mark_pins()

    def _mark_pins(self) -> None:
        overlay = os.path.join(self.snap.root, "overlay2") + "/"
        for path, why in sorted(self.snap.pinned.items()):
            if not path.startswith(overlay):
                continue
            parts = path[len(overlay) :].split("/")
            if parts[0] == "l" and len(parts) > 1:
                self.live_links[parts[1]] = why
                target = self.link_owner.get(parts[1])
                if target:
                    self.keep(target, f"mounted: {why}")
                else:
                    self.freeze.append(f"a live mount uses l/{parts[1]}, which names no dir")
            elif parts[0]:
                self.keep(parts[0], f"mounted: {why}")

    def propagate(self) -> None:
        # A lower file lists every ancestor, nearest first. When a dir's list is its
        # parent's link followed by the parent's own list (as the daemon writes them),
        # the parent covers the rest once it is processed: only the first entry is new.
        # Any other list is walked in full. This keeps deep chains linear, not quadratic.
        live, live_links, link_owner, queue = (
            self.live,
            self.live_links,
            self.link_owner,
            self.queue,
        )
        dirs = self.dirs
        while queue:
            name = queue.popleft()
            d = dirs.get(name)
            if d is None:
                self.broken.append(f"{self.live[name]} names overlay2/{name}, which is missing")
                continue
            if not d.lower_ok:
                self.freeze.append(f"live layer overlay2/{name} has an unreadable lower file")
            lower = d.lower
            if lower:
                first = dirs.get(link_owner.get(lower[0], ""))
                if first is not None and first.lower_ok and first.lower == lower[1:]:
                    lower = lower[:1]
                as_lower = f"lower of live layer {_short(name)}"
                as_parent = f"lower layer of live overlay2/{_short(name)}"
                for short in lower:
                    if short not in live_links:
                        live_links[short] = as_lower
                    parent = link_owner.get(short)
                    if parent is None:
                        self.freeze.append(
                            f"live layer overlay2/{name} lists l/{short}, which names no dir"
                        )
                    elif parent not in live:
                        live[parent] = as_parent
                        queue.append(parent)
            if d.link and d.link not in live_links:
                live_links[d.link] = f"short link of live layer {_short(name)}"

    def guard_dangling_mounts(self) -> dict[str, str]:
        """Keep what may be the rw (or init) dir of a mount record naming no dir.

        The daemon removes a container's rw dir, its -init dir, then its mount record:
        a crash in between leaves a record naming no dir, which is common and harmless.
        But a record whose mount-id was changed also names no dir, and its real rw dir,
        named by nothing now, would look orphaned. The two cannot be told apart by the
        record, so every unreferenced dir whose lower file is what that record's dirs
        would have (moby's getLower: the parent layer's link, then the parent's lower;
        the rw dir's starts with its init layer's link) is kept. Other leftovers, and
        every leftover when no record dangles, are not affected."""
        dangling = [
            m
            for m in self.snap.layers.mounts
            if m.mount_id not in self.dirs or (m.init_id and m.init_id not in self.dirs)
        ]
        if not dangling:
            return {}
        unreferenced = [
            d
            for name, d in self.dirs.items()
            if name not in self.live
            and name not in self.pending_dirs
            and d.lower_ok
            and is_layer_dir_name(name)
        ]
        guarded: dict[str, str] = {}
        for mount in dangling:
            which = "mount-id" if mount.mount_id not in self.dirs else "init-id"
            why = f"may be the rw dir of mount record {mount.name} (its {which} names no dir)"
            fits = self._fits(mount)
            for d in unreferenced:
                if d.name not in guarded and fits(d.name, d.lower):
                    guarded[d.name] = why
        for name, why in sorted(guarded.items()):
            self.keep(name, why)
        return guarded

    def _fits(self, mount: MountRecord) -> Callable[[str, tuple[str, ...]], bool]:
        """Whether a dir (name, lower) could be this record's rw or init dir."""
        chain: tuple[str, ...] | None = None  # what the record's init (or lone rw) dir lists
        layer = self.layer_by_chain.get(mount.parent or "")
        top = self.dirs.get(layer.cache_id) if layer else None
        if top is not None and top.link and top.lower_ok:
            chain = (top.link, *top.lower)

        def on_parent(lower: tuple[str, ...]) -> bool:
            """A lower file of a dir made on the record's parent layer."""
            if chain is not None:
                return lower == chain
            # Parent unknown (none recorded, or its layer unreadable): a lower that names
            # a live layer's link followed by that layer's own lower, as a container's
            # dirs would, may be this record's; with no parent recorded at all, so may
            # an empty one (a container of a scratch image).
            if not lower:
                return not mount.parent
            parent = self.dirs.get(self.link_owner.get(lower[0], ""))
            return (
                parent is not None
                and parent.name in self.live
                and parent.lower_ok
                and parent.lower == lower[1:]
            )

        def fits(name: str, lower: tuple[str, ...]) -> bool:
            if name.endswith("-init"):  # the init dir sits on the parent layer
                return bool(mount.init_id) and on_parent(lower)
            if not mount.init_id and on_parent(lower):  # a lone rw dir (builder, image mount)
                return True
            # An rw dir on an init dir: its lower starts with the init dir's link, which
            # names an -init dir, or nothing (that dir, or its l/ link, is gone).
            if not lower:
                return False
            owner = self.link_owner.get(lower[0])
            return (owner is None or owner.endswith("-init")) and on_parent(lower[1:])

        return fits

    def check_consistency(self) -> None:
        snap = self.snap
        for f in snap.findings:
            if f.kind == "symlink" and _hides_records(f.path):
                self.freeze.append(
                    f"{f.path} is a symlink: dockergc never follows one, so the records "
                    "behind it are unread and what they name could look unreferenced"
                )
        known_chains = {layer.chain_id for layer in snap.layers.layers}
        for image in snap.images.images:
            missing = [c for c in image.chain_ids if c not in known_chains]
            if missing:
                self.freeze.append(
                    f"image {_short(image.id[7:])} needs layer {_short(missing[0][7:])}, "
                    "which layerdb lacks"
                )
        for path in snap.images.unreadable:
            self.freeze.append(f"image config {path} is unreadable: its layers are unknown")
        for name in snap.layers.unreadable_layers:
            self.freeze.append(f"layerdb entry {name} has no usable cache-id")
        for name in snap.layers.unreadable_mounts:
            self.freeze.append(f"layerdb mount record {name} is unreadable")
        mounts = {m.name for m in snap.layers.mounts}
        for c in snap.containers.containers:
            if c.id not in mounts and c.driver in (None, "overlay2"):
                self.freeze.append(
                    f"container {_short(c.id)} has no layerdb mount record; its rw dir is unknown"
                )
        for cid in snap.containers.unreadable:
            self.freeze.append(f"container {_short(cid)} config is unreadable")
        for path in snap.buildkit.unreadable:
            self.freeze.append(f"BuildKit records {path} are unreadable")

    def pending(self) -> dict[str, str]:
        return {
            r.cache_id: r.name
            for r in self.snap.layers.removing
            if r.cache_id and r.cache_id not in self.live
        }


def _hides_records(path: str) -> bool:
    """A symlink at ``path`` may hide records: a dir on the way to imagedb, layerdb,
    mount records, containers or BuildKit's files (or one of those), or a layer dir."""
    parts = path.split("/")
    if parts[0] not in REFERENCE_DIRS:
        return False
    if parts[0] == "overlay2":
        return len(parts) == 1 or (len(parts) == 2 and LAYER_NAME.fullmatch(parts[1]) is not None)
    return True


def mark(snap: Snapshot) -> Graph:
    """Return every live dir and link with its reason, and any reason to freeze."""
    marker = _Marker(snap)
    marker.mark_roots()
    marker.propagate()
    guarded = marker.guard_dangling_mounts()
    marker.propagate()
    marker.check_consistency()
    return Graph(
        live=dict(sorted(marker.live.items())),
        live_links=dict(sorted(marker.live_links.items())),
        pending=marker.pending(),
        link_owner=marker.link_owner,
        freeze=tuple(dict.fromkeys(marker.freeze)),
        broken=tuple(dict.fromkeys(marker.broken)),
        guarded=guarded,
    )
