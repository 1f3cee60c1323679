"""The prune planner on hand-made engine facts: rules, keep rules, safe order, exclusive
bytes with shared layers once, the disk-pressure LRU, and the API's JSON parsed."""

from __future__ import annotations

import pytest

from dockergc.errors import UsageError
from dockergc.prune.facts import (
    EngineContainer,
    EngineFacts,
    EngineImage,
    daemon_usage,
    parse_container,
    parse_image,
    parse_time,
)
from dockergc.prune.plan import make_prune_plan
from dockergc.prune.policy import PrunePolicy

NOW = 1_800_000_000.0
DAY = 86400.0
MiB = 2**20


def img(
    name: str,
    chains: tuple[str, ...],
    age_days: float,
    parent: str | None = None,
    tags: tuple[str, ...] | None = None,
    labels: dict[str, str] | None = None,
) -> EngineImage:
    return EngineImage(
        id=f"sha256:{name}",
        tags=(name,) if tags is None else tags,
        parent=f"sha256:{parent}" if parent else None,
        created=NOW - age_days * DAY,
        last_tagged=None,
        labels=labels or {},
        chains=chains,
    )


def ctr(name: str, image: str, state: str, age_days: float, size: int = 0) -> EngineContainer:
    t = NOW - age_days * DAY
    return EngineContainer(
        id=f"c-{name}",
        name=name,
        image_id=f"sha256:{image}",
        state=state,
        created=t,
        started=t,
        finished=t if state != "running" else None,
        labels={},
        size_rw=size,
    )


SIZES = {"L0": 5 * MiB, "L1": 3 * MiB, "L2": 1 * MiB, "L3": 2 * MiB, "L4": 7 * MiB}


def facts(images: list[EngineImage], containers: list[EngineContainer] = (), used=0, total=0):  # type: ignore[no-untyped-def,assignment]
    return EngineFacts("/r", NOW, tuple(images), tuple(containers), (), SIZES, total, used)


def names(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [i.names[0] for i in plan.items]


def test_shared_layers_count_once_and_children_go_first() -> None:
    base = img("base:1", ("L0",), 30)
    a = img("a:1", ("L0", "L1"), 20, parent="base:1")
    b = img("b:1", ("L0", "L1", "L2"), 10, parent="a:1")
    plan = make_prune_plan(facts([base, a, b]), PrunePolicy(NOW, images_older_than=5 * DAY))
    assert names(plan) == ["b:1", "a:1", "base:1"]
    assert plan.bytes == 9 * MiB  # L0 + L1 + L2, each once
    one = make_prune_plan(
        facts([base, a, b]), PrunePolicy(NOW, images_older_than=5 * DAY, keep=("base:*",))
    )
    assert names(one) == ["b:1", "a:1"] and one.bytes == 4 * MiB  # L0 stays with base
    assert ("image", "base:1", "--keep base:* matches base:1") in one.kept


def test_in_use_images_stay_unless_their_container_goes_first() -> None:
    a = img("a:1", ("L1",), 20)
    b = img("b:1", ("L2",), 20)
    r = img("r:1", ("L3",), 20)
    cs = [
        ctr("old", "a:1", "exited", 3, 100),
        ctr("new", "b:1", "exited", 0.1),
        ctr("up", "r:1", "running", 9),
    ]
    plan = make_prune_plan(
        facts([a, b, r], cs), PrunePolicy(NOW, containers_older_than=DAY, images_older_than=DAY)
    )
    assert names(plan) == ["old", "a:1"]  # old's image goes after it; new, up and theirs stay
    assert plan.items[0].bytes == 100 and plan.items[1].bytes == 3 * MiB
    assert ("image", "r:1", "used by a container") in plan.kept


def test_untagged_parent_goes_with_its_last_child_and_dangling_rule() -> None:
    inter = img("i", ("L0",), 20, tags=())  # a legacy build's intermediate image
    top = img("top:1", ("L0", "L1"), 20, parent="i")
    dangling = img("d", ("L4",), 2, tags=())
    plan = make_prune_plan(facts([inter, top, dangling]), PrunePolicy(NOW, dangling=True))
    assert names(plan) == ["d"]  # the intermediate has a child: not dangling
    both = make_prune_plan(
        facts([inter, top, dangling]), PrunePolicy(NOW, images_older_than=10 * DAY)
    )
    assert names(both) == ["top:1", "i"]
    assert both.items[1].rule == "parent of top:1"
    assert both.bytes == 8 * MiB


def test_keep_newest_per_repository_and_labels() -> None:
    images = [
        img("web:1", ("L1",), 30),
        img("web:2", ("L2",), 20),
        img("web:3", ("L3",), 10),
        img("db:1", ("L4",), 30, labels={"com.example.keep": "yes"}),
        img("db:2", ("L0",), 20, labels={"tier": "x"}),
    ]
    policy = PrunePolicy(
        NOW, images_older_than=DAY, keep_newest=2, keep_labels=("com.example.keep",)
    )
    plan = make_prune_plan(facts(images), policy)
    assert names(plan) == ["web:1"]
    kept = {n: why for _, n, why in plan.kept}
    assert "newest web" in kept["web:3"] and "com.example.keep" in kept["db:1"]
    exact = PrunePolicy(NOW, images_older_than=DAY, keep_labels=("tier=y",))
    assert "db:2" in names(make_prune_plan(facts(images), exact))


def test_disk_pressure_evicts_least_recently_used_until_the_low_mark() -> None:
    images = [img("x:1", ("L4",), 3), img("y:1", ("L1",), 9), img("z:1", ("L2",), 6)]
    total = 100 * MiB
    high = facts(images, used=92 * MiB, total=total)
    plan = make_prune_plan(high, PrunePolicy(NOW, high_watermark=90, low_watermark=89))
    assert names(plan) == ["y:1"]  # oldest use first; 3 MiB brings 92% to 89%
    deeper = make_prune_plan(high, PrunePolicy(NOW, high_watermark=90, low_watermark=85))
    assert names(deeper) == ["y:1", "z:1", "x:1"]
    calm = make_prune_plan(
        facts(images, used=50 * MiB, total=total),
        PrunePolicy(NOW, high_watermark=90, low_watermark=85),
    )
    assert names(calm) == []
    short = make_prune_plan(high, PrunePolicy(NOW, high_watermark=90, low_watermark=10))
    assert short.notes and "over the low watermark" in short.notes[0]


def test_policy_rejects_bad_combinations() -> None:
    with pytest.raises(UsageError):
        PrunePolicy(NOW, high_watermark=90)
    with pytest.raises(UsageError):
        PrunePolicy(NOW, high_watermark=80, low_watermark=90)
    with pytest.raises(UsageError):
        PrunePolicy(NOW, keep_newest=-1)
    with pytest.raises(UsageError):
        PrunePolicy(NOW, keep_labels=("=x",))


def test_api_json_is_parsed() -> None:
    assert parse_time("2026-11-23T10:00:00.123456789Z") == pytest.approx(
        parse_time("2026-11-23T10:00:00Z") + 0.123456  # type: ignore[operator]
    )
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time("junk") is None
    image = parse_image(
        {
            "Id": "sha256:aa",
            "RepoTags": ["<none>:<none>", "b:1", "a:1"],
            "Parent": "",
            "Created": "2026-11-01T00:00:00Z",
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
            "Config": {"Labels": None},
            "RootFS": {"Layers": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]},
        }
    )
    assert image.tags == ("a:1", "b:1") and image.parent is None and len(image.chains) == 2
    assert image.chains[0] == "sha256:" + "1" * 64
    c = parse_container(
        {
            "Id": "c1",
            "Name": "/web",
            "Image": "sha256:aa",
            "Created": "2026-11-01T00:00:00Z",
            "State": {
                "Status": "exited",
                "StartedAt": "2026-11-02T00:00:00Z",
                "FinishedAt": "2026-11-03T00:00:00Z",
            },
        },
        42,
    )
    assert (c.name, c.state, c.size_rw) == ("web", "exited", 42)
    assert c.finished and c.started and c.finished > c.started
    df = {
        "LayersSize": 100,
        "Containers": [{"Id": "c1", "SizeRw": 5}],
        "BuildCache": [
            {"ID": "x", "Size": 7, "Shared": False},
            {"ID": "y", "Size": 9, "Shared": True},
        ],
    }
    assert daemon_usage(df) == 112
