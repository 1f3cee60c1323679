"""The containerd root's readers (meta.db, the overlayfs snapshotter, the content store):
exact round trips on fixture roots, findings (never exceptions) on hostile input, and
agreement with ``ctr`` on a root a real containerd wrote."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dockergc.fixture.bbolt_write import BucketSpec, write_bbolt_tree
from dockergc.fixture.containerd import (
    T0,
    CtdSpec,
    FxBlob,
    FxContainer,
    FxImage,
    FxIngest,
    FxLease,
    FxSnapshot,
    build_ctd_root,
    docker_like_spec,
)
from dockergc.store.bbolt import parse as parse_bbolt
from dockergc.stores.containerd.content import read_content
from dockergc.stores.containerd.metadb import (
    DecodeError,
    go_time,
    go_time_bytes,
    put_uvarint,
    put_varint,
    read_metadb,
    uvarint,
    varint,
)
from dockergc.stores.containerd.records import (
    CONTENT_DIR,
    METADATA_DIR,
    MOBY,
    OVERLAYFS,
    SNAPSHOTTER_DIR,
    Blob,
    Container,
    Image,
    Ingest,
    Lease,
    SnapshotRecord,
)
from dockergc.stores.containerd.snapshotter import read_snapshotter

META = f"{METADATA_DIR}/meta.db"
BACKEND = f"{SNAPSHOTTER_DIR}/metadata.db"
K8S = "k8s.io"


# -- encodings --------------------------------------------------------------------------


def test_go_time_round_trips_and_rejects_bad_bytes() -> None:
    for t in (T0, T0 + 0.5, 0.0, -1.25, 1e10):
        assert go_time(go_time_bytes(t)) == t
    raw = go_time_bytes(T0)
    assert len(raw) == 15 and raw[0] == 1 and raw[-2:] == b"\xff\xff"
    assert go_time(b"\x02" + raw[1:] + b"\x00") == T0  # version 2: + offset seconds
    for bad in (b"", raw[:-1], raw + b"\x00", b"\x03" + raw[1:], raw[:9] + b"\x7f" + raw[10:]):
        with pytest.raises(DecodeError):
            go_time(bad)


def test_varints_are_go_varints() -> None:
    for v in (0, 1, -1, 63, -64, 64, 2015232, 2**63 - 1, -(2**63)):
        assert varint(put_varint(v)) == v
    assert put_varint(-1) == b"\x01" and put_varint(1) == b"\x02"
    assert uvarint(put_uvarint(2**64 - 1)) == 2**64 - 1
    assert varint(b"\x80\x80\xf6\x01") == 2015232  # a real committed snapshot's size
    for bad in (b"", b"\x80", b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x02", b"\x01\x00"):
        with pytest.raises(DecodeError):
            uvarint(bad)


# -- round trip -------------------------------------------------------------------------


def assert_same(got: Any, want: Any) -> None:
    """The same records, in any order (records hold dicts: not hashable)."""
    assert sorted(got, key=repr) == sorted(want, key=repr)


def full_spec() -> CtdSpec:
    base = docker_like_spec()
    k8s_blob = FxBlob(b"k8s-only", namespaces=(K8S,), labels={"containerd.io/gc.root": "x"})
    return CtdSpec(
        namespaces=(*base.namespaces, "default"),
        blobs=(
            *base.blobs,
            k8s_blob,
            FxBlob(b"record without file", on_disk=False, created=T0 + 1.5),
            FxBlob(b"file without record", in_meta=False),
        ),
        snapshots=(
            *base.snapshots,
            FxSnapshot("k8s-layer", namespace=K8S, labels={"containerd.io/gc.root": "y"}),
            FxSnapshot("no-backend", in_backend=False),
            FxSnapshot("backend-only", in_meta=False),
            FxSnapshot("no-dir", dir=False, kind="active"),
        ),
        images=(*base.images, FxImage("k8s/img:1", k8s_blob.digest, namespace=K8S, size=8)),
        leases=(
            *base.leases,
            FxLease(
                "pull-1",
                labels={"containerd.io/gc.expire": "2023-11-15T22:13:20Z"},
                ingests=("ingest-ref-1",),
                images=("docker.io/library/base:1",),
                created=T0 + 0.25,
            ),
        ),
        containers=(
            *base.containers,
            FxContainer("k8s-c", "k8s/img:1", OVERLAYFS, "k8s-layer", namespace=K8S),
        ),
        ingests=(
            FxIngest("ingest-ref-1", data=b"partial", expected="sha256:" + "e" * 64),
            FxIngest("ingest-ref-2", expire_at=T0 + 86400),
        ),
        stray_dirs=("new-123",),
    )


@pytest.fixture
def full_root(tmp_path: Path) -> tuple[Path, Any]:
    root = tmp_path / "ctd"
    return root, build_ctd_root(root, full_spec())


def test_metadb_round_trips_every_record(full_root: tuple[Path, Any]) -> None:
    root, fx = full_root
    spec = full_spec()
    meta = read_metadb(root)
    assert meta.findings == ()
    assert meta.namespaces == ("default", K8S, MOBY, "moby_history")

    want_images = {
        (i.namespace, i.name): Image(
            i.namespace,
            i.name,
            i.target,
            i.media_type,
            i.size,
            dict(i.labels),
            i.created,
            i.created,
            dict(i.annotations),
        )
        for i in spec.images
    }
    assert {(i.namespace, i.name): i for i in meta.images} == want_images

    assert_same(
        meta.containers,
        [
            Container(c.namespace, c.id, c.image, c.snapshotter, c.snapshot_key, dict(c.labels), T0)
            for c in spec.containers
        ],
    )

    children: dict[tuple[str, str], list[str]] = {}
    for s in spec.snapshots:
        if s.in_meta and s.parent:
            children.setdefault((s.namespace, s.parent), []).append(s.key)
    want_snaps = [
        SnapshotRecord(
            s.namespace,
            OVERLAYFS,
            s.key,
            fx.names[(s.namespace, s.key)],
            s.parent,
            dict(s.labels),
            T0,
            T0,
            tuple(sorted(children.get((s.namespace, s.key), []))),
        )
        for s in spec.snapshots
        if s.in_meta
    ]
    assert_same(meta.snapshots, want_snaps)
    cid = "c" * 64
    assert fx.names[(MOBY, cid)] == f"moby/5/{cid}"  # prepare and commit each take a number

    want_blobs = [
        Blob(ns, b.digest, len(b.data), dict(b.labels), b.created, b.created)
        for b in spec.blobs
        if b.in_meta
        for ns in b.namespaces
    ]
    assert_same(meta.blobs, want_blobs)
    assert_same(
        meta.ingests,
        [
            Ingest(MOBY, "ingest-ref-1", "moby/1/ingest-ref-1", None, "sha256:" + "e" * 64),
            Ingest(MOBY, "ingest-ref-2", "moby/2/ingest-ref-2", T0 + 86400, ""),
        ],
    )
    want_leases = [
        Lease(
            lease.namespace,
            lease.id,
            lease.created,
            dict(lease.labels),
            tuple(sorted(lease.snapshots)),
            tuple(sorted(lease.content)),
            tuple(sorted(lease.ingests)),
            tuple(sorted(lease.images)),
        )
        for lease in spec.leases
    ]
    assert_same(meta.leases, want_leases)


def test_snapshotter_round_trips_records_and_dirs(full_root: tuple[Path, Any]) -> None:
    root, fx = full_root
    spec = full_spec()
    db = read_snapshotter(root)
    assert db.findings == ()
    by_key = {r.key: r for r in db.records}
    want = {fx.names[(s.namespace, s.key)]: s for s in spec.snapshots if s.in_backend}
    assert set(by_key) == set(want)
    for name, s in want.items():
        rec = by_key[name]
        assert rec.id == fx.ids[(s.namespace, s.key)]
        assert rec.kind == s.kind
        assert rec.parent == (fx.names[(s.namespace, s.parent)] if s.parent else "")
        assert (rec.created, rec.updated, dict(rec.labels)) == (T0, T0, dict(s.labels))
        committed = s.kind == "committed"
        assert (rec.size, rec.inodes) == ((s.size, s.inodes) if committed else (None, None))
    want_dirs = {fx.ids[(s.namespace, s.key)] for s in spec.snapshots if s.dir} | {"new-123"}
    assert set(db.dirs) == want_dirs and len(db.dirs) == len(want_dirs)
    view = next(s for s in spec.snapshots if s.kind == "view")
    vdir = root / SNAPSHOTTER_DIR / "snapshots" / fx.ids[(view.namespace, view.key)]
    assert sorted(os.listdir(vdir)) == ["fs"]  # views have no work dir


def test_content_store_round_trips(full_root: tuple[Path, Any]) -> None:
    root, fx = full_root
    spec = full_spec()
    store = read_content(root)
    assert store.findings == ()
    on_disk = {b.digest: b for b in spec.blobs if b.on_disk}
    assert set(store.blobs) == set(on_disk)
    for digest, size in store.blobs.items():
        path = root / CONTENT_DIR / "blobs/sha256" / digest[7:]
        assert size == os.lstat(path).st_blocks * 512
    assert set(store.ingests) == {
        fx.ingest_dirs[(MOBY, r)] for r in ("ingest-ref-1", "ingest-ref-2")
    }


def test_absent_stores_are_empty(tmp_path: Path) -> None:
    tmp_path.joinpath("empty").mkdir()
    assert read_snapshotter(tmp_path / "empty").records == ()
    assert read_snapshotter(tmp_path / "empty").findings == ()
    assert read_content(tmp_path / "empty").findings == ()
    meta = read_metadb(tmp_path / "empty")
    assert [f.kind for f in meta.findings] == ["unreadable-metadb"]


def test_nested_writer_pages_like_bbolt() -> None:
    """Buckets holding buckets get their own pages, big ones split under branch pages;
    the reader sees exactly what was written."""
    many = {f"k{i:05}".encode(): {b"v": b"x" * (i % 50)} for i in range(800)}
    data = write_bbolt_tree({b"v1": {b"many": BucketSpec(many, sequence=7), b"small": {}}})
    tree = parse_bbolt(data).buckets[b"v1"]
    assert {k: dict(b.values) for k, b in tree.buckets[b"many"].buckets.items()} == many
    assert len(data) > 20 * 4096


# -- hostile input ----------------------------------------------------------------------


def write_meta(root: Path, v1: dict[bytes, Any]) -> None:
    (root / METADATA_DIR).mkdir(parents=True, exist_ok=True)
    (root / METADATA_DIR / "meta.db").write_bytes(write_bbolt_tree({b"v1": v1}))


def kinds_at(findings: Any) -> list[tuple[str, str]]:
    return sorted((f.kind, f.message.split(":")[0]) for f in findings)


def test_unreadable_metadb_is_one_finding_and_nothing_known(full_root: tuple[Path, Any]) -> None:
    root, _ = full_root
    db = root / META
    good = db.read_bytes()
    cases = {
        "truncated": good[: len(good) // 3],
        "empty": b"",
        "zeros": b"\0" * 16384,
        "garbage": os.urandom(8192),
    }
    for what, data in cases.items():
        db.write_bytes(data)
        meta = read_metadb(root)
        assert meta.namespaces == () and meta.images == () and meta.leases == (), what
        assert [(f.kind, f.path) for f in meta.findings] == [("unreadable-metadb", META)], what
    db.unlink()
    assert [f.kind for f in read_metadb(root).findings] == ["unreadable-metadb"]


def test_symlinked_metadb_is_never_followed(full_root: tuple[Path, Any]) -> None:
    root, _ = full_root
    real = root / "elsewhere.db"
    (root / META).rename(real)
    (root / META).symlink_to(real)
    meta = read_metadb(root)
    assert meta.images == ()
    assert [(f.kind, f.path) for f in meta.findings] == [("unreadable-metadb", META)]
    assert "symlink" in meta.findings[0].message
    # a symlinked dir on the way is refused where it is met
    (root / META).unlink()
    real.rename(root / "meta.db")
    shutil.rmtree(root / METADATA_DIR)
    (root / "bolt").mkdir()
    (root / "meta.db").rename(root / "bolt/meta.db")
    (root / METADATA_DIR).symlink_to(root / "bolt")
    meta = read_metadb(root)
    assert [(f.kind, f.path) for f in meta.findings] == [("unreadable-metadb", METADATA_DIR)]


def test_metadb_without_v1_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / METADATA_DIR).mkdir(parents=True)
    (tmp_path / META).write_bytes(write_bbolt_tree({b"v2": {b"moby": {}}}))
    assert [f.kind for f in read_metadb(tmp_path).findings] == ["unreadable-metadb"]


def test_wrong_types_are_findings_and_records_are_kept(tmp_path: Path) -> None:
    digest = "sha256:" + "d" * 64
    t = go_time_bytes(T0)
    write_meta(
        tmp_path,
        {
            b"version": put_varint(4),
            b"stray": b"value in v1",
            b"moby": {
                b"images": {
                    b"no-target": {b"createdat": t},
                    b"target-is-value": {b"target": b"oops"},
                    b"as-value": b"not a bucket",
                    b"bad-size": {
                        b"target": {b"digest": digest.encode(), b"size": b"\xff" * 11},
                        b"labels": {b"ok": b"1", b"nested": {b"x": b"y"}},
                    },
                },
                b"content": {
                    b"blob": {
                        digest.encode(): {
                            b"size": {b"a bucket": b""},
                            b"createdat": b"\x01\x02",
                            b"updatedat": t,
                        },
                        b"sha256:overflow": {b"size": b"\xff" * 9 + b"\x02"},
                    },
                    b"ingests": {b"ref": {b"ref": b"moby/1/ref", b"expireat": b"\x09" * 15}},
                },
                b"snapshots": {
                    b"overlayfs": {
                        b"name-is-bucket": {b"name": {b"x": b""}, b"parent": b"p"},
                        b"bad-utf8": {b"name": b"moby/1/\xff", b"children": b"not a bucket"},
                    },
                    b"native": b"value where a snapshotter bucket is expected",
                },
                b"leases": {
                    b"l1": {
                        b"createdat": t[:-1],
                        b"snapshots": b"value",
                        b"content": {digest.encode(): b"", b"sub": {b"x": b""}},
                        b"future": {b"x": b""},
                    },
                    b"l2": b"value",
                },
                b"containers": {b"c1": {b"image": b"img", b"snapshotKey": {b"x": b""}}},
                b"whatever": {b"x": b""},
            },
        },
    )
    meta = read_metadb(tmp_path)
    assert meta.namespaces == ("moby",)
    images = {i.name: i for i in meta.images}
    assert set(images) == {"no-target", "target-is-value", "bad-size"}
    assert images["no-target"].target == "" and images["no-target"].created == T0
    assert images["bad-size"].target == digest and images["bad-size"].size == 0
    assert images["bad-size"].labels == {"ok": "1"}
    blobs = {b.digest: b for b in meta.blobs}
    assert set(blobs) == {digest, "sha256:overflow"}
    assert blobs[digest].size == 0 and blobs[digest].created is None
    assert blobs[digest].updated == T0
    assert meta.ingests == (Ingest("moby", "ref", "moby/1/ref", None, ""),)
    snaps = {s.key: s for s in meta.snapshots}
    assert snaps["name-is-bucket"].name == "" and snaps["name-is-bucket"].parent == "p"
    assert snaps["bad-utf8"].name == ""  # undecodable: empty, and a finding
    leases = {lease.id: lease for lease in meta.leases}
    assert set(leases) == {"l1"}
    assert leases["l1"].content == (digest,) and leases["l1"].created is None
    assert meta.containers[0].snapshot_key == "" and meta.containers[0].image == "img"

    messages = "\n".join(f.message for f in meta.findings)
    assert all(f.path == META for f in meta.findings)
    for where in (
        "v1/stray",
        "v1/moby/images/no-target:",
        "v1/moby/images/target-is-value/target",
        "v1/moby/images/as-value",
        "v1/moby/images/bad-size/target/size",
        "v1/moby/images/bad-size/labels/nested",
        f"v1/moby/content/blob/{digest}/size",
        f"v1/moby/content/blob/{digest}/createdat",
        "v1/moby/content/blob/sha256:overflow/size",
        "v1/moby/content/ingests/ref/expireat",
        "v1/moby/snapshots/overlayfs/name-is-bucket/name",
        "v1/moby/snapshots/overlayfs/bad-utf8/name",
        "v1/moby/snapshots/overlayfs/bad-utf8/children",
        "v1/moby/snapshots/native",
        "v1/moby/leases/l1/createdat",
        "v1/moby/leases/l1/snapshots",
        "v1/moby/leases/l1/content/sub",
        "v1/moby/leases/l1/future",
        "v1/moby/leases/l2",
        "v1/moby/containers/c1/snapshotKey",
        "v1/moby/whatever",
    ):
        assert where in messages, where
    assert "overflows" in messages


def test_hostile_snapshotter_records(tmp_path: Path) -> None:
    t = go_time_bytes(T0)
    d = tmp_path / SNAPSHOTTER_DIR
    (d / "snapshots/1/fs").mkdir(parents=True)
    (d / "snapshots/file").write_text("x")
    (d / "snapshots/link").symlink_to("/")
    (d / "metadata.db").write_bytes(
        write_bbolt_tree(
            {
                b"v1": {
                    b"snapshots": {
                        b"moby/1/a": {b"id": b"\x01", b"kind": b"\x03", b"createdat": t},
                        b"moby/2/bad-kind": {b"id": b"\x02", b"kind": b"\x09", b"parent": b"x"},
                        b"moby/3/no-id": {b"kind": b"\x02", b"size": b"\xff" * 11},
                        b"moby/4/kind-bucket": {b"id": b"\x04", b"kind": {b"x": b""}},
                        b"moby/5/as-value": b"value",
                    },
                    b"parents": {b"\x01\x00\x02": b"moby/2/bad-kind", b"\x05": b"x"},
                }
            }
        )
    )
    db = read_snapshotter(tmp_path)
    recs = {r.key: r for r in db.records}
    assert set(recs) == {"moby/1/a", "moby/2/bad-kind", "moby/3/no-id", "moby/4/kind-bucket"}
    assert recs["moby/1/a"].kind == "committed" and recs["moby/1/a"].id == "1"
    assert recs["moby/2/bad-kind"].kind == "unknown(9)"
    assert recs["moby/3/no-id"].id == "" and recs["moby/3/no-id"].size is None
    assert recs["moby/4/kind-bucket"].kind == "unknown()"
    assert db.dirs == ("1",)
    found = {(f.kind, f.path) for f in db.findings}
    snaps = f"{SNAPSHOTTER_DIR}/snapshots"
    assert ("not-a-dir", f"{snaps}/file") in found
    assert ("symlink", f"{snaps}/link") in found
    messages = "\n".join(f.message for f in db.findings)
    for where in (
        "v1/snapshots/moby/2/bad-kind: snapshot kind unknown(9)",
        "v1/snapshots/moby/3/no-id: snapshot has no readable id",
        "v1/snapshots/moby/3/no-id/size",
        "v1/snapshots/moby/4/kind-bucket/kind",
        "v1/snapshots/moby/5/as-value",
        "v1/parents/010002",  # names bad-kind as a child of "a": its parent "x" disagrees
        "v1/parents/05",
    ):
        assert where in messages, where


def test_unreadable_snapshotter_db(tmp_path: Path) -> None:
    d = tmp_path / SNAPSHOTTER_DIR
    (d / "snapshots/7").mkdir(parents=True)
    (d / "metadata.db").write_bytes(b"\0" * 100)
    db = read_snapshotter(tmp_path)
    assert db.dirs == ("7",) and db.records == ()
    assert [f.kind for f in db.findings] == ["unreadable-snapshotter-db"]
    (d / "metadata.db").unlink()
    (d / "metadata.db").symlink_to("/etc/passwd")
    assert [f.kind for f in read_snapshotter(tmp_path).findings] == ["unreadable-snapshotter-db"]
    shutil.rmtree(d)
    (tmp_path / "x").mkdir()
    d.symlink_to(tmp_path / "x")
    db = read_snapshotter(tmp_path)
    assert [(f.kind, f.path) for f in db.findings] == [("symlink", SNAPSHOTTER_DIR)]


def test_odd_content_entries_are_findings(tmp_path: Path) -> None:
    blobs = tmp_path / CONTENT_DIR / "blobs"
    (blobs / "sha256").mkdir(parents=True)
    (blobs / "sha512").mkdir()
    good = "a" * 64
    (blobs / "sha256" / good).write_bytes(b"x" * 5000)
    (blobs / "sha256" / ("A" * 64)).write_bytes(b"x")
    (blobs / "sha256" / "short").write_bytes(b"x")
    (blobs / "sha256" / ("b" * 64)).symlink_to(blobs / "sha256" / good)
    (blobs / "sha256" / ("c" * 64)).mkdir()
    ingest = tmp_path / CONTENT_DIR / "ingest"
    (ingest / "d1").mkdir(parents=True)
    (ingest / "f").write_text("x")
    store = read_content(tmp_path)
    assert store.blobs == {f"sha256:{good}": os.lstat(blobs / "sha256" / good).st_blocks * 512}
    assert store.ingests == ("d1",)
    found = {(f.kind, f.path.rsplit("/", 1)[-1]) for f in store.findings}
    assert found == {
        ("unexpected-content-entry", "sha512"),
        ("bad-blob-name", "A" * 64),
        ("bad-blob-name", "short"),
        ("symlink", "b" * 64),
        ("not-a-file", "c" * 64),
        ("not-a-dir", "f"),
    }


def test_random_corruption_never_raises(full_root: tuple[Path, Any]) -> None:
    root, _ = full_root
    rng = random.Random(7)
    files = [root / META, root / BACKEND]
    originals = [p.read_bytes() for p in files]
    for _ in range(150):
        for path, data in zip(files, originals, strict=True):
            buf = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            path.write_bytes(bytes(buf))
        meta = read_metadb(root)
        read_snapshotter(root)
        # whatever it could not take is a finding: a record never just disappears
        # unless the whole file is reported unreadable
        if not meta.findings:
            assert len(meta.leases) == len(full_spec().leases)


# -- a real containerd ------------------------------------------------------------------


def _ctr(e: Any, ns: str, *args: str) -> str:
    top = e.bins.path_prefix.split(":")[0]
    argv = [f"{top}/ctr", "-a", str(e.ctd_sock), "-n", ns, *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def _ctr_view(e: Any, ns: str) -> tuple[set[tuple[str, str, str]], set[str], set[str]]:
    snaps = set()
    for line in _ctr(e, ns, "snapshots", "ls").splitlines()[1:]:
        parts = line.split()
        key, parent, kind = (parts[0], "", parts[1]) if len(parts) == 2 else parts
        snaps.add((key, parent, kind.lower()))
    content = set(_ctr(e, ns, "content", "ls", "-q").split())
    leases = set(_ctr(e, ns, "leases", "ls", "-q").split())
    return snaps, content, leases


@pytest.mark.engine
def test_readers_agree_with_ctr_on_a_real_root(ctd_engine: Any) -> None:
    e, _ = ctd_engine  # the session's engine: builds, a volume, a running container
    if "c_running" not in e.run("ps", "--format", "{{.Names}}").stdout.split():
        # another module emptied the engine (its last test prunes everything): one again
        if "base:1" not in e.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout:
            e.import_base()
        e.run("run", "-d", "--network", "none", "--name", "c_running", "base:1", "sleep", "100000")
    root = e.ctd_dir / "root"
    for _attempt in range(5):  # BuildKit drops temporary leases: read between two equal views
        before = {ns: _ctr_view(e, ns) for ns in ("moby", "moby_history")}
        meta, backend, store = read_metadb(root), read_snapshotter(root), read_content(root)
        if before == {ns: _ctr_view(e, ns) for ns in ("moby", "moby_history")}:
            break
        time.sleep(1)
    else:
        pytest.fail("containerd's records kept changing")
    assert meta.findings == () and backend.findings == () and store.findings == ()
    assert {"moby", "moby_history"} <= set(meta.namespaces)
    kind_of = {r.key: r.kind for r in backend.records}
    for ns, (snaps, content, leases) in before.items():
        mine = {
            (s.key, s.parent, kind_of[s.name])
            for s in meta.snapshots
            if s.namespace == ns and s.snapshotter == OVERLAYFS
        }
        assert mine == snaps, ns
        assert {b.digest for b in meta.blobs if b.namespace == ns} == content, ns
        assert {lease.id for lease in meta.leases if lease.namespace == ns} == leases, ns
        assert content <= set(store.blobs), ns
    # every backend record is some namespace's snapshot, and has its dir
    assert {s.name for s in meta.snapshots} == set(kind_of)
    assert {r.id for r in backend.records} <= set(backend.dirs)
    # dockerd's container: its lease holds its rw snapshot and -init, and its
    # containerd record names no snapshot
    cid = e.run("inspect", "-f", "{{.Id}}", "c_running").stdout.strip()
    lease = next(lease for lease in meta.leases if lease.id == cid)
    assert set(lease.snapshots) == {(OVERLAYFS, cid), (OVERLAYFS, f"{cid}-init")}
    ctr_rec = next(c for c in meta.containers if c.id == cid)
    assert (ctr_rec.snapshotter, ctr_rec.snapshot_key) == ("", "")
