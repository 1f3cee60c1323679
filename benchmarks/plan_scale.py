#!/usr/bin/env python3
"""scan+plan time and peak RSS on synthetic roots of growing size (exact on-disk format).

Each size is measured in a fresh child process (so peak RSS is its own). The anchor is
`du -sx` of the same root, measured in the same run: the cost of merely walking it.
Run: python3 benchmarks/plan_scale.py [--sizes 1000:500,10000:500,10000:5000,50000:5000] [--cold]
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
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the forked reader
print(json.dumps({"frozen": len(plan.frozen), "seconds": dt, "rss_mb": rss, "child_rss_mb": child,
                  "actions": len(plan.actions),
                  "layers": len(snap.layers.layers),
                  "containers": len(snap.containers.containers)}))
"""


def build(root: Path, layers: int, containers: int) -> None:
    """Images of 20 layers each; containers spread evenly over them; a leftover per 500."""
    from dockergc.fixture.builder import RootBuilder

    b = RootBuilder(root)
    top = None
    chain: list = []
    images: list = []
    for i in range(layers):
        top = b.layer({"f": str(i).encode()}, top if i % 20 else None)
        chain = [*chain, top] if i % 20 else [top]
        if i % 20 == 19:
            images.append((b.image(chain, [f"img{i}:1"]), top))
        if i % 500 == 0:
            b.interrupted_pull(top, {"x": b"x"})
    for n in range(containers):
        image, top = images[n % len(images)]
        b.container(image, top, f"c{n}")
    b.finish()


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def measure(root: Path, cold: bool) -> tuple[float, dict]:
    """du -sx, then plan in a fresh process; with ``cold``, each after dropping the caches."""
    if cold:
        drop_caches()
    t0 = time.perf_counter()
    subprocess.run(["du", "-sx", str(root)], capture_output=True, check=True)
    du = time.perf_counter() - t0
    if cold:
        drop_caches()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return du, json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--sizes",
        default="1000:500,10000:500,10000:5000,50000:5000",
        help="comma-separated LAYERS:CONTAINERS pairs",
    )
    ap.add_argument(
        "--cold",
        action="store_true",
        help="also measure after dropping the page cache (needs root)",
    )
    args = ap.parse_args()
    for size in args.sizes.split(","):
        n, containers = (int(x) for x in size.split(":"))
        work = Path(tempfile.mkdtemp(prefix="dgc-scale-"))
        try:
            root = work / "docker"
            t0 = time.perf_counter()
            build(root, n, containers)
            made = time.perf_counter() - t0
            subprocess.run(["sync"])
            for cache in ("warm", "cold") if args.cold else ("warm",):
                du, r = measure(root, cold=cache == "cold")
                print(
                    f"{n} layers, {r['containers']} containers (built in {made:.0f}s), "
                    f"{cache} cache: plan {r['seconds']:.2f}s = {r['seconds'] / du:.2f}x "
                    f"du -sx ({du:.2f}s), peak RSS {r['rss_mb']:.0f} MB (forked reader "
                    f"{r['child_rss_mb']:.0f} MB), {r['actions']} actions, "
                    f"frozen {r['frozen']}",
                    flush=True,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
