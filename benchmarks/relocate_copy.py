#!/usr/bin/env python3
"""Relocation's copy + verify against plain `rsync -aHAX --numeric-ids` and `cp -a`.

Builds a synthetic data root (exact overlay2 layout; many small files plus a few large
ones) unless --root names an existing, stopped one, then times in one run:
  anchor: rsync -aHAX --numeric-ids SRC/ A/
  dockergc: the relocation's copy, verify and path-rewrite steps, SRC -> B
  cp -a SRC/. C/
and prints each as a ratio to the anchor. Daemon stop/start are not included.
Run as root: python3 benchmarks/relocate_copy.py [--layers 300] [--files 40] [--root R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockergc.fixture.builder import RootBuilder  # noqa: E402
from dockergc.relocate import steps as S  # noqa: E402
from dockergc.relocate.impl import Context, perform  # noqa: E402


def synthetic(root: Path, layers: int, files: int) -> Path:
    b = RootBuilder(root)
    parent = None
    for i in range(layers):
        content = {f"usr/share/l{i}/f{j}": os.urandom(2048) for j in range(files)}
        if i % 50 == 0:
            content[f"opt/blob{i}"] = os.urandom(8 * 2**20)
        parent = b.layer(content, parent if i % 10 else None)
    return b.finish()


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path)
    ap.add_argument("--layers", type=int, default=300)
    ap.add_argument("--files", type=int, default=40)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dgc-bench-"))
    try:
        src = args.root or synthetic(work / "src", args.layers, args.files)
        a, b, c = work / "a", work / "b", work / "c"
        subprocess.run(["sync"])
        anchor = timed(
            lambda: subprocess.run(
                ["rsync", "-aHAX", "--numeric-ids", f"{src}/", f"{a}/"], check=True
            )
        )
        ctx = Context("bench")
        ours = timed(
            lambda: [
                perform(s, ctx)
                for s in (
                    S.Copy(str(src), str(b)),
                    S.VerifyCopy(str(src), str(b)),
                    S.RewritePaths(str(src), str(b)),
                )
            ]
        )
        c.mkdir()
        cp = timed(lambda: subprocess.run(["cp", "-a", f"{src}/.", f"{c}/"], check=True))
        size = subprocess.run(
            ["du", "-sh", str(src)], capture_output=True, text=True
        ).stdout.split()[0]
        print(f"tree: {src} ({size})")
        print(f"anchor rsync -aHAX --numeric-ids: {anchor:.2f}s (1.00x)")
        print(f"dockergc copy+verify+rewrite:     {ours:.2f}s ({ours / anchor:.2f}x)")
        print(f"cp -a:                            {cp:.2f}s ({cp / anchor:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
