"""Read overlay2/: layer dirs with their link/lower files, and the l/ short links.

Only metadata is read; a layer's diff/ is never walked here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, list_dir, open_dir, read_text

OVERLAY = Path("overlay2")
SHORT_LINK = re.compile(r"[A-Z2-7]{26}")
LINK_TARGET = re.compile(r"\.\./([^/]+)/diff")
# Names the daemon (64-hex, -init) or BuildKit (base36 keys) give layer dirs; only those are
# expected to carry a link file. Anything else is someone else's dir, reported once.
LAYER_NAME = re.compile(r"[0-9a-f]{64}(-init)?|[0-9a-z]{20,32}")


@dataclass(frozen=True)
class OverlayDir:
    name: str
    link: str | None  # 26-char short name from the dir's link file
    lower: tuple[str, ...]  # short names from the lower file, nearest parent first
    lower_ok: bool  # False when a lower file exists but could not be parsed
    has_merged: bool
    committed: bool
    dev: int
    ino: int


@dataclass(frozen=True)
class ShortLink:
    short: str
    target: str  # raw readlink text
    target_dir: str | None  # overlay2 dir name it names, if of the ../<id>/diff form
    target_exists: bool


@dataclass(frozen=True)
class OverlayStore:
    dirs: tuple[OverlayDir, ...]
    links: tuple[ShortLink, ...]
    findings: tuple[Finding, ...]
    dev: int | None  # device of overlay2/ itself


def _read_lower(dfd: int, rel: str, findings: list[Finding]) -> tuple[tuple[str, ...], bool]:
    try:
        text = read_text("lower", limit=64 * 1024, dir_fd=dfd).strip()
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return (), True
        findings.append(Finding(rel, exc.kind, f"lower file {exc}"))
        return (), False
    if not text:
        # Abrupt stops have left empty lower files; a base layer has none at all.
        findings.append(Finding(rel, "empty-lower", "lower file is empty"))
        return (), False
    shorts: list[str] = []
    for part in text.split(":"):
        short = part[2:] if part.startswith("l/") else None
        if short is None or SHORT_LINK.fullmatch(short) is None:
            findings.append(Finding(rel, "bad-format", f"lower entry {part[:40]!r} malformed"))
            return tuple(shorts), False
        shorts.append(short)
    return tuple(shorts), True


def _read_link(dfd: int, rel: str, findings: list[Finding], layer: bool) -> str | None:
    try:
        text = read_text("link", limit=4096, dir_fd=dfd).strip()
    except UnreadableFile as exc:
        if exc.kind != "missing":
            findings.append(Finding(rel, exc.kind, f"link file {exc}"))
        elif layer:
            findings.append(Finding(rel, "missing-link", "layer dir has no link file"))
        return None
    if SHORT_LINK.fullmatch(text):
        return text
    findings.append(Finding(rel, "bad-format", "link is not a short name"))
    return None


def _exists(name: str, dfd: int) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return True
    except OSError:
        return False


def _read_dir(ofd: int, entry: os.DirEntry[str], findings: list[Finding]) -> OverlayDir:
    """One layer dir's metadata, read through its own fd (never through a symlink)."""
    rel = f"{OVERLAY}/{entry.name}"
    st = entry.stat(follow_symlinks=False)
    dfd = open_dir(entry.name, dir_fd=ofd)
    if dfd is None:
        findings.append(Finding(rel, "unreadable", "layer dir cannot be opened"))
        return OverlayDir(entry.name, None, (), False, False, False, st.st_dev, st.st_ino)
    try:
        link = _read_link(
            dfd, f"{rel}/link", findings, LAYER_NAME.fullmatch(entry.name) is not None
        )
        lower, lower_ok = _read_lower(dfd, f"{rel}/lower", findings)
        if lower_ok and not lower and _exists("work", dfd):
            # Only non-base layers have work/; theirs must list their parents.
            findings.append(
                Finding(
                    f"{rel}/lower",
                    "missing-lower",
                    "non-base layer (it has work/) without a lower file",
                )
            )
            lower_ok = False
        return OverlayDir(
            name=entry.name,
            link=link,
            lower=lower,
            lower_ok=lower_ok,
            has_merged=_exists("merged", dfd),
            committed=_exists("committed", dfd),
            dev=st.st_dev,
            ino=st.st_ino,
        )
    finally:
        os.close(dfd)


def _read_links(ofd: int, dir_names: set[str], findings: list[Finding]) -> list[ShortLink]:
    links: list[ShortLink] = []
    lfd = open_dir("l", dir_fd=ofd)
    if lfd is None:
        if _exists("l", ofd):
            findings.append(Finding(f"{OVERLAY}/l", "not-a-dir", "link dir is not a real dir"))
        return links
    try:
        with os.scandir(lfd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{OVERLAY}/l/{entry.name}"
            if not entry.is_symlink() or SHORT_LINK.fullmatch(entry.name) is None:
                findings.append(Finding(rel, "unknown-entry", "not a short link; kept"))
                continue
            target = os.readlink(entry.name, dir_fd=lfd)
            match = LINK_TARGET.fullmatch(target)
            bad = not match or match.group(1) in (".", "..", "l")
            target_dir = None if bad or match is None else match.group(1)
            if target_dir is None:
                findings.append(Finding(rel, "bad-link", f"link target {target[:60]!r} unexpected"))
            links.append(ShortLink(entry.name, target, target_dir, target_dir in dir_names))
    finally:
        os.close(lfd)
    return links


def read_overlay(root: Path) -> OverlayStore:
    findings: list[Finding] = []
    dirs: list[OverlayDir] = []
    try:
        entries = list_dir(root / OVERLAY)
    except UnreadableFile as exc:
        return OverlayStore((), (), (Finding(str(OVERLAY), exc.kind, f"dir {exc}"),), None)
    ofd = open_dir(root / OVERLAY)
    if ofd is None:
        return OverlayStore((), (), (), None)
    try:
        dev = os.fstat(ofd).st_dev if entries else None
        for entry in entries:
            if entry.name == "l":
                continue
            if not entry.is_dir(follow_symlinks=False):
                findings.append(
                    Finding(f"{OVERLAY}/{entry.name}", "unknown-entry", "not a dir; kept")
                )
                continue
            dirs.append(_read_dir(ofd, entry, findings))
        links = _read_links(ofd, {d.name for d in dirs}, findings)
    finally:
        os.close(ofd)
    return OverlayStore(tuple(dirs), tuple(links), tuple(findings), dev)
