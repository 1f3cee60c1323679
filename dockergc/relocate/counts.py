"""What the daemon must report once it runs on the moved root.

Counted when post-verify runs, from the old root: the daemon stopped on it before the
final pass and nothing has changed it since (it is untouched until ``finalize``). Counts
taken at preflight would be stale: with the pre-copy the daemon runs on for as long as
the copy takes, and containers come and go meanwhile.

The containers the daemon reports may be fewer, by at most those it drops as it starts
(moby's ``restore``):

- one made with ``--rm`` (HostConfig.AutoRemove) that was running when the daemon
  stopped is removed;
- one whose removal began (State.Dead or RemovalInProgress): a daemon that stops while
  removing a ``--rm`` container leaves it so, and once the removal has released its rw
  layer (and perhaps taken hostconfig.json with it) the daemon skips it as it loads.
  Seen on a real 20.10 stopped with a ``--rm`` container running.
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
    containers_least: int  # without the ones the daemon may drop as it starts
    containers_most: int

    def fits(self, images: int, containers: int) -> bool:
        return (self.images is None or images == self.images) and (
            self.containers_least <= containers <= self.containers_most
        )

    def __str__(self) -> str:
        least, most = self.containers_least, self.containers_most
        held = (
            f"{least}"
            if least == most
            else f"{least} to {most} (--rm and half-removed ones may go)"
        )
        return ("" if self.images is None else f"{self.images} images, ") + f"{held} containers"


def expected_from(old: Path, images: bool) -> Expected:
    """The counts the daemon must report on the copy of ``old``; ``images``: whether the
    image count is the data root's (graphdriver) to check."""
    store = read_containers(old)
    removed = sum(1 for c in store.containers if c.removing or _auto_remove(old, c.id))
    total = len(store.containers)
    return Expected(len(read_images(old).images) if images else None, total - removed, total)


def _auto_remove(root: Path, cid: str) -> bool:
    try:
        doc = parse_json(read_text_in(root, f"containers/{cid}/hostconfig.json"))
    except (UnreadableFile, ValueError):
        return False  # unknown: counted as one that must stay
    return isinstance(doc, dict) and doc.get("AutoRemove") is True
