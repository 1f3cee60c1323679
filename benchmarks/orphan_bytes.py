#!/usr/bin/env python3
"""Byte accounting of orphans: dockergc's measure vs `du -sx` over the same dirs.

Builds a synthetic root (exact on-disk format) whose crash leftovers hold real trees
(interrupted pulls of many files, a removed container's rw and -init dirs, hard links
across two leftovers), then times, on the same candidate list, dockergc's measurement
(what `plan` runs for every candidate) and `du -sx -B1` of those dirs, warm and cold,
and checks that both count the same bytes (allocated blocks, hard links once).
Run: python3 benchmarks/orphan_bytes.py [--leftovers 40] [--files 2500] [--cold]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockergc.api import plan_root  # noqa: E402
from dockergc.fixture.builder import RootBuilder  # noqa: E402
from dockergc.measure import measure_all  # noqa: E402
from dockergc.plan import Policy  # noqa: E402
from dockergc.store.mountinfo import MountTable  # noqa: E402


def build(root: Path, leftovers: int, files: int) -> None:
    rnd = random.Random(7)
    b = RootBuilder(root)
    base = b.layer({"bin/sh": b"x" * 100})
    image = b.image([base], ["base:1"])
    for n in range(leftovers):
        tree = {
            f"usr/lib/p{n}/d{i % 50}/f{i}": rnd.randbytes(rnd.choice((10, 900, 5000, 70000)))
            for i in range(files)
        }
        b.interrupted_pull(base, tree)
    gone = b.container(image, base, "gone")
    b.interrupted_container_removal(gone)
    b.finish()
    # Hard links between two leftovers: each inode must be counted once, as du does.
    dirs = sorted(p for p in (root / "overlay2").iterdir() if p.name not in ("l",))
    first = next(d for d in dirs if (d / "diff/usr").exists())
    for i, f in enumerate(sorted((first / "diff").rglob("f*"))[:200]):
        os.link(f, first / "diff" / f"hard{i}")


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run(root: Path, paths: list[str], cold: bool) -> tuple[float, int, float, int]:
    if cold:
        drop_caches()
    t0 = time.perf_counter()
    usage = measure_all(str(root), paths)
    ours = sum(u.bytes for u in usage.values() if u)
    ours_s = time.perf_counter() - t0
    if cold:
        drop_caches()
    t0 = time.perf_counter()
    out = subprocess.run(
        ["du", "-sx", "-B1", "-c", *[str(root / p) for p in paths]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    du_s = time.perf_counter() - t0
    du = int(out.strip().splitlines()[-1].split()[0])
    return ours_s, ours, du_s, du


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leftovers", type=int, default=40)
    ap.add_argument("--files", type=int, default=2500)
    ap.add_argument("--cold", action="store_true", help="also with the page cache dropped")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dgc-bytes-"))
    try:
        root = work / "docker"
        build(root, args.leftovers, args.files)
        _, _, plan = plan_root(root, Policy(min_age=0), MountTable((), 1, 0))
        paths = [a.path for a in plan.actions]
        planned = plan.bytes
        run(root, paths, cold=False)  # warm-up
        for cache in ("warm", "cold") if args.cold else ("warm",):
            ours_s, ours, du_s, du = run(root, paths, cold=cache == "cold")
            same = "same bytes" if ours == du else f"DIFFERENT: du {du}"
            print(
                f"{len(paths)} leftovers, {args.leftovers * args.files} files, {cache} cache: "
                f"measure {ours_s:.2f}s = {ours_s / du_s:.2f}x du -sx ({du_s:.2f}s); "
                f"{ours} bytes, {same}; plan total {planned}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
