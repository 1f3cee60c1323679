"""What the daemon must report once it runs on the moved root.

Counted when post-verify runs, from the old root: the daemon stopped on it before the
final pass and nothing has changed it since (it is untouched until ``finalize``). Counts
taken at preflight would be stale: with the pre-copy the daemon runs on for as long as
the copy takes, and containers come and go meanwhile.

A container made with ``--rm`` (HostConfig.AutoRemove) that was running when the daemon
stopped is removed by the daemon as it starts (moby's ``restore``), so the containers
the daemon reports may be fewer, by at most those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dockergc.store.containers import read_containers
from dockergc.store.fsread import UnreadableFile, parse_json, read_text_in
from dockergc.store.images import read_images


@dataclass(frozen=True)
class Expected:
    images: int | None  # None: not checked (containerd image store: containerd's records)
    containers_least: int  # without the auto-remove ones
    containers_most: int

    def fits(self, images: int, containers: int) -> bool:
        return (self.images is None or images == self.images) and (
            self.containers_least <= containers <= self.containers_most
        )

    def __str__(self) -> str:
        least, most = self.containers_least, self.containers_most
        held = f"{least}" if least == most else f"{least} to {most} (--rm ones may go)"
        return ("" if self.images is None else f"{self.images} images, ") + f"{held} containers"


def expected_from(old: Path, images: bool) -> Expected:
    """The counts the daemon must report on the copy of ``old``; ``images``: whether the
    image count is the data root's (graphdriver) to check."""
    store = read_containers(old)
    removed = sum(1 for c in store.containers if _auto_remove(old, c.id))
    total = len(store.containers)
    return Expected(len(read_images(old).images) if images else None, total - removed, total)


def _auto_remove(root: Path, cid: str) -> bool:
    try:
        doc = parse_json(read_text_in(root, f"containers/{cid}/hostconfig.json"))
    except (UnreadableFile, ValueError):
        return False  # unknown: counted as one that must stay
    return isinstance(doc, dict) and doc.get("AutoRemove") is True
