#!/usr/bin/env python3
"""Relocation downtime against a full offline `rsync -aHAX --numeric-ids`, same run.

A real dockerd (tests/engine.py) with a ~3 GB root in a few thousand files (a volume of
1 MiB files) and a container writing a line every 10 ms all along. In one run:
  anchor: daemon stopped, cold caches, `rsync -aHAX --numeric-ids ROOT/ DISK1/` timed;
  dockergc: daemon started again (the writer too), cold caches, `dockergc relocate --to
  DISK2/docker` (default: pre-copy), its `downtime_seconds` (stop issued -> Engine API
  answering on the new root) read from --json;
and prints downtime / anchor. Both targets are loop-mounted ext4 (tests/engine.py loop_fs).
Goal: <= 0.25x. Run as root: python3 benchmarks/relocate_downtime.py [--files 3000]
[--version 20.10|28.5] [--offline]  (--offline: today's plan, for comparison)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine import Engine, loop_fs  # noqa: E402

WRITER = "trap 'exit 0' TERM; i=0; while :; do echo line $i >> /v/log; i=$((i+1)); sleep 0.01; done"


def cold() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def fill(data: Path, files: int) -> int:
    chunk = os.urandom(2**20)
    for i in range(files):
        d = data / f"d{i // 100}"
        d.mkdir(exist_ok=True)
        # distinct contents, cheaply: a counter in front of one random MiB
        (d / f"f{i}").write_bytes(i.to_bytes(8, "little") + chunk[8:])
    return files * 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--version", default="20.10")
    ap.add_argument("--offline", action="store_true")
    args = ap.parse_args()
    e = Engine(root_in_config=True, version=args.version)
    size_mb = args.files + 1500
    try:
        stop, start = e.start_detached()
        e.import_base()
        e.run("volume", "create", "vol1")
        total = fill(e.root / "volumes/vol1/_data", args.files)
        writer = ["run", "-d", "--network", "none", "-v", "vol1:/v", "--name", "writer", "base:1"]
        e.run(*writer, "sh", "-c", WRITER)
        with loop_fs(size_mb) as disk1, loop_fs(size_mb) as disk2:
            subprocess.run(stop.split(), check=True)
            cold()
            t0 = time.perf_counter()
            rsync = ["rsync", "-aHAX", "--numeric-ids", f"{e.root}/", f"{disk1}/anchor/"]
            subprocess.run(rsync, check=True)
            anchor = time.perf_counter() - t0
            subprocess.run(start.split(), check=True)
            e._wait(lambda: e.run("info", check=False).returncode == 0, 60, "dockerd")
            e.run("start", "writer")
            time.sleep(2)
            cold()
            state = Path(tempfile.mkdtemp(prefix="dgc-bench-state-"))
            cmd = [sys.executable, "-m", "dockergc", "relocate", "--to", f"{disk2}/docker"]
            cmd += ["--root", str(e.root), "--config-file", str(e.config), "--yes", "--json"]
            cmd += ["--stop-cmd", stop, "--start-cmd", start, "--host", f"unix://{e.sock}"]
            cmd += ["--state-dir", str(state), "-q", *(["--offline"] if args.offline else [])]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            whole = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"relocate failed: {proc.stderr[-2000:]}")
            view = json.loads(proc.stdout)
            down = view["downtime_seconds"]
            written = (e.root / "volumes/vol1/_data/log").read_bytes()
            assert (disk2 / "docker/volumes/vol1/_data/log").read_bytes() == written
            subprocess.run(stop.split(), check=True)
            print(f"root: {total / 2**30:.2f} GiB in {args.files} files + the engine's own")
            print(f"anchor rsync -aHAX --numeric-ids (stopped, cold): {anchor:.2f}s (1.00x)")
            mode = "offline" if args.offline else "pre-copy"
            print(f"dockergc relocate ({mode}, cold, writer running): whole {whole:.2f}s")
            print(f"  steps: {', '.join(f'{k} {v:.2f}s' for k, v in view['timings'].items())}")
            print(f"  downtime {down:.2f}s = {down / anchor:.2f}x the anchor (goal <= 0.25x)")
    finally:
        e.destroy()


if __name__ == "__main__":
    main()
