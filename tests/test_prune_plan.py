"""The prune planner on hand-made engine facts: rules, keep rules, safe order, exclusive
bytes with shared layers once, the disk-pressure LRU (percent and absolute marks),
volumes, build-cache parents, and the API's JSON parsed."""

from __future__ import annotations

import pytest

from dockergc.errors import UsageError
from dockergc.prune.facts import (
    CacheRecord,
    EngineContainer,
    EngineFacts,
    EngineImage,
    EngineVolume,
    daemon_usage,
    parse_cache,
    parse_container,
    parse_image,
    parse_time,
    parse_volume,
)
from dockergc.prune.marks import Mark, parse_mark
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


def high(text: str) -> Mark:
    mark = parse_mark(text, "--high-watermark")
    assert mark is not None
    return mark


def low(text: str) -> Mark:
    mark = parse_mark(text, "--low-watermark")
    assert mark is not None
    return mark


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
    full = facts(images, used=92 * MiB, total=total)
    marks = {"high_watermark": high("90%"), "low_watermark": low("89%")}
    plan = make_prune_plan(full, PrunePolicy(NOW, **marks))
    assert names(plan) == ["y:1"]  # oldest use first; 3 MiB brings 92% to 89%
    marks["low_watermark"] = low("85")
    deeper = make_prune_plan(full, PrunePolicy(NOW, **marks))
    assert names(deeper) == ["y:1", "z:1", "x:1"]
    calm = make_prune_plan(facts(images, used=50 * MiB, total=total), PrunePolicy(NOW, **marks))
    assert names(calm) == []
    marks["low_watermark"] = low("10%")
    short = make_prune_plan(full, PrunePolicy(NOW, **marks))
    assert short.notes and "over the low watermark" in short.notes[0]


def test_policy_rejects_bad_combinations() -> None:
    with pytest.raises(UsageError, match="needs both"):
        PrunePolicy(NOW, high_watermark=high("90%"))
    with pytest.raises(UsageError, match="0 < low < high"):
        PrunePolicy(NOW, high_watermark=high("80%"), low_watermark=low("90%"))
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


# -- marks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value,absolute",
    [
        ("200GB", 200e9, True),
        ("150 GiB", 150 * 2**30, True),
        ("1.5TB", 1.5e12, True),
        ("5MB", 5e6, True),
        ("512KiB", 512 * 1024, True),
        ("4096B", 4096, True),
        ("90%", 90, False),
        ("90", 90, False),  # a bare number is a percentage, as gc's marks and before
        (85, 85, False),  # TOML numbers
    ],
)
def test_marks_take_a_percentage_or_a_size(text: object, value: float, absolute: bool) -> None:
    mark = parse_mark(text, "--high-watermark")
    assert mark is not None and (mark.value, mark.absolute) == (value, absolute)


@pytest.mark.parametrize(
    "high_text,low_text,words",
    [
        ("200GB", "80%", "mix a percentage with a size"),
        ("90%", "150GB", "mix a percentage with a size"),
        ("150GB", "200GB", "must be below"),
        ("150GB", "150GB", "must be below"),
        ("200XB", "1GB", "unknown unit 'xb'"),
        ("lots", "1GB", "neither a percentage"),
        ("150%", "10%", "between 0 and 100"),
        ("0.1B", "1GB", "at least 1 byte"),
    ],
)
def test_nonsensical_marks_are_usage_errors(high_text: str, low_text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        PrunePolicy(NOW, high_watermark=high(high_text), low_watermark=low(low_text))


def cache(
    rid: str,
    age_days: float,
    size: int,
    parents: tuple[str, ...] = (),
    shared: bool = False,
    in_use: bool = False,
    description: str = "",
) -> CacheRecord:
    t = NOW - age_days * DAY
    return CacheRecord(rid, "regular", description or rid, in_use, shared, size, t, t, parents)


def test_absolute_mark_evicts_images_and_cache_least_recently_used_first() -> None:
    """'200GB' means images + build cache as system df counts them (LayersSize plus
    unshared records), not the filesystem: the disk here is nearly empty."""
    images = [img("x:1", ("L4",), 3), img("y:1", ("L1",), 9), img("z:1", ("L2",), 6)]
    records = (
        cache("c-old", 8, 4 * MiB),
        cache("c-new", 1, 2 * MiB),
        cache("c-sh", 10, 0, shared=True),
    )
    f = EngineFacts("/r", NOW, tuple(images), (), records, SIZES, 10**12, 1, layers_size=11 * MiB)
    # 11 MiB of layers + 6 MiB of cache = 17 MiB; above 16 MiB, down to 10 MiB:
    # y:1 (3 MiB, 9 days) then c-old (4 MiB, 8 days) bring it to 10 MiB.
    policy = PrunePolicy(NOW, high_watermark=high("16MiB"), low_watermark=low("10MiB"))
    plan = make_prune_plan(f, policy)
    assert [(i.kind, i.names[0]) for i in plan.items] == [
        ("image", "y:1"),
        ("build-cache", "c-old"),
    ]
    assert all(i.rule == "disk pressure: least recently used" for i in plan.items)
    # Under the high mark nothing is evicted, however full the disk is.
    calm = PrunePolicy(NOW, high_watermark=high("18MiB"), low_watermark=low("1MiB"))
    assert make_prune_plan(f, calm).items == ()
    # A low mark no eviction reaches: everything unused goes, and a note says so.
    busy = EngineFacts(
        "/r", NOW, tuple(images), (ctr("up", "x:1", "running", 1),), records, SIZES, 10**12, 1,
        layers_size=11 * MiB,
    )  # fmt: skip
    deep = make_prune_plan(
        busy, PrunePolicy(NOW, high_watermark=high("16MiB"), low_watermark=low("1MB"))
    )
    assert names(deep) == ["y:1", "z:1", "c-old", "c-new"]  # shared c-sh frees nothing
    assert deep.notes == (
        "disk pressure: images + build cache take 17.8MB, over --high-watermark 16MiB; "
        "evicting every unused one leaves ~7.3MB, over --low-watermark 1MB",
    )


def test_build_cache_goes_children_first_and_a_parent_stays_with_its_children() -> None:
    """BuildKit keeps a record others are built on (the daemon kept 20.10's shared 0-byte
    "from local" record while an older prune listed it removed): plan it only when every
    record built on it goes too, and after them."""
    records = (
        cache("base", 9, 0, shared=True, description="from local"),
        cache("run", 8, 3 * MiB, parents=("base",)),
        cache("copy", 7, 1 * MiB, parents=("run",)),
        cache("ctx", 6, 40),
    )
    f = EngineFacts("/r", NOW, (), (), records, SIZES, 0, 0)
    every = make_prune_plan(f, PrunePolicy(NOW, cache_older_than=DAY))
    assert names(every) == ["copy", "run", "from local", "ctx"]
    assert "shared with an image" in every.items[2].rule and every.items[2].bytes == 0
    # The newest child is younger than the limit: it stays, and so do its ancestors.
    some = make_prune_plan(f, PrunePolicy(NOW, cache_older_than=7.5 * DAY))
    assert names(some) == []
    kept = {n: why for k, n, why in some.kept if k == "build-cache"}
    assert kept == {
        "run": "1 build-cache record(s) built on it stay",
        "from local": "1 build-cache record(s) built on it stay",
    }


def test_parse_cache_reads_parent_and_parents() -> None:
    old = parse_cache({"ID": "a", "Parent": "p", "Size": 3, "Shared": True})
    new = parse_cache({"ID": "b", "Parents": ["p", "q"], "Size": 3})
    as_sent = parse_cache({"ID": "c", " Parents": ["p"], "Size": 3})  # moby's key, 1.42+
    assert old.parents == ("p",) and new.parents == ("p", "q") and old.shared
    assert as_sent.parents == ("p",)


# -- volumes -----------------------------------------------------------------------------

HEX = "3d9a6ec15f05994e97ea2cb5fd884b0529e698084a7e63f44795c481eb6e6978"


def vol(
    name: str,
    size: int | None = 1000,
    dangling: bool = True,
    driver: str = "local",
    labels: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    unmeasured: str | None = None,
) -> EngineVolume:
    return EngineVolume(
        name=name,
        driver=driver,
        labels=labels or {},
        options=options or {},
        mountpoint=f"/r/volumes/{name}/_data",
        created=NOW - DAY,
        dangling=dangling,
        bytes=size,
        unmeasured=unmeasured,
    )


def vfacts(volumes: list[EngineVolume], containers: list[EngineContainer] = ()) -> EngineFacts:  # type: ignore[assignment]
    return EngineFacts("/r", NOW, (), tuple(containers), (), SIZES, 0, 0, tuple(volumes))


def test_volumes_anonymous_by_label_or_generated_name_named_only_with_all() -> None:
    volumes = [
        vol(HEX, 4096),  # 20.10: no label, a 64-hex name is the only sign
        vol("anon28", 8192, labels={"com.docker.volume.anonymous": ""}),  # 23.0 and later
        vol("pgdata", 1 << 20),
    ]
    plan = make_prune_plan(vfacts(volumes), PrunePolicy(NOW, volumes=True))
    assert [(i.kind, i.id, i.bytes) for i in plan.items] == [
        ("volume", HEX, 4096),
        ("volume", "anon28", 8192),
    ]
    rules = {i.id: i.rule for i in plan.items}
    assert rules[HEX] == "unused anonymous volume (64-hex generated name)"
    assert rules["anon28"] == "unused anonymous volume (label com.docker.volume.anonymous)"
    assert plan.to_dict()["items"][0] == {
        "kind": "volume",
        "id": HEX,
        "names": [HEX],
        "age_seconds": 86400,
        "bytes": 4096,
        "rule": "unused anonymous volume (64-hex generated name)",
    }
    every = make_prune_plan(vfacts(volumes), PrunePolicy(NOW, volumes_all=True))
    assert [i.id for i in every.items] == [HEX, "anon28", "pgdata"]
    assert every.items[2].rule == "unused named volume (--volumes-all)"


def test_volumes_keep_rules_foreign_drivers_and_doubt_keep_them() -> None:
    volumes = [
        vol("cache-1"),
        vol("labelled", labels={"com.example.keep": "yes"}),
        vol("nfs", size=None, driver="rexray/ebs"),
        vol("share", size=None, options={"type": "nfs", "device": ":/export"}),
        vol("held", dangling=False),  # the daemon counts a reference no container shows
        vol("odd", size=None, unmeasured="a mount lies inside it: /r/volumes/odd/_data/m"),
        vol("free"),
    ]
    policy = PrunePolicy(
        NOW, volumes_all=True, keep_volumes=("cache-*",), keep_labels=("com.example.keep",)
    )
    plan = make_prune_plan(vfacts(volumes), policy)
    assert [i.id for i in plan.items] == ["free"]
    kept = {n: why for k, n, why in plan.kept if k == "volume"}
    assert kept == {
        "cache-1": "--keep-volume cache-* matches cache-1",
        "labelled": "--keep-label com.example.keep",
        "nfs": "driver rexray/ebs is not local",
        "share": "local volume with mount options (device=:/export, type=nfs): "
        "its data is not in the data root",
        "held": "the daemon holds a reference to it, yet no container mounts it",
        "odd": "not measured: a mount lies inside it: /r/volumes/odd/_data/m",
    }


def test_a_volume_goes_after_the_container_that_used_it_and_stays_with_a_kept_one() -> None:
    a, b, c = (HEX[:-1] + x for x in "abc")
    gone = ctr("old", "base:1", "exited", 3, 10)
    gone = EngineContainer(**{**gone.__dict__, "volumes": (a,)})
    keep = EngineContainer(**{**ctr("db-data", "base:1", "exited", 3).__dict__, "volumes": (b,)})
    up = EngineContainer(**{**ctr("web", "base:1", "running", 3).__dict__, "volumes": (c,)})
    volumes = [vol(a, dangling=False), vol(b, dangling=False), vol(c, size=None, dangling=False)]
    policy = PrunePolicy(NOW, containers_older_than=DAY, volumes=True, keep_containers=("db-*",))
    plan = make_prune_plan(vfacts(volumes, [gone, keep, up]), policy)
    assert [(i.kind, i.id) for i in plan.items] == [("container", "c-old"), ("volume", a)]
    assert plan.items[1].rule.endswith("once container old is removed")
    kept = {(k, n): why for k, n, why in plan.kept}
    assert kept[("container", "db-data")] == "--keep-container db-* matches db-data"
    assert (
        kept[("volume", b)] == "used by container db-data (--keep-container db-* matches db-data)"
    )
    assert kept[("volume", c)] == "used by container web"


def test_keep_container_keeps_its_image_with_the_reason() -> None:
    a = img("a:1", ("L1",), 20)
    b = img("b:1", ("L2",), 20)
    cs = [ctr("ci-cache", "a:1", "exited", 3), ctr("job-7", "b:1", "exited", 3)]
    policy = PrunePolicy(
        NOW, containers_older_than=DAY, images_older_than=DAY, keep_containers=("ci-*",)
    )
    plan = make_prune_plan(facts([a, b], cs), policy)
    assert names(plan) == ["job-7", "b:1"]
    kept = {(k, n): why for k, n, why in plan.kept}
    assert kept[("container", "ci-cache")] == "--keep-container ci-* matches ci-cache"
    assert (
        kept[("image", "a:1")]
        == "used by container ci-cache (--keep-container ci-* matches ci-cache)"
    )
    # A glob on the whole name, not docker-gc's unanchored grep: 'ci' alone matches nothing.
    loose = PrunePolicy(NOW, containers_older_than=DAY, keep_containers=("ci",))
    assert names(make_prune_plan(facts([a, b], cs), loose)) == ["ci-cache", "job-7"]


def test_volume_and_container_mounts_json_is_parsed() -> None:
    v = parse_volume(
        {
            "CreatedAt": "2026-11-24T00:50:31Z",
            "Driver": "local",
            "Labels": None,
            "Mountpoint": "/var/lib/docker/volumes/x/_data",
            "Name": "x",
            "Options": None,
            "Scope": "local",
        },
        dangling=True,
    )
    assert (v.name, v.driver, dict(v.labels), dict(v.options)) == ("x", "local", {}, {})
    assert v.created == parse_time("2026-11-24T00:50:31Z") and v.anonymous() is None
    c = parse_container(
        {
            "Id": "c1",
            "Mounts": [
                {"Type": "volume", "Name": HEX, "Destination": "/data"},
                {"Type": "bind", "Source": "/srv", "Destination": "/srv"},
            ],
        },
        0,
    )
    assert c.volumes == (HEX,)


def test_pressure_takes_a_tagged_parent_once_its_children_went() -> None:
    """A parent is older than what is built on it, so least-recently-used order meets it
    first, while its children still stay: it goes on a later pass."""
    base = img("base:1", ("L0",), 30)
    a = img("a:1", ("L0", "L1"), 20, parent="base:1")
    f = EngineFacts("/r", NOW, (base, a), (), (), SIZES, 0, 0, layers_size=8 * MiB)
    plan = make_prune_plan(
        f, PrunePolicy(NOW, high_watermark=high("7MiB"), low_watermark=low("1MiB"))
    )
    assert names(plan) == ["a:1", "base:1"] and plan.bytes == 8 * MiB and not plan.notes


def test_pressure_can_take_cache_an_age_rule_kept_and_then_it_is_not_listed_kept() -> None:
    records = (
        cache("base", 9, 0, shared=True, description="from local"),
        cache("run", 8, 3 * MiB, parents=("base",)),
        cache("copy", 1, 1 * MiB, parents=("run",)),
    )
    f = EngineFacts("/r", NOW, (), (), records, SIZES, 0, 0, layers_size=0)
    by_age = PrunePolicy(NOW, cache_older_than=2 * DAY)
    kept = {n for k, n, _ in make_prune_plan(f, by_age).kept if k == "build-cache"}
    assert kept == {"run", "from local"}
    marks = {"high_watermark": high("3MiB"), "low_watermark": low("1KiB")}
    plan = make_prune_plan(f, PrunePolicy(NOW, cache_older_than=2 * DAY, **marks))
    assert names(plan) == ["copy", "run"]  # the shared base frees nothing: not evicted
    assert {n for k, n, _ in plan.kept if k == "build-cache"} == {"from local"}
