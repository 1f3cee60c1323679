"""The containerd image store behind ``dockergc.stores.interface.Store``: gather the facts
(read-only), plan with ``candidates.plan_containerd``, and give the runner its re-checks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dockergc.execute.checks import RunChecks
from dockergc.measure import measure_all
from dockergc.plan import Plan, Policy
from dockergc.store.containers import read_containers
from dockergc.store.findings import Finding
from dockergc.store.mountinfo import MountTable, read_all_namespaces
from dockergc.store.snapshot import read_pins
from dockergc.stores.containerd.candidates import plan_containerd, usage_paths
from dockergc.stores.containerd.content import read_content
from dockergc.stores.containerd.gcmirror import mark
from dockergc.stores.containerd.locate import ContainerdTarget, other_dockerds
from dockergc.stores.containerd.metadb import read_metadb
from dockergc.stores.containerd.records import (
    SNAPSHOTTER_DIR,
    CtdFacts,
    DataRootContainers,
)
from dockergc.stores.containerd.snapshotter import read_snapshotter

ROOTFS = "rootfs/overlayfs"


def read_data_root(root: Path) -> tuple[DataRootContainers, tuple[Finding, ...]]:
    """What dockerd's data root says about containers: the containers it can load, those
    whose config is there but unusable, those with no config at all, the rootfs dirs."""
    store = read_containers(root)
    missing = {
        f.path.split("/")[1]
        for f in store.findings
        if f.kind == "missing" and f.path.endswith("/config.v2.json")
    }
    findings = tuple(
        f for f in store.findings if not (f.kind == "missing" and f.path.split("/")[1] in missing)
    )
    try:
        rootfs = frozenset(e.name for e in os.scandir(root / ROOTFS))
    except FileNotFoundError:
        rootfs = frozenset()
    except OSError as exc:
        rootfs = frozenset()
        findings += (Finding(ROOTFS, "unreadable", f"cannot be listed: {exc.strerror}"),)
    facts = DataRootContainers(
        ids=frozenset(c.id for c in store.containers),
        unreadable=frozenset(store.unreadable) - missing,
        without_config=frozenset(missing),
        rootfs=rootfs,
        drivers={c.id: c.driver for c in store.containers},
    )
    return facts, findings


def dockerd_started(root: Path) -> float | None:
    """When the dockerd using ``root`` started (epoch seconds); None if none runs; 0.0 if
    dockergc cannot tell (then no operation lease is ever stale: created < 0 never holds)."""
    from dockergc.daemon import daemons_using

    users = [d for d in daemons_using(root) if d.kind == "dockerd" or d.held == "?"]
    if not users:
        return None
    starts = [_process_start(d.pid) for d in users if d.held != "?"]
    if not starts or None in starts:
        return 0.0
    return min(s for s in starts if s is not None)


def _process_start(pid: int) -> float | None:
    """A process's start in epoch seconds: boot time + its start in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])
        with open("/proc/stat", "rb") as fh:
            btime = next(int(ln.split()[1]) for ln in fh if ln.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def relative_lowers(ctd_root: Path, table: MountTable) -> dict[str, str]:
    """Snapshot dirs overlay mounts name by a relative path. containerd shortens an overlay
    mount's options that near a page (core/mount ``compactLowerdirOption``): it chdirs
    into the lowerdirs' common dir (the snapshotter's ``snapshots/``) and passes them
    relative, and mountinfo shows them as passed. Each relative part is pinned as a path
    under ``snapshots/`` (a part that is not one of containerd's pins a path that does
    not exist: nothing is lost by it)."""
    base = os.path.join(str(ctd_root), SNAPSHOTTER_DIR, "snapshots")
    out: dict[str, str] = {}
    for entry in table.entries:
        if entry.fstype != "overlay":
            continue
        for option in entry.super_options.split(","):
            key, _, value = option.partition("=")
            if key not in ("lowerdir", "lowerdir+", "upperdir", "workdir"):
                continue
            for part in value.split(":"):
                if not part or part.startswith("/"):
                    continue
                path = os.path.normpath(os.path.join(base, part))
                if path.startswith(base + "/"):
                    why = f"overlay layer of mount at {entry.mount_point} (relative {part})"
                    out.setdefault(path, why)
    return out


class ContainerdStore:
    name = "containerd"

    def __init__(self, root: Path, target: ContainerdTarget) -> None:
        self.root = root
        self.target = target

    def describe(self) -> str:
        return f"containerd image store: data root {self.root}; {self.target.describe()}"

    def other_roots(self) -> tuple[Path, ...]:
        return (self.target.root,)

    def gather(self, mounts: MountTable | None = None) -> CtdFacts:
        table = mounts or read_all_namespaces()
        pinned = dict(read_pins(self.root, table)[0])
        pinned.update(read_pins(self.target.root, table)[0])
        pinned.update(relative_lowers(self.target.root, table))
        containers, findings = read_data_root(self.root)
        return CtdFacts(
            data_root=str(self.root),
            ctd_root=str(self.target.root),
            meta=read_metadb(self.target.root),
            backend=read_snapshotter(self.target.root),
            content=read_content(self.target.root),
            containers=containers,
            dockerd_started=dockerd_started(self.root),
            shared_with=other_dockerds(self.root, self.target.address),
            pinned=pinned,
            findings=findings,
        )

    def plan(self, policy: Policy, mounts: MountTable | None = None) -> Plan:
        return self.plan_from(self.gather(mounts), policy)

    def plan_from(self, facts: CtdFacts, policy: Policy) -> Plan:
        # Only what a lease or nothing keeps is measured, never the whole image store.
        # The two roots' paths never collide (io.containerd.* vs containers/, rootfs/).
        drivers = facts.containers.drivers
        in_ctd, in_data = usage_paths(facts, policy.now, drivers)
        usage = measure_all(str(self.target.root), in_ctd)
        usage.update(measure_all(str(self.root), in_data))
        return plan_containerd(facts, usage, policy, drivers)

    def inventory(self) -> dict[str, Any]:
        facts = self.gather()
        graph = mark(facts.meta, time.time())
        meta = facts.meta
        by_ns: dict[str, dict[str, int]] = {}
        for kind, items in (
            ("images", meta.images),
            ("containers", meta.containers),
            ("snapshots", meta.snapshots),
            ("blobs", meta.blobs),
            ("leases", meta.leases),
        ):
            for item in items:
                slot = by_ns.setdefault(item.namespace, {})
                slot[kind] = slot.get(kind, 0) + 1
        owners: dict[str, dict[str, int]] = {"snapshots": {}, "blobs": {}}
        attribution: dict[str, list[dict[str, str]]] = {"snapshots": [], "blobs": []}
        for what, reaches in (("snapshots", graph.snapshots), ("blobs", graph.blobs)):
            for key, reach in sorted(reaches.items()):
                owner = reach.by[0]
                owners[what][owner] = owners[what].get(owner, 0) + 1
                attribution[what].append(
                    {
                        "namespace": key[0],
                        "id": "/".join(key[1:]),
                        "owner": owner,
                        "name": reach.by[1],
                        "via": reach.path,
                    }
                )
        return {
            "store": "containerd",
            "root": str(self.root),
            "containerd_root": str(self.target.root),
            "containerd_address": self.target.address,
            "namespaces": by_ns,
            "snapshot_dirs": len(facts.backend.dirs),
            "snapshotter_records": len(facts.backend.records),
            "blobs_on_disk": len(facts.content.blobs),
            "ingests_on_disk": len(facts.content.ingests),
            "containers": len(facts.containers.ids),
            "dockerd_started": facts.dockerd_started,
            # Who keeps each snapshot and blob (containerd's GC, mirrored): an image, a
            # container, a lease, a gc.root label, build history, or "nothing".
            "snapshots_by_owner": owners["snapshots"],
            "blobs_by_owner": owners["blobs"],
            "attribution": attribution,
            "frozen": list(graph.freeze),
            "findings": [
                f.as_dict()
                for f in (
                    *facts.findings,
                    *meta.findings,
                    *facts.backend.findings,
                    *facts.content.findings,
                )
            ],
        }

    def checks(self, live: bool, mounts: MountTable | None, slack: float) -> RunChecks:
        from dockergc.stores.containerd.verify import ContainerdChecks

        return ContainerdChecks(self, live, mounts, slack)

    def refuse_unsafe(self, live: bool) -> None:
        from dockergc import api

        api.refuse_if_daemon(self.root, live)
