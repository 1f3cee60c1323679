#!/usr/bin/env python3
"""`dockergc plan` vs `docker system df -v` on a real containerd image store.

Starts its own containerd 2.1 + dockerd 28.5 with ``--feature containerd-snapshotter``
(as the tests do; needs root, busybox-static and .ci/get-engine-28.5), fills it through
the engine with --images distinct images: most are `docker import`s of small generated
tars (each its own content, so its own blob and snapshot), some are legacy builds FROM
an imported base (sharing its layer), a tenth are re-imported under a tag already taken
(the old image stays, dangling), and a few containers sit on them. Then the two whole
commands run in turn, A B A B ... after a warm-up of each, and the figures are the
median, min and max over the runs: wall seconds, the ratio dockergc / df taken pair by
pair (so it holds when the machine's speed drifts), dockergc's cpu seconds and the peak
RSS of each command's largest single process (GNU time's %M; any child it waits for
counts). df's work is done in the daemon, so only its wall time compares.
dockergc runs with the engine's bin dir first on PATH, so it finds the matching ctr.
Run: python3 benchmarks/containerd_plan.py [--images 220] [--runs 7] [--containers 8]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TIME = "/usr/bin/time"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import ctd_flags  # noqa: E402
from tests.engine import Engine  # noqa: E402


def small_tar(i: int) -> bytes:
    """A rootfs of a few small files whose content is this image's own."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            (f"app/{i}/VERSION", f"{i}\n".encode()),
            (f"app/{i}/data.bin", os.urandom(4096 + 37 * i)),
            ("etc/img-id", f"img-{i}\n".encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fill(e: Engine, images: int, containers: int, workers: int = 4) -> None:
    e.import_base()  # base:1, the layer the builds share
    builds = max(1, images // 10)
    dangling = max(1, images // 10)
    imports = images - 1 - builds - dangling
    e.build("app0:1", 'FROM base:1\nRUN echo 0 > /stamp\nCMD ["sh"]\n')
    # Builds in turn (the legacy builder commits one step at a time); imports in parallel.
    for b in range(1, builds):
        e.build(f"app{b}:1", f'FROM base:1\nRUN echo {b} > /stamp\nCMD ["sh"]\n')

    def imp(i: int) -> None:
        # The first `dangling` tags are imported twice: the first image loses its tag.
        tag = f"imp{i % dangling}:1" if i >= imports else f"imp{i}:1"
        e.run("import", "-", tag, input=small_tar(i))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(imp, range(imports)))
        list(pool.map(imp, range(imports, imports + dangling)))
    for c in range(containers):
        image = f"app{c % builds}:1" if c % 2 else "base:1"
        e.run(
            "run",
            "--network",
            "none",
            "--name",
            f"c{c}",
            image,
            "sh",
            "-c",
            f"mkdir -p /var/cache/app && for i in $(seq 1 50); do echo $i > /var/cache/app/$i; "
            f"done && echo {c} > /state",
        )


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, int, bytes, bytes]:
    """(wall s, cpu s, peak RSS MB, exit code, stdout, stderr) of one whole run.

    The peak is GNU time's %M when /usr/bin/time is there (the command's own largest
    process: a child forked by this script would inherit this script's high-water RSS as
    its floor), else wait4's. The wall clock includes time's own fork, a millisecond.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        wrap = [TIME, "-f", "%M", "-o", rss.name] if os.path.exists(TIME) else []
        t0 = time.perf_counter()
        proc = subprocess.Popen([*wrap, *argv], stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        kb = int(rss.read().split()[-1]) if wrap else usage.ru_maxrss
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime  # time's own is about nothing
        return wall, cpu, kb / 1024, proc.returncode, out.read(), err.read()


def fmt(values: list[float], unit: str = "s") -> str:
    return (
        f"median {statistics.median(values):.3f}{unit} "
        f"(min {min(values):.3f}, max {max(values):.3f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=220, help="images to create (>= 20)")
    ap.add_argument("--containers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=7, help="counted runs of each command")
    ap.add_argument("--keep", action="store_true", help="leave the engine running")
    args = ap.parse_args()
    if args.images < 20:
        ap.error("--images must be at least 20")
    e = Engine(version="28.5", store="containerd")
    try:
        e.start()
        t0 = time.perf_counter()
        fill(e, args.images, args.containers)
        made = time.perf_counter() - t0
        df = e.docker_argv("system", "df", "-v")
        df_env = e.bins.client_env()
        plan = [sys.executable, "-m", "dockergc", "plan", "--json", *ctd_flags(e)]
        plan_env = dict(os.environ, PATH=f"{e.bins.path_prefix}:{os.environ['PATH']}")

        _, _, _, rc, out, err = run_once(plan, plan_env)  # the warm-up, checked
        if rc != 0:
            raise SystemExit(f"dockergc plan exited {rc}: {err.decode(errors='replace')}")
        doc = json.loads(out)
        _, _, _, rc, df_out, _ = run_once(df, df_env)
        if rc != 0:
            raise SystemExit(f"docker system df -v exited {rc}")
        listed = json.loads(e.run("system", "df", "--format", "{{json .}}").stdout.splitlines()[0])
        n_all = len(e.run("images", "-a", "-q", "--no-trunc").stdout.split())
        n_dangling = len(e.run("images", "-q", "-f", "dangling=true").stdout.split())
        n_ctr = len(e.container_ids())
        print(
            f"containerd store filled in {made:.0f}s: {listed.get('TotalCount')} images "
            f"({n_dangling} dangling; `images -a`: {n_all}, build steps included), "
            f"{n_ctr} containers; plan: store={doc.get('store')}, "
            f"{len(doc['actions'])} actions, {len(doc.get('kept', []))} kept; "
            f"df -v printed {len(df_out.splitlines())} lines"
        )

        p_wall, p_cpu, p_rss, d_wall, d_rss, ratio = [], [], [], [], [], []
        failed: list[str] = []
        for _ in range(args.runs):
            pw, pc, pr, prc, _, perr = run_once(plan, plan_env)
            dw, _, dr, drc, _, derr = run_once(df, df_env)
            for name, rc, err in (("dockergc plan", prc, perr), ("docker df", drc, derr)):
                if rc != 0:
                    failed.append(f"{name} exited {rc}: {err.decode(errors='replace')[-600:]}")
            p_wall.append(pw)
            p_cpu.append(pc)
            p_rss.append(pr)
            d_wall.append(dw)
            d_rss.append(dr)
            ratio.append(pw / dw)
        print(f"{args.runs} runs each, interleaved (whole processes):")
        print(f"  dockergc plan --json    wall {fmt(p_wall)}, peak RSS {fmt(p_rss, ' MB')}")
        print(f"                          cpu {fmt(p_cpu)} (df's work is in the daemon)")
        print(f"  docker system df -v     wall {fmt(d_wall)}, peak RSS {fmt(d_rss, ' MB')}")
        print(
            f"  ratio dockergc / df     {fmt(ratio, 'x')}, "
            f"i.e. df takes {1 / statistics.median(ratio):.2f}x dockergc's time"
        )
        for line in failed:
            print("  FAILED RUN:", line)
    finally:
        if args.keep:
            print(f"engine left running under {e.base} (docker -H unix://{e.sock})")
        else:
            e.destroy()


if __name__ == "__main__":
    main()
