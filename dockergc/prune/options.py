"""Effective settings (config file, then flags) -> a PrunePolicy. Kept out of the CLI so
that the command stays a thin layer and the mapping is testable without typer."""

from __future__ import annotations

from dockergc.config import Setting
from dockergc.durations import parse_duration
from dockergc.prune.marks import parse_mark
from dockergc.prune.policy import PrunePolicy


def _age(s: dict[str, Setting], key: str) -> float | None:
    value = s[key].value
    return None if value is None else parse_duration(str(value), s[key].named)


def policy_from_settings(s: dict[str, Setting], now: float) -> PrunePolicy:
    high, low = s["prune_high_watermark"], s["prune_low_watermark"]
    return PrunePolicy(
        now=now,
        containers_older_than=_age(s, "prune_containers_older_than"),
        dangling=bool(s["prune_dangling"].value),
        images_older_than=_age(s, "prune_images_older_than"),
        cache_older_than=_age(s, "prune_build_cache_older_than"),
        volumes=bool(s["prune_volumes"].value),
        volumes_all=bool(s["prune_volumes_all"].value),
        keep=tuple(s["prune_keep"].value),
        keep_labels=tuple(s["prune_keep_labels"].value),
        keep_newest=int(s["prune_keep_newest"].value),
        keep_volumes=tuple(s["prune_keep_volumes"].value),
        keep_containers=tuple(s["prune_keep_containers"].value),
        high_watermark=parse_mark(high.value, high.named),
        low_watermark=parse_mark(low.value, low.named),
    )
