"""Read overlay2/: layer dirs with their link/lower files, and the l/ short links.

Only metadata is read; a layer's diff/ is never walked here.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, list_dir, read_text

OVERLAY = Path("overlay2")
SHORT_LINK = re.compile(r"[A-Z2-7]{26}")
LINK_TARGET = re.compile(r"\.\./([^/]+)/diff")


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


def _read_lower(path: Path, rel: Path, findings: list[Finding]) -> tuple[tuple[str, ...], bool]:
    try:
        text = read_text(path, limit=64 * 1024).strip()
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return (), True
        findings.append(Finding(str(rel), exc.kind, f"lower file {exc}"))
        return (), False
    if not text:
        # Abrupt stops have left empty lower files; a base layer has none at all.
        findings.append(Finding(str(rel), "empty-lower", "lower file is empty"))
        return (), False
    shorts: list[str] = []
    for part in text.split(":"):
        short = part[2:] if part.startswith("l/") else None
        if short is None or SHORT_LINK.fullmatch(short) is None:
            findings.append(Finding(str(rel), "bad-format", f"lower entry {part[:40]!r} malformed"))
            return tuple(shorts), False
        shorts.append(short)
    return tuple(shorts), True


def _read_dir(root: Path, entry: os.DirEntry[str], findings: list[Finding]) -> OverlayDir:
    rel = OVERLAY / entry.name
    link: str | None = None
    try:
        text = read_text(root / rel / "link", limit=4096).strip()
        if SHORT_LINK.fullmatch(text):
            link = text
        else:
            findings.append(Finding(str(rel / "link"), "bad-format", "link is not a short name"))
    except UnreadableFile as exc:
        if exc.kind != "missing":
            findings.append(Finding(str(rel / "link"), exc.kind, f"link file {exc}"))
        else:
            findings.append(
                Finding(str(rel / "link"), "missing-link", "layer dir has no link file")
            )
    lower, lower_ok = _read_lower(root / rel / "lower", rel / "lower", findings)
    if lower_ok and not lower and os.path.isdir(root / rel / "work"):
        # Only non-base layers have work/; theirs must list their parents.
        findings.append(
            Finding(
                str(rel / "lower"),
                "missing-lower",
                "non-base layer (it has work/) without a lower file",
            )
        )
        lower_ok = False
    st = entry.stat(follow_symlinks=False)
    return OverlayDir(
        name=entry.name,
        link=link,
        lower=lower,
        lower_ok=lower_ok,
        has_merged=os.path.lexists(root / rel / "merged"),
        committed=os.path.lexists(root / rel / "committed"),
        dev=st.st_dev,
        ino=st.st_ino,
    )


def _read_links(root: Path, findings: list[Finding]) -> list[ShortLink]:
    links: list[ShortLink] = []
    try:
        entries = list_dir(root / OVERLAY / "l")
    except UnreadableFile as exc:
        findings.append(Finding(str(OVERLAY / "l"), exc.kind, f"link dir {exc}"))
        return links
    for entry in entries:
        rel = OVERLAY / "l" / entry.name
        if not entry.is_symlink() or SHORT_LINK.fullmatch(entry.name) is None:
            findings.append(Finding(str(rel), "unknown-entry", "not a short link; kept"))
            continue
        target = os.readlink(root / rel)
        match = LINK_TARGET.fullmatch(target)
        target_dir = match.group(1) if match and match.group(1) not in (".", "..", "l") else None
        if target_dir is None:
            findings.append(
                Finding(str(rel), "bad-link", f"link target {target[:60]!r} unexpected")
            )
        exists = target_dir is not None and _is_real_dir(root / OVERLAY / target_dir)
        links.append(ShortLink(entry.name, target, target_dir, exists))
    return links


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read_overlay(root: Path) -> OverlayStore:
    findings: list[Finding] = []
    dirs: list[OverlayDir] = []
    try:
        entries = list_dir(root / OVERLAY)
        dev = os.lstat(root / OVERLAY).st_dev if entries else None
    except UnreadableFile as exc:
        return OverlayStore((), (), (Finding(str(OVERLAY), exc.kind, f"dir {exc}"),), None)
    for entry in entries:
        if entry.name == "l":
            continue
        if not entry.is_dir(follow_symlinks=False):
            findings.append(Finding(str(OVERLAY / entry.name), "unknown-entry", "not a dir; kept"))
            continue
        dirs.append(_read_dir(root, entry, findings))
    links = _read_links(root, findings)
    return OverlayStore(tuple(dirs), tuple(links), tuple(findings), dev)
