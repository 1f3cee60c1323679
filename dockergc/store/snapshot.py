"""Gather every fact about a data root, read-only, into one Snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.buildkit import BuildkitStore, read_buildkit
from dockergc.store.containers import ContainerStore, read_containers
from dockergc.store.findings import Finding
from dockergc.store.images import ImageStore, read_images
from dockergc.store.layers import LayerStore, read_layers
from dockergc.store.mountinfo import (
    MountTable,
    parse_mountinfo,
    pinned_paths,
    read_all_namespaces,
    root_fs_path,
)
from dockergc.store.overlay import OverlayStore, read_overlay


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


def gather(root: Path, mounts: MountTable | None = None) -> Snapshot:
    """Read everything the graph needs. ``mounts`` lets tests supply a mount table."""
    pinned, namespaces = read_pins(root, mounts)
    return Snapshot(
        root=str(root),
        taken_at=time.time(),
        images=read_images(root),
        layers=read_layers(root),
        containers=read_containers(root),
        overlay=read_overlay(root),
        buildkit=read_buildkit(root),
        pinned=pinned,
        mount_namespaces=namespaces,
    )
