"""What a prune may select: ages per kind, keep rules, and the disk-pressure mode."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from dockergc.errors import UsageError


@dataclass(frozen=True)
class PrunePolicy:
    now: float
    containers_older_than: float | None = None  # exited/created/dead containers
    dangling: bool = False  # untagged images no image builds on
    images_older_than: float | None = None  # unused images, by last use (else created)
    cache_older_than: float | None = None  # build cache, by last use (else created)
    keep: tuple[str, ...] = ()  # reference patterns: 'postgres:*', 'registry/app:1.*'
    keep_labels: tuple[str, ...] = ()  # 'key' or 'key=value', on images and containers
    keep_newest: int = 0  # per repository
    high_watermark: float | None = None  # percent used that starts LRU eviction
    low_watermark: float | None = None  # percent used it evicts down to

    def __post_init__(self) -> None:
        if self.keep_newest < 0:
            raise UsageError("--keep-newest must be 0 or more")
        marks = (self.high_watermark, self.low_watermark)
        if (marks[0] is None) != (marks[1] is None):
            raise UsageError("disk-pressure mode needs both --high-watermark and --low-watermark")
        if marks[0] is not None and marks[1] is not None and not 0 < marks[1] < marks[0] <= 100:
            raise UsageError("watermarks must satisfy 0 < low < high <= 100")
        for label in self.keep_labels:
            if not label.split("=", 1)[0]:
                raise UsageError(f"--keep-label {label!r} has no key")

    @property
    def selects_anything(self) -> bool:
        return (
            self.containers_older_than is not None
            or self.dangling
            or self.images_older_than is not None
            or self.cache_older_than is not None
            or self.high_watermark is not None
        )

    def kept_by_reference(self, tags: tuple[str, ...]) -> str | None:
        for tag in tags:
            for pattern in self.keep:
                if fnmatch.fnmatchcase(tag, pattern):
                    return f"--keep {pattern} matches {tag}"
        return None

    def kept_by_label(self, labels: Mapping[str, str]) -> str | None:
        for rule in self.keep_labels:
            key, eq, value = rule.partition("=")
            if key in labels and (not eq or labels[key] == value):
                return f"--keep-label {rule}"
        return None
