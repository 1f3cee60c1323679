"""Unreferenced layerdb layers left by real crashes, on real engines.

dockerd is SIGKILLed during ``docker load`` (after some of the image's layers were
registered, before its config was) and during ``docker rmi`` (right after the image
record went, while its layers were being released). What is left is computed without
dockergc: the crashed images' chains (from the daemon's own inspect before the crash)
that layerdb still holds, minus every chain of every image the daemon lists after a
restart. gc must plan exactly those as ``unreferenced-layer`` items; afterwards the
daemon starts, every image runs, every container starts, the crashed images load again
from their ``docker save`` tars, and a BuildKit build whose stage is cached runs a new
step on top of that stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockergc.store.ids import chain_ids
from tests.conftest import run_cli
from tests.engine import ENGINE_VERSIONS, Engine
from tests.realstate import MULTI, assert_everything_works, populate

pytestmark = pytest.mark.engine

LDB = "image/overlay2/layerdb/sha256"


def big(tag: str) -> str:
    """Six 2 MiB layers: registering or releasing them takes long enough to kill into."""
    runs = "".join(
        f"RUN dd if=/dev/urandom of=/{tag}{i} bs=1M count=2 2>/dev/null\n" for i in range(6)
    )
    return "FROM base:1\n" + runs


def chains(e: Engine, ref: str) -> list[str]:
    layers = json.loads(e.run("image", "inspect", "-f", "{{json .RootFS.Layers}}", ref).stdout)
    return chain_ids(layers)


def layerdb(e: Engine) -> set[str]:
    return {"sha256:" + n for n in os.listdir(e.root / LDB) if len(n) == 64}


def kill_during(e: Engine, args: list[str], ready: Callable[[], bool]) -> None:
    """Run ``docker ARGS`` and SIGKILL dockerd the moment ``ready()`` says so."""
    client = subprocess.Popen(
        e.docker_argv(*args),
        env=e.bins.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert client.poll() is None, f"docker {args[0]} ended before the crash point"
            assert time.monotonic() < deadline, f"no crash point during docker {args[0]}"
            time.sleep(0.002)
        assert e.dockerd is not None
        e.dockerd.send_signal(signal.SIGKILL)
        e.dockerd.wait()
        e.pidfile.unlink(missing_ok=True)  # its pid may be another process's soon
    finally:
        client.kill()
        client.wait()
    e.dockerd = None
    e.stop()  # containerd too, and the mounts the dead daemon left


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def crashed(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, dict[str, object]]]:
    e = Engine(version=request.param)
    try:
        e.start()
        populate(e)
        tars: dict[str, Path] = {}
        victims: dict[str, list[str]] = {}
        for tag in ("loaded", "removed"):
            e.build(f"{tag}:1", big(tag))
            victims[tag] = chains(e, f"{tag}:1")
            tars[tag] = e.base / f"{tag}.tar"
            e.run("save", "-o", str(tars[tag]), f"{tag}:1")
            e.run("rmi", f"{tag}:1")  # and the legacy builder's intermediate images
        # One image loaded from its tar alone (no intermediate images hold its layers).
        e.run("load", "-i", str(tars["removed"]))
        image_id = e.run("image", "inspect", "-f", "{{.Id}}", "removed:1").stdout.strip()
        e.stop()
        e.start()

        # Crash 1: during docker load, once three of its six layers are registered.
        had = layerdb(e)
        kill_during(e, ["load", "-i", str(tars["loaded"])], lambda: len(layerdb(e) - had) >= 3)
        e.start()
        # Crash 2: during docker rmi, the moment the image record is gone.
        record = e.root / "image/overlay2/imagedb/content/sha256" / image_id[7:]
        kill_during(e, ["rmi", "removed:1"], lambda: not record.exists())
        e.start()
        live = {c for image in e.image_ids() for c in chains(e, image)}
        left = (set(victims["loaded"]) | set(victims["removed"])) & layerdb(e) - live
        assert len(left) >= 3, "the crashes left no whole layers behind"
        yield e, {"left": left, "tars": tars}
    finally:
        e.destroy()


def layer_items(doc: dict) -> set[str]:
    return {
        "sha256:" + a["path"].rsplit("/", 1)[-1]
        for a in doc["actions"]
        if a["kind"] == "unreferenced-layer"
    }


def test_gc_removes_exactly_the_crash_leftovers_and_the_daemon_keeps_working(
    crashed: tuple[Engine, dict[str, object]],
) -> None:
    e, facts = crashed
    left = facts["left"]
    tars: dict[str, Path] = facts["tars"]  # type: ignore[assignment]
    # While the daemon runs, it holds these layers in memory: reported, never planned.
    plan = json.loads(
        run_cli("plan", "--root", str(e.root), "--config-file", "/x", "--json").stdout
    )
    assert layer_items(plan) == set()
    held = {k["path"] for k in plan["kept"] if "holds every layerdb layer" in k["reason"]}
    assert {"sha256:" + p.rsplit("/", 1)[-1] for p in held} == left

    e.stop()
    run = json.loads(
        run_cli(
            "gc",
            *("--root", str(e.root), "--config-file", "/x", "--min-age", "0"),
            *("--yes", "--json"),
        ).stdout
    )
    assert run["state"] == "applied"
    moved = [a for a in run["actions"] if a["kind"] == "unreferenced-layer"]
    assert {"sha256:" + a["path"].rsplit("/", 1)[-1] for a in moved} == left
    assert all(a["outcome"] == "moved" for a in moved)
    assert layerdb(e) & left == set()

    e.start()
    assert_everything_works(e)
    # The crashed images come back from their tars: their layers register again.
    for tag, tar in tars.items():
        e.run("load", "-i", str(tar))
        e.run("run", "--rm", "--network", "none", f"{tag}:1", "cat", f"/{tag}5")
    # A new step on top of BuildKit's cached stage: the stage's snapshot is mounted.
    on_stage = MULTI.split("FROM base:1\nCOPY")[0] + "FROM build\nRUN cat /artifact /junk > /both\n"
    out = e.run(
        "build",
        "--progress=plain",
        "--network",
        "none",
        "-t",
        "onstage:1",
        str(_context(e, on_stage)),
        env={"DOCKER_BUILDKIT": "1"},
    )
    assert "CACHED" in out.stdout + out.stderr
    both = e.run("run", "--rm", "--network", "none", "onstage:1", "cat", "/both").stdout
    assert both.split() == ["built", "junk"]


def _context(e: Engine, dockerfile: str) -> Path:
    ctx = e.base / "ctx-onstage"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx
