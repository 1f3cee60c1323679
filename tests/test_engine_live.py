"""--live against a real, busy dockerd, with dockergc's clock two days ahead (libfaketime):
the planner then takes every unreferenced dir for an old leftover, and only the
executor's re-checks on the filesystem's clock, /proc and layerdb stand between it and
a dir a build is writing.

Needs ``faketime`` (apt-get install faketime). File times are left alone
(NO_FAKE_STAT=1): the kernel's clock stays right, the process clock is wrong.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockergc.api import plan_root
from dockergc.execute import runner
from dockergc.plan import Policy
from tests.engine import ENGINE_VERSIONS, Engine

pytestmark = pytest.mark.engine

# What the re-checks say when they keep a dir something may be writing.
IN_FLIGHT = (
    "changed during this run",
    "younger than the grace period by the filesystem's clock",
    "in use now: pid",
    "a layer registration is in flight",
    "the daemon is changing",
)


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def quiet_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine of its own: nothing but what these tests do happens on it."""
    e = Engine(version=request.param)
    try:
        e.start()
        e.import_base()
        yield e
    finally:
        e.destroy()


def gc_two_days_ahead(e: Engine, *extra: str) -> dict:
    """``dockergc gc --live`` with the process clock two days ahead."""
    if not shutil.which("faketime"):
        pytest.fail("faketime is not installed (apt-get install faketime)")
    proc = subprocess.run(
        ["faketime", "-f", "+2d", sys.executable, "-m", "dockergc", "gc", "--root", str(e.root)]
        + ["--config-file", str(e.config), "--live", "--min-age", "1h", "--yes", "--json"]
        + list(extra),
        env={**os.environ, "NO_FAKE_STAT": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def outcomes(run: dict) -> dict[str, dict]:
    return {a["path"]: a for a in run["actions"]}


def in_flight(reason: str) -> bool:
    return reason.startswith(IN_FLIGHT)


def test_legacy_build_commit_is_kept_and_the_build_succeeds(quiet_engine: Engine) -> None:
    """gc runs while a legacy build commits a RUN step: its layer registration has a
    write-set in layerdb/tmp and a new overlay2 dir nothing references yet. Before these
    re-checks, the write-set (two days old to the wrong clock) was moved mid-commit."""
    e = quiet_engine
    # gc must land inside the commit's window; on a starved machine it can miss it (the
    # commit done before gc has read the root): then another build, up to three.
    for attempt in range(1, 4):
        tag = f"slow:{attempt}"
        run, committing = _gc_during_a_legacy_commit(e, tag)
        assert not [a for a in run["actions"] if a["outcome"] == "moved"], run  # any attempt
        owned = [a for a in run["actions"] if a["kind"] in ("write-set", "orphan-layer")]
        if owned or committing:
            break
    # What the registration owns: its write-set (planned as a leftover by the wrong
    # clock) and, outside the moments its untar holds it mounted, its new overlay2 dir.
    assert owned, f"gc did not see the commit in flight (still committing: {committing}): {run}"
    for a in owned:
        assert a["outcome"] == "skipped" and in_flight(a["reason"]), a
    assert not [a for a in run["actions"] if a["outcome"] == "moved"], run
    out = e.run("run", "--rm", "--network", "none", tag, "sh", "-c", "test -s /big && cat /d/f4000")
    assert out.stdout.strip() == "4000"


def _gc_during_a_legacy_commit(e: Engine, tag: str) -> tuple[dict, bool]:
    """A legacy build of ``tag`` whose RUN step commits 4,000 files and 200 MiB; gc (two
    days ahead, --live) once the commit's write-set appears. gc's report, and whether the
    commit was still under way when gc returned. The build must succeed."""
    ctx = Path(tempfile.mkdtemp(dir=e.base, prefix="ctx-"))
    (ctx / "Dockerfile").write_text(
        f"FROM base:1\nRUN echo {tag} > /tag"  # each attempt's own step: no cache hit
        " && mkdir /d && for i in $(seq 1 4000); do echo $i > /d/f$i; done"
        " && dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null\n"
    )
    write_sets = e.root / "image/overlay2/layerdb/tmp"
    build = subprocess.Popen(
        e.docker_argv("build", "-q", "-t", tag, str(ctx)),
        env=e.bins.client_env(buildkit=False),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(n.startswith("write-set-") for n in os.listdir(write_sets)):
            assert build.poll() is None, build.stderr.read() if build.stderr else ""
            assert time.monotonic() < deadline, "the build never started its commit"
            time.sleep(0.02)
        time.sleep(0.3)  # the registration creates its overlay2 dir right after
        run = gc_two_days_ahead(e)
        committing = any(n.startswith("write-set-") for n in os.listdir(write_sets))
    finally:
        _, err = build.communicate(timeout=300)
    assert build.returncode == 0, err
    return run, committing


def test_a_dir_a_process_writes_is_kept_then_moved_once_it_stops(quiet_engine: Engine) -> None:
    """The deterministic form of the race: an unreferenced, layer-shaped dir that a real
    process holds open and keeps writing to, as a registration does."""
    e = quiet_engine
    name = secrets.token_hex(32)
    stray = e.root / "overlay2" / name
    (stray / "diff/var/log").mkdir(parents=True)
    link = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(26))
    (stray / "link").write_text(link)
    os.symlink(f"../{name}/diff", e.root / "overlay2/l" / link)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nf = open(sys.argv[1], 'a')\n"
            "while True:\n    f.write('x' * 512); f.flush(); time.sleep(0.1)\n",
            str(stray / "diff/var/log/app.log"),
        ]
    )
    rel = f"overlay2/{name}"
    try:
        time.sleep(0.5)
        run = gc_two_days_ahead(e)
        kept = outcomes(run)[rel]
        assert kept["outcome"] == "skipped" and in_flight(kept["reason"]), kept
        assert stray.is_dir()
        # A grace period of 0 (possible through the library, not the CLI) and a wrong
        # clock: /proc still names the writer.
        time.sleep(1)
        _, _, plan = plan_root(e.root, Policy(min_age=0, now=time.time() + 2 * 86400))
        assert rel in {a.path for a in plan.actions}
        view = runner.start_run(e.root, plan, runner.Options(live=True, live_slack=0))
        reasons = {s["path"]: s["reason"] for s in view.skipped}
        assert reasons[rel].startswith(f"in use now: pid {writer.pid} (python"), reasons
        assert f"{stray}/diff/var/log/app.log (fd " in reasons[rel]
    finally:
        writer.kill()
        writer.wait()
    # Stopped, it is still planned by the wrong clock; the CLI keeps it until it is
    # older than the grace period by the filesystem's clock, and with no grace it moves.
    run = gc_two_days_ahead(e)
    assert "by the filesystem's clock" in outcomes(run)[rel]["reason"]
    _, _, plan = plan_root(e.root, Policy(min_age=0, now=time.time() + 2 * 86400))
    view = runner.start_run(e.root, plan, runner.Options(live=True, live_slack=0))
    assert {s.path for s in view.steps if s.status == "moved"} >= {rel}
    runner.purge_runs(e.root, 0, view.run_id, runner.Options())
    assert e.run("info").returncode == 0
