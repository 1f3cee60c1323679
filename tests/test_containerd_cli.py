"""The containerd image store through the CLI, on synthetic roots shaped like what dockerd
28.5 writes (dockergc.fixture.containerd), no engine: the store is detected, planned with
evidence, dirs go to quarantine under containerd's root and come back, a lease is never
deleted without proof that the containerd at the address is the one whose root was read,
and unreadable records keep everything."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dockergc.fixture.containerd import (
    CtdRoot,
    FxBlob,
    FxLease,
    FxSnapshot,
    build_ctd_root,
    docker_like_spec,
)
from dockergc.stores.containerd.records import METADATA_DIR, OVERLAYFS, SNAPSHOTTER_DIR
from tests.conftest import run_cli
from tests.manifest import manifest

LIVE_CID = "c" * 64  # docker_like_spec's container
GONE_CID = "d" * 64
ROOTFS_ONLY = "e" * 64
LOAD_LEASE = "123456789-AbCd"


def _config(cid: str) -> str:
    return json.dumps({"ID": cid, "Name": "/x", "Driver": "overlayfs", "State": {"Running": False}})


def make_host(tmp_path: Path) -> tuple[Path, CtdRoot]:
    """A data root (one live container, one whose config is gone, a rootfs dir of none)
    and a containerd root with a load lease a crash left, holding what only it keeps, and
    two snapshot dirs no record names (one a temp dir of an interrupted create)."""
    data = tmp_path / "docker"
    for cid, config in ((LIVE_CID, True), (GONE_CID, False)):
        (data / "containers" / cid).mkdir(parents=True)
        if config:
            (data / "containers" / cid / "config.v2.json").write_text(_config(cid))
    (data / "containers" / GONE_CID / "hostname").write_text("x\n")
    for cid in (LIVE_CID, ROOTFS_ONLY):
        (data / "rootfs/overlayfs" / cid).mkdir(parents=True)
    (data / "volumes").mkdir()
    spec = docker_like_spec()
    blob = FxBlob(os.urandom(300_000))
    spec = replace(
        spec,
        blobs=(*spec.blobs, blob),
        snapshots=(*spec.snapshots, FxSnapshot("extract-1-x", files={"big": os.urandom(200_000)})),
        leases=(
            *spec.leases,
            FxLease(
                LOAD_LEASE,
                labels={"containerd.io/gc.expire": "2099-01-01T00:00:00Z"},
                snapshots=((OVERLAYFS, "extract-1-x"),),
                content=(blob.digest,),
            ),
        ),
        stray_dirs=("9999", "new-123"),
    )
    ctd = build_ctd_root(tmp_path / "containerd", spec)
    for name in ("9999", "new-123"):
        (ctd.root / SNAPSHOTTER_DIR / "snapshots" / name / "fs").mkdir()
        (ctd.root / SNAPSHOTTER_DIR / "snapshots" / name / "fs" / "f").write_bytes(b"x" * 5000)
    return data, ctd


def flags(data: Path, ctd: CtdRoot) -> tuple[str, ...]:
    return (
        "--root",
        str(data),
        "--config-file",
        "/x",
        "--containerd-root",
        str(ctd.root),
        "--containerd-address",
        "/nonexistent/containerd.sock",
        "--min-age",
        "0",
    )


def plan(data: Path, ctd: CtdRoot) -> dict[str, Any]:
    return json.loads(run_cli("plan", "--json", *flags(data, ctd)).stdout)


def by_kind(doc: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a in doc["actions"]:
        out.setdefault(a["kind"], set()).add(a["path"])
    return out


def test_the_store_is_detected_and_planned_with_evidence(tmp_path: Path) -> None:
    data, ctd = make_host(tmp_path)
    doc = plan(data, ctd)
    assert doc["store"] == "containerd" and doc["containerd_root"] == str(ctd.root)
    snaps = f"{SNAPSHOTTER_DIR}/snapshots"
    assert by_kind(doc) == {
        # the load's lease; BuildKit's temporary -view lease of a dockerd no longer running
        "stale-lease": {f"leases/moby/{LOAD_LEASE}", "leases/moby/405j8825xvopk11qvl6w755xb-view"},
        "containerd-gc": {"gc/moby"},  # the spec's expired lease, not yet collected
        "orphan-snapshot": {f"{snaps}/9999", f"{snaps}/new-123"},
        "gone-container": {f"containers/{GONE_CID}"},
        "orphan-rootfs": {f"rootfs/overlayfs/{ROOTFS_ONLY}"},
    }
    lease = next(a for a in doc["actions"] if a["path"].endswith(LOAD_LEASE))
    assert lease["base"] == "containerd"
    # Its bytes are what only it keeps: the unpacked snapshot and the blob.
    assert lease["bytes"] >= 500_000
    text = " ".join(lease["evidence"])
    assert "load or import" in text and "no dockerd" in text.lower()
    # The container's lease, BuildKit's records: understood and live, not even "kept".
    paths = {k["path"] for k in doc["kept"]}
    assert f"leases/moby/{LIVE_CID}" not in paths
    assert any("understood and in use" in n for n in doc["notes"])
    assert any("moby_history" in n for n in doc["notes"])


def test_gc_quarantines_dirs_under_each_root_and_rollback_puts_them_back(tmp_path: Path) -> None:
    data, ctd = make_host(tmp_path)
    before = (manifest(data), manifest(ctd.root))
    out = json.loads(run_cli("gc", "--yes", "--json", *flags(data, ctd)).stdout)
    outcomes = {a["path"]: a["outcome"] for a in out["actions"]}
    # No containerd answers at the address: the lease is kept on re-check, never guessed.
    assert outcomes[f"leases/moby/{LOAD_LEASE}"] == "skipped"
    assert outcomes["gc/moby"] == "skipped"
    reasons = [a["reason"] for a in out["actions"] if a["outcome"] == "skipped"]
    assert all("containerd" in r for r in reasons), reasons
    moved = {p for p, o in outcomes.items() if o == "moved"}
    assert f"{SNAPSHOTTER_DIR}/snapshots/9999" in moved and f"containers/{GONE_CID}" in moved
    assert not (ctd.root / SNAPSHOTTER_DIR / "snapshots/9999").exists()
    # Quarantine of a containerd dir is on containerd's filesystem, under its root.
    run_dir = ctd.root / ".dockergc/runs" / out["run_id"] / "q"
    assert len(list(run_dir.iterdir())) == 2
    assert (data / ".dockergc/runs" / out["run_id"] / "journal.jsonl").is_file()
    run_cli("rollback", out["run_id"], "--root", str(data), "--config-file", "/x", "--yes")
    assert (manifest(data), manifest(ctd.root)) == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "symlink"])
def test_unreadable_meta_db_keeps_everything_and_names_it(tmp_path: Path, damage: str) -> None:
    data, ctd = make_host(tmp_path)
    db = ctd.root / METADATA_DIR / "meta.db"
    if damage == "truncate":
        db.write_bytes(db.read_bytes()[:5000])
    elif damage == "garbage":
        db.write_bytes(os.urandom(16384))
    else:
        real = tmp_path / "elsewhere.db"
        db.rename(real)
        db.symlink_to(real)
    doc = plan(data, ctd)
    assert not [a for a in doc["actions"] if a["base"] == "containerd"], doc["actions"]
    assert doc["frozen"] or any("meta.db" in k["path"] for k in doc["kept"])
    named = json.dumps(doc["kept"]) + json.dumps(doc["frozen"])
    assert "meta.db" in named


def test_a_plan_is_applied_only_to_its_own_store(tmp_path: Path) -> None:
    from dockergc.fixture.demo import write_demo_root

    data, ctd = make_host(tmp_path)
    saved = tmp_path / "plan.json"
    run_cli("plan", "--out", str(saved), *flags(data, ctd))
    overlay = write_demo_root(tmp_path / "overlay")
    doc = json.loads(saved.read_text())
    doc["root"] = str(overlay)
    saved.write_text(json.dumps(doc))
    proc = run_cli(
        "apply", str(saved), "--root", str(overlay), "--config-file", "/x", "--yes", check=2
    )
    assert "containerd store" in proc.stderr


def test_scan_attributes_every_snapshot_and_blob(tmp_path: Path) -> None:
    data, ctd = make_host(tmp_path)
    scan_flags = [f for f in flags(data, ctd) if f not in ("--min-age", "0")]
    inv = json.loads(run_cli("scan", "--json", *scan_flags).stdout)
    assert inv["store"] == "containerd"
    owners = {
        a["id"].split("/", 1)[1]: (a["owner"], a["name"]) for a in inv["attribution"]["snapshots"]
    }
    assert owners[LIVE_CID] == ("lease", LIVE_CID)  # dockerd's container lease holds it
    assert owners["extract-1-x"] == ("lease", LOAD_LEASE)
    assert sum(inv["snapshots_by_owner"].values()) == len(inv["attribution"]["snapshots"])
    assert {a["owner"] for a in inv["attribution"]["blobs"]} >= {"image", "lease"}
    text = run_cli("scan", *scan_flags).stdout
    assert "snapshots_by_owner" in text and "attribution" not in text
