#!/usr/bin/env python3
"""scan+plan time and peak RSS on synthetic roots of growing size (exact on-disk format).

Each size is measured in a fresh child process (so peak RSS is its own). The anchor is
`du -sx` of the same root, measured in the same run: the cost of merely walking it.
Run: python3 benchmarks/plan_scale.py [--sizes 1000,5000] [--containers-per 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD = """
import json, resource, sys, time
from pathlib import Path
from dockergc.api import plan_root
from dockergc.plan import Policy
t0 = time.perf_counter()
snap, graph, plan = plan_root(Path(sys.argv[1]), Policy(min_age=0))
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frozen": len(plan.frozen), "seconds": dt, "rss_mb": rss, "actions": len(plan.actions),
                  "layers": len(snap.layers.layers), "containers": len(snap.containers.containers)}))
"""


def build(root: Path, layers: int, containers_per: int) -> None:
    from dockergc.fixture.builder import RootBuilder

    b = RootBuilder(root)
    top = None
    chain: list = []
    for i in range(layers):
        top = b.layer({"f": str(i).encode()}, top if i % 20 else None)
        chain = [*chain, top] if i % 20 else [top]
        if i % 20 == 19:
            image = b.image(chain, [f"img{i}:1"])
            if (i // 20) % max(1, 20 // containers_per) == 0:
                b.container(image, top, f"c{i}")
        if i % 500 == 0:
            b.interrupted_pull(top, {"x": b"x"})
    b.finish()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--containers-per", type=int, default=10)
    args = ap.parse_args()
    for n in [int(s) for s in args.sizes.split(",")]:
        work = Path(tempfile.mkdtemp(prefix="dgc-scale-"))
        try:
            root = work / "docker"
            t0 = time.perf_counter()
            build(root, n, args.containers_per)
            made = time.perf_counter() - t0
            subprocess.run(["sync"])
            t0 = time.perf_counter()
            subprocess.run(["du", "-sx", str(root)], capture_output=True, check=True)
            du = time.perf_counter() - t0
            out = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True,
                                 text=True, check=True, cwd=Path(__file__).resolve().parents[1])
            r = json.loads(out.stdout)
            print(f"{n} layers, {r['containers']} containers (built in {made:.0f}s): "
                  f"plan {r['seconds']:.2f}s = {r['seconds'] / du:.2f}x du -sx ({du:.2f}s), "
                  f"peak RSS {r['rss_mb']:.0f} MB, {r['actions']} actions, frozen {r['frozen']}")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
