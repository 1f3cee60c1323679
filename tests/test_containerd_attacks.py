"""Adversarial review of the containerd image store family: each test is one attack on a
promise of README "The containerd image store" / SECURITY.md item 15, on synthetic
records or roots (no engine). Planner-level attacks reuse the healthy world of
tests/test_containerd_plan.py; CLI-level ones the host of tests/test_containerd_cli.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dockergc.fixture.containerd import CtdRoot
from dockergc.lock import STATE_DIR
from dockergc.plan import Policy, action_id
from dockergc.store.mountinfo import MountEntry, MountTable
from dockergc.stores.containerd import clock
from dockergc.stores.containerd.family import ContainerdStore
from dockergc.stores.containerd.locate import UUID_FILE, ContainerdTarget
from dockergc.stores.containerd.records import MOBY, SNAPSHOTTER_DIR, Lease
from tests.conftest import run_cli
from tests.manifest import manifest
from tests.test_containerd_cli import LIVE_CID, LOAD_LEASE, flags, make_host
from tests.test_containerd_plan import (
    OLD,
    WEB,
    W,
    got,
    kept_reason,
    plan_of,
    usage,
    world,
)


def _stale_leases(w: W) -> set[str]:
    return {p for k, p in got(plan_of(w)) if k == "stale-lease"}


# -- A container lease is stale only when its container is provably gone --------------


def test_unreadable_containers_dir_keeps_every_container_lease() -> None:
    """containers/ that cannot be listed (a symlink, EACCES, EIO) says nothing about
    which containers exist: their leases hold every container's rw layer."""
    w = world()
    w.ctr_ids.discard(WEB)
    w.ctr_unreadable.add("*")  # what read_containers reports for an unlistable dir
    w.live = {}
    assert f"leases/moby/{WEB}" not in _stale_leases(w)
    assert "containers/" in kept_reason(plan_of(w), f"leases/moby/{WEB}")


def test_unreadable_containers_dir_keeps_rootfs_dirs() -> None:
    w = world()
    w.ctr_ids.discard(WEB)
    w.ctr_unreadable.add("*")
    w.live = {}
    p = plan_of(w)
    assert not [a for a in p.actions if a.kind in ("orphan-rootfs", "gone-container")]


def test_container_of_another_namespace_is_not_gone() -> None:
    """dockerd --containerd-namespace other: the container's lease and snapshots are in
    that namespace; its containers/<id> must not look like a lost container's."""
    w = world()
    w.leases = [replace(x, namespace="other") if x.id == WEB else x for x in w.leases]
    w.snaps = [
        replace(s, namespace="other", parent="", name=s.name.replace("moby/", "other/"))
        if s.key.startswith(WEB)
        else s
        for s in w.snaps
    ]
    w.backend = [
        replace(b, key=b.key.replace("moby/", "other/"), parent="") if WEB in b.key else b
        for b in w.backend
    ]
    w.usage[f"containers/{WEB}"] = usage()
    p = plan_of(w)
    assert not p.frozen, p.frozen
    assert ("gone-container", f"containers/{WEB}") not in got(p)


def test_other_namespaces_leases_are_never_acted_on() -> None:
    w = world()
    expire = {"containerd.io/gc.expire": "2099-01-01T00:00:00Z"}
    for ns in ("k8s.io", "default", "moby_history"):
        w.leases.append(Lease(ns, "1-AbCd", OLD, expire))
        w.leases.append(Lease(ns, "f" * 64, OLD, {}))
    p = plan_of(w)
    acted = [a.path for a in p.actions if a.path.startswith(("leases/", "gc/"))]
    assert all(x.startswith(("leases/moby/", "gc/moby")) for x in acted), acted


# -- The clock baseline: malformed or planted files --------------------------------------


def _fake_boot(monkeypatch: pytest.MonkeyPatch, btime: int = 1000) -> None:
    monkeypatch.setattr(clock, "boot_time", lambda: ("boot-a", btime))


@pytest.mark.parametrize(
    "content",
    ['{"boot_id": "boot-a", "btime": "x"}', '{"boot_id": "boot-a", "btime": null}', "[1]", "\xff"],
)
def test_malformed_clock_baseline_keeps_leases_and_does_not_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    _fake_boot(monkeypatch)
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / clock.BASELINE).write_text(content, errors="surrogateescape")
    why = clock.stepped_since_last_run(tmp_path)
    assert why  # unknown = keep, with a reason; never an exception mid-run
    assert clock.stepped_since_last_run(tmp_path) is None  # the new baseline is usable


def test_clock_baseline_write_follows_no_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_boot(monkeypatch)
    state = tmp_path / "root" / STATE_DIR
    state.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / "clock.tmp").symlink_to(victim)
    (state / clock.BASELINE).symlink_to(victim)
    assert clock.stepped_since_last_run(tmp_path / "root")
    assert victim.read_text() == "precious\n"


# -- Mounts: a snapshot dir a live overlay mount uses is never moved ----------------------


def _ctd_store(data: Path, ctd: CtdRoot) -> ContainerdStore:
    target = ContainerdTarget("/nonexistent.sock", "test", ctd.root, "test", "")
    return ContainerdStore(data, target)


def _overlay(mount_point: str, options: str) -> MountEntry:
    return MountEntry(900, "0:99", "/", mount_point, "overlay", "overlay", options)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "compact-relative"])
def test_orphan_snapshot_used_as_lowerdir_is_kept(tmp_path: Path, relative: bool) -> None:
    """containerd's mount shortens a long overlay option (core/mount compactLowerdirOption):
    lowerdirs become relative to the snapshots dir it chdirs into, and mountinfo shows
    them so. A dir such a mount uses must be pinned either way."""
    data, ctd = make_host(tmp_path)
    snaps = ctd.root / SNAPSHOTTER_DIR / "snapshots"
    lower = "9999/fs" if relative else f"{snaps}/9999/fs"
    upper = f"{snaps}/{ctd.ids[(MOBY, LIVE_CID)]}/fs"
    entry = _overlay(
        f"{data}/rootfs/overlayfs/{LIVE_CID}",
        f"rw,lowerdir={lower}:1/fs,upperdir={upper},workdir={upper[:-3]}/work",
    )
    table = MountTable((entry,), 1, 0)
    p = _ctd_store(data, ctd).plan(Policy(min_age=0), table)
    assert f"{SNAPSHOTTER_DIR}/snapshots/9999" not in {a.path for a in p.actions}
    assert "mounted" in " ".join(k.reason for k in p.kept if k.path.endswith("snapshots/9999"))


# -- Tampered plan files, through the CLI, with a ctr that records every call -------------

FAKE_CTR = """#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *" version") printf 'Client:\\n  Version: v2\\n\\nServer:\\n  UUID: {uuid}\\n';;
  *"moby leases ls") printf 'ID CREATED AT LABELS\\n{leases}';;
esac
exit 0
"""


def _host_with_ctr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, CtdRoot, Path, dict[str, Any]]:
    """make_host's data root and containerd root, the containerd UUID under the root, a
    fake ctr first on PATH answering with that UUID, and the saved plan."""
    data, ctd = make_host(tmp_path)
    uuid = "2c1b5d4e-0000-4000-8000-000000000001"
    (ctd.root / UUID_FILE).parent.mkdir(parents=True, exist_ok=True)
    (ctd.root / UUID_FILE).write_text(uuid + "\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ctr.log"
    ids = [LOAD_LEASE, "405j8825xvopk11qvl6w755xb-view", LIVE_CID]
    lines = "".join(f"{i} 2023-11-14T22:13:20Z -\\n" for i in ids)
    (bindir / "ctr").write_text(FAKE_CTR.format(log=log, uuid=uuid, leases=lines))
    (bindir / "ctr").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    saved = tmp_path / "plan.json"
    run_cli("plan", "--out", str(saved), *flags(data, ctd))
    return data, ctd, log, json.loads(saved.read_text())


def _apply(
    tmp_path: Path, data: Path, ctd: CtdRoot, doc: dict[str, Any], check: int | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(doc))
    args = [f for f in flags(data, ctd) if f not in ("--min-age", "0")]
    return run_cli("apply", str(path), "--yes", "--json", *args, check=check)


def _removals(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [ln for ln in log.read_text().splitlines() if " rm " in f" {ln} "]


def test_untampered_plan_deletes_exactly_the_stale_moby_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: with a containerd that proves its identity, the planned leases (and
    only they, in namespace moby) are deleted through ctr --sync."""
    data, ctd, log, doc = _host_with_ctr(tmp_path, monkeypatch)
    _apply(tmp_path, data, ctd, doc, check=0)
    removed = _removals(log)
    leases = sorted(ln.split()[-1] for ln in removed if "dockergc-gc-" not in ln)
    assert leases == sorted([LOAD_LEASE, "405j8825xvopk11qvl6w755xb-view"]), removed
    assert all("--namespace moby leases rm --sync" in ln for ln in removed), removed


def _action(kind: str, path: str, base: str = "containerd") -> dict[str, Any]:
    return {
        "id": action_id(kind, f"{base}:{path}" if base else path),
        "kind": kind,
        "path": path,
        "bytes": 1,
        "age_seconds": 100_000,
        "reason": "tampered",
        "evidence": [],
        "dev": 0,
        "ino": 0,
        "base": base,
    }


@pytest.mark.parametrize(
    "tamper",
    [
        "k8s-lease",
        "history-lease",
        "live-container-lease",
        "gc-other-namespace",
        "overlay2-kind",
        "data-root-base-for-ctd-path",
        "ctd-base-for-data-path",
    ],
)
def test_tampered_plan_acts_only_on_what_a_fresh_plan_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tamper: str
) -> None:
    data, ctd, log, doc = _host_with_ctr(tmp_path, monkeypatch)
    before = (manifest(data), manifest(ctd.root))
    snap = f"{SNAPSHOTTER_DIR}/snapshots/{ctd.ids[(MOBY, LIVE_CID)]}"
    bad = {
        "k8s-lease": _action("stale-lease", "leases/k8s.io/1-AbCd"),
        "history-lease": _action("stale-lease", "leases/moby_history/ref_x"),
        "live-container-lease": _action("stale-lease", f"leases/moby/{LIVE_CID}"),
        "gc-other-namespace": _action("containerd-gc", "gc/k8s.io"),
        "overlay2-kind": _action("orphan-layer", "overlay2/" + "a" * 64, ""),
        "data-root-base-for-ctd-path": _action("orphan-snapshot", snap, ""),
        "ctd-base-for-data-path": _action("orphan-rootfs", f"rootfs/overlayfs/{LIVE_CID}"),
    }[tamper]
    doc["actions"] = [bad]
    proc = _apply(tmp_path, data, ctd, doc)
    assert _removals(log) == []
    assert (manifest(data), manifest(ctd.root)) == before or proc.returncode != 0
    if proc.returncode == 0:
        out = json.loads(proc.stdout)
        assert [a["outcome"] for a in out["actions"]] == ["skipped"], out


def test_containerd_root_pointing_elsewhere_is_refused_without_blocking_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ctd, log, doc = _host_with_ctr(tmp_path, monkeypatch)
    other = tmp_path / "elsewhere"
    shutil.copytree(ctd.root, other, symlinks=True)
    doc["containerd_root"] = str(other)
    before = (manifest(data), manifest(ctd.root), manifest(other))
    proc = _apply(tmp_path, data, ctd, doc)
    assert proc.returncode != 0
    assert _removals(log) == []
    assert (manifest(data), manifest(ctd.root), manifest(other)) == before


def test_refused_plan_leaves_no_unfinished_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan refused for another containerd root must not leave a run 'running' that
    makes every later gc refuse ('run ... did not finish')."""
    data, ctd, log, doc = _host_with_ctr(tmp_path, monkeypatch)
    doc["containerd_root"] = str(tmp_path)
    _apply(tmp_path, data, ctd, doc)
    runs = json.loads(run_cli("runs", "--json", "--root", str(data), "--config-file", "/x").stdout)
    assert [r["state"] for r in runs["runs"]] in ([], ["failed"], ["refused"]), runs


# -- --live: the clock baseline ----------------------------------------------------------


def test_live_deletes_leases_only_once_the_clock_is_known_unstepped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--live trusts a lease's wall-clock time only against a clock baseline of this boot
    recorded by an earlier run: the first run keeps every lease, a second one (clock
    unmoved) deletes them; a baseline that says the clock moved keeps them again."""
    data, ctd, log, _ = _host_with_ctr(tmp_path, monkeypatch)
    args = [f for f in flags(data, ctd) if f not in ("--min-age", "0")]

    def live_gc() -> dict[str, Any]:
        out = run_cli("gc", "--live", "--min-age", "1h", "--yes", "--json", *args).stdout
        return json.loads(out)

    first = live_gc()
    kept = [a for a in first["actions"] if a["kind"] == "stale-lease"]
    assert kept and all(a["outcome"] == "skipped" for a in kept), first
    assert all("clock baseline" in a["reason"] for a in kept)

    def lease_removals() -> list[str]:  # running containerd's GC (a made-up lease) is harmless
        return [ln for ln in _removals(log) if "dockergc-gc-" not in ln]

    assert lease_removals() == []
    baseline = data / ".dockergc" / "clock.json"
    doc = json.loads(baseline.read_text())
    baseline.write_text(json.dumps({**doc, "btime": doc["btime"] - 3600}))  # clock moved
    stepped = live_gc()
    assert all(
        "stepped" in a["reason"] for a in stepped["actions"] if a["kind"] == "stale-lease"
    ), stepped
    assert lease_removals() == []
    third = live_gc()  # the baseline is this boot's and unmoved since the last run
    deleted = {a["path"] for a in third["actions"] if a["outcome"] == "deleted"}
    assert f"leases/moby/{LOAD_LEASE}" in deleted, third
    assert any(LOAD_LEASE in ln for ln in lease_removals())


def test_a_ctr_anyone_could_have_placed_is_never_run(tmp_path: Path) -> None:
    """Any user may start a process named containerd whose command line names the real
    root: the ctr beside it runs as root only if root alone could have put it there."""
    from dockergc.stores.containerd.locate import trusted_executable

    assert trusted_executable(os.path.realpath("/bin/sh"))
    # under /tmp (world-writable): whoever can write there chose this file
    tool = tmp_path / "ctr"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert not trusted_executable(str(tool))
    mine = Path("/var/tmp/dockergc-test-bin")
    mine.mkdir(mode=0o755, exist_ok=True)
    try:
        good = mine / "ctr"
        good.write_text("#!/bin/sh\n")
        good.chmod(0o755)
        if not (os.stat("/var/tmp").st_mode & 0o022):  # /var/tmp is usually 1777: skip
            assert trusted_executable(str(good))
        good.chmod(0o775)  # group-writable
        assert not trusted_executable(str(good))
        link = mine / "ctr-link"
        link.symlink_to(good)
        assert not trusted_executable(str(link))
        os.chown(good, 65534, 65534)
        good.chmod(0o755)
        assert not trusted_executable(str(good))  # not root's
    finally:
        shutil.rmtree(mine)
