"""prune against a real dockerd: the dry run lists exactly what the rules select, the run
removes exactly that through the daemon, the daemon's own accounting of what it freed
is within 5% of the plan's figure, kept and in-use items survive, every remaining image
runs; a container started after planning is never removed, and a daemon refusal (409)
is reported per item without stopping the run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockergc import daemon
from dockergc.prune import executor
from dockergc.prune.executor import run_prune
from dockergc.prune.plan import make_prune_plan
from dockergc.prune.policy import PrunePolicy
from dockergc.prune.read import read_engine_facts
from tests.conftest import run_cli
from tests.engine import ENGINE_VERSIONS, Engine

pytestmark = pytest.mark.engine


def _blob(path: str, kib: int) -> str:
    return f"RUN head -c {kib * 1024} /dev/urandom > {path}\n"


IMAGES = {  # built in this order (created times grow: --keep-newest sees it)
    "web:1": "FROM base:1\n" + _blob("/w", 1024),
    "web:2": "FROM base:1\n" + _blob("/w", 1536),
    "web:3": "FROM base:1\n" + _blob("/w", 512),
    "pair:1": "FROM base:1\n" + _blob("/big", 3072),
    "pair:2": "FROM pair:1\n" + _blob("/small", 8),
    "pair:3": "FROM base:1\n" + _blob("/p", 16),
    "postgres:13": "FROM base:1\n" + _blob("/pg", 700),
    "postgres:14": "FROM base:1\n" + _blob("/pg", 600),
    "lab:1": "FROM base:1\nLABEL com.example.keep=yes\n" + _blob("/l", 900),
    "lab:2": "FROM base:1\n" + _blob("/l", 100),
    "used:1": "FROM base:1\n" + _blob("/u", 800),
    "used:2": "FROM base:1\n" + _blob("/u", 100),
    "run:1": "FROM base:1\n" + _blob("/r", 800),
    "run:2": "FROM base:1\n" + _blob("/r", 100),
    "gone:1": "FROM base:1\n" + _blob("/g", 1200),
    "gone:2": "FROM base:1\n" + _blob("/g", 100),
    "dang:1": "FROM base:1\n" + _blob("/d", 1100),
}
RULES = (
    "--containers-older-than",
    "0s",
    "--dangling",
    "--images-older-than",
    "0s",
    "--build-cache-older-than",
    "0s",
    "--keep",
    "postgres:*",
    "--keep-label",
    "com.example.keep",
    "--keep-newest",
    "1",
)
REMOVED_TAGS = {"web:1", "web:2", "pair:1", "pair:2", "gone:1"}
KEPT_TAGS = set(IMAGES) - REMOVED_TAGS | {"base:1", "bk:1"}


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def prune_engine(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, dict[str, str]]]:
    e = Engine(version=request.param)
    try:
        e.start()
        e.import_base()
        for tag, dockerfile in IMAGES.items():
            e.build(tag, dockerfile)
            time.sleep(1.1)  # distinct created seconds
        first_dang = e.run("images", "-q", "--no-trunc", "dang:1").stdout.strip()
        e.build("dang:1", "FROM base:1\n" + _blob("/d", 1000))  # the old one is now dangling
        e.build("bk:1", "FROM base:1\nRUN echo bk > /bk\n", buildkit=True)
        net = ("--network", "none")
        e.run("create", *net, "--label", "com.example.keep=1", "--name", "c_keep", "used:1", "true")
        e.run("run", "-d", *net, "--name", "c_run", "run:1", "sleep", "3600")
        e.run(
            "run",
            *net,
            "--name",
            "c_gone",
            "gone:1",
            "sh",
            "-c",
            "head -c 300000 /dev/urandom > /x",
        )
        e.run("run", *net, "--name", "c_later", "web:3", "true")  # exited: planned, then started
        yield e, {"dangling": first_dang}
    finally:
        e.destroy()


def dockergc(e: Engine, *args: str, check: int = 0) -> dict:
    out = run_cli("prune", "--host", f"unix://{e.sock}", "--json", *args, check=check)
    return json.loads(out.stdout)


def test_dry_run_then_run_removes_exactly_the_selection(prune_engine: tuple[Engine, dict]) -> None:
    e, ids = prune_engine
    # Age rules count: nothing here is a day old.
    young = dockergc(e, "--dry-run", "--images-older-than", "1d", "--containers-older-than", "1d")
    assert young["items"] == []

    plan = dockergc(e, "--dry-run", *RULES)
    by_kind: dict[str, set[str]] = {}
    for item in plan["items"]:
        by_kind.setdefault(item["kind"], set()).update(item["names"])
    assert by_kind["container"] == {"c_gone", "c_later"}
    assert by_kind["image"] == REMOVED_TAGS | {ids["dangling"][7:19]}
    assert by_kind.get("build-cache"), "BuildKit left cache records"
    rules = {n: i["rule"] for i in plan["items"] for n in i["names"]}
    assert rules["gone:1"].startswith("unused image")
    assert rules[ids["dangling"][7:19]].startswith("dangling")
    kept = {k["name"]: k["why"] for k in plan["kept"]}
    assert "postgres:*" in kept["postgres:13"] and "com.example.keep" in kept["lab:1"]
    assert "used by a container" in kept["used:1"] and "used by a container" in kept["run:1"]
    assert "newest" in kept["web:3"]  # c_later used it, but c_later goes first
    # Shared layers once: pair:2 is built on pair:1's 3 MiB layer; both go, it counts once.
    pair = {n: i["bytes"] for i in plan["items"] for n in i["names"] if n.startswith("pair:")}
    assert 3 * 2**20 <= sum(pair.values()) < 3.2 * 2**20
    # Containers go before the images they used; children before parents.
    order = [n for i in plan["items"] for n in i["names"]]
    assert order.index("c_gone") < order.index("gone:1")
    assert order.index("pair:2") < order.index("pair:1")

    done = dockergc(e, *RULES, "--yes")
    statuses = {o["names"][0]: o["status"] for o in done["outcomes"]}
    assert set(statuses.values()) == {"removed"}, statuses
    planned, freed = done["planned_bytes"], done["freed_bytes"]
    assert planned > 8 * 2**20
    print(f"prune: planned {planned} bytes, the daemon freed {freed}")
    assert abs(freed - planned) <= 0.05 * planned, (planned, freed)

    tags = set(e.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())
    assert tags >= KEPT_TAGS and not tags & REMOVED_TAGS
    assert ids["dangling"] not in e.run("images", "-aq", "--no-trunc").stdout
    names = set(e.run("ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert names == {"c_keep", "c_run"}
    for tag in sorted(KEPT_TAGS):
        e.run("run", "--rm", "--network", "none", tag, "true")
    e.run("start", "c_keep")


def test_started_after_planning_is_kept_and_a_refusal_is_per_item(
    prune_engine: tuple[Engine, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    e, _ = prune_engine
    net = ("--network", "none")
    e.run("run", *net, "--name", "c_a", "web:3", "true")
    e.run("run", *net, "--name", "c_b", "pair:3", "true")
    e.build("solo:1", "FROM base:1\n" + _blob("/s", 64))
    e.build("solo:2", "FROM base:1\n" + _blob("/s", 65))
    client = daemon.engine_client(f"unix://{e.sock}")
    policy = PrunePolicy(now=time.time(), containers_older_than=0, images_older_than=0)
    plan = make_prune_plan(read_engine_facts(client), policy)
    planned = {n for i in plan.items for n in i.names}
    assert {"c_a", "c_b", "solo:1", "solo:2"} <= planned
    time.sleep(1.1)
    e.run("start", "c_a")  # started after the plan: must stay
    # A container made from solo:1 after the plan; the re-check is bypassed so that the
    # daemon itself refuses (409), which must be reported for that item only.
    e.run("create", *net, "--name", "c_new", "solo:1", "true")
    monkeypatch.setattr(
        executor, "recheck", lambda c, item, at: "started" if item.names == ("c_a",) else None
    )
    result = run_prune(client, Path(read_engine_facts(client).root), plan)
    outcome = {o.item.names[0]: o for o in result.outcomes}
    assert outcome["c_a"].status == "kept"
    assert outcome["solo:1"].status == "conflict", outcome["solo:1"]
    assert outcome["c_b"].status == "removed" and outcome["solo:2"].status == "removed"
    assert "solo:1" in e.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert "c_a" in e.run("ps", "-a", "--format", "{{.Names}}").stdout
    e.run("start", "c_new")


def test_recheck_keeps_a_container_started_since_the_plan(
    prune_engine: tuple[Engine, dict],
) -> None:
    e, _ = prune_engine
    e.run("run", "--network", "none", "--name", "c_c", "web:3", "true")
    client = daemon.engine_client(f"unix://{e.sock}")
    planned_at = time.time()
    item = next(
        i
        for i in make_prune_plan(
            read_engine_facts(client), PrunePolicy(now=planned_at, containers_older_than=0)
        ).items
        if i.names == ("c_c",)
    )
    assert executor.recheck(client, item, planned_at) is None
    time.sleep(1.1)
    e.run("start", "-a", "c_c")
    assert "started after the plan" in (executor.recheck(client, item, planned_at) or "")
