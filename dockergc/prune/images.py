"""Which images a prune removes, tracked incrementally (pure): layer refcounts give each
removal's bytes (shared layers once), and an untagged parent left without children goes
with its last child."""

from __future__ import annotations

from collections import Counter

from dockergc.prune.ctdgraph import Ledger
from dockergc.prune.facts import EngineContainer, EngineFacts, EngineImage


def image_name(image: EngineImage) -> str:
    return image.tags[0] if image.tags else image.id[7:19]


def last_used(image: EngineImage, containers: list[EngineContainer]) -> float:
    times = [image.created, image.last_tagged or 0.0]
    for c in containers:
        times += [c.created, c.started or 0.0, c.finished or 0.0]
    return max(times)


def depth(image: EngineImage, by_id: dict[str, EngineImage]) -> int:
    level, seen, parent = 0, {image.id}, image.parent
    while parent in by_id and parent not in seen:
        seen.add(parent)
        level += 1
        parent = by_id[parent].parent
    return level


class ImageSet:
    def __init__(
        self,
        facts: EngineFacts,
        in_use: dict[str, str],
        kept: dict[str, str],
        ledger: Ledger | None = None,
    ) -> None:
        """``in_use`` and ``kept``: image id -> why it must stay. ``ledger``: the
        containerd store's references (bytes come from it instead of layer refcounts)."""
        self.by_id = {i.id: i for i in facts.images}
        self.children: dict[str, set[str]] = {}
        for image in facts.images:
            if image.parent:
                self.children.setdefault(image.parent, set()).add(image.id)
        self.refs: Counter[str] = Counter(c for i in facts.images for c in i.chains)
        self.sizes = facts.layer_sizes
        self.in_use, self.kept = in_use, kept
        self.ledger = ledger
        self.removed: dict[str, tuple[str, int]] = {}  # id -> (rule, bytes), in order

    @property
    def freed(self) -> int:
        return sum(b for _, b in self.removed.values())

    def blocked(self, image_id: str) -> str | None:
        if image_id in self.in_use:
            return self.in_use[image_id]
        if image_id in self.kept:
            return self.kept[image_id]
        staying = self.children.get(image_id, set()) - set(self.removed)
        if staying:
            return f"{len(staying)} image(s) are built on it"
        return None

    def remove(self, image_id: str, rule: str) -> int:
        """Remove one image (and parents it leaves childless); the bytes it frees."""
        freed = 0
        for chain in self.by_id[image_id].chains:
            self.refs[chain] -= 1
            if self.refs[chain] == 0:
                freed += self.sizes.get(chain, 0)
        if self.ledger is not None:
            freed = self.ledger.release_item("image", image_id)
        self.removed[image_id] = (rule, freed)
        parent = self.by_id[image_id].parent
        if parent in self.by_id and parent not in self.removed:
            p = self.by_id[parent]
            if not p.tags and self.blocked(parent) is None:
                freed += self.remove(parent, f"parent of {image_name(self.by_id[image_id])}")
        return freed

    def children_first(self) -> list[tuple[str, tuple[str, int]]]:
        """The removed images, each after every removed image built on it."""
        return sorted(self.removed.items(), key=lambda kv: -depth(self.by_id[kv[0]], self.by_id))
