"""Read layerdb: committed layers, rw-layer mount records and crash leftovers."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, list_dir, open_dir, read_text
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


class _RecordDir:
    """The small files of one layerdb entry, read through the entry's own fd: no path is
    resolved twice, and an entry that is a symlink is never read through."""

    def __init__(self, root: Path, rel: str, findings: list[Finding]) -> None:
        self.rel = rel
        self.findings = findings
        self.fd = open_dir(os.path.join(root, rel))

    def __enter__(self) -> _RecordDir:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def text(self, name: str) -> str | None:
        if self.fd is None:
            return None
        try:
            return read_text(name, dir_fd=self.fd).strip()
        except UnreadableFile as exc:
            if exc.kind != "missing":
                where = f"{self.rel}/{name}"
                self.findings.append(Finding(where, exc.kind, f"layer metadata {exc}"))
            return None

    def bad(self, name: str, message: str) -> None:
        self.findings.append(Finding(f"{self.rel}/{name}", "bad-format", message))


def _read_layer(root: Path, name: str, findings: list[Finding]) -> LayerRecord | None:
    with _RecordDir(root, f"{LAYERDB}/sha256/{name}", findings) as d:
        cache_id = d.text("cache-id")
        if not cache_id or CACHE_ID.fullmatch(cache_id) is None:
            findings.append(
                Finding(d.rel, "bad-layer", "layer has no usable cache-id; the daemon skips it")
            )
            return None
        diff, parent, size_text = d.text("diff"), d.text("parent"), d.text("size")
        if parent is not None and not is_digest(parent):
            d.bad("parent", "parent is not a digest")
            parent = None
        if diff is not None and not is_digest(diff):
            d.bad("diff", "diff is not a sha256 digest")
        if size_text is not None and not size_text.isdigit():
            d.bad("size", "size is not a number")
    return LayerRecord(
        chain_id="sha256:" + name,
        cache_id=cache_id,
        diff_id=diff if diff and is_digest(diff) else None,
        parent=parent,
        size=int(size_text) if size_text and size_text.isdigit() else None,
    )


def _read_mount(root: Path, name: str, findings: list[Finding]) -> MountRecord | None:
    with _RecordDir(root, f"{LAYERDB}/mounts/{name}", findings) as d:
        mount_id = d.text("mount-id")
        if not mount_id or MOUNT_ID.fullmatch(mount_id) is None:
            findings.append(Finding(d.rel, "bad-mount", "mount record has no usable mount-id"))
            return None
        init_id, parent = d.text("init-id"), d.text("parent")
        if init_id is not None and MOUNT_ID.fullmatch(init_id) is None:
            d.bad("init-id", "init-id is malformed")
            init_id = None
        if parent and not is_digest(parent):
            d.bad("parent", "parent is not a digest")
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
            with _RecordDir(root, str(rel), findings) as d:
                cache_id = d.text("cache-id")
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
