"""Read layerdb: committed layers, rw-layer mount records and crash leftovers."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import (
    DIR_FLAGS,
    UnreadableFile,
    list_dir_in,
    open_dir_in,
    read_text,
    scan_fd,
)
from dockergc.store.ids import is_digest, is_hex64

LAYERDB = Path("image/overlay2/layerdb")
# moby: "<chain>-<random>-removing" while a layer is being deleted.
REMOVING = re.compile(r"([0-9a-f]{64})-[0-9A-Za-z]+-removing")
MOUNT_ID = re.compile(r"[0-9a-f]{64}(-init)?")
# Graph driver ids: 64-hex from the daemon, BuildKit's own (base36, ~25 chars).
CACHE_ID = re.compile(r"[0-9a-zA-Z][0-9a-zA-Z_.-]{0,127}")
LAYERS_REL = f"{LAYERDB}/sha256"
MOUNTS_REL = f"{LAYERDB}/mounts"


@dataclass(frozen=True)
class LayerRecord:
    """A committed layer: layerdb/sha256/<chain>/."""

    chain_id: str  # "sha256:<hex>"
    cache_id: str  # overlay2 dir name
    diff_id: str | None
    parent: str | None
    size: int | None
    detail: bool = True  # parent, diff and size were read (else only cache-id)
    bad_parent: bool = False  # a parent file that is there but unreadable or not a digest


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

    def __init__(self, parent_fd: int | None, parent_rel: str, name: str, findings: list[Finding]):
        self.rel = f"{parent_rel}/{name}"
        self.findings = findings
        self.fd: int | None = None
        self.vanished = False  # removed between the listing and this read
        self.symlink = False  # the entry is a symlink: refused, never read through
        if parent_fd is not None:
            try:
                self.fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                self.vanished = True
            except OSError:
                try:
                    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                    self.symlink = stat.S_ISLNK(st.st_mode)
                except OSError:
                    pass

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

    def unusable(self, kind: str, message: str) -> None:
        """The record as a whole cannot be used: say why (a vanished one says so)."""
        if self.vanished:
            kind, message = "vanished", "vanished while read (being removed?)"
        elif self.symlink:
            kind, message = "symlink", "is a symlink, not a directory; not followed"
        self.findings.append(Finding(self.rel, kind, message))


def _read_layer(
    dfd: int | None, name: str, findings: list[Finding], detail: bool
) -> LayerRecord | None:
    with _RecordDir(dfd, LAYERS_REL, name, findings) as d:
        cache_id = d.text("cache-id")
        if not cache_id or CACHE_ID.fullmatch(cache_id) is None:
            d.unusable("bad-layer", "layer has no usable cache-id; the daemon skips it")
            return None
        if not detail:
            return LayerRecord("sha256:" + name, cache_id, None, None, None, detail=False)
        seen = len(findings)
        diff, parent, size_text = d.text("diff"), d.text("parent"), d.text("size")
        bad_parent = any(f.path.endswith("/parent") for f in findings[seen:])
        if parent is not None and not is_digest(parent):
            d.bad("parent", "parent is not a digest")
            parent, bad_parent = None, True
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
        bad_parent=bad_parent,
    )


def _read_mount(dfd: int | None, name: str, findings: list[Finding]) -> MountRecord | None:
    with _RecordDir(dfd, MOUNTS_REL, name, findings) as d:
        mount_id = d.text("mount-id")
        if not mount_id or MOUNT_ID.fullmatch(mount_id) is None:
            d.unusable("bad-mount", "mount record has no usable mount-id")
            return None
        init_id, parent = d.text("init-id"), d.text("parent")
        if init_id is not None and MOUNT_ID.fullmatch(init_id) is None:
            d.bad("init-id", "init-id is malformed")
            init_id = None
        if parent and not is_digest(parent):
            d.bad("parent", "parent is not a digest")
    return MountRecord(name=name, mount_id=mount_id, init_id=init_id or None, parent=parent)


class _Dir:
    """An fd for the real dir ``root/rel`` (None when it is not one, or a component on
    the way is a symlink: the listing already reported that), closed on exit."""

    def __init__(self, root: Path, rel: str) -> None:
        try:
            self.fd: int | None = open_dir_in(root, rel)
        except UnreadableFile:
            self.fd = None

    def __enter__(self) -> int | None:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _entries(root: Path, rel: Path, findings: list[Finding], failed: list[str]) -> list[str]:
    try:
        return [e.name for e in list_dir_in(root, rel)]
    except UnreadableFile as exc:
        where = exc.where or str(rel)
        if all(f.path != where for f in findings):  # a symlinked layerdb/: said once
            findings.append(Finding(where, exc.kind, f"layerdb dir {exc}"))
        failed.append(str(rel))
        return []


@dataclass(frozen=True)
class ChainsPart:
    """Some of layerdb/sha256's entries, read: a share of a read that may run in a child."""

    layers: tuple[LayerRecord, ...]
    removing: tuple[RemovingRecord, ...]
    bad_layers: tuple[str, ...]
    findings: tuple[Finding, ...]


def list_chains(root: Path) -> tuple[list[str], ChainsPart]:
    """The entry names of layerdb/sha256, and what listing it found wrong."""
    findings: list[Finding] = []
    failed: list[str] = []
    names = _entries(root, LAYERDB / "sha256", findings, failed)
    return names, ChainsPart((), (), tuple(failed), tuple(findings))


def read_chains(root: Path, names: list[str], detail: bool) -> ChainsPart:
    findings: list[Finding] = []
    layers: list[LayerRecord] = []
    removing: list[RemovingRecord] = []
    bad_layers: list[str] = []
    with _Dir(root, LAYERS_REL) as dfd:
        for name in names:
            if is_hex64(name):
                record = _read_layer(dfd, name, findings, detail)
                if record:
                    layers.append(record)
                else:
                    bad_layers.append(name)
            elif REMOVING.fullmatch(name):
                with _RecordDir(dfd, LAYERS_REL, name, findings) as d:
                    cache_id = d.text("cache-id")
                ok = cache_id and CACHE_ID.fullmatch(cache_id)
                removing.append(RemovingRecord(name=name, cache_id=cache_id if ok else None))
            else:
                findings.append(
                    Finding(f"{LAYERS_REL}/{name}", "unknown-entry", "not a layer chain id; kept")
                )
    return ChainsPart(tuple(layers), tuple(removing), tuple(bad_layers), tuple(findings))


def with_detail(store: LayerStore, root: Path, chains: set[str]) -> LayerStore:
    """``store`` with the records of ``chains`` read in full (parent, diff, size). The
    graph needs a layer's parent only when no image chain lists its ancestors already:
    reading it for those few, not all, keeps a plan's cost where it was."""
    todo = sorted(c[7:] for c in chains)
    if not todo:
        return store
    findings: list[Finding] = []
    fresh: dict[str, LayerRecord] = {}
    with _Dir(root, LAYERS_REL) as dfd:
        for name in todo:
            record = _read_layer(dfd, name, findings, detail=True)
            if record:
                fresh[record.chain_id] = record
    layers = tuple(fresh.get(r.chain_id, r) for r in store.layers)
    return replace(store, layers=layers, findings=store.findings + tuple(findings))


def read_layers(
    root: Path, detail: bool = True, chains: Sequence[ChainsPart] | None = None
) -> LayerStore:
    """Every layerdb record. Without ``detail`` only each layer's cache-id is read: it is
    all the graph needs (chains come from image configs), and it halves the reads.
    ``chains``: layerdb/sha256 already read in parts (listing first), in name order."""
    if chains is None:
        names, head = list_chains(root)
        chains = (head, read_chains(root, names, detail))
    findings = [f for part in chains for f in part.findings]
    layers = [r for part in chains for r in part.layers]
    removing = [r for part in chains for r in part.removing]
    bad_layers = [n for part in chains for n in part.bad_layers]
    mounts: list[MountRecord] = []
    unreadable: list[str] = []
    names = _entries(root, LAYERDB / "mounts", findings, unreadable)
    with _Dir(root, MOUNTS_REL) as dfd:
        for name in names:
            mount = _read_mount(dfd, name, findings)
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


def oldest_record_change(root: Path, sample: int = 256) -> float | None:
    """The oldest change time (ctime) among up to ``sample`` layerdb records: a layer
    record never changes once written, so on a root that was copied or restored (cp -a
    and rsync cannot keep ctimes) this is about when the copy was made. None when there
    is no record to look at."""
    try:
        fd = open_dir_in(root, LAYERS_REL)
    except UnreadableFile:
        return None
    times = []
    try:
        for entry in scan_fd(fd)[:sample]:
            try:
                times.append(os.stat(entry.name, dir_fd=fd, follow_symlinks=False).st_ctime)
            except OSError:
                continue
    except UnreadableFile:
        return None
    finally:
        os.close(fd)
    return min(times, default=None)
