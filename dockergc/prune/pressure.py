"""Disk pressure (pure): above the high mark, evict unused images and build cache, least
recently used first, until the projection is under the low mark.

A percentage mark is of the root's filesystem: the projection starts from its used
bytes and subtracts everything the plan frees (containers' rw layers and volumes too).
A size mark ("200GB", docuum's form) is of images + build cache as the daemon counts
them in `system df` (LayersSize plus unshared cache records): the projection subtracts
only what image and cache removals free.
"""

from __future__ import annotations

from dockergc.prune import cache as cachemod
from dockergc.prune.cache import CacheSet
from dockergc.prune.facts import EngineFacts
from dockergc.prune.images import ImageSet
from dockergc.prune.marks import show_bytes
from dockergc.prune.policy import PrunePolicy

RULE = "disk pressure: least recently used"


def relieve(
    facts: EngineFacts,
    policy: PrunePolicy,
    images: ImageSet,
    cache: CacheSet,
    last_used: dict[str, float],
    other_bytes: int,
) -> list[str]:
    """Evict into ``images`` and ``cache``; notes for the report. ``other_bytes``: what
    the plan's containers and volumes free (they count against a percentage only)."""
    high, low = policy.high_watermark, policy.low_watermark
    if high is None or low is None:
        return []
    if high.absolute:
        used = facts.layers_size + sum(r.size for r in facts.cache if not r.shared)
        limit, target = high.value, low.value
        projected = used - images.freed - cache.freed
    else:
        if not facts.disk_total:
            return []
        used = facts.disk_used
        limit = facts.disk_total * high.value / 100.0
        target = facts.disk_total * low.value / 100.0
        projected = used - other_bytes - images.freed - cache.freed
    if used <= limit:
        return []
    candidates = [(last_used[i.id], "image", i.id) for i in facts.images]
    candidates += [(cachemod.last_used(r), "cache", r.id) for r in facts.cache]
    candidates.sort()
    progress = True
    while progress and projected > target:
        # Again while something went: a parent (older than what is built on it) is
        # passed over while its children stay, and may go once they have.
        progress = False
        for _, kind, ident in candidates:
            if projected <= target:
                break
            freed = _evict_one(images, cache, kind, ident)
            if freed is not None:
                projected -= freed
                progress = True
    if projected <= target:
        return []
    if high.absolute:
        return [
            f"disk pressure: images + build cache take {show_bytes(used)}, over {high.show()}; "
            f"evicting every unused one leaves ~{show_bytes(projected)}, over {low.show()}"
        ]
    return [
        f"disk pressure: {100.0 * used / facts.disk_total:.0f}% used; evicting every unused "
        f"image and build-cache record leaves ~{100.0 * projected / facts.disk_total:.0f}%, "
        "over the low watermark"
    ]


def _evict_one(images: ImageSet, cache: CacheSet, kind: str, ident: str) -> int | None:
    """Evict one image or cache record if it may go: the bytes freed, else None."""
    if kind == "cache":
        return cache.evict(ident, RULE)
    untagged_parent = not images.by_id[ident].tags and images.children.get(ident)
    if ident in images.removed or untagged_parent or images.blocked(ident) is not None:
        return None  # (an untagged parent goes with its last child)
    return images.remove(ident, RULE)
