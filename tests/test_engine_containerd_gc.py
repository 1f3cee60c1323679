"""gc on the containerd image store, against a real dockerd 28.5 + containerd 2.1
(``--feature containerd-snapshotter``): crashes leave leases, dirs and container dirs
behind the way they do in the field; dockergc finds exactly those, frees them through
containerd or quarantine, and afterwards every image runs, every container starts, the
cached BuildKit stage still builds from cache and the saved tars load again.

The expected leftovers are computed without dockergc: the leases a crash left are the
lease ids present after the crash and restart that were not there before it
(``ctd_state``), read from meta.db by the test's own reader.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import ctd_state as cs
from tests.conftest import ctd_flags, run_cli
from tests.engine import Engine

pytestmark = [pytest.mark.engine]


def dgc(e: Engine, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """dockergc on the engine, with its containerd's ``ctr`` first on PATH (as on a host)."""
    env = dict(os.environ, PATH=f"{e.bins.path_prefix}:{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "dockergc", *args, *ctd_flags(e)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"dockergc {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(autouse=True)
def _dockerd_running(ctd_engine: tuple[Engine, Any]) -> Iterator[None]:
    """Each test starts and leaves the engine with dockerd up, whatever the one before
    did (a failed test must not fail the next ones for a stopped daemon)."""
    e, _ = ctd_engine
    if not e.pidfile.exists():
        cs.start_dockerd(e)
    yield
    if not e.pidfile.exists():
        cs.start_dockerd(e)


def plan_json(e: Engine, *args: str) -> dict[str, Any]:
    return json.loads(dgc(e, "plan", "--json", *args).stdout)


def lease_actions(plan: dict[str, Any]) -> set[str]:
    return {a["path"].split("/")[-1] for a in plan["actions"] if a["kind"] == "stale-lease"}


def test_crash_leftovers_are_found_freed_and_the_engine_still_works(
    ctd_engine: tuple[Engine, Any], tmp_path: Path
) -> None:
    e, baseline = ctd_engine
    # Crashes the way the field has them: dockerd killed during both phases of a load,
    # containerd killed during a load, dockerd killed during a BuildKit build.
    left: set[str] = set()
    left |= set(cs.crash_load(e, cs.random_image_tar(tmp_path / "a.tar", tag="a:1"), "unpack"))
    left |= set(cs.crash_load(e, cs.random_image_tar(tmp_path / "b.tar", tag="b:1"), "import"))
    left |= set(cs.crash_containerd_load(e, cs.random_image_tar(tmp_path / "c.tar", tag="c:1")))
    build_left = set(cs.crash_build(e, tmp_path))
    # Another client of the shared containerd (a kubelet's namespace): never acted on,
    # though its lease looks just like an abandoned load's.
    cs.ctr(e, "leases", "create", "--id", "kubelet-pull", "--expires", "24h", namespace="k8s.io")
    cs.stop_dockerd(e)
    leases = cs.read_leases(e)  # dockerd stopped: none is one of its passing API leases
    # What the loads left (24 h leases, no other label); BuildKit's own records stay hers.
    expected = {i for i in left if set(leases[i].labels) == {"containerd.io/gc.expire"}}
    assert expected, f"the crashes left no load lease: {left}"
    held = {d for i in expected for d in leases[i].content}

    plan = plan_json(e, "--min-age", "0")
    assert plan["store"] == "containerd"
    assert any("k8s.io" in n and "never acted on" in n for n in plan["notes"]), plan["notes"]
    assert lease_actions(plan) == expected, plan
    assert not lease_actions(plan) & (baseline.leases | build_left)
    assert not [k for k in plan["kept"] if k["path"].split("/")[-1] in expected]

    du_before = cs.du_bytes(cs.ctd_root(e))
    out = json.loads(dgc(e, "gc", "--min-age", "0", "--yes", "--json").stdout)
    deleted = {a["path"].split("/")[-1] for a in out["actions"] if a["outcome"] == "deleted"}
    assert deleted == expected, out
    freed = out["freed_bytes"]
    du_after = cs.du_bytes(cs.ctd_root(e))
    assert freed > 0 and abs((du_before - du_after) - freed) <= 0.05 * freed + 65536, (
        freed,
        du_before - du_after,
    )
    after = cs.read_leases(e)
    assert not expected & set(after)
    assert "kubelet-pull" in cs.ctr(e, "leases", "ls", "-q", namespace="k8s.io").split()
    assert {i for i in leases if i not in expected} <= set(after)  # every other lease stays
    # containerd's GC ran before gc returned: no blob is left without a content record,
    # and what only the deleted leases held is gone.
    records = {
        d
        for ns in cs.ctr(e, "namespaces", "ls", "-q").split()
        for d in cs.ctr(e, "content", "ls", "-q", namespace=ns).split()
    }
    on_disk = {f"sha256:{b}" for b in cs.blob_files(e)}
    assert on_disk == records
    assert held - records, "the deleted leases held nothing only they kept"

    cs.start_dockerd(e)
    cs.verify_all(e, baseline)
    # Nothing is left to find: a second plan has no lease to delete.
    assert not lease_actions(plan_json(e, "--min-age", "0"))


def test_a_running_dockerd_is_refused_and_live_keeps_young_leases(
    ctd_engine: tuple[Engine, Any], tmp_path: Path
) -> None:
    e, baseline = ctd_engine
    left = cs.crash_load(e, cs.random_image_tar(tmp_path / "d.tar", tag="d:1"), "unpack")
    proc = dgc(e, "gc", "--min-age", "0", "--yes", check=3)
    assert "refusing" in proc.stderr and "dockerd" in proc.stderr
    # --live insists on a grace period of at least 1h: the crash's lease is younger.
    out = json.loads(dgc(e, "gc", "--live", "--yes", "--json").stdout)
    assert not [a for a in out["actions"] if a["kind"] == "stale-lease"], out
    assert set(left) <= set(cs.read_leases(e))
    kept = {k["path"].split("/")[-1] for k in plan_json(e, "--min-age", "1h")["kept"]}
    assert set(left) <= kept
    cs.stop_dockerd(e)
    dgc(e, "gc", "--min-age", "0", "--yes")
    cs.start_dockerd(e)
    cs.verify_all(e, baseline)


def test_a_second_dockerd_on_the_same_containerd_keeps_every_lease(
    ctd_engine: tuple[Engine, Any], tmp_path: Path
) -> None:
    """A crash's lease is stale for this root, but a second dockerd (its own data root)
    shares the containerd and namespace moby: no lease may be judged abandoned then."""
    e, _ = ctd_engine
    left = cs.crash_load(e, cs.random_image_tar(tmp_path / "s.tar", tag="s:1"), "unpack")
    cs.stop_dockerd(e)
    assert set(left) <= lease_actions(plan_json(e, "--min-age", "0"))
    other = tmp_path / "other"
    args = [
        e.bins.dockerd,
        f"--containerd={e.ctd_sock}",
        "--data-root",
        str(other / "root"),
        "--exec-root",
        str(other / "exec"),
        "--pidfile",
        str(other / "d.pid"),
        "-H",
        f"unix://{other / 'd.sock'}",
        "--iptables=false",
        "--ip-masq=false",
        "--bridge=none",
        "--feature",
        "containerd-snapshotter",
    ]
    other.mkdir()
    second = subprocess.Popen(
        args, env=e.bins.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        cs._wait_for(lambda: (other / "d.sock").exists(), 60, "the second dockerd")
        plan = plan_json(e, "--min-age", "0")
        assert not lease_actions(plan), plan["actions"]
        reasons = {k["path"].split("/")[-1]: k["reason"] for k in plan["kept"]}
        assert all("another dockerd" in reasons.get(i, "") for i in left), reasons
    finally:
        second.terminate()
        second.wait(60)
        with open("/proc/self/mountinfo") as fh:  # what the second dockerd left mounted
            points = [ln.split()[4] for ln in fh if ln.split()[4].startswith(str(other))]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
    dgc(e, "gc", "--min-age", "0", "--yes")  # alone again: the lease goes
    assert not set(left) & set(cs.read_leases(e))
    cs.start_dockerd(e)


def test_orphan_snapshot_dirs_go_to_quarantine_and_come_back(
    ctd_engine: tuple[Engine, Any],
) -> None:
    e, baseline = ctd_engine
    snaps = cs.ctd_root(e) / "io.containerd.snapshotter.v1.overlayfs/snapshots"
    # Planted once dockerd is stopped: a snapshot removal (dockerd's, BuildKit's GC) makes
    # the snapshotter delete every dir it has no record of, these two with them.
    cs.stop_dockerd(e)
    # What field reports show (containerd#13416): a dir with no record, and a temp dir a
    # crash left between mkdir and rename.
    for name in ("9999", "new-123456"):
        (snaps / name / "fs").mkdir(parents=True)
        (snaps / name / "work").mkdir()
        (snaps / name / "fs" / "data").write_bytes(os.urandom(1 << 20))
    plan = plan_json(e, "--min-age", "0")
    orphans = {a["path"] for a in plan["actions"] if a["kind"] == "orphan-snapshot"}
    assert orphans == {
        f"io.containerd.snapshotter.v1.overlayfs/snapshots/{n}" for n in ("9999", "new-123456")
    }
    assert all(a["bytes"] >= 1 << 20 for a in plan["actions"] if a["kind"] == "orphan-snapshot")
    out = json.loads(dgc(e, "gc", "--min-age", "0", "--yes", "--json").stdout)
    assert not (snaps / "9999").exists() and not (snaps / "new-123456").exists()
    # Quarantine lies on containerd's filesystem, under its root.
    assert list((cs.ctd_root(e) / ".dockergc/runs").glob(f"{out['run_id']}/q/*"))
    run_cli(
        "rollback", out["run_id"], "--root", str(e.root), "--config-file", str(e.config), "--yes"
    )
    assert (snaps / "9999" / "fs" / "data").stat().st_size == 1 << 20
    dgc(e, "gc", "--min-age", "0", "--yes")
    assert not (snaps / "9999").exists()
    cs.start_dockerd(e)
    cs.verify_all(e, baseline)


def test_a_container_whose_lease_is_gone_leaves_a_dir_gc_removes(
    ctd_engine: tuple[Engine, Any],
) -> None:
    e, baseline = ctd_engine
    # SIGKILL inside `docker rm -f` can leave containers/<id> after its lease and
    # snapshots are gone (seen): dockerd then skips it at every start. Made exactly so.
    e.run("create", "--network", "none", "--name", "doomed", "base:1", "true")
    cid = cs.inspect(e, "doomed", "{{.Id}}")
    cs.stop_dockerd(e)
    cs.ctr(e, "leases", "rm", "--sync", cid)
    assert cid not in cs.ctr(e, "snapshots", "ls")
    plan = plan_json(e, "--min-age", "0")
    gone = {a["path"] for a in plan["actions"] if a["kind"] == "gone-container"}
    assert gone == {f"containers/{cid}"}, plan
    dgc(e, "gc", "--min-age", "0", "--yes")
    assert not (e.root / "containers" / cid).exists()
    cs.start_dockerd(e)
    cs.verify_all(e, baseline)


def test_after_docker_prunes_nothing_but_build_history_is_left(
    ctd_engine: tuple[Engine, Any], tmp_path: Path
) -> None:
    """Last in the module: it empties the engine. After gc and Docker's own prunes, every
    snapshot dir and blob left is one moby_history legitimately holds."""
    e, _ = ctd_engine
    cs.crash_load(e, cs.random_image_tar(tmp_path / "e.tar", tag="e:1"), "unpack")
    cs.stop_dockerd(e)
    dgc(e, "gc", "--min-age", "0", "--yes")
    cs.start_dockerd(e)
    e.run("rm", "-f", *e.container_ids())
    e.run("system", "prune", "-af", "--volumes")
    e.run("builder", "prune", "-af")
    cs.collect(e)  # the GC the prunes scheduled, done before anything is counted
    history = set(cs.ctr(e, "content", "ls", "-q", namespace="moby_history").split())
    blobs = {f"sha256:{b}" for b in cs.blob_files(e)}
    assert blobs <= history, blobs - history  # each left is a record of build history
    assert not cs.snapshot_dirs(e), cs.snapshot_dirs(e)
    assert not cs.ctr(e, "images", "ls", "-q").split()
    # No moby lease holds anything now. (An empty one may pass by: dockerd takes a
    # lease, with a random id and no labels, for a moment in some API calls; seen once.)
    holding = {i: x for i, x in cs.read_leases(e).items() if x.snapshots or x.content or x.ingests}
    assert not holding, holding
    # and dockergc agrees: nothing left to plan
    plan = plan_json(e, "--min-age", "0")
    assert not [a for a in plan["actions"] if a["kind"] != "containerd-gc"], plan["actions"]
