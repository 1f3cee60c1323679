"""What the daemon must list once it runs on the moved root.

Read when post-verify runs, from the old root: the daemon stopped on it before the
final pass and nothing has changed it since (it is untouched until ``finalize``). What
was read at preflight would be stale: with the pre-copy the daemon runs on for as long
as the copy takes, and containers come and go meanwhile.

Compared by id, not by count: every image and container of the old root must be listed,
and the daemon may list more (a container made the moment it answers, a swarm task);
counts would let a new container hide a lost one, and fail a move for one made early.

Of the old root's containers, the daemon drops as it starts (moby's ``restore``):

- one made with ``--rm`` (HostConfig.AutoRemove): the daemon's stop ended it, and the
  daemon removes it as it starts;
- one whose rw layer cannot be loaded. On a graphdriver root that is a container with
  no ``image/<driver>/layerdb/mounts/<id>``: a daemon that stops while removing a
  ``--rm`` container leaves it so (State.Dead, RemovalInProgress, its layer released,
  hostconfig.json perhaps gone; seen on a real 20.10). On the containerd store the layer
  is a containerd snapshot, not read here: there, one whose removal began (State.Dead or
  RemovalInProgress) may go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dockergc.daemon import EngineState
from dockergc.store.containers import ContainerRecord, read_containers
from dockergc.store.fsread import (
    UnreadableFile,
    lexists_at,
    open_dir_in,
    parse_json,
    read_text_in,
)
from dockergc.store.images import read_images

SHOWN = 5  # ids named in a failure, the rest counted


@dataclass(frozen=True)
class Expected:
    images: frozenset[str] | None  # None: not checked (containerd store: containerd's)
    containers: dict[str, str]  # id -> name, every container of the old root
    may_go: frozenset[str]  # of those, the ones the daemon drops as it starts

    def missing(self, state: EngineState) -> str:
        """What the daemon does not list that it must, said for the one line; ""."""
        said = []
        if self.images is not None:
            gone = sorted(self.images - state.image_ids)
            said += _named("image", [i.removeprefix("sha256:")[:12] for i in gone])
        lost = sorted(set(self.containers) - self.may_go - state.container_ids)
        said += _named("container", [f"{c[:12]} ({self.containers[c]})" for c in lost])
        return "; ".join(said)

    def __str__(self) -> str:
        images = "" if self.images is None else f"{len(self.images)} images, "
        go = f" ({len(self.may_go)} of them may go: --rm or half-removed)" if self.may_go else ""
        return f"{images}{len(self.containers)} containers{go}"


def _named(kind: str, ids: list[str]) -> list[str]:
    if not ids:
        return []
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return [f"{len(ids)} {kind}(s) missing: {', '.join(ids[:SHOWN])}{more}"]


def expected_from(old: Path, images: bool) -> Expected:
    """What the daemon must list on the copy of ``old``; ``images``: whether the images
    are the data root's to check (graphdriver store; also how rw layers are found)."""
    store = read_containers(old)
    may_go = frozenset(
        c.id
        for c in store.containers
        if _auto_remove(old, c.id) or (_layer_gone(old, c) if images else c.removing)
    )
    return Expected(
        frozenset(i.id for i in read_images(old).images) if images else None,
        {c.id: c.name for c in store.containers},
        may_go,
    )


def _auto_remove(root: Path, cid: str) -> bool:
    try:
        doc = parse_json(read_text_in(root, f"containers/{cid}/hostconfig.json"))
    except (UnreadableFile, ValueError):
        return False  # unknown: counted as one that must stay
    return isinstance(doc, dict) and doc.get("AutoRemove") is True


def _layer_gone(root: Path, c: ContainerRecord) -> bool:
    """No rw layer record for ``c`` where its driver keeps them: the daemon cannot load it
    (nor could it before the move). Unknown (no plain driver name, a dir unreadable):
    it must stay."""
    if not c.driver or "/" in c.driver or c.driver.startswith("."):
        return False
    try:
        fd = open_dir_in(root, f"image/{c.driver}/layerdb/mounts")
    except UnreadableFile as exc:
        return exc.kind == "missing"  # no record at all: as unloadable before the move
    try:
        return not lexists_at(c.id, fd)
    finally:
        os.close(fd)
