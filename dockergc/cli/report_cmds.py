"""Read-only commands: scan, plan, demo. Nothing here changes disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockergc import api
from dockergc.cli.app import (
    ConfigOpt,
    ExcludeOpt,
    JsonOpt,
    MinAgeOpt,
    RootOpt,
    app,
    policy_from_flags,
)
from dockergc.plan import Policy
from dockergc.render.jsonfmt import JsonRenderer, dumps
from dockergc.render.table import TableRenderer
from dockergc.store.rootinfo import DEFAULT_CONFIG


@app.command()
def scan(
    root: RootOpt = None, config_file: ConfigOpt = DEFAULT_CONFIG, json: JsonOpt = False
) -> None:
    """Inventory a data root from its metadata: images, layers, containers, dirs, findings."""
    target = api.resolve_target(root, config_file)
    snap, graph, _ = api.plan_root(target.root.path, Policy())
    inv = api.inventory(snap, graph)
    if json:
        typer.echo(dumps(inv))
        return
    for key, value in inv.items():
        if key not in ("findings", "frozen"):
            typer.echo(f"{key:<20} {value}")
    for reason in inv["frozen"]:
        typer.echo(f"frozen: {reason}")
    for f in inv["findings"]:
        typer.echo(f"finding: {f['kind']} {f['path']}: {f['reason']}")


@app.command()
def plan(
    root: RootOpt = None,
    config_file: ConfigOpt = DEFAULT_CONFIG,
    min_age: MinAgeOpt = None,
    exclude: ExcludeOpt = None,
    json: JsonOpt = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also save the plan (JSON) for 'dockergc apply'.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the evidence of each action.")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 4 when the plan is not empty (for monitoring).")
    ] = False,
) -> None:
    """Dry run: list what gc would remove, with size, age, reason and evidence. Changes nothing."""
    policy = policy_from_flags(min_age, exclude)
    target = api.resolve_target(root, config_file)
    if target.root.path != target.root.given:
        typer.echo(f"note: data root {target.root.given} resolves to {target.root.path}", err=True)
    _, _, result = api.plan_root(target.root.path, policy)
    if out is not None:
        from dockergc.cli.output import write_atomic

        write_atomic(out, JsonRenderer().render(result) + "\n")
    typer.echo((JsonRenderer() if json else TableRenderer(verbose)).render(result).rstrip("\n"))
    if out is not None and not json:
        typer.echo(f"plan saved to {out}; apply it with: dockergc apply {out}")
    if check and result.actions:
        raise typer.Exit(4)


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to write the sample root [default: a new temp dir]."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Write a realistic sample data root with known leftovers and show the dry-run report."""
    from dockergc.fixture.demo import write_demo_root

    root = write_demo_root(directory)
    _, _, result = api.plan_root(root, Policy(min_age=0))
    if json:
        typer.echo(JsonRenderer().render(result))
        return
    typer.echo(f"sample data root written to {root} (no Docker needed)")
    typer.echo("grace period set to 0 for the demo: its files were all written just now\n")
    typer.echo(TableRenderer(verbose=True).render(result).rstrip("\n"))
    typer.echo(f"\nnext: dockergc plan --root {root} --min-age 0 --json")
