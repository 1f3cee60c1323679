"""Gather EngineFacts: the Engine API for what exists, layerdb for layer sizes, the
volumes' own directories for theirs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

from dockergc.errors import RefusedError, RootError
from dockergc.prune.facts import (
    EngineFacts,
    cache_records,
    parse_container,
    parse_image,
    rw_sizes,
)
from dockergc.prune.volread import read_volumes
from dockergc.store.layers import read_layers


def read_engine_facts(
    client: Any, root: Path | None = None, volumes: bool = False, named_volumes: bool = True
) -> EngineFacts:
    """Everything a prune plan needs, read-only. ``root`` overrides the daemon's own
    DockerRootDir (tests; a daemon in another mount namespace). ``volumes``: list and
    measure volumes too (a walk of each unused one: only when a rule may remove them;
    named ones only if ``named_volumes``)."""
    info = client.info()
    driver = str(info.get("Driver") or "")
    if driver != "overlay2":
        raise RefusedError(
            f"the daemon uses the {driver or 'unknown'} storage driver; "
            "prune computes freed bytes from overlay2's layerdb only"
        )
    daemon_root = str(info.get("DockerRootDir") or "/var/lib/docker")
    where = root or Path(daemon_root)
    if not (where / "image/overlay2/layerdb").is_dir():
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
    )


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
