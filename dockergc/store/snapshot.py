"""Gather every fact about a data root, read-only, into one Snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dockergc.store import beside
from dockergc.store.buildkit import BuildkitStore, read_buildkit
from dockergc.store.containers import ContainerStore, read_containers
from dockergc.store.findings import Finding
from dockergc.store.images import ImageStore, read_images
from dockergc.store.layers import (
    LayerStore,
    list_chains,
    read_chains,
    read_layers,
    with_detail,
)
from dockergc.store.mountinfo import (
    MountTable,
    parse_mountinfo,
    pinned_paths,
    read_all_namespaces,
    root_fs_path,
)
from dockergc.store.overlay import (
    OverlayStore,
    combine,
    list_overlay,
    read_overlay_dirs,
    read_short_links,
)


@dataclass(frozen=True)
class Snapshot:
    """What the readers saw; the graph and the planner take nothing else."""

    root: str
    taken_at: float
    images: ImageStore
    layers: LayerStore
    containers: ContainerStore
    overlay: OverlayStore
    buildkit: BuildkitStore
    pinned: dict[str, str]  # absolute path under root -> why a mount pins it
    mount_namespaces: int

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(
            sorted(
                self.images.findings
                + self.layers.findings
                + self.containers.findings
                + self.overlay.findings
                + self.buildkit.findings
            )
        )


def read_pins(root: Path, table: MountTable | None = None) -> tuple[dict[str, str], int]:
    """Paths under ``root`` that some mount namespace uses right now."""
    table = table or read_all_namespaces()
    with open("/proc/self/mountinfo", errors="surrogateescape") as fh:
        own = parse_mountinfo(fh.read())
    return pinned_paths(table, str(root), root_fs_path(own, str(root))), table.namespaces


# Below this many entries in overlay2/ and layerdb a fork costs more than it saves; above
# it, the reads are spread over this many child processes (see beside.py for why).
PARALLEL_MIN_ENTRIES = 4000
SHARES = {"overlay": 2, "chains": 1}


def gather(root: Path, mounts: MountTable | None = None, detail: bool = False) -> Snapshot:
    """Read everything the graph needs; with ``detail``, every layerdb file too (sizes,
    diff ids, parents: what an inventory reports). ``mounts`` lets tests supply a table."""
    pinned, namespaces = read_pins(root, mounts)
    taken_at = time.time()
    dir_names, dirs_head = list_overlay(root)
    chain_names, chains_head = list_chains(root)
    many = len(dir_names) + len(chain_names) >= PARALLEL_MIN_ENTRIES
    dir_parts = beside.spread(
        read_overlay_dirs, root, dir_names, shares=SHARES["overlay"] if many else 0
    )
    chain_parts = beside.spread(
        read_chains, root, chain_names, detail, shares=SHARES["chains"] if many else 0
    )
    links = read_short_links(root)
    images = read_images(root)
    containers = read_containers(root)
    buildkit = read_buildkit(root)
    overlay = combine([dirs_head, *(p.result() for p in dir_parts)], links)
    layers = read_layers(root, detail, [chains_head, *(p.result() for p in chain_parts)])
    if not detail:
        in_images = {c for image in images.images for c in image.chain_ids}
        layers = with_detail(layers, root, {r.chain_id for r in layers.layers} - in_images)
    return Snapshot(
        root=str(root),
        taken_at=taken_at,
        images=images,
        layers=layers,
        containers=containers,
        overlay=overlay,
        buildkit=buildkit,
        pinned=pinned,
        mount_namespaces=namespaces,
    )
