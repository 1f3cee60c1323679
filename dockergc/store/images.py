"""Read tags (repositories.json) and image configs (imagedb) into records."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import (
    UnreadableFile,
    open_dir_at,
    open_dir_in,
    parse_json,
    read_bytes,
    read_text,
    read_text_in,
    scan_fd,
)
from dockergc.store.ids import chain_ids, is_digest, is_hex64

IMAGE_DIR = Path("image/overlay2")


@dataclass(frozen=True)
class ImageRecord:
    """One image config in imagedb; every one is a root of the graph."""

    id: str  # "sha256:<hex>"
    diff_ids: tuple[str, ...]
    chain_ids: tuple[str, ...]
    parent: str | None  # from imagedb/metadata/sha256/<id>/parent (legacy builder)


@dataclass(frozen=True)
class ImageStore:
    tags: dict[str, str]  # "repo:tag" or "repo@digest" -> "sha256:<imageid>"
    images: tuple[ImageRecord, ...]
    unreadable: tuple[str, ...]  # image configs we could not parse: their layers are unknown
    findings: tuple[Finding, ...]


def read_tags(root: Path) -> tuple[dict[str, str], list[Finding]]:
    """Parse repositories.json into reference -> image id; a bad file is a finding."""
    rel = IMAGE_DIR / "repositories.json"
    try:
        doc = parse_json(read_text_in(root, rel))
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return {}, []
        return {}, [Finding(exc.where or str(rel), exc.kind, f"tags file {exc}")]
    except ValueError as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return {}, [Finding(str(rel), "bad-json", f"tags file is not JSON: {why}")]
    repos = doc.get("Repositories") if isinstance(doc, dict) else None
    if not isinstance(repos, dict):
        return {}, [Finding(str(rel), "bad-format", "tags file has no Repositories object")]
    tags: dict[str, str] = {}
    findings: list[Finding] = []
    for repo, refs in sorted(repos.items()):
        if not isinstance(refs, dict):
            findings.append(
                Finding(str(rel), "bad-format", f"repository {repo!r} is not an object")
            )
            continue
        for ref, image_id in sorted(refs.items()):
            if isinstance(image_id, str) and is_digest(image_id):
                tags[ref] = image_id
            else:
                findings.append(Finding(str(rel), "bad-format", f"tag {ref!r} has no image id"))
    return tags, findings


def _parse_config(data: bytes) -> tuple[str, ...]:
    doc = parse_json(data)
    if not isinstance(doc, dict):
        raise ValueError("config is not a JSON object")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise ValueError("config has no rootfs object")
    diff_ids = rootfs.get("diff_ids", [])
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and is_digest(d) for d in diff_ids
    ):
        raise ValueError("rootfs.diff_ids is not a list of sha256 digests")
    return tuple(diff_ids)


METADATA = IMAGE_DIR / "imagedb/metadata/sha256"


def _read_parent(mfd: int | None, hexid: str) -> tuple[str | None, Finding | None]:
    """imagedb/metadata/sha256/<id>/parent, through the metadata dir's fd (``mfd``)."""
    rel = METADATA / hexid / "parent"
    if mfd is None:
        return None, None
    try:
        dfd = open_dir_at(mfd, hexid, str(METADATA / hexid))
        try:
            parent = read_text("parent", dir_fd=dfd).strip()
        finally:
            os.close(dfd)
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return None, None
        return None, Finding(exc.where or str(rel), exc.kind, f"image parent file {exc}")
    if not is_digest(parent):
        return None, Finding(str(rel), "bad-format", "image parent is not a sha256 digest")
    return parent, None


def read_images(root: Path) -> ImageStore:
    """Read every image config; a config that fails its own digest is still a root."""
    tags, findings = read_tags(root)
    content = IMAGE_DIR / "imagedb/content/sha256"
    images: list[ImageRecord] = []
    unreadable: list[str] = []
    cfd = mfd = None
    try:
        cfd = open_dir_in(root, content)
        entries = scan_fd(cfd)
    except UnreadableFile as exc:
        entries = []
        if exc.kind != "missing":
            findings.append(Finding(exc.where or str(content), exc.kind, f"imagedb {exc}"))
            unreadable.append(str(content))
    try:
        mfd = open_dir_in(root, METADATA)
    except UnreadableFile as exc:
        where = exc.where or str(METADATA)
        # Parents are only reported (every image is a root anyway): a finding, once.
        if exc.kind != "missing" and all(f.path != where for f in findings):
            findings.append(Finding(where, exc.kind, f"imagedb {exc}"))
    try:
        _read_configs(cfd, mfd, entries, images, unreadable, findings)
    finally:
        for fd in (cfd, mfd):
            if fd is not None:
                os.close(fd)
    known = {img.id for img in images} | {"sha256:" + p.rsplit("/", 1)[-1] for p in unreadable}
    for ref, image_id in tags.items():
        if image_id not in known:
            findings.append(
                Finding(
                    str(IMAGE_DIR / "repositories.json"),
                    "dangling-tag",
                    f"tag {ref} names image {image_id[:19]} that imagedb lacks",
                )
            )
    return ImageStore(
        tags=tags, images=tuple(images), unreadable=tuple(unreadable), findings=tuple(findings)
    )


def _read_configs(
    cfd: int | None,
    mfd: int | None,
    entries: list[os.DirEntry[str]],
    images: list[ImageRecord],
    unreadable: list[str],
    findings: list[Finding],
) -> None:
    content = IMAGE_DIR / "imagedb/content/sha256"
    for entry in entries:
        rel = content / entry.name
        if not is_hex64(entry.name):
            # moby's atomic writes leave .tmp-* files after a crash; anything else is unknown.
            findings.append(Finding(str(rel), "unknown-entry", "not an image id; kept"))
            continue
        try:
            assert cfd is not None  # entries come from it
            data = read_bytes(entry.name, dir_fd=cfd)
            diff_ids = _parse_config(data)
        except UnreadableFile as exc:
            findings.append(Finding(str(rel), exc.kind, f"image config {exc}"))
            unreadable.append(str(rel))
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            findings.append(Finding(str(rel), "bad-json", f"image config unusable: {exc}"))
            unreadable.append(str(rel))
            continue
        if hashlib.sha256(data).hexdigest() != entry.name:
            findings.append(
                Finding(str(rel), "bad-digest", "image config does not match its name; kept")
            )
        parent, finding = _read_parent(mfd, entry.name)
        if finding:
            findings.append(finding)
        images.append(
            ImageRecord(
                id="sha256:" + entry.name,
                diff_ids=diff_ids,
                chain_ids=tuple(chain_ids(list(diff_ids))),
                parent=parent,
            )
        )
