"""Read layerdb: committed layers, rw-layer mount records and crash leftovers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, list_dir, read_text
from dockergc.store.ids import is_digest, is_hex64

LAYERDB = Path("image/overlay2/layerdb")
# moby: "<chain>-<random>-removing" while a layer is being deleted.
REMOVING = re.compile(r"([0-9a-f]{64})-[0-9A-Za-z]+-removing")
MOUNT_ID = re.compile(r"[0-9a-f]{64}(-init)?")
# Graph driver ids: 64-hex from the daemon, BuildKit's own (base36, ~25 chars).
CACHE_ID = re.compile(r"[0-9a-zA-Z][0-9a-zA-Z_.-]{0,127}")


@dataclass(frozen=True)
class LayerRecord:
    """A committed layer: layerdb/sha256/<chain>/."""

    chain_id: str  # "sha256:<hex>"
    cache_id: str  # overlay2 dir name
    diff_id: str | None
    parent: str | None
    size: int | None


@dataclass(frozen=True)
class RemovingRecord:
    """A layerdb dir renamed to "-removing": its deletion was interrupted."""

    name: str
    cache_id: str | None  # the overlay2 dir still pending deletion, if recorded


@dataclass(frozen=True)
class MountRecord:
    """layerdb/mounts/<name>: an rw layer (container, builder, type=image mount)."""

    name: str
    mount_id: str
    init_id: str | None
    parent: str | None


@dataclass(frozen=True)
class LayerStore:
    layers: tuple[LayerRecord, ...]
    removing: tuple[RemovingRecord, ...]
    mounts: tuple[MountRecord, ...]
    write_sets: tuple[str, ...]  # layerdb/tmp entries (relative paths)
    unreadable_layers: tuple[str, ...]  # layer entries without a usable cache-id: freeze
    unreadable_mounts: tuple[str, ...]  # mount records we could not read: freeze
    findings: tuple[Finding, ...]


def _optional(path: Path, rel: Path, findings: list[Finding]) -> str | None:
    try:
        return read_text(path).strip()
    except UnreadableFile as exc:
        if exc.kind != "missing":
            findings.append(Finding(str(rel), exc.kind, f"layer metadata {exc}"))
        return None


def _read_layer(root: Path, name: str, findings: list[Finding]) -> LayerRecord | None:
    rel = LAYERDB / "sha256" / name
    cache_id = _optional(root / rel / "cache-id", rel / "cache-id", findings)
    if not cache_id or CACHE_ID.fullmatch(cache_id) is None:
        findings.append(
            Finding(str(rel), "bad-layer", "layer has no usable cache-id; the daemon skips it")
        )
        return None
    diff = _optional(root / rel / "diff", rel / "diff", findings)
    parent = _optional(root / rel / "parent", rel / "parent", findings)
    size_text = _optional(root / rel / "size", rel / "size", findings)
    if parent is not None and not is_digest(parent):
        findings.append(Finding(str(rel / "parent"), "bad-format", "parent is not a digest"))
        parent = None
    if diff is not None and not is_digest(diff):
        findings.append(Finding(str(rel / "diff"), "bad-format", "diff is not a sha256 digest"))
    if size_text is not None and not size_text.isdigit():
        findings.append(Finding(str(rel / "size"), "bad-format", "size is not a number"))
    size = int(size_text) if size_text and size_text.isdigit() else None
    return LayerRecord(
        chain_id="sha256:" + name,
        cache_id=cache_id,
        diff_id=diff if diff and is_digest(diff) else None,
        parent=parent,
        size=size,
    )


def _read_mount(root: Path, name: str, findings: list[Finding]) -> MountRecord | None:
    rel = LAYERDB / "mounts" / name
    mount_id = _optional(root / rel / "mount-id", rel / "mount-id", findings)
    if not mount_id or MOUNT_ID.fullmatch(mount_id) is None:
        findings.append(Finding(str(rel), "bad-mount", "mount record has no usable mount-id"))
        return None
    init_id = _optional(root / rel / "init-id", rel / "init-id", findings)
    parent = _optional(root / rel / "parent", rel / "parent", findings)
    if init_id is not None and MOUNT_ID.fullmatch(init_id) is None:
        findings.append(Finding(str(rel / "init-id"), "bad-format", "init-id is malformed"))
        init_id = None
    if parent is not None and parent and not is_digest(parent):
        findings.append(Finding(str(rel / "parent"), "bad-format", "parent is not a digest"))
    return MountRecord(name=name, mount_id=mount_id, init_id=init_id or None, parent=parent)


def _entries(root: Path, rel: Path, findings: list[Finding], failed: list[str]) -> list[str]:
    try:
        return [e.name for e in list_dir(root / rel)]
    except UnreadableFile as exc:
        findings.append(Finding(str(rel), exc.kind, f"layerdb dir {exc}"))
        failed.append(str(rel))
        return []


def read_layers(root: Path) -> LayerStore:
    findings: list[Finding] = []
    layers: list[LayerRecord] = []
    removing: list[RemovingRecord] = []
    bad_layers: list[str] = []
    mounts: list[MountRecord] = []
    unreadable: list[str] = []
    for name in _entries(root, LAYERDB / "sha256", findings, bad_layers):
        rel = LAYERDB / "sha256" / name
        if is_hex64(name):
            record = _read_layer(root, name, findings)
            if record:
                layers.append(record)
            else:
                bad_layers.append(name)
        elif REMOVING.fullmatch(name):
            cache_id = _optional(root / rel / "cache-id", rel / "cache-id", findings)
            ok = cache_id and CACHE_ID.fullmatch(cache_id)
            removing.append(RemovingRecord(name=name, cache_id=cache_id if ok else None))
        else:
            findings.append(Finding(str(rel), "unknown-entry", "not a layer chain id; kept"))
    for name in _entries(root, LAYERDB / "mounts", findings, unreadable):
        mount = _read_mount(root, name, findings)
        if mount:
            mounts.append(mount)
        else:
            unreadable.append(name)
    write_sets = [
        str(LAYERDB / "tmp" / name)
        for name in _entries(root, LAYERDB / "tmp", findings, [])
        if name.startswith("write-set-")
    ]
    return LayerStore(
        layers=tuple(layers),
        removing=tuple(removing),
        mounts=tuple(mounts),
        write_sets=tuple(write_sets),
        unreadable_layers=tuple(bad_layers),
        unreadable_mounts=tuple(unreadable),
        findings=tuple(findings),
    )
