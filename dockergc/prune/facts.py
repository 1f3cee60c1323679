"""What the daemon knows of its images, containers, build cache and volumes: read
through the Engine API, with each layer's size from layerdb (the API gives no per-layer
sizes, and "shared layers counted once" needs them) and each volume's size measured on
disk. Parsing is pure: API JSON in, records out.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dockergc.prune.ctdgraph import CtdGraph
from dockergc.store.ids import chain_ids

# The API's zero time for "never" (FinishedAt of a container that never ran).
_ZERO = "0001-01-01T00:00:00Z"

# Engines from 23.0 label the volumes they name themselves (moby
# volume/service/service.go: Create("") adds AnonymousLabel). 20.10 sets no label: there
# an anonymous volume is known only by the name Create("") gives it,
# stringid.GenerateRandomID(), 64 lowercase hex digits. Volumes an older engine made
# keep that unlabelled form after an upgrade, so both signs are honoured on every engine.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
GENERATED_NAME = re.compile(r"[0-9a-f]{64}")
LOCAL_DRIVER = "local"


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
    volumes: tuple[str, ...] = ()  # names of the volumes it mounts


@dataclass(frozen=True)
class EngineVolume:
    name: str
    driver: str
    labels: Mapping[str, str]
    options: Mapping[str, str]  # the local driver's mount options (type, device, o)
    mountpoint: str  # as the daemon sees it
    created: float
    dangling: bool  # the daemon holds no reference to it (GET /volumes?dangling=true)
    bytes: int | None = None  # allocated bytes of its _data, like du -sxB1; None: unmeasured
    unmeasured: str | None = None  # why it could not be measured (it is then kept)

    def anonymous(self) -> str | None:
        """How we know the daemon named it itself, or None for a volume someone named."""
        if ANONYMOUS_LABEL in self.labels:
            return f"label {ANONYMOUS_LABEL}"
        if GENERATED_NAME.fullmatch(self.name):
            return "64-hex generated name"
        return None


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
    parents: tuple[str, ...] = ()  # records it is built on: pruned only after it


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
    volumes: tuple[EngineVolume, ...] = ()
    layers_size: int = 0  # the daemon's LayersSize (system df): all image layers, once
    # The containerd image store: containerd's root, and what its records keep (bytes
    # come from this graph, not from layer_sizes, which is then empty).
    ctd_root: str | None = None
    ctd: CtdGraph | None = None


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
    mounts = [m for m in inspect.get("Mounts") or [] if isinstance(m, dict)]
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
        volumes=tuple(
            str(m["Name"]) for m in mounts if m.get("Type") == "volume" and m.get("Name")
        ),
    )


def parse_volume(doc: Mapping[str, Any], dangling: bool) -> EngineVolume:
    return EngineVolume(
        name=str(doc["Name"]),
        driver=str(doc.get("Driver") or ""),
        labels=_labels(doc.get("Labels")),
        options=_labels(doc.get("Options")),
        mountpoint=str(doc.get("Mountpoint") or ""),
        created=parse_time(doc.get("CreatedAt")) or 0.0,
        dangling=dangling,
    )


def parse_cache(doc: Mapping[str, Any]) -> CacheRecord:
    # API 1.42 replaced the single "Parent" with a list (BuildKit merge ops), whose JSON
    # key moby spells " Parents", with a leading space (the struct tag in
    # api/types/build/cache.go, 23.0 to 28.x): both spellings are read.
    parents = doc.get(" Parents") or doc.get("Parents") or []
    if not parents and doc.get("Parent"):
        parents = [doc["Parent"]]
    return CacheRecord(
        id=str(doc["ID"]),
        kind=str(doc.get("Type") or ""),
        description=str(doc.get("Description") or ""),
        in_use=bool(doc.get("InUse")),
        shared=bool(doc.get("Shared")),
        size=int(doc.get("Size") or 0),
        created=parse_time(doc.get("CreatedAt")) or 0.0,
        last_used=parse_time(doc.get("LastUsedAt")),
        parents=tuple(str(p) for p in parents),
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


def images_and_cache(df: Mapping[str, Any]) -> int:
    """What `docker system df` counts for images and build cache: LayersSize plus the
    records not shared with images. An absolute disk-pressure mark is held against it."""
    return int(df.get("LayersSize") or 0) + sum(r.size for r in cache_records(df) if not r.shared)


def layers_of(images: Sequence[EngineImage]) -> set[str]:
    return {c for image in images for c in image.chains}
