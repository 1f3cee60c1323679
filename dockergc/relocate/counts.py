"""What the daemon must list once it runs on the moved root.

Read when post-verify runs, from the old root: the daemon stopped on it before the
final pass and nothing has changed it since (it is untouched until ``finalize``). What
was read at preflight would be stale: with the pre-copy the daemon runs on for as long
as the copy takes, and containers come and go meanwhile.

Compared by id, not by count: every image and container of the old root must be listed,
and the daemon may list more (a container made the moment it answers, a swarm task);
counts would let a new container hide a lost one, and fail a move for one made early.

What the daemon listed just before the stop (``Listed``, journaled by the stop step)
narrows that to what it had loaded: an image config that fails its digest, an image
whose layers are gone, a container of another storage driver were never listed, so are
not expected after the move either (a root after a full disk has some). Without it (a
daemon that did not answer at the stop, a journal from before), the old root alone.

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
from typing import Any, ClassVar

from dockergc import daemon
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
    images: frozenset[str] | None  # None: not checked (containerd store, nothing listed)
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


@dataclass(frozen=True)
class Listed:
    """What the Engine API listed just before the stop: every image and container id."""

    images: frozenset[str]
    containers: frozenset[str]

    KEY: ClassVar[str] = "listed_before_stop"

    def record(self) -> dict[str, Any]:
        return {self.KEY: {"images": sorted(self.images), "containers": sorted(self.containers)}}


def listed_now(host: str, root: str) -> Listed | None:
    """The listing of the daemon at ``host`` running on ``root``; None if there is none:
    no dockerd runs on it (asking a socket-activated API would start one), it does not
    answer, it runs on another root, or its answer is not what the API writes. The
    listing only narrows post-verify's check, so none is never a failure."""
    if not any(d.kind == "dockerd" for d in daemon.daemons_using(Path(root))):
        return None
    try:
        state = daemon.engine_state(host)
    except Exception:  # noqa: BLE001 - whatever it is, the old root alone is checked
        return None
    if os.path.realpath(state.root) != root:
        return None
    return Listed(state.image_ids, state.container_ids)


def listed_in(records: list[dict[str, Any]]) -> Listed | None:
    """The last listing a stop step journaled; None if none (or not as written)."""
    found = None
    for r in records:
        doc = r.get(Listed.KEY)
        if isinstance(doc, dict):
            images, containers = doc.get("images"), doc.get("containers")
            if isinstance(images, list) and isinstance(containers, list):
                found = Listed(frozenset(map(str, images)), frozenset(map(str, containers)))
    return found


def expected_from(old: Path, images: bool, listed: Listed | None = None) -> Expected:
    """What the daemon must list on the copy of ``old``; ``images``: whether the images
    are the data root's (graphdriver store; also how rw layers are found). On the
    containerd store the images are containerd's: checked only against ``listed``."""
    store = read_containers(old)
    kept = [c for c in store.containers if listed is None or c.id in listed.containers]
    may_go = frozenset(
        c.id
        for c in kept
        if _auto_remove(old, c.id) or (_layer_gone(old, c) if images else c.removing)
    )
    image_ids: frozenset[str] | None = None
    if images:
        image_ids = frozenset(i.id for i in read_images(old).images)
        if listed is not None:
            image_ids &= listed.images
    elif listed is not None:
        image_ids = listed.images
    return Expected(image_ids, {c.id: c.name for c in kept}, may_go)


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
    except ValueError:  # a NUL in the name: no such dir, nor a driver
        return False
    except UnreadableFile as exc:
        return exc.kind == "missing"  # no record at all: as unloadable before the move
    try:
        return not lexists_at(c.id, fd)
    finally:
        os.close(fd)
