"""prune's volumes, --keep-container, absolute disk-pressure marks and build-cache
reporting, against a real dockerd.

Volumes: the dry run lists exactly the unused anonymous volumes (20.10 labels none: its
anonymous volumes are known by their 64-hex names), with --volumes-all the named ones
too, minus what --keep-volume and --keep-label spare, each with bytes within 5% of
``du -sxB1`` of its _data (a hard link and a sparse file in it); the run removes exactly
those, re-asking the daemon first; a 409 is reported per item. --keep-container spares
a container and so its image and volume. ``--high-watermark 5MB`` evicts least recently
used first. Build cache: the report says what the daemon deleted, and a record the
daemon keeps (20.10's 0-byte shared "from local") is reported kept, not removed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dockergc import daemon
from dockergc.prune import executor
from dockergc.prune.executor import DAEMON_KEPT, run_prune
from dockergc.prune.facts import images_and_cache
from dockergc.prune.plan import make_prune_plan
from dockergc.prune.policy import PrunePolicy
from dockergc.prune.read import read_engine_facts
from dockergc.prune.volread import measure_volume
from tests.conftest import run_cli
from tests.engine import ENGINE_VERSIONS, Engine

NET = ("--network", "none")
# Written into a volume: a 1 MiB file and a hard link to it (counted once), a sparse
# file (64 MiB long, 256 KiB written), a symlink to a big file elsewhere (not followed),
# a few small files in a subdir.
FILL = (
    "head -c 1048576 /dev/urandom > /data/a && ln /data/a /data/a2 && "
    "truncate -s 64M /data/sparse && "
    "dd if=/dev/urandom of=/data/sparse bs=4096 count=64 seek=4096 conv=notrunc 2>/dev/null && "
    "ln -s /bin/busybox /data/bb && mkdir -p /data/sub && "
    "for i in 1 2 3 4 5; do echo $i > /data/sub/f$i; done"
)


def du(path: str) -> int:
    out = subprocess.run(["du", "-sxB1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


# -- bytes like du, without an engine -----------------------------------------------------


def test_volume_bytes_match_du_on_hard_links_sparse_files_and_symlinks(tmp_path: Path) -> None:
    data = tmp_path / "volumes/v1/_data"
    (data / "sub").mkdir(parents=True)
    (data / "a").write_bytes(b"x" * 1_000_000)
    (data / "a2").hardlink_to(data / "a")
    with open(data / "sparse", "wb") as fh:
        fh.truncate(64 << 20)
        fh.seek(16 << 20)
        fh.write(b"y" * 300_000)
    big = tmp_path / "elsewhere"
    big.write_bytes(b"z" * 2_000_000)
    (data / "link").symlink_to(big)
    for i in range(5):
        (data / "sub" / f"f{i}").write_text(str(i))
    size, why = measure_volume(tmp_path, "v1")
    assert why is None and size is not None
    expected = du(str(data))
    print(f"volume bytes: dockergc {size}, du -sxB1 {expected}, ratio {size / expected:.4f}")
    assert abs(size - expected) <= 0.05 * expected
    assert size < 2_000_000  # the hard link once, the sparse file's holes and link target not
    # A symlink on the way is refused, never walked through.
    (tmp_path / "volumes/v2").symlink_to(tmp_path / "volumes/v1")
    size, why = measure_volume(tmp_path, "v2")
    assert size is None and why and "symlink" in why


# -- real engine ---------------------------------------------------------------------------


def dockergc(e: Engine, *args: str, check: int = 0) -> dict:
    out = run_cli("prune", "--host", f"unix://{e.sock}", "--json", *args, check=check)
    return json.loads(out.stdout)


def volume_names(e: Engine) -> set[str]:
    return set(e.run("volume", "ls", "-q").stdout.split())


def mounts_of(e: Engine, container: str) -> list[str]:
    fmt = "{{range .Mounts}}{{.Name}} {{end}}"
    return e.run("inspect", "-f", fmt, container).stdout.split()


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def vol_engine(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, dict[str, str]]]:
    e = Engine(version=request.param)
    try:
        e.start()
        e.import_base()
        e.build("vimg:1", "FROM base:1\nRUN echo v > /v\n")
        # An anonymous volume left behind by a container removed without -v.
        e.run("run", *NET, "--name", "c_fill", "-v", "/data", "base:1", "sh", "-c", FILL)
        (fill,) = mounts_of(e, "c_fill")
        e.run("rm", "c_fill")
        empty = e.run("volume", "create").stdout.strip()  # the daemon names it: anonymous
        for name in ("named_free", "keep_me"):
            e.run("volume", "create", name)
        e.run("volume", "create", "--label", "com.example.keep=1", "lab_vol")
        e.run("run", *NET, "-v", "named_free:/d", "--rm", "base:1", "sh", "-c", "echo n > /d/n")
        # Stopped containers holding anonymous volumes: one kept by --keep-container, one
        # the container rule removes (its volume goes after it).
        e.run("run", *NET, "--name", "c_stopped", "-v", "/data", "vimg:1", "true")
        (stopped,) = mounts_of(e, "c_stopped")
        e.run("run", *NET, "--name", "c_gone_v", "-v", "/data", "base:1", "true")
        (gone,) = mounts_of(e, "c_gone_v")
        e.run("run", "-d", *NET, "--name", "c_run", "-v", "busy_vol:/d", "base:1", "sleep", "3600")
        yield e, {"fill": fill, "empty": empty, "stopped": stopped, "gone": gone}
    finally:
        e.destroy()


@pytest.mark.engine
def test_dry_run_lists_unused_anonymous_volumes_with_du_bytes(
    vol_engine: tuple[Engine, dict[str, str]],
) -> None:
    e, v = vol_engine
    plan = dockergc(e, "--dry-run", "--volumes")
    items = {i["id"]: i for i in plan["items"]}
    assert {i["kind"] for i in plan["items"]} == {"volume"}
    assert set(items) == {v["fill"], v["empty"]}, items  # named ones need --volumes-all
    how = "64-hex generated name" if e.version == "20.10" else "label com.docker.volume.anonymous"
    assert items[v["fill"]]["rule"] == f"unused anonymous volume ({how})"
    assert items[v["fill"]]["names"] == [v["fill"]]
    data = f"{e.root}/volumes/{v['fill']}/_data"
    expected = du(data)
    got = items[v["fill"]]["bytes"]
    print(f"engine {e.version}: dockergc {got}, du -sxB1 {expected}, ratio {got / expected:.4f}")
    assert abs(got - expected) <= 0.05 * expected
    assert 1 << 20 < got < 2 << 20  # the hard link once, the sparse file's holes not
    kept = {k["name"]: k["why"] for k in plan["kept"] if k["kind"] == "volume"}
    assert kept == {
        v["stopped"]: "used by container c_stopped",
        v["gone"]: "used by container c_gone_v",
    }
    assert volume_names(e) >= {v["fill"], v["empty"]}  # a dry run changes nothing


@pytest.mark.engine
def test_volumes_all_keep_rules_and_keep_container(
    vol_engine: tuple[Engine, dict[str, str]],
) -> None:
    e, v = vol_engine
    rules = ("--volumes-all", "--keep-volume", "keep_*", "--keep-label", "com.example.keep")
    plan = dockergc(e, "--dry-run", *rules)
    assert {i["id"] for i in plan["items"]} == {v["fill"], v["empty"], "named_free"}
    kept = {k["name"]: k["why"] for k in plan["kept"] if k["kind"] == "volume"}
    assert kept["keep_me"] == "--keep-volume keep_* matches keep_me"
    assert kept["lab_vol"] == "--keep-label com.example.keep"
    assert kept["busy_vol"] == "used by container c_run"

    # Containers too: c_stopped is spared by name, so its image and volume stay in use;
    # c_gone_v goes, and its volume after it.
    more = ("--containers-older-than", "0s", "--images-older-than", "0s")
    plan = dockergc(e, "--dry-run", *rules, *more, "--keep-container", "c_stop*")
    order = [
        (i["kind"], i["id"] if i["kind"] == "volume" else i["names"][0]) for i in plan["items"]
    ]
    assert ("container", "c_gone_v") in order and ("container", "c_stopped") not in order
    assert order.index(("container", "c_gone_v")) < order.index(("volume", v["gone"]))
    gone_rule = next(i["rule"] for i in plan["items"] if i["id"] == v["gone"])
    assert gone_rule.endswith("once container c_gone_v is removed")
    kept = {(k["kind"], k["name"]): k["why"] for k in plan["kept"]}
    by_name = "--keep-container c_stop* matches c_stopped"
    assert kept[("container", "c_stopped")] == by_name
    assert kept[("image", "vimg:1")] == f"used by container c_stopped ({by_name})"
    assert kept[("volume", v["stopped"])] == f"used by container c_stopped ({by_name})"


@pytest.mark.engine
def test_the_run_removes_exactly_the_listed_volumes(
    vol_engine: tuple[Engine, dict[str, str]],
) -> None:
    e, v = vol_engine
    rules = (
        "--volumes-all",
        "--keep-volume",
        "keep_*",
        "--keep-label",
        "com.example.keep",
        "--containers-older-than",
        "0s",
        "--keep-container",
        "c_stop*",
    )
    plan = dockergc(e, "--dry-run", *rules)
    listed = {i["id"] for i in plan["items"] if i["kind"] == "volume"}
    assert listed == {v["fill"], v["empty"], "named_free", v["gone"]}
    present = volume_names(e)
    done = dockergc(e, *rules, "--yes")
    statuses = {o["id"]: o["status"] for o in done["outcomes"]}
    assert set(statuses.values()) == {"removed"}, done["outcomes"]
    assert {o["id"] for o in done["outcomes"] if o["kind"] == "volume"} == listed
    assert volume_names(e) == present - listed
    assert done["volume_bytes"] == sum(i["bytes"] for i in plan["items"] if i["kind"] == "volume")
    e.run("start", "-a", "c_stopped")  # spared, with its volume
    assert e.run("inspect", "-f", "{{.State.Running}}", "c_run").stdout.strip() == "true"


@pytest.mark.engine
def test_a_volume_used_after_planning_is_kept_and_a_409_is_per_item(
    vol_engine: tuple[Engine, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    e, _ = vol_engine
    for name in ("late_a", "late_b", "late_c"):
        e.run("volume", "create", name)
    client = daemon.engine_client(f"unix://{e.sock}")
    policy = PrunePolicy(now=time.time(), volumes_all=True, keep_volumes=("keep_*", "lab_*"))
    plan = make_prune_plan(read_engine_facts(client, volumes=True), policy)
    assert {i.id for i in plan.items} == {"late_a", "late_b", "late_c"}
    e.run("create", *NET, "--name", "c_late_a", "-v", "late_a:/x", "base:1", "true")
    result = run_prune(client, e.root, plan)
    outcome = {o.item.id: o for o in result.outcomes}
    assert outcome["late_a"].status == "kept"
    assert outcome["late_a"].detail == "container c_late_a uses it now"
    # With the re-check bypassed, the daemon itself refuses (409): reported for that
    # item only, and never forced.
    for name in ("late_b", "late_c"):
        e.run("volume", "create", name)
    plan = make_prune_plan(read_engine_facts(client, volumes=True), policy)
    e.run("create", *NET, "--name", "c_late_b", "-v", "late_b:/x", "base:1", "true")
    monkeypatch.setattr(executor, "recheck", lambda c, item, at: None)
    result = run_prune(client, e.root, plan)
    outcome = {o.item.id: o for o in result.outcomes}
    assert outcome["late_b"].status == "conflict" and "in use" in outcome["late_b"].detail
    assert outcome["late_c"].status == "removed"
    assert {"late_a", "late_b"} <= volume_names(e) and "late_c" not in volume_names(e)
    e.run("start", "-a", "c_late_b")


# -- absolute disk-pressure mark ------------------------------------------------------------

LRU = ("lru1:1", "lru2:1", "lru3:1", "lru4:1")


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def lru_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    e = Engine(version=request.param)
    try:
        e.start()
        e.import_base()
        for n, tag in enumerate(LRU, 1):  # created (and so last used) in this order
            e.build(tag, f"FROM base:1\nRUN head -c {n * 700_000} /dev/urandom > /blob\n")
            time.sleep(1.1)
        e.run("create", *NET, "--name", "c_lru3", "lru3:1", "true")  # lru3:1 is in use
        yield e
    finally:
        e.destroy()


@pytest.mark.engine
def test_absolute_high_watermark_evicts_least_recently_used_first(lru_engine: Engine) -> None:
    e = lru_engine
    deep = dockergc(e, "--dry-run", "--high-watermark", "5MB", "--low-watermark", "1MB")
    assert [i["names"][0] for i in deep["items"]] == ["lru1:1", "lru2:1", "lru4:1"]
    assert {i["rule"] for i in deep["items"]} == {"disk pressure: least recently used"}
    assert "over --low-watermark 1MB" in deep["notes"][0]  # base:1 and lru3:1 stay
    # A low mark that the two least recently used reach: exactly those go.
    used = images_and_cache(daemon.engine_client(f"unix://{e.sock}").df())
    freed = {i["names"][0]: i["bytes"] for i in deep["items"]}
    low = used - freed["lru1:1"] - freed["lru2:1"] + 1
    marks = ("--high-watermark", f"{used - 1}B", "--low-watermark", f"{low}B")
    plan = dockergc(e, "--dry-run", *marks)
    assert [i["names"][0] for i in plan["items"]] == ["lru1:1", "lru2:1"] and not plan["notes"]
    calm = dockergc(e, "--dry-run", "--high-watermark", f"{used}B", "--low-watermark", "1MB")
    assert calm["items"] == []  # not above the mark: nothing
    done = dockergc(e, *marks, "--yes")
    assert [(o["names"][0], o["status"]) for o in done["outcomes"]] == [
        ("lru1:1", "removed"),
        ("lru2:1", "removed"),
    ]
    tags = set(e.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())
    assert tags == {"base:1", "lru3:1", "lru4:1"}


# -- build cache: what the daemon did ----------------------------------------------------------


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def cache_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    e = Engine(version=request.param)
    try:
        e.start()
        e.import_base()
        yield e
    finally:
        e.destroy()


def _bk_build(e: Engine, n: int) -> None:
    e.build(f"bk{n}:1", f"FROM base:1\nRUN echo {n} > /n\nCOPY f /f\n", True, {"f": str(n)})


@pytest.mark.engine
def test_build_cache_report_says_what_the_daemon_deleted(cache_engine: Engine) -> None:
    e = cache_engine
    _bk_build(e, 1)
    client = daemon.engine_client(f"unix://{e.sock}")
    facts = read_engine_facts(client)
    parents = {p for r in facts.cache for p in r.parents}
    base = [r for r in facts.cache if r.id in parents and not r.parents]
    assert base, [(r.id, r.description, r.parents) for r in facts.cache]
    if e.version == "20.10":  # the record the issue saw: the imported base, shared, 0 bytes
        assert base[0].description.strip() == "from local"
        assert base[0].shared and base[0].size == 0

    # The old planner's order put that base first: the daemon keeps it then (children
    # remain), and the report must say so instead of "removed".
    plan = make_prune_plan(facts, PrunePolicy(now=time.time(), cache_older_than=0))
    assert len(plan.items) == len(facts.cache)
    first = next(i for i in plan.items if i.id == base[0].id)
    parent_first = replace(plan, items=(first,) + tuple(i for i in plan.items if i is not first))
    result = run_prune(client, e.root, parent_first)
    outcome = {o.item.id: o for o in result.outcomes}
    assert (outcome[first.id].status, outcome[first.id].detail) == ("kept", DAEMON_KEPT)
    assert outcome[first.id].reclaimed == 0
    left = {r["ID"] for r in client.df()["BuildCache"] or []}
    assert first.id in left  # the report and the daemon agree
    removed = {i for i, o in outcome.items() if o.status == "removed"}
    assert removed == {r.id for r in facts.cache} - {first.id}
    assert not removed & left
    assert all(outcome[i].reclaimed is not None for i in removed)

    # The planner now puts children first: everything goes, each as the daemon says.
    _bk_build(e, 2)
    facts = read_engine_facts(client)
    plan = make_prune_plan(facts, PrunePolicy(now=time.time(), cache_older_than=0))
    ids = [i.id for i in plan.items]
    by_id = {r.id: r for r in facts.cache}
    for n, rid in enumerate(ids):  # no record before one built on it
        assert not any(rid in by_id[later].parents for later in ids[n + 1 :])
    result = run_prune(client, e.root, plan)
    assert {o.status for o in result.outcomes} == {"removed"}, [
        (o.item.names, o.status, o.detail) for o in result.outcomes
    ]
    assert not client.df()["BuildCache"]
    reclaimed = sum(o.reclaimed or 0 for o in result.outcomes)
    assert reclaimed >= sum(r.size for r in facts.cache if not r.shared)
