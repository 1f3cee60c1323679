"""dockergc prune: daemon-level cleanup with a real dry run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from dockergc import daemon
from dockergc.api import ContainerdFlags
from dockergc.cli.app import (
    CtdAddressOpt,
    CtdConfigOpt,
    CtdRootOpt,
    JsonOpt,
    app,
    confirm,
    emit,
    say,
    settings,
)
from dockergc.config import Setting
from dockergc.errors import EXIT_ERROR, RefusedError, UsageError
from dockergc.lock import exclusive
from dockergc.prune.executor import run_prune
from dockergc.prune.options import policy_from_settings
from dockergc.prune.plan import make_prune_plan
from dockergc.prune.read import read_engine_facts
from dockergc.render.prune import prune_plan_text, prune_result_text


@app.command()
def prune(
    containers_older_than: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Remove exited, created and dead containers stopped longer ago than this.",
        ),
    ] = None,
    dangling: Annotated[
        bool | None,
        typer.Option("--dangling", help="Remove untagged images that nothing is built on."),
    ] = None,
    images_older_than: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Remove images no container uses, last used (else created) longer ago.",
        ),
    ] = None,
    build_cache_older_than: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Remove build cache unused for this long."),
    ] = None,
    volumes: Annotated[
        bool | None,
        typer.Option(
            "--volumes",
            help="Remove anonymous volumes no container (in any state) uses. Their data is "
            "gone for good.",
        ),
    ] = None,
    volumes_all: Annotated[
        bool | None,
        typer.Option(
            "--volumes-all",
            help="Remove named volumes no container uses too (docker volume prune --all). "
            "Their data is gone for good.",
        ),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep", metavar="PATTERN", help="Never remove images matching ('postgres:*')."
        ),
    ] = None,
    keep_label: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY[=VALUE]",
            help="Never remove images, containers or volumes with this label.",
        ),
    ] = None,
    keep_volume: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-volume", metavar="PATTERN", help="Never remove volumes whose name matches."
        ),
    ] = None,
    keep_container: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-container",
            metavar="PATTERN",
            help="Never remove containers whose name matches (a glob on the whole name); "
            "their images and volumes stay in use.",
        ),
    ] = None,
    keep_newest: Annotated[
        int | None, typer.Option(metavar="N", help="Keep the N newest images of each repository.")
    ] = None,
    high_watermark: Annotated[
        str | None,
        typer.Option(
            metavar="PCT|SIZE",
            help="Disk pressure: above this (90% of the root's filesystem, or a size of "
            "images + build cache: 200GB, 150GiB), also evict unused images and build cache, "
            "least recently used first, until under --low-watermark.",
        ),
    ] = None,
    low_watermark: Annotated[
        str | None,
        typer.Option(metavar="PCT|SIZE", help="Where eviction stops; the same form as the high."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Docker host [default: $DOCKER_HOST, else the local socket].")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Data root as seen here [default: the daemon's DockerRootDir]."),
    ] = None,
    containerd_address: CtdAddressOpt = None,
    containerd_root: CtdRootOpt = None,
    containerd_config: CtdConfigOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List what would go and what it frees; change nothing."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json: JsonOpt = False,
) -> None:
    """Remove stopped containers, unused images, build cache and volumes through the daemon.

    Each item is listed with its id, names, age, the bytes removing it frees (layers shared
    between removed images counted once) and the rule that chose it. Containers go before
    the images and volumes they used; each item is re-checked right before its removal;
    the daemon's refusals are reported per item. Nothing removed can be brought back.
    Needs a running daemon."""
    s = settings(
        prune_containers_older_than=containers_older_than,
        prune_dangling=dangling,
        prune_images_older_than=images_older_than,
        prune_build_cache_older_than=build_cache_older_than,
        prune_volumes=volumes,
        prune_volumes_all=volumes_all,
        prune_keep=keep,
        prune_keep_labels=keep_label,
        prune_keep_newest=keep_newest,
        prune_keep_volumes=keep_volume,
        prune_keep_containers=keep_container,
        prune_high_watermark=high_watermark,
        prune_low_watermark=low_watermark,
        containerd_address=containerd_address,
        containerd_root=str(containerd_root) if containerd_root else None,
        containerd_config=str(containerd_config) if containerd_config else None,
    )
    policy = policy_from_settings(s, time.time())
    if not policy.selects_anything:
        raise UsageError(
            "prune selects nothing: give --containers-older-than, --dangling, "
            "--images-older-than, --build-cache-older-than, --volumes, --volumes-all "
            "or the watermarks"
        )
    engine = host or os.environ.get("DOCKER_HOST") or daemon.DEFAULT_HOST
    client = daemon.engine_client(engine)
    with daemon.engine_errors(engine):
        wanted = policy.volumes or policy.volumes_all
        facts = read_engine_facts(
            client,
            root,
            wanted,
            named_volumes=policy.volumes_all,
            containerd=_containerd(s),
        )
    plan = make_prune_plan(facts, policy)
    if dry_run or not plan.items:
        emit(json, plan.to_dict(), prune_plan_text(plan))
        return
    if not json:  # shown before the question, -q or not
        say(prune_plan_text(plan), always=not yes)
    confirm(f"Remove these {len(plan.items)} items through the daemon?", yes)
    if os.geteuid() != 0:
        raise RefusedError("prune keeps its journal under the data root: run it as root")
    with exclusive(Path(facts.root)), daemon.engine_errors(engine):
        result = run_prune(client, Path(facts.root), plan, _progress(json))
    emit(json, result.to_dict(), prune_result_text(result))
    if result.count("error"):
        raise typer.Exit(EXIT_ERROR)


def _containerd(s: dict[str, Setting]) -> ContainerdFlags:
    """Where the containerd image store's containerd is, as flags or the config file
    name it (the default config path is only a default: the running containerd's own
    config comes first then)."""
    root, config = s["containerd_root"], s["containerd_config"]
    return ContainerdFlags(
        address=s["containerd_address"].value,
        root=Path(root.value) if root.value else None,
        config=Path(config.value) if config.source != "default" else None,
    )


def _progress(quiet: bool) -> Callable[[str], None]:
    return (lambda _: None) if quiet else (lambda line: say(line, err=True))
