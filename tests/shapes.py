"""The on-disk shape of a data root, to compare synthetic fixtures with dockerd's output."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _entries(d: Path) -> frozenset[tuple[str, str, str]]:
    out = set()
    for e in os.scandir(d):
        st = e.stat(follow_symlinks=False)
        kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
        out.add((e.name, kind, oct(stat.S_IMODE(st.st_mode))))
    return frozenset(out)


def shapes(root: Path) -> dict[str, set[frozenset[tuple[str, str, str]]]]:
    """Category -> the set of distinct (name, type, mode) listings seen in that category."""
    out: dict[str, set[frozenset[tuple[str, str, str]]]] = {}
    ldb = root / "image/overlay2/layerdb"
    mounts = {(m / "mount-id").read_text() for m in (ldb / "mounts").iterdir()}
    for d in (root / "overlay2").iterdir():
        if d.name == "l" or len(d.name) < 64:
            continue  # BuildKit's own dirs are checked by name, not shape
        if d.name.endswith("-init"):
            cat = "init-dir"
        elif d.name in mounts:
            cat = "rw-dir"
        else:
            cat = "layer-dir-child" if (d / "lower").exists() else "layer-dir-base"
        listing = _entries(d) - {("merged", "d", "0o700"), ("committed", "f", "0o600")}
        out.setdefault(cat, set()).add(frozenset(listing))
    for lay in (ldb / "sha256").iterdir():
        cat = "layerdb-child" if (lay / "parent").exists() else "layerdb-base"
        out.setdefault(cat, set()).add(_entries(lay))
    for m in (ldb / "mounts").iterdir():
        out.setdefault("mount-record", set()).add(_entries(m))
    content = _entries(root / "image/overlay2/imagedb/content/sha256")
    out["imagedb-content"] = {frozenset(("*", kind, mode) for _, kind, mode in content)}
    targets = {
        os.readlink(p).split("/")[0] + "/*/" + os.readlink(p).split("/")[-1]
        for p in (root / "overlay2/l").iterdir()
    }
    out["short-link-targets"] = {frozenset(("target", t, "") for t in targets)}
    out["top"] = {frozenset((n, k, m) for n, k, m in _entries(root / "overlay2") if n == "l")}
    return out
