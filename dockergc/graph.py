"""Mark: which layers, overlay2 dirs and short links does anything still reference?

Layer roots are every image's chain (imagedb, the legacy builder's intermediate images
included), every layerdb mount record's parent, and every layer BuildKit's records
name; a root keeps its ancestors (``parent``). Dir roots are the dirs of those layers,
every mount record's dirs (containers, builders, type=image mounts alike), every
BuildKit record, and every live mount in any mount namespace. From live dirs, ``lower``
files reach their parents. Whatever is reached is kept, with the reason it was reached.
A layerdb layer nothing reaches (a crash mid-rmi or mid-load leaves whole chains) is
unreferenced unless its dir turns out to be reached after all.

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
from dockergc.store.layers import LayerRecord, MountRecord
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
    # Layerdb layers nothing reaches, children before parents (the order to remove them).
    layers_unreferenced: tuple[str, ...] = ()
    # chain id -> unreferenced layers that must go before it (its children, by ``parent``
    # or by a dir's ``lower``): a parent never goes while a kept child names it.
    layer_after: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # chain id -> why a layer no root reaches is kept all the same (its dir is in use).
    layers_kept: dict[str, str] = field(default_factory=dict)
    layer_roots: tuple[str, ...] = ()  # what was checked: the evidence of every such layer


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
        self.claims: dict[str, str] = {}  # dir -> the record that names it
        self.layer_by_chain = {layer.chain_id: layer for layer in snap.layers.layers}
        self.layer_reason: dict[str, str] = {}  # chain id -> why a root reaches it
        self.unreached: dict[str, LayerRecord] = {}  # layers no root reaches
        self.layers_kept: dict[str, str] = {}  # ... and kept all the same
        # An image that should exist but cannot be read names layers nobody can list: no
        # layer is then unreferenced for sure (orphan dirs, which no layer names, are not
        # affected). A tag naming an image imagedb lacks is such an image.
        known = {image.id for image in snap.images.images}
        lost = sorted((ref, i) for ref, i in snap.images.tags.items() if i not in known)
        self.layer_hold = (
            f"tag {lost[0][0]} names image {lost[0][1][:19]}, which imagedb lacks: the "
            "layers it needs are unknown"
            if lost
            else ""
        )
        # Dirs a -removing layerdb record names: accounted for (being deleted).
        self.pending_dirs = {r.cache_id for r in snap.layers.removing if r.cache_id}

    def keep(self, name: str, reason: str) -> None:
        if name not in self.live:
            self.live[name] = reason
            self.queue.append(name)

    def claim(self, name: str, reason: str, live: bool = True) -> None:
        """Note that a layerdb record names a dir, and keep it if ``live``. Each dir
        belongs to one record: a second claim means some record's id was copied or
        changed, and the dir it meant before may now look unreferenced. Which one cannot
        be told, so nothing is deleted."""
        if name in self.claims:
            self.freeze.append(
                f"overlay2/{name} is claimed by two records: {self.claims[name]}, and {reason}"
            )
            return
        self.claims[name] = reason
        if live:
            self.keep(name, reason)

    def reach_layers(self, image_users: dict[str, str]) -> None:
        """Which layerdb layers a root reaches besides image chains (those are whole:
        every ancestor is listed): mount records' parents, BuildKit's records, and every
        ancestor of those (by ``parent``). Only these few are walked."""
        snap, reason = self.snap, self.layer_reason
        for mount in snap.layers.mounts:
            parent = mount.parent
            if parent and parent not in image_users and parent not in reason:
                reason[parent] = f"parent of mount record {_short(mount.name)}"
        bk_chains, bk_hex = snap.buildkit.chain_ids, snap.buildkit.hex_ids
        for layer in snap.layers.layers:
            chain = layer.chain_id
            if chain in image_users or chain in reason:
                continue
            diff = layer.diff_id
            if chain in bk_chains or chain[7:] in bk_hex or (diff and diff[7:] in bk_hex):
                reason[chain] = "named in BuildKit's records (buildkit/*.db)"
        queue = deque(reason)
        while queue:
            chain = queue.popleft()
            rec = self.layer_by_chain.get(chain)
            if rec is None:
                continue  # reported by check_consistency or below
            if rec.bad_parent:
                self.freeze.append(
                    f"layer {_short(chain[7:])} ({reason[chain]}) has an unreadable parent "
                    "file: its ancestors are unknown"
                )
            parent = rec.parent
            if parent and parent not in reason and parent not in image_users:
                if parent not in self.layer_by_chain:
                    self.broken.append(
                        f"layer {_short(chain[7:])} names parent {_short(parent[7:])}, "
                        "which layerdb lacks"
                    )
                why = reason[chain]  # the root's reason, not a nest of them (depth 128)
                if not why.startswith("ancestor of "):
                    why = f"ancestor of layer {_short(chain[7:])} ({why})"
                reason[parent] = why
                queue.append(parent)

    def mark_roots(self) -> None:
        snap = self.snap
        tags_by_image: dict[str, list[str]] = {}
        for ref, image_id in snap.images.tags.items():
            tags_by_image.setdefault(image_id, []).append(ref)
        users: dict[str, str] = {}
        for image in snap.images.images:
            label = ", ".join(sorted(tags_by_image.get(image.id, []))) or _short(image.id[7:])
            for chain in image.chain_ids:
                users.setdefault(chain, f"layer of image {label}")
        self.reach_layers(users)
        reached = self.layer_reason
        # Layers and mount records first, while only their claims are in self.live.
        for layer in snap.layers.layers:
            chain = layer.chain_id
            who = users.get(chain) or reached.get(chain)
            if who is None:
                self.unreached[chain] = layer
                self.claim(layer.cache_id, f"layer {_short(chain[7:])}: no root reaches it", False)
            else:
                self.claim(layer.cache_id, f"layer {_short(chain[7:])}: {who}")
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

    def keep_reached_layers(self) -> None:
        """An unreached layer whose dir something live reaches (a lower file, a mount, a
        BuildKit record, a guarded dir) is in use after all: keep it, its ancestors, and
        their dirs, until nothing changes."""
        while True:
            news: dict[str, str] = {}
            for chain, layer in self.unreached.items():
                if chain in self.layers_kept or chain in news:
                    continue
                why = self._in_use(layer)
                if why:
                    news[chain] = why
                    parent = layer.parent
                    while parent in self.unreached and parent not in self.layers_kept:
                        news.setdefault(parent, f"parent of kept layer {_short(chain[7:])}")
                        parent = self.unreached[parent].parent
            if not news:
                return
            self.layers_kept.update(news)
            for chain, why in news.items():
                self.keep(self.unreached[chain].cache_id, f"layer {_short(chain[7:])}: {why}")
            self.propagate()

    def _in_use(self, layer: LayerRecord) -> str | None:
        if self.layer_hold:
            return self.layer_hold
        cache = layer.cache_id
        if cache in self.live:
            return f"its dir overlay2/{_short(cache)} is in use: {self.live[cache]}"
        if cache in self.pending_dirs:
            return f"a -removing layerdb record names its dir overlay2/{_short(cache)} too"
        if cache not in self.dirs:
            return f"its dir overlay2/{_short(cache)} is missing"
        if not is_layer_dir_name(cache):
            return f"its dir name {cache} is not a daemon layer id"
        return self._misfit(layer)

    def _misfit(self, layer: LayerRecord) -> str | None:
        """Why the layer's dir may not be the one its record meant: the daemon writes a
        layer dir's lower file as its parent's link, then the parent's lower (none for a
        base layer). A record whose cache-id was changed or swapped names a dir whose
        lower says otherwise; that dir may be someone else's, so the layer is kept."""
        d = self.dirs[layer.cache_id]
        if layer.bad_parent or not layer.detail:
            return "its parent is unknown"
        if not d.lower_ok:
            return f"its dir overlay2/{_short(d.name)} has an unreadable lower file"
        expected: tuple[str, ...] = ()
        if layer.parent:
            parent = self.layer_by_chain.get(layer.parent)
            pd = self.dirs.get(parent.cache_id) if parent else None
            if pd is None or not pd.link or not pd.lower_ok:
                return "its parent's dir is unknown"
            expected = (pd.link, *pd.lower)
        if d.lower != expected:
            return (
                f"its dir overlay2/{_short(d.name)}'s lower file is not its parent's "
                "chain (the record may name another's dir)"
            )
        return None

    def order_unreferenced(self) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
        """The layers to remove, children first, and for each its direct children among
        them (by ``parent``, and by its dir's first ``lower`` entry): each must go before
        it, so a parent never goes while a kept child names it. Kahn's order: linear in
        the layers, whatever the depth."""
        gone = {c: layer for c, layer in self.unreached.items() if c not in self.layers_kept}
        by_dir = {layer.cache_id: c for c, layer in gone.items()}
        after: dict[str, set[str]] = {c: set() for c in gone}
        for chain, layer in gone.items():
            parents = {layer.parent}
            d = self.dirs.get(layer.cache_id)
            if d is not None and d.lower:
                parents.add(by_dir.get(self.link_owner.get(d.lower[0], "")))
            for parent in parents:
                if parent in gone and parent != chain:
                    after[parent].add(chain)
        waiting = {c: len(children) for c, children in after.items()}
        parents_of: dict[str, list[str]] = {}
        for parent, children in after.items():
            for child in children:
                parents_of.setdefault(child, []).append(parent)
        ready = deque(sorted(c for c, n in waiting.items() if n == 0))
        order: list[str] = []
        while ready:
            chain = ready.popleft()
            order.append(chain)
            for parent in sorted(parents_of.get(chain, ())):
                waiting[parent] -= 1
                if waiting[parent] == 0:
                    ready.append(parent)
        if len(order) < len(gone):  # a loop of parents: only corrupt records make one
            stuck = sorted(set(gone) - set(order))
            self.freeze.append(
                f"layers {', '.join(_short(c[7:]) for c in stuck[:3])} name each other "
                "as parents (a loop)"
            )
        return tuple(order), {c: tuple(sorted(after[c])) for c in order if after[c]}

    def roots_checked(self) -> tuple[str, ...]:
        snap = self.snap
        return (
            f"no image's layer chain names it ({len(snap.images.images)} images in imagedb, "
            "the legacy builder's intermediate images included)",
            f"no layerdb mount record's parent chain ({len(snap.layers.mounts)} records)",
            f"not named in BuildKit's records ({len(snap.buildkit.files)} files)",
        )

    def check_mount_dirs(self) -> None:
        """Freeze when a mount record's dir does not fit the record (its lower file is not
        what the daemon writes for a dir on the record's parent): the record's id was
        changed or swapped with another record's, and the dir it meant may now look like
        anyone's (a -removing record's, an unreferenced layer's)."""
        for mount in self.snap.layers.mounts:
            fits = self._fits(mount)
            for which, name in (("mount-id", mount.mount_id), ("init-id", mount.init_id)):
                d = self.dirs.get(name or "")
                if d is not None and d.lower_ok and not fits(d.name, d.lower):
                    self.freeze.append(
                        f"mount record {_short(mount.name)}'s {which} names "
                        f"overlay2/{_short(d.name)}, whose lower file does not fit the record"
                    )

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
    marker.keep_reached_layers()
    order, after = marker.order_unreferenced()
    marker.check_mount_dirs()
    marker.check_consistency()
    return Graph(
        live=dict(sorted(marker.live.items())),
        live_links=dict(sorted(marker.live_links.items())),
        pending=marker.pending(),
        link_owner=marker.link_owner,
        freeze=tuple(dict.fromkeys(marker.freeze)),
        broken=tuple(dict.fromkeys(marker.broken)),
        guarded=guarded,
        layers_unreferenced=order,
        layer_after=after,
        layers_kept=dict(sorted(marker.layers_kept.items())),
        layer_roots=marker.roots_checked(),
    )
