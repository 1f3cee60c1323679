"""Read overlay2/: layer dirs with their link/lower files, and the l/ short links.

Only metadata is read; a layer's diff/ is never walked here.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from sys import intern

from dockergc.store.findings import Finding
from dockergc.store.fsread import (
    DIR_FLAGS,
    UnreadableFile,
    lexists_at,
    open_dir,
    open_dir_in,
    read_text,
    scan_fd,
)

OVERLAY = Path("overlay2")
SHORT_LINK = re.compile(r"[A-Z2-7]{26}")
# A well-formed lower file as a whole: checked with one match before the split.
LOWER = re.compile(r"l/[A-Z2-7]{26}(?::l/[A-Z2-7]{26})*")
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


@dataclass(frozen=True)
class ShortLink:
    short: str
    target: str  # raw readlink text
    target_dir: str | None  # overlay2 dir name it names, if of the ../<id>/diff form


@dataclass(frozen=True)
class DirsPart:
    """overlay2/'s layer dirs: one half of a read that may run in a child process."""

    dirs: tuple[OverlayDir, ...]
    findings: tuple[Finding, ...]
    dev: int | None


@dataclass(frozen=True)
class LinksPart:
    """overlay2/l/: the other half."""

    links: tuple[ShortLink, ...]
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class OverlayStore:
    dirs: tuple[OverlayDir, ...]
    links: tuple[ShortLink, ...]
    findings: tuple[Finding, ...]
    dev: int | None  # device of overlay2/ itself


class _Lowers:
    """Parse well-formed lower files, sharing work between a dir and its ancestors.

    A child's lower file is its parent's link followed by the parent's own lower file,
    so every suffix is cached: a 50k-dir root is parsed in about one split per dir
    instead of one per (dir, ancestor). Names are interned for the same reason: one copy
    each keeps memory (and the pickle of a parallel read) proportional to the dirs.
    """

    def __init__(self) -> None:
        self.cache: dict[str, tuple[str, ...]] = {}

    def parse(self, text: str) -> tuple[str, ...]:
        heads: list[tuple[str, str]] = []  # (entry, the suffix starting at it)
        rest = text
        while rest and rest not in self.cache:
            head, _, after = rest.partition(":")
            heads.append((head, rest))
            rest = after
        tail = self.cache[rest] if rest else ()
        for head, suffix in reversed(heads):
            tail = (intern(head[2:]), *tail)
            self.cache[suffix] = tail
        return tail


def _read_lower(
    dfd: int, rel: str, findings: list[Finding], lowers: _Lowers
) -> tuple[tuple[str, ...], bool]:
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
    if LOWER.fullmatch(text):
        return lowers.parse(text), True
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
        return intern(text)
    findings.append(Finding(rel, "bad-format", "link is not a short name"))
    return None


_exists = lexists_at  # (name, dir fd)


def _read_dir(ofd: int, name: str, findings: list[Finding], lowers: _Lowers) -> OverlayDir | None:
    """One layer dir's link and lower, read through its own fd (never through a symlink).
    Nothing else is touched: at 50k dirs every syscall per dir costs ~0.1 s.
    None: the dir vanished since overlay2/ was listed (as if listed a moment later)."""
    rel = f"{OVERLAY}/{name}"
    try:
        dfd = os.open(name, DIR_FLAGS, dir_fd=ofd)
    except FileNotFoundError:
        findings.append(Finding(rel, "vanished", "layer dir vanished while read; skipped"))
        return None
    except OSError as exc:
        findings.append(Finding(rel, "unreadable", f"layer dir cannot be opened: {exc.strerror}"))
        return OverlayDir(name, None, (), False)
    try:
        link = _read_link(dfd, f"{rel}/link", findings, LAYER_NAME.fullmatch(name) is not None)
        lower, lower_ok = _read_lower(dfd, f"{rel}/lower", findings, lowers)
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
        return OverlayDir(name=name, link=link, lower=lower, lower_ok=lower_ok)
    finally:
        os.close(dfd)


def read_short_links(root: Path) -> LinksPart:
    findings: list[Finding] = []
    links: list[ShortLink] = []
    ofd = _overlay_fd(root)
    lfd = None if ofd is None else open_dir("l", dir_fd=ofd)
    try:
        if lfd is None:
            if ofd is not None and _exists("l", ofd):
                findings.append(Finding(f"{OVERLAY}/l", "not-a-dir", "link dir is not a real dir"))
            return LinksPart((), tuple(findings))
        try:
            with os.scandir(lfd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            findings.append(Finding(f"{OVERLAY}/l", "unreadable", f"cannot list: {exc.strerror}"))
            return LinksPart((), tuple(findings))
        for entry in entries:
            rel = f"{OVERLAY}/l/{entry.name}"
            if not entry.is_symlink() or SHORT_LINK.fullmatch(entry.name) is None:
                findings.append(Finding(rel, "unknown-entry", "not a short link; kept"))
                continue
            try:
                target = os.readlink(entry.name, dir_fd=lfd)
            except OSError as exc:
                # Removed (or replaced by a non-link) between listing and reading: the
                # daemon's own removal order is l/<short> first, then the dir.
                gone = exc.errno == errno.ENOENT
                findings.append(
                    Finding(
                        rel,
                        "vanished" if gone else "unreadable",
                        "vanished while read; skipped"
                        if gone
                        else f"cannot read link: {exc.strerror}; kept",
                    )
                )
                continue
            match = LINK_TARGET.fullmatch(target)
            bad = not match or match.group(1) in (".", "..", "l")
            target_dir = None if bad or match is None else match.group(1)
            if target_dir is None:
                findings.append(Finding(rel, "bad-link", f"link target {target[:60]!r} unexpected"))
            links.append(ShortLink(entry.name, target, target_dir))
    finally:
        for fd in (lfd, ofd):
            if fd is not None:
                os.close(fd)
    return LinksPart(tuple(links), tuple(findings))


def _overlay_fd(root: Path) -> int | None:
    """overlay2/, reached from the root without following a symlink; None if it is not
    a real dir (the listing reports why)."""
    try:
        return open_dir_in(root, OVERLAY)
    except UnreadableFile:
        return None


def list_overlay(root: Path) -> tuple[list[str], DirsPart]:
    """The layer dir names in overlay2/ (not l/), and what listing it found wrong."""
    try:
        ofd = open_dir_in(root, OVERLAY)
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return [], DirsPart((), (), None)
        finding = Finding(exc.where or str(OVERLAY), exc.kind, f"dir {exc}")
        return [], DirsPart((), (finding,), None)
    names: list[str] = []
    findings: list[Finding] = []
    try:
        entries = scan_fd(ofd)
        dev = os.fstat(ofd).st_dev if entries else None
        for entry in entries:
            if entry.name == "l":
                continue
            if entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
            elif entry.is_symlink():
                # Never followed: what the dir behind it holds (a lower file naming the
                # layers it needs) is unread, so a layer-named one freezes the plan.
                findings.append(
                    Finding(f"{OVERLAY}/{entry.name}", "symlink", "is a symlink; not followed")
                )
            elif _exists(entry.name, ofd):  # else it vanished since listed: nothing to say
                findings.append(
                    Finding(f"{OVERLAY}/{entry.name}", "unknown-entry", "not a dir; kept")
                )
    except UnreadableFile as exc:
        return [], DirsPart((), (Finding(str(OVERLAY), exc.kind, f"dir {exc}"),), None)
    finally:
        os.close(ofd)
    return names, DirsPart((), tuple(findings), dev)


def read_overlay_dirs(root: Path, names: list[str]) -> DirsPart:
    """Read the named layer dirs (a share of overlay2/, perhaps in a child process)."""
    findings: list[Finding] = []
    ofd = _overlay_fd(root)
    if ofd is None:
        return DirsPart((), (), None)
    try:
        lowers = _Lowers()
        read = (_read_dir(ofd, name, findings, lowers) for name in names)
        dirs = tuple(d for d in read if d is not None)
    finally:
        os.close(ofd)
    return DirsPart(dirs, tuple(findings), None)


def combine(parts: Sequence[DirsPart], links: LinksPart) -> OverlayStore:
    """One store from the listing's part, the dirs' parts (in name order) and l/."""
    dev = parts[0].dev
    dirs = tuple(d for part in parts for d in part.dirs)
    findings = tuple(f for part in parts for f in part.findings)
    # A missing or unreadable overlay2/ is reported once, not again for l/.
    link_findings = links.findings if dev is not None or dirs else ()
    return OverlayStore(dirs, links.links, findings + link_findings, dev)
