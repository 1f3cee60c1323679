"""Read-only commands: scan, plan, demo, config show, report (the fleet's plans), man.
Nothing here changes disk."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dockergc import api
from dockergc.cli.app import (
    ConfigOpt,
    CtdAddressOpt,
    CtdConfigOpt,
    CtdRootOpt,
    ExcludeOpt,
    JsonOpt,
    MinAgeOpt,
    RootOpt,
    app,
    dockergc_config,
    emit,
    is_quiet,
    policy_from_flags,
    say,
    say_chunks,
    say_json,
    settings,
    store_from,
    target_from,
)
from dockergc.cli.output import write_atomic
from dockergc.errors import EXIT_ERROR
from dockergc.fleet import fleet_report
from dockergc.plan import Policy
from dockergc.render.fleet import fleet_html, fleet_text
from dockergc.render.html import HtmlRenderer
from dockergc.render.jsonfmt import JsonRenderer, plan_document
from dockergc.render.rich_table import RichRenderer
from dockergc.render.table import TableRenderer


@app.command()
def scan(
    root: RootOpt = None,
    config_file: ConfigOpt = None,
    json: JsonOpt = False,
    containerd_address: CtdAddressOpt = None,
    containerd_root: CtdRootOpt = None,
    containerd_config: CtdConfigOpt = None,
) -> None:
    """Inventory a data root from its metadata: images, layers, containers, dirs, findings."""
    target = target_from(root, config_file)
    store = store_from(target, containerd_address, containerd_root, containerd_config)
    inv = store.inventory()
    skip = ("findings", "frozen", "attribution")  # the per-record list: --json
    lines = [f"{key:<20} {value}" for key, value in inv.items() if key not in skip]
    lines += [f"frozen: {reason}" for reason in inv["frozen"]]
    lines += [f"finding: {f['kind']} {f['path']}: {f['reason']}" for f in inv["findings"]]
    emit(json, inv, "\n".join(lines))


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
    containerd_address: CtdAddressOpt = None,
    containerd_root: CtdRootOpt = None,
    containerd_config: CtdConfigOpt = None,
) -> None:
    """Dry run: list what gc would remove, with size, age, reason and evidence. Changes nothing."""
    policy = policy_from_flags(min_age, exclude)
    target = target_from(root, config_file)
    if target.root.path != target.root.given:
        say(f"note: data root {target.root.given} resolves to {target.root.path}", err=True)
    store = store_from(target, containerd_address, containerd_root, containerd_config)
    result = store.plan(policy)
    if out is not None:
        write_atomic(out, JsonRenderer().chunks(result))
    if html is not None:
        write_atomic(html, HtmlRenderer().render(result))
    if json:
        say_chunks(JsonRenderer().chunks(result))
    elif is_quiet():
        pass
    elif sys.stdout.isatty():
        RichRenderer(Console(), verbose).print(result)
    else:
        say(TableRenderer(verbose).render(result).rstrip("\n"))
    if out is not None and not json:
        say(f"plan saved to {out}; apply it with: dockergc apply {out}")
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
        say_json(plan_document(result))
        return
    say(f"sample data root written to {root} (no Docker needed)")
    say("grace period set to 0 for the demo: its files were all written just now\n")
    say(TableRenderer(verbose=True).render(result).rstrip("\n"))
    say(f"\nnext: dockergc plan --root {root} --min-age 0 --json")


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
    path, chosen_by = dockergc_config()
    read = path.is_file()
    state = "read" if read else "not found: built-in defaults"
    doc: dict[str, object] = {
        "config_file": {"value": str(path), "source": chosen_by, "read": read}
    }
    doc.update({k: {"value": s.value, "source": s.source} for k, s in effective.items()})
    width = max(len(k) for k in effective)
    lines = [f"config file {path} ({state}; chosen by {chosen_by})"]
    lines += [
        f"{key:<{width}}  {s.value!r:<28} from {s.source}  ({SCHEMA[key][2]})"
        for key, s in effective.items()
    ]
    emit(json, doc, "\n".join(lines))


@app.command()
def report(
    plan_files: Annotated[
        list[Path],
        typer.Argument(
            metavar="PLAN.json...",
            help="Plans saved on each host by 'plan --json' or 'plan --out' (the dry-run "
            "playbook's plans/*.json). A file holding the JSON error object a --json command "
            "prints counts as that host's refusal.",
        ),
    ],
    json: JsonOpt = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as one HTML file.")
    ] = None,
) -> None:
    """Add up many hosts' dry runs: a row a host (actions, bytes, frozen reasons,
    refusals) and the fleet's totals. Bad plan files are named and skipped (exit 1)."""
    result = fleet_report(plan_files)
    if html is not None:
        write_atomic(html, fleet_html(result))
    for bad in result.bad_files:
        say(f"dockergc: skipped {bad.problem}", err=True, always=True)
    emit(json, result.to_dict(), fleet_text(result))
    if result.bad_files:
        raise typer.Exit(EXIT_ERROR)


@app.command(hidden=True)
def man() -> None:
    """Print dockergc(1): dockergc man > /usr/share/man/man1/dockergc.1"""
    from dockergc.cli.manpage import man_page

    say(man_page(app).rstrip("\n"), always=True)
