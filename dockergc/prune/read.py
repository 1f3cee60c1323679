"""Gather EngineFacts: the Engine API for what exists, layerdb for layer sizes, the
volumes' own directories for theirs."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from dockergc.api import ContainerdFlags
from dockergc.errors import RefusedError, RootError
from dockergc.measure import measure
from dockergc.prune.ctdgraph import CtdGraph, Ledger
from dockergc.prune.ctdread import (
    check_root,
    is_containerd_store,
    locate_daemon_containerd,
    read_graph,
)
from dockergc.prune.facts import (
    EngineContainer,
    EngineFacts,
    cache_records,
    parse_container,
    parse_image,
    rw_sizes,
)
from dockergc.prune.volread import read_volumes
from dockergc.store.layers import read_layers


def read_engine_facts(
    client: Any,
    root: Path | None = None,
    volumes: bool = False,
    named_volumes: bool = True,
    containerd: ContainerdFlags | None = None,
) -> EngineFacts:
    """Everything a prune plan needs, read-only. ``root`` overrides the daemon's own
    DockerRootDir (tests; a daemon in another mount namespace). ``volumes``: list and
    measure volumes too (a walk of each unused one: only when a rule may remove them;
    named ones only if ``named_volumes``). On the containerd image store, bytes come
    from containerd's records and dirs; ``containerd`` names its socket, root or config
    (default: the containerd serving the daemon's Containerd.Address, and its root)."""
    info = client.info()
    driver = str(info.get("Driver") or "")
    on_ctd = is_containerd_store(info)
    if driver != "overlay2" and not on_ctd:
        raise RefusedError(
            f"the daemon uses the {driver or 'unknown'} storage driver; prune computes "
            "freed bytes from overlay2's layerdb or the containerd image store only"
        )
    daemon_root = str(info.get("DockerRootDir") or "/var/lib/docker")
    where = root or Path(daemon_root)
    if not on_ctd and not (where / "image/overlay2/layerdb").is_dir():
        raise RootError(f"{where}: no overlay2 layerdb here; give --root as the daemon sees it")
    taken_at = time.time()
    df = client.df()
    images = tuple(
        parse_image(doc)
        for doc in _each(client.inspect_image, [i["Id"] for i in client.images(all=True)])
    )
    sizes = rw_sizes(df)
    containers = tuple(
        parse_container(doc, sizes.get(str(doc["Id"]), 0))
        for doc in _each(client.inspect_container, [c["Id"] for c in client.containers(all=True)])
    )
    ctd_root: Path | None = None
    graph = None
    if on_ctd:
        target = locate_daemon_containerd(info, containerd)
        ctd_root = target.root
        check_root(ctd_root, target.root_source, [i.id for i in images])
        graph = read_graph(ctd_root)
        containers = tuple(_rw_measured(c, graph, where) for c in containers)
        layer_sizes: dict[str, int] = {}
    else:
        layer_sizes = {r.chain_id: r.size or 0 for r in read_layers(where, detail=True).layers}
    disk = psutil.disk_usage(str(where))
    return EngineFacts(
        root=str(where),
        taken_at=taken_at,
        images=images,
        containers=containers,
        cache=cache_records(df),
        layer_sizes=layer_sizes,
        disk_total=disk.total,
        disk_used=disk.used,
        volumes=(
            read_volumes(client, where, daemon_root, containers, named_volumes) if volumes else ()
        ),
        layers_size=int(df.get("LayersSize") or 0),
        ctd_root=str(ctd_root) if ctd_root else None,
        ctd=graph,
    )


def _rw_measured(container: EngineContainer, graph: CtdGraph, where: Path) -> EngineContainer:
    """On the containerd store a container's bytes are what removing it frees there (its
    rw and -init snapshots, on disk, and its dir under containers/: config and log), not
    the daemon's SizeRw (the rw snapshot's usage alone)."""
    own = measure(str(where / "containers" / container.id)) if ID.fullmatch(container.id) else None
    size = Ledger(graph).release_item("container", container.id) + (own.bytes if own else 0)
    return replace(container, size_rw=size)


ID = re.compile(r"[0-9a-f]{64}")


def _each(inspect: Any, ids: list[str]) -> list[Any]:
    """Inspect each id; one removed meanwhile is simply not there."""
    import docker.errors

    out = []
    for ident in ids:
        try:
            out.append(inspect(ident))
        except docker.errors.NotFound:
            continue
    return out
