"""The configuration file (/etc/dockergc/config.toml): defaults the flags override.

Every effective value carries where it came from, so ``dockergc config show`` can
explain it: "default", the file, or the flag.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockergc.errors import UsageError

DEFAULT_PATH = Path("/etc/dockergc/config.toml")

# key -> (default, type check, what it is)
SCHEMA: dict[str, tuple[Any, type | tuple[type, ...], str]] = {
    "root": (None, str, "Docker data root (else daemon.json data-root, else /var/lib/docker)"),
    "daemon_config": ("/etc/docker/daemon.json", str, "the daemon's config file"),
    "containerd_address": (None, str, "containerd store: socket (else dockerd's --containerd)"),
    "containerd_root": (None, str, "containerd store: root (else 'root' in containerd's config)"),
    "containerd_config": ("/etc/containerd/config.toml", str, "containerd's config file"),
    "min_age": ("1h", str, "grace period before a leftover may be removed"),
    "live_min_age": ("24h", str, "grace period with --live (at least 1h)"),
    "excludes": ([], list, "globs of paths or names never removed"),
    "retention": ("7d", str, "how long quarantine is kept before purge"),
    "high_watermark": (None, (int, float, str), "gc acts only above this disk usage (e.g. 85%)"),
    "low_watermark": (None, (int, float, str), "and purges quarantine until below this"),
    "metrics_file": (None, str, "Prometheus textfile to write after each gc"),
    "state_dir": ("/var/lib/dockergc", str, "where relocation journals are kept"),
    "prune_containers_older_than": (None, str, "prune: stopped containers older than this"),
    "prune_dangling": (False, bool, "prune: untagged images nothing is built on"),
    "prune_images_older_than": (None, str, "prune: unused images last used before this"),
    "prune_build_cache_older_than": (None, str, "prune: build cache unused for this long"),
    "prune_keep": ([], list, "prune: image reference patterns never removed ('postgres:*')"),
    "prune_keep_labels": ([], list, "prune: labels (key or key=value) never removed"),
    "prune_keep_newest": (0, int, "prune: newest images kept per repository"),
    "prune_volumes": (False, bool, "prune: unused anonymous volumes"),
    "prune_volumes_all": (False, bool, "prune: unused volumes, named ones too"),
    "prune_keep_volumes": ([], list, "prune: volume name globs never removed"),
    "prune_keep_containers": ([], list, "prune: container name globs never removed"),
    "prune_high_watermark": (
        None,
        (int, float, str),
        "prune: evict LRU above this (90% of the disk, or 200GB of images + build cache)",
    ),
    "prune_low_watermark": (None, (int, float, str), "prune: ... until under this (same form)"),
}
# Key -> the flag that overrides it, so a message names what the user typed.
FLAGS = {
    "root": "--root",
    "daemon_config": "--config-file",
    "min_age": "--min-age",
    "live_min_age": "--min-age",
    "excludes": "--exclude",
    "retention": "--older-than",
    "high_watermark": "--high-watermark",
    "low_watermark": "--low-watermark",
    "metrics_file": "--metrics-file",
    "state_dir": "--state-dir",
    "prune_containers_older_than": "--containers-older-than",
    "prune_dangling": "--dangling",
    "prune_images_older_than": "--images-older-than",
    "prune_build_cache_older_than": "--build-cache-older-than",
    "prune_keep": "--keep",
    "prune_keep_labels": "--keep-label",
    "prune_keep_newest": "--keep-newest",
    "prune_volumes": "--volumes",
    "prune_volumes_all": "--volumes-all",
    "prune_keep_volumes": "--keep-volume",
    "prune_keep_containers": "--keep-container",
    "prune_high_watermark": "--high-watermark",
    "prune_low_watermark": "--low-watermark",
}
LISTS_OF_STRINGS = (
    "excludes",
    "prune_keep",
    "prune_keep_labels",
    "prune_keep_volumes",
    "prune_keep_containers",
)


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str  # "default", the config file's path, or "--flag"

    @property
    def named(self) -> str:
        """How the user gave this setting, for messages: the flag they typed, or the key
        and the file it is in."""
        if self.source.startswith("--"):
            return self.source
        if self.source == "default":
            return f"the default {self.key}"
        return f"{self.key} in {self.source}"


def load(path: Path, required: bool = False) -> dict[str, Setting]:
    """Defaults, overlaid with the file's values; unknown keys and wrong types are errors."""
    settings = {k: Setting(k, default, "default") for k, (default, _, _) in SCHEMA.items()}
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file {path} does not exist") from None
        return settings
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses on nested arrays and inline tables
        raise UsageError(f"config file {path} is nested too deep to parse") from None
    except OSError as exc:
        raise UsageError(f"config file {path} cannot be read: {exc.strerror}") from exc
    for key, value in doc.items():
        name = key.replace("-", "_")
        if name not in SCHEMA:
            raise UsageError(
                f"config file {path}: unknown key {key!r} (known: {', '.join(sorted(SCHEMA))})"
            )
        wanted = SCHEMA[name][1]
        # TOML's true is a Python bool, which is an int: only a bool key takes it.
        boolean_slip = isinstance(value, bool) and bool not in _types(wanted)
        strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if (
            boolean_slip
            or not isinstance(value, wanted)
            or (name in LISTS_OF_STRINGS and not strings)
        ):
            raise UsageError(
                f"config file {path}: {key} has the wrong type: it must be {_expected(name)}, "
                f"not {_toml_kind(value)}"
            )
        settings[name] = Setting(name, value, str(path))
    return settings


def _types(wanted: type | tuple[type, ...]) -> tuple[type, ...]:
    return wanted if isinstance(wanted, tuple) else (wanted,)


def _expected(name: str) -> str:
    if name in LISTS_OF_STRINGS:
        return "a list of strings"
    wanted = _types(SCHEMA[name][1])
    if wanted == (bool,):
        return "true or false"
    if wanted == (int,):
        return "an integer"
    if wanted == (str,):
        return "a string"
    return 'a percentage or size like "85%" (a string or a number)'


def _toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    for kind, name in ((int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return f"{name} ({value!r})"
    if isinstance(value, list):
        return "a list" if all(isinstance(v, str) for v in value) else "a list holding non-strings"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def override(settings: dict[str, Setting], **flags: Any) -> dict[str, Setting]:
    """Flags given on the command line (not None, not empty) win; each is recorded under
    the flag's own name (``retention`` comes from ``--older-than``)."""
    out = dict(settings)
    for key, value in flags.items():
        if value is not None and value != [] and value != ():
            out[key] = Setting(key, value, FLAGS.get(key, "--" + key.replace("_", "-")))
    return out


def percent(value: Any, what: str) -> float | None:
    """'85%', '85' or 85 -> 85.0; None stays None."""
    if value is None:
        return None
    text = str(value).strip().rstrip("%")
    try:
        pct = float(text)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a percentage like 85%") from None
    if not 0 < pct <= 100:
        raise UsageError(f"{what} {value!r} must be between 0 and 100%")
    return pct


def watermarks(high: Setting, low: Setting) -> tuple[float | None, float | None]:
    """gc's (high, low) disk marks in percent; the low mark defaults to the high one.

    A low mark alone would purge quarantine right after every run whatever the disk
    usage, ignoring retention (nothing could be rolled back), and a low mark above the
    high one makes no sense: both are usage errors, however the marks were given."""
    hi, lo = percent(high.value, high.named), percent(low.value, low.named)
    if lo is not None and hi is None:
        raise UsageError(
            f"{low.named} needs a high watermark too (--high-watermark, or high_watermark "
            "in the config file): alone it would purge quarantine after every run, "
            "ignoring retention"
        )
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(
            f"{low.named} ({lo:g}%) is above {high.named} ({hi:g}%); "
            "the low mark must not exceed the high one"
        )
    return hi, hi if lo is None else lo
