#!/usr/bin/env python3
"""`dockergc plan` vs `docker system df -v` on the same real dockerd root.

Starts its own containerd + dockerd (as the tests do; needs root, docker.io, containerd,
busybox-static), fills the root through the engine (legacy multi-step builds: one layer
and one intermediate image per step; containers created on them; a volume with files),
then times both whole commands several times and prints the ratio of medians.
The ratio depends on what the daemon has to walk: `docker system df -v` sizes every
container's rw layer and every volume by walking it; dockergc decides from metadata and
walks only what it would delete. The defaults are a modest host (200 small files per
container, one 20k-file volume); --rw-files 0 --volume-files 100 shows the floor.
Run: python3 benchmarks/system_df.py [--builds 6] [--steps 40] [--containers 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.engine import DOCKER, Engine  # noqa: E402


def fill(
    e: Engine, builds: int, steps: int, containers: int, rw_files: int, volume_files: int
) -> None:
    e.import_base()
    for b in range(builds):
        body = "".join(
            f"RUN echo {b}-{s} > /f{s} && mkdir -p /d{s} && cp /bin/busybox /d{s}/\n"
            for s in range(steps)
        )
        e.build(f"app{b}:1", f'FROM base:1\n{body}CMD ["sh"]\n')
    e.run("volume", "create", "data")
    e.run(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/v",
        "base:1",
        "sh",
        "-c",
        f"for d in $(seq 1 100); do mkdir /v/$d; for i in $(seq 1 {volume_files // 100}); "
        "do echo $i > /v/$d/$i; done; done",
    )
    # Every container has run once and left files in its rw layer (caches, logs, pids:
    # what real ones leave), which `docker system df -v` sizes by walking them.
    for c in range(containers):
        e.run(
            "run",
            "--network",
            "none",
            "-v",
            "data:/v",
            f"app{c % builds}:1",
            "sh",
            "-c",
            f"mkdir -p /var/cache/app && cd /var/cache/app && "
            f"for i in $(seq 1 {rw_files}); do echo $i > $i; done",
        )


def timed(cmd: list[str], runs: int) -> tuple[float, str]:
    times = []
    out = ""
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
        out = proc.stdout
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--containers", type=int, default=300)
    ap.add_argument("--rw-files", type=int, default=200, help="files each container writes")
    ap.add_argument("--volume-files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    e = Engine()
    try:
        e.start()
        t0 = time.perf_counter()
        fill(e, args.builds, args.steps, args.containers, args.rw_files, args.volume_files)
        made = time.perf_counter() - t0
        df = [DOCKER, "-H", f"unix://{e.sock}", "system", "df", "-v"]
        plan = [
            sys.executable,
            "-m",
            "dockergc",
            "plan",
            "--root",
            str(e.root),
            "--min-age",
            "0",
            "--json",
        ]
        timed(df, 1)  # warm both alike
        timed(plan, 1)
        df_s, _ = timed(df, args.runs)
        plan_s, out = timed(plan, args.runs)
        doc = json.loads(out)
        info = json.loads(e.run("info", "--format", "{{json .}}").stdout)
        print(
            f"real root (filled in {made:.0f}s): {info['Images']} images, "
            f"{info['Containers']} containers, "
            f"{sum(1 for _ in (e.root / 'image/overlay2/layerdb/sha256').iterdir())} layers, "
            f"plan: {len(doc['actions'])} actions, frozen {len(doc['frozen'])}"
        )
        print(
            f"docker system df -v {df_s:.2f}s, dockergc plan {plan_s:.2f}s "
            f"(whole commands, median of {args.runs}): {df_s / plan_s:.1f}x faster"
        )
    finally:
        e.stop()
        e.unmount_all()
        e.destroy()


if __name__ == "__main__":
    main()
