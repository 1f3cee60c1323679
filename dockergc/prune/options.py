"""Effective settings (config file, then flags) -> a PrunePolicy. Kept out of the CLI so
that the command stays a thin layer and the mapping is testable without typer."""

from __future__ import annotations

from dockergc.config import Setting
from dockergc.durations import parse_duration
from dockergc.prune.marks import parse_mark
from dockergc.prune.policy import PrunePolicy

# Setting key -> the flag that overrides it, for messages that name what the user typed.
FLAGS = {
    "prune_high_watermark": "--high-watermark",
    "prune_low_watermark": "--low-watermark",
}


def _age(s: dict[str, Setting], key: str) -> float | None:
    value = s[key].value
    return None if value is None else parse_duration(str(value), s[key].source)


def _named(setting: Setting) -> str:
    """The flag, when the value came from one; else the key and the file it is in."""
    flag = FLAGS.get(setting.key, "--" + setting.key.replace("_", "-"))
    return flag if setting.source.startswith("--") else f"{setting.key} in {setting.source}"


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
        high_watermark=parse_mark(high.value, _named(high)),
        low_watermark=parse_mark(low.value, _named(low)),
    )
