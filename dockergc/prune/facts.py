"""What the daemon knows of its images, containers and build cache: read through the
Engine API, with each layer's size from layerdb (the API gives no per-layer sizes, and
"shared layers counted once" needs them). Parsing is pure: API JSON in, records out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dockergc.store.ids import chain_ids

# The API's zero time for "never" (FinishedAt of a container that never ran).
_ZERO = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class EngineImage:
    id: str  # sha256:...
    tags: tuple[str, ...]  # repo:tag, without <none>
    parent: str | None  # legacy builder's parent image
    created: float
    last_tagged: float | None
    labels: Mapping[str, str]
    chains: tuple[str, ...]  # layer chain ids, base first


@dataclass(frozen=True)
class EngineContainer:
    id: str
    name: str
    image_id: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    created: float
    started: float | None
    finished: float | None
    labels: Mapping[str, str]
    size_rw: int


@dataclass(frozen=True)
class CacheRecord:
    id: str
    kind: str  # BuildKit's record type (regular, source.local, exec.cachemount, ...)
    description: str
    in_use: bool
    shared: bool  # its data is also an image layer: pruning it frees nothing
    size: int
    created: float
    last_used: float | None


@dataclass(frozen=True)
class EngineFacts:
    root: str
    taken_at: float
    images: tuple[EngineImage, ...]
    containers: tuple[EngineContainer, ...]
    cache: tuple[CacheRecord, ...]
    layer_sizes: Mapping[str, int]  # chain id -> bytes of that layer's own diff
    disk_total: int
    disk_used: int


def parse_time(value: object) -> float | None:
    """RFC 3339 with nanoseconds (the API's form), or unix seconds; None for "never"."""
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if not isinstance(value, str) or not value or value.startswith(_ZERO[:4]):
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most microseconds
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _labels(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def parse_image(inspect: Mapping[str, Any]) -> EngineImage:
    diff_ids = [str(d) for d in (inspect.get("RootFS") or {}).get("Layers") or []]
    config = inspect.get("Config") or {}
    return EngineImage(
        id=str(inspect["Id"]),
        tags=tuple(sorted(t for t in inspect.get("RepoTags") or [] if t != "<none>:<none>")),
        parent=str(inspect.get("Parent") or "") or None,
        created=parse_time(inspect.get("Created")) or 0.0,
        last_tagged=parse_time((inspect.get("Metadata") or {}).get("LastTagTime")),
        labels=_labels(config.get("Labels")),
        chains=tuple(chain_ids(diff_ids)),
    )


def parse_container(inspect: Mapping[str, Any], size_rw: int) -> EngineContainer:
    state = inspect.get("State") or {}
    return EngineContainer(
        id=str(inspect["Id"]),
        name=str(inspect.get("Name") or "").lstrip("/"),
        image_id=str(inspect.get("Image") or ""),
        state=str(state.get("Status") or "unknown"),
        created=parse_time(inspect.get("Created")) or 0.0,
        started=parse_time(state.get("StartedAt")),
        finished=parse_time(state.get("FinishedAt")),
        labels=_labels((inspect.get("Config") or {}).get("Labels")),
        size_rw=size_rw,
    )


def parse_cache(doc: Mapping[str, Any]) -> CacheRecord:
    return CacheRecord(
        id=str(doc["ID"]),
        kind=str(doc.get("Type") or ""),
        description=str(doc.get("Description") or ""),
        in_use=bool(doc.get("InUse")),
        shared=bool(doc.get("Shared")),
        size=int(doc.get("Size") or 0),
        created=parse_time(doc.get("CreatedAt")) or 0.0,
        last_used=parse_time(doc.get("LastUsedAt")),
    )


def rw_sizes(df: Mapping[str, Any]) -> dict[str, int]:
    return {str(c["Id"]): int(c.get("SizeRw") or 0) for c in df.get("Containers") or []}


def cache_records(df: Mapping[str, Any]) -> tuple[CacheRecord, ...]:
    return tuple(parse_cache(r) for r in df.get("BuildCache") or [])


def daemon_usage(df: Mapping[str, Any]) -> int:
    """Bytes the daemon itself counts as used by layers, containers' rw layers and
    build cache that is not shared with images: what 'freed' is measured against."""
    layers = int(df.get("LayersSize") or 0)
    rw = sum(rw_sizes(df).values())
    cache = sum(r.size for r in cache_records(df) if not r.shared)
    return layers + rw + cache


def layers_of(images: Sequence[EngineImage]) -> set[str]:
    return {c for image in images for c in image.chains}
