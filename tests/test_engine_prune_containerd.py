"""prune against a real dockerd 28.5 on the containerd image store: the same rules as on
overlay2 through the Engine API, and a byte-exact dry run. The truth for "freed" is the
disk: ``du -sxB1`` of containerd's root and the data root before and after (allocated
bytes, hard links once), once containerd's garbage collector has finished; the plan must
be within 5% of it. (The daemon's own figures are not the truth here: LayersSize adds
apparent blob sizes and every snapshot, containers' rw snapshots included, which SizeRw
counts again; image deletes report no SpaceReclaimed at all; a build-cache prune's
SpaceReclaimed adds each record's Size, blobs an image still holds included.)"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import run_cli
from tests.ctd_state import collect
from tests.engine import Engine

pytestmark = pytest.mark.engine


def _blob(path: str, kib: int) -> str:
    return f"RUN head -c {kib * 1024} /dev/urandom > {path}\n"


IMAGES = {  # classic builder: each image is committed onto its build container's -init
    "web:1": "FROM base:1\n" + _blob("/w", 1024),
    "web:2": "FROM base:1\n" + _blob("/w", 1536),
    "pair:1": "FROM base:1\n" + _blob("/big", 2048),
    "pair:2": "FROM pair:1\n" + _blob("/small", 64),  # shares pair:1's layers
    "keep:1": "FROM base:1\n" + _blob("/k", 700),
    "used:1": "FROM base:1\n" + _blob("/u", 800),
    "run:1": "FROM base:1\n" + _blob("/r", 300),
    "gone:1": "FROM base:1\n" + _blob("/g", 1200),
    "dang:1": "FROM base:1\n" + _blob("/d", 900),
}
RULES = (  # every rule at once: each age at 0s, dangling images, anonymous volumes
    *(arg for kind in ("containers", "images") for arg in (f"--{kind}-older-than", "0s")),
    *("--build-cache-older-than", "0s", "--dangling", "--volumes"),
    *("--keep", "keep:*", "--keep", "base:*", "--keep-container", "c_keep"),
)
REMOVED_TAGS = {"web:1", "web:2", "pair:1", "pair:2", "gone:1", "dang:1", "bk:1", "bk:2"}
KEPT_TAGS = {"base:1", "keep:1", "used:1", "run:1"}


@pytest.fixture(scope="module", params=["28.5"])
def ctd_engine(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, str]]:
    e = Engine(version=request.param, store="containerd")
    try:
        e.start()
        e.import_base()
        for tag, dockerfile in IMAGES.items():
            e.build(tag, dockerfile)
        dangling = e.run("images", "-q", "--no-trunc", "dang:1").stdout.strip()
        e.build("dang:1", "FROM base:1\n" + _blob("/d", 800))  # the old one is dangling
        # BuildKit: build cache records, one of them sharing its blob with bk:1.
        e.build("bk:1", "FROM base:1\n" + _blob("/bk", 600), buildkit=True)
        e.build("bk:2", "FROM bk:1\n" + _blob("/bk2", 300), buildkit=True)
        net = ("--network", "none")
        e.run("create", *net, "--name", "c_keep", "used:1", "true")  # stopped, kept
        e.run("run", "-d", *net, "--name", "c_run", "run:1", "sleep", "3600")
        e.run("run", *net, "--name", "c_gone", "gone:1", "sh", "-c", _write("/x", 300))
        # An anonymous volume with data, left by a removed container's twin.
        e.run("run", *net, "--name", "c_vol", "-v", "/data", "pair:2", "sh", "-c",
              _write("/data/v", 500))  # fmt: skip
        yield e, dangling
    finally:
        e.destroy()


def _write(path: str, kib: int) -> str:
    return f"head -c {kib * 1024} /dev/urandom > {path}"


def dockergc(e: Engine, *args: str, check: int = 0) -> dict:
    out = run_cli("prune", "--host", f"unix://{e.sock}", "--json", *args, check=check)
    return json.loads(out.stdout)


def disk(e: Engine) -> int:
    """du -sxB1 of containerd's root and the data root together."""
    out = subprocess.run(
        ["du", "-sxcB1", str(e.ctd_dir / "root"), str(e.root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def settled_disk(e: Engine) -> int:
    collect(e)  # containerd's GC, which the daemon's deletes only scheduled, done now
    last = disk(e)
    for _ in range(30):  # containerd's GC frees after the daemon's deletes returned
        time.sleep(0.5)
        now = disk(e)
        if now == last:
            return now
        last = now
    return last


def test_dry_run_is_byte_exact_on_the_containerd_store(ctd_engine: tuple[Engine, str]) -> None:
    e, dangling = ctd_engine
    young = dockergc(e, "--dry-run", "--images-older-than", "1d", "--containers-older-than", "1d")
    assert young["items"] == [] and young["store"] == "containerd"

    plan = dockergc(e, "--dry-run", *RULES)
    assert plan["containerd_root"] == str(e.ctd_dir / "root")
    by_kind: dict[str, set[str]] = {}
    for item in plan["items"]:
        by_kind.setdefault(item["kind"], set()).update(item["names"])
    assert by_kind["container"] == {"c_gone", "c_vol"}
    assert by_kind["image"] == (REMOVED_TAGS | {dangling[7:19]}), by_kind["image"]
    assert by_kind.get("build-cache"), "BuildKit left cache records"
    assert len(by_kind["volume"]) == 1
    kept = {k["name"]: k["why"] for k in plan["kept"]}
    assert "keep:*" in kept["keep:1"] and "c_keep" in kept["used:1"]
    assert "used by a container" in kept["run:1"]
    # Shared layers once: pair:2 is built on pair:1's 2 MiB layer (blob and snapshot).
    pair = {n: i["bytes"] for i in plan["items"] for n in i["names"] if n.startswith("pair:")}
    assert 4 * 2**20 <= sum(pair.values()) < 4.4 * 2**20, pair
    order = [n for i in plan["items"] for n in i["names"]]
    assert order.index("c_gone") < order.index("gone:1")
    assert order.index("pair:2") < order.index("pair:1")

    before = settled_disk(e)
    done = dockergc(e, *RULES, "--yes")
    after = settled_disk(e)
    statuses = {o["names"][0]: o["status"] for o in done["outcomes"]}
    assert set(statuses.values()) == {"removed"}, statuses
    planned = plan["totals"]["bytes"]
    freed = before - after
    ratio = freed / planned
    print(
        f"containerd prune: planned {planned} bytes, du freed {freed} ({ratio:.4f}); "
        f"dockergc measured {done['freed_bytes']} + volumes {done['volume_bytes']}"
    )
    assert planned > 10 * 2**20
    assert abs(freed - planned) <= 0.05 * planned, (planned, freed)
    assert done["freed_measured_by"] == "disk"
    own = done["freed_bytes"] + done["volume_bytes"]
    assert abs(own - planned) <= 0.05 * planned, (planned, own)

    tags = set(e.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())
    assert tags >= KEPT_TAGS and not tags & REMOVED_TAGS, tags
    names = set(e.run("ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert names == {"c_keep", "c_run"}
    assert e.run("volume", "ls", "-q").stdout.split() == []
    for tag in sorted(KEPT_TAGS):
        e.run("run", "--rm", "--network", "none", tag, "true")
    e.run("start", "c_keep")
