"""What a prune may select: ages per kind, volumes, keep rules, and the disk-pressure mode."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from dockergc.errors import UsageError
from dockergc.prune.marks import Mark, check_marks


@dataclass(frozen=True)
class PrunePolicy:
    now: float
    containers_older_than: float | None = None  # exited/created/dead containers
    dangling: bool = False  # untagged images no image builds on
    images_older_than: float | None = None  # unused images, by last use (else created)
    cache_older_than: float | None = None  # build cache, by last use (else created)
    volumes: bool = False  # unused anonymous volumes
    volumes_all: bool = False  # unused volumes, named ones too
    keep: tuple[str, ...] = ()  # reference patterns: 'postgres:*', 'registry/app:1.*'
    keep_labels: tuple[str, ...] = ()  # 'key' or 'key=value': images, containers, volumes
    keep_newest: int = 0  # per repository
    keep_volumes: tuple[str, ...] = ()  # volume name globs
    keep_containers: tuple[str, ...] = ()  # container name globs
    high_watermark: Mark | None = None  # starts LRU eviction (percent used, or bytes)
    low_watermark: Mark | None = None  # what it evicts down to (the same form)

    def __post_init__(self) -> None:
        if self.keep_newest < 0:
            raise UsageError("--keep-newest must be 0 or more")
        check_marks(self.high_watermark, self.low_watermark)
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
            or self.volumes
            or self.volumes_all
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

    def kept_container(self, name: str) -> str | None:
        """docker-gc's EXCLUDE_CONTAINERS_FROM_GC greps its patterns (extended regexes,
        unanchored) through whole `docker ps -a` lines, so 'web' also spares every
        container whose image or command mentions web. Here a pattern is a glob on the
        name alone, whole-name like --keep: 'mariadb-data', or 'ci-*' for a family."""
        for pattern in self.keep_containers:
            if fnmatch.fnmatchcase(name, pattern):
                return f"--keep-container {pattern} matches {name}"
        return None

    def kept_volume(self, name: str) -> str | None:
        for pattern in self.keep_volumes:
            if fnmatch.fnmatchcase(name, pattern):
                return f"--keep-volume {pattern} matches {name}"
        return None
