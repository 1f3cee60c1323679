"""Read-only commands: scan, plan, demo. Nothing here changes disk."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dockergc import api
from dockergc.cli.app import (
    ConfigOpt,
    ExcludeOpt,
    JsonOpt,
    MinAgeOpt,
    RootOpt,
    app,
    policy_from_flags,
    settings,
    target_from,
)
from dockergc.cli.output import write_atomic
from dockergc.plan import Policy
from dockergc.render.html import HtmlRenderer
from dockergc.render.jsonfmt import JsonRenderer, dumps
from dockergc.render.rich_table import RichRenderer
from dockergc.render.table import TableRenderer


@app.command()
def scan(root: RootOpt = None, config_file: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Inventory a data root from its metadata: images, layers, containers, dirs, findings."""
    target = target_from(root, config_file)
    inv = api.inventory(*api.scan_root(target.root.path))
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
    config_file: ConfigOpt = None,
    min_age: MinAgeOpt = None,
    exclude: ExcludeOpt = None,
    json: JsonOpt = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also save the plan (JSON) for 'dockergc apply'.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the evidence of each action.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as one HTML file.")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 4 when the plan is not empty (for monitoring).")
    ] = False,
) -> None:
    """Dry run: list what gc would remove, with size, age, reason and evidence. Changes nothing."""
    policy = policy_from_flags(min_age, exclude)
    target = target_from(root, config_file)
    if target.root.path != target.root.given:
        typer.echo(f"note: data root {target.root.given} resolves to {target.root.path}", err=True)
    _, _, result = api.plan_root(target.root.path, policy)
    if out is not None:
        write_atomic(out, JsonRenderer().chunks(result))
    if html is not None:
        write_atomic(html, HtmlRenderer().render(result))
    if json:
        sys.stdout.writelines(JsonRenderer().chunks(result))
        sys.stdout.flush()
    elif sys.stdout.isatty():
        RichRenderer(Console(), verbose).print(result)
    else:
        typer.echo(TableRenderer(verbose).render(result).rstrip("\n"))
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


config_app = typer.Typer(rich_markup_mode=None, help="dockergc's configuration file.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    min_age: MinAgeOpt = None,
    exclude: ExcludeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print every effective setting and where it came from (default, file, flag)."""
    from dockergc.config import SCHEMA

    effective = settings(
        root=str(root) if root else None,
        daemon_config=str(config_file) if config_file else None,
        min_age=min_age,
        excludes=exclude,
    )
    if json:
        typer.echo(dumps({k: {"value": s.value, "source": s.source} for k, s in effective.items()}))
        return
    width = max(len(k) for k in effective)
    for key, s in effective.items():
        typer.echo(f"{key:<{width}}  {s.value!r:<28} from {s.source}  ({SCHEMA[key][2]})")
