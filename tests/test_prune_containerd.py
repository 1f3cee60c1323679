"""prune on the containerd image store, without an engine: the reference graph read from
containerd's records (the store family's MetaDB and SnapshotterDB, made by hand, and a
fixture root through its readers), what each removal frees (shared blobs and snapshots
once, the classic builder's -init parents with their image, another namespace's record
keeping a blob's file, a record's label naming its own blob), what untrusted records keep,
the planner's bytes in plan order, which containerd (locate and its identity check), and
the store detection and refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockergc.api import ContainerdFlags
from dockergc.errors import RefusedError, RootError
from dockergc.fixture.containerd import build_ctd_root, docker_like_spec
from dockergc.prune import ctdread
from dockergc.prune.ctdgraph import CtdGraph, Ledger, blob_file, snapshot
from dockergc.prune.ctdread import (
    build_graph,
    is_containerd_store,
    locate_daemon_containerd,
    read_graph,
)
from dockergc.prune.facts import CacheRecord, EngineContainer, EngineFacts, EngineImage
from dockergc.prune.plan import make_prune_plan
from dockergc.prune.policy import PrunePolicy
from dockergc.prune.read import read_engine_facts
from dockergc.store.findings import Finding
from dockergc.stores.containerd import locate
from dockergc.stores.containerd.locate import ContainerdTarget
from dockergc.stores.containerd.records import (
    MOBY,
    OVERLAYFS,
    BackendSnapshot,
    Blob,
    Image,
    Lease,
    MetaDB,
    SnapshotRecord,
    SnapshotterDB,
)

NOW = 1_800_000_000.0
D = {n: "sha256:" + c * 64 for n, c in zip("MCLmclxy", "abcdef01", strict=True)}
# Blob sizes and snapshot dir sizes (allocated bytes).
BLOBS = {D["M"]: 4096, D["C"]: 4096, D["L"]: 1_000_000, D["m"]: 4096, D["c"]: 4096}
BLOBS |= {D["l"]: 300_000, D["x"]: 200_000, D["y"]: 8192}
SNAPS = {"1": 2_000_000, "2": 12288, "3": 500_000, "4": 600_000, "5": 4096, "6": 20480}


CHAIN0, CHAIN1 = "sha256:" + "9" * 64, "sha256:" + "8" * 64
REF = "containerd.io/gc.ref."


def blob(digest: str, labels: dict[str, str] | None = None, ns: str = MOBY) -> Blob:
    return Blob(ns, digest, 0, labels or {})


def snap(key: str, n: int, parent: str = "") -> SnapshotRecord:
    return SnapshotRecord(MOBY, OVERLAYFS, key, f"moby/{n}/{key}", parent)


def lease(
    lid: str, content: tuple[str, ...] = (), snaps: tuple[str, ...] = (), **labels: str
) -> Lease:
    held = tuple((OVERLAYFS, k) for k in snaps)
    return Lease(MOBY, lid, None, labels, snapshots=held, content=content)


def records(findings: tuple[Finding, ...] = ()) -> tuple[MetaDB, SnapshotterDB]:
    """base (manifest M, config C, layer L, chain snapshot CHAIN0), app built on it by the
    classic builder (m, c, l; CHAIN1 committed onto the build container's -init), a
    BuildKit record (snapshot bkrec on CHAIN0, holding blob x and app's blob l), a
    stopped container's lease, and the history namespace holding blob y."""
    blobs = (
        blob(D["M"], {f"{REF}content.config": D["C"], f"{REF}content.l.0": D["L"]}),
        blob(D["C"], {f"{REF}snapshot.overlayfs": CHAIN0}),
        blob(D["L"]),
        blob(
            D["m"],
            {
                f"{REF}content.config": D["c"],
                f"{REF}content.l.0": D["L"],
                f"{REF}content.l.1": D["l"],
            },
        ),
        blob(D["c"], {f"{REF}snapshot.overlayfs": CHAIN1}),
        blob(D["l"], {f"{REF}content.self": D["l"]}),  # names itself
        blob(D["x"]),
        blob(D["y"], ns="moby_history"),
        blob(D["C"], ns="moby_history"),
    )
    snaps = (
        snap(CHAIN0, 1),
        snap("bctr-init", 2, CHAIN0),
        snap(CHAIN1, 3, "bctr-init"),
        snap("bkrec", 4, CHAIN0),
        snap("ctr1-init", 5, CHAIN1),
        snap("ctr1", 6, "ctr1-init"),
    )
    images = tuple(
        Image(MOBY, name, digest, "", 0)
        for name, digest in [
            ("docker.io/library/base:1", D["M"]),
            ("docker.io/library/app:1", D["m"]),
            ("docker.io/library/app:2", D["m"]),
        ]
    )
    leases = (
        lease("bkrec", (D["x"], D["l"]), ("bkrec",)),
        lease("bkrec-variants", (D["x"],)),
        lease("1234-AbCd", (D["x"],), (), **{"buildkit/lease.temporary": "t"}),
        lease("c" * 64, (), ("ctr1", "ctr1-init")),
    )
    meta = MetaDB((MOBY, "moby_history"), images, (), snaps, blobs, (), leases, findings=findings)
    backend = SnapshotterDB(
        (*(BackendSnapshot(s.name, str(n), "committed", "") for n, s in enumerate(snaps, 1)),)
        + (BackendSnapshot("other/9/x", "9", "committed", ""),)
    )
    return meta, backend


def graph(findings: tuple[Finding, ...] = ()) -> CtdGraph:
    meta, backend = records(findings)
    return build_graph(meta, backend, BLOBS.get, lambda ident: SNAPS.get(ident))


def test_the_graph_follows_containerds_references() -> None:
    g = graph()
    assert g.images[D["m"]] == ("image:docker.io/library/app:1", "image:docker.io/library/app:2")
    assert set(g.cache["bkrec"]) == {"lease:bkrec", "lease:bkrec-variants"}
    assert g.transient == ("lease:1234-AbCd",) and "1234" not in g.cache
    assert g.containers["c" * 64] == ("lease:" + "c" * 64,)
    assert g.sizes[snapshot(CHAIN1)] == SNAPS["3"] and g.sizes[blob_file(D["L"])] == 1_000_000
    assert g.roots["ns:moby_history"] == tuple(sorted([blob_file(D["y"]), blob_file(D["C"])]))
    assert sum(g.sizes.values()) == sum(BLOBS.values()) + sum(SNAPS.values())


def test_each_removal_frees_what_only_it_held() -> None:
    g = graph()
    ledger = Ledger(g)
    # The container's rw and -init snapshots are its own.
    assert ledger.release_item("container", "c" * 64) == SNAPS["5"] + SNAPS["6"]
    # app (two names, one image): its manifest, config, own blob l? No: the BuildKit
    # record's lease holds l too. Its chain snapshot and the build container's -init go.
    app = ledger.release_item("image", D["m"])
    assert app == BLOBS[D["m"]] + BLOBS[D["c"]] + SNAPS["3"] + SNAPS["2"]
    # The record then frees its snapshot, blob x (a temporary lease BuildKit drops when
    # it prunes held it too) and app's blob l (the self-label of l does not keep it).
    assert ledger.release_item("build-cache", "bkrec") == SNAPS["4"] + 200_000 + 300_000
    # base: its config's file stays (the history namespace has a record of it).
    assert ledger.release_item("image", D["M"]) == 4096 + 1_000_000 + SNAPS["1"]
    assert ledger.release_item("image", D["M"]) == 0  # released once


def test_order_does_not_change_the_total() -> None:
    g = graph()
    one, two = Ledger(g), Ledger(g)
    a = [one.release_item(k, i) for k, i in [("build-cache", "bkrec"), ("image", D["m"])]]
    b = [two.release_item(k, i) for k, i in [("image", D["m"]), ("build-cache", "bkrec")]]
    assert sum(a) == sum(b) and a != b


def _facts(g: CtdGraph) -> EngineFacts:
    def image(digest: str, tags: tuple[str, ...], parent: str | None = None) -> EngineImage:
        return EngineImage(digest, tags, parent, NOW - 9 * 86400, None, {}, ())

    images = (image(D["M"], ("base:1",)), image(D["m"], ("app:1", "app:2"), D["M"]))
    own = SNAPS["5"] + SNAPS["6"]  # what read.py measures: its snapshots (and its dir)
    ctr = EngineContainer("c" * 64, "c1", D["m"], "exited", NOW - 9e5, None, NOW - 9e5, {}, own)
    rec = CacheRecord("bkrec", "regular", "RUN x", False, True, 510_000, NOW - 9e5, None)
    return EngineFacts("/r", NOW, images, (ctr,), (rec,), {}, 0, 0, ctd_root="/ctd", ctd=g)


def test_the_plan_counts_bytes_in_its_own_order() -> None:
    g = graph()
    policy = PrunePolicy(now=NOW, containers_older_than=0, images_older_than=0, cache_older_than=0)
    plan = make_prune_plan(_facts(g), policy)
    got = {i.kind + ":" + i.names[0]: i.bytes for i in plan.items}
    assert list(got) == ["container:c1", "image:app:1", "image:base:1", "build-cache:RUN x"]
    assert got["image:app:1"] == BLOBS[D["m"]] + BLOBS[D["c"]] + SNAPS["3"] + SNAPS["2"]
    # base's chain snapshot is still the record's parent when base goes: only its blobs.
    assert got["image:base:1"] == BLOBS[D["M"]] + BLOBS[D["L"]]
    assert got["build-cache:RUN x"] == SNAPS["4"] + SNAPS["1"] + 200_000 + 300_000
    # Nothing counted twice, nothing held elsewhere counted.
    everything = sum(g.sizes.values()) - BLOBS[D["y"]] - BLOBS[D["C"]]
    assert plan.bytes == everything
    assert "frees nothing" not in " ".join(i.rule for i in plan.items)
    assert plan.to_dict()["store"] == "containerd"


def test_store_detection_and_other_drivers_refused() -> None:
    ctd = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert is_containerd_store(ctd)
    assert not is_containerd_store({"Driver": "overlay2", "DriverStatus": [["Backing", "ext4"]]})

    class Client:
        def info(self) -> dict[str, Any]:
            return {"Driver": "btrfs", "DriverStatus": []}

    with pytest.raises(RefusedError, match="btrfs"):
        read_engine_facts(Client())


def _meta_finding(where: str, kind: str = "bad-metadb-record") -> Finding:
    return Finding("io.containerd.metadata.v1.bolt/meta.db", kind, f"{where}: cannot decode")


def test_an_untrusted_record_keeps_what_it_might_hold_and_is_reported() -> None:
    # dockerd's namespace: the record might hold anything, so nothing counts as freed.
    g = graph((_meta_finding(f"v1/moby/content/blob/{D['m']}/labels"),))
    ledger = Ledger(g)
    assert ledger.release_item("image", D["m"]) == 0
    assert ledger.release_item("build-cache", "bkrec") == 0
    assert any(D["m"] in n for n in g.findings) and "not counted as freed" in g.findings[-1]
    plan = make_prune_plan(_facts(g), PrunePolicy(now=NOW, images_older_than=0))
    assert plan.bytes == 0 and any(D["m"] in n for n in plan.notes)
    # Another namespace's record might keep any blob's file, never our snapshots.
    g = graph((_meta_finding("v1/other/content/blob/sha256:zz"),))
    ledger = Ledger(g)
    assert ledger.release_item("container", "c" * 64) == SNAPS["5"] + SNAPS["6"]
    assert ledger.release_item("image", D["m"]) == SNAPS["3"] + SNAPS["2"]
    # A damaged timestamp changes no reference: reported, nothing kept.
    g = graph((_meta_finding("v1/moby/images/app:1/createdat"),))
    assert Ledger(g).release_item("image", D["m"]) == Ledger(graph()).release_item("image", D["m"])
    assert g.findings and "not counted" not in g.findings[-1]


def test_read_graph_reads_a_root_through_the_store_readers(tmp_path: Path) -> None:
    spec = docker_like_spec()
    root = build_ctd_root(tmp_path / "ctd", spec)
    g = read_graph(root.root)
    base = next(i for i in spec.images if i.name == "docker.io/library/base:1")
    assert g.images[base.target] == ("image:docker.io/library/base:1",)
    assert "lease:" + "c" * 64 in g.containers["c" * 64]
    chain = spec.snapshots[0].key
    assert g.sizes[snapshot(chain)] > 0 and blob_file(base.target) in g.sizes
    assert Ledger(g).release_item("container", "c" * 64) > 0
    (root.root / "io.containerd.metadata.v1.bolt/meta.db").write_bytes(b"not bbolt" * 1000)
    with pytest.raises(RootError, match="cannot be read"):
        read_graph(root.root)


def test_which_containerd_uses_the_store_familys_locate_and_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctd = tmp_path / "ctd"
    (ctd / "io.containerd.metadata.v1.bolt").mkdir(parents=True)
    served: list[str] = []
    checked: list[ContainerdTarget] = []

    def serving(address: str) -> tuple[Path, str]:
        served.append(address)
        return ctd, "--root of containerd 42"

    monkeypatch.setattr(ctdread, "root_serving", serving)
    monkeypatch.setattr(ctdread, "check_identity", checked.append)
    monkeypatch.setattr(locate, "ctr_beside", lambda root: "/bin/ctr")
    info = {"Containerd": {"Address": "/run/x/c.sock"}}
    target = locate_daemon_containerd(info)
    assert served == ["/run/x/c.sock"] and checked == [target]
    assert (target.address, target.root, target.ctr) == ("/run/x/c.sock", ctd, "/bin/ctr")
    assert target.address_source == "the daemon's Containerd.Address"
    assert target.root_source == "--root of containerd 42"
    # The flags win, and the running containerd is not asked then.
    flags = ContainerdFlags(address="/other.sock", root=ctd)
    target = locate_daemon_containerd(info, flags)
    assert served == ["/run/x/c.sock"] and target.address == "/other.sock"
    assert target.root_source == "--containerd-root"

    def mismatch(target: ContainerdTarget) -> None:
        raise RefusedError("refusing: not the one rooted there")

    monkeypatch.setattr(ctdread, "check_identity", mismatch)
    with pytest.raises(RefusedError, match="not the one"):
        locate_daemon_containerd(info)
