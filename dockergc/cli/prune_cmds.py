"""dockergc prune: daemon-level cleanup with a real dry run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from dockergc import daemon
from dockergc.cli.app import JsonOpt, app, confirm, settings
from dockergc.config import Setting, percent
from dockergc.durations import parse_duration
from dockergc.errors import EXIT_ERROR, RefusedError, UsageError
from dockergc.lock import exclusive
from dockergc.prune.executor import run_prune
from dockergc.prune.plan import make_prune_plan
from dockergc.prune.policy import PrunePolicy
from dockergc.prune.read import read_engine_facts
from dockergc.render.jsonfmt import dumps
from dockergc.render.prune import prune_plan_text, prune_result_text


def _age(s: dict[str, Setting], key: str) -> float | None:
    value = s[key].value
    return None if value is None else parse_duration(str(value), s[key].source)


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
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep", metavar="PATTERN", help="Never remove images matching ('postgres:*')."
        ),
    ] = None,
    keep_label: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY[=VALUE]", help="Never remove images or containers with this label."
        ),
    ] = None,
    keep_newest: Annotated[
        int | None, typer.Option(metavar="N", help="Keep the N newest images of each repository.")
    ] = None,
    high_watermark: Annotated[
        str | None,
        typer.Option(
            metavar="PCT",
            help="Disk pressure: above this usage, also evict unused images, least recently "
            "used first, until under --low-watermark.",
        ),
    ] = None,
    low_watermark: Annotated[str | None, typer.Option(metavar="PCT")] = None,
    host: Annotated[
        str | None, typer.Option(help="Docker host [default: $DOCKER_HOST, else the local socket].")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Data root as seen here [default: the daemon's DockerRootDir]."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List what would go and what it frees; change nothing."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json: JsonOpt = False,
) -> None:
    """Remove stopped containers, unused images and build cache through the daemon.

    Each item is listed with its id, names, age, the bytes removing it frees (layers shared
    between removed images counted once) and the rule that chose it. Containers go before
    the images they used; each item is re-checked right before its removal; the daemon's
    refusals are reported per item. Needs a running daemon."""
    s = settings(
        prune_containers_older_than=containers_older_than,
        prune_dangling=dangling,
        prune_images_older_than=images_older_than,
        prune_build_cache_older_than=build_cache_older_than,
        prune_keep=keep,
        prune_keep_labels=keep_label,
        prune_keep_newest=keep_newest,
    )
    policy = PrunePolicy(
        now=time.time(),
        containers_older_than=_age(s, "prune_containers_older_than"),
        dangling=bool(s["prune_dangling"].value),
        images_older_than=_age(s, "prune_images_older_than"),
        cache_older_than=_age(s, "prune_build_cache_older_than"),
        keep=tuple(s["prune_keep"].value),
        keep_labels=tuple(s["prune_keep_labels"].value),
        keep_newest=int(s["prune_keep_newest"].value),
        high_watermark=percent(high_watermark, "--high-watermark"),
        low_watermark=percent(low_watermark, "--low-watermark"),
    )
    if not policy.selects_anything:
        raise UsageError(
            "prune selects nothing: give --containers-older-than, --dangling, "
            "--images-older-than, --build-cache-older-than or the watermarks"
        )
    engine = host or os.environ.get("DOCKER_HOST") or daemon.DEFAULT_HOST
    client = daemon.engine_client(engine)
    with daemon.engine_errors(engine):
        facts = read_engine_facts(client, root)
    plan = make_prune_plan(facts, policy)
    if dry_run or not plan.items:
        typer.echo(dumps(plan.to_dict()) if json else prune_plan_text(plan))
        return
    if not json:
        typer.echo(prune_plan_text(plan))
    confirm(f"Remove these {len(plan.items)} items through the daemon?", yes)
    if os.geteuid() != 0:
        raise RefusedError("prune keeps its journal under the data root: run it as root")
    with exclusive(Path(facts.root)), daemon.engine_errors(engine):
        result = run_prune(client, Path(facts.root), plan, _progress(json))
    typer.echo(dumps(result.to_dict()) if json else prune_result_text(result))
    if result.count("error"):
        raise typer.Exit(EXIT_ERROR)


def _progress(quiet: bool) -> Callable[[str], None]:
    return (lambda _: None) if quiet else (lambda line: typer.echo(line, err=True))
