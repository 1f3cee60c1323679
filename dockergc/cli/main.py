"""dockergc's command line. Each command: parse -> library call -> render -> exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dockergc import api
from dockergc.durations import parse_duration
from dockergc.errors import EXIT_ERROR, EXIT_OK, DockerGCError
from dockergc.plan import Policy
from dockergc.render.jsonfmt import JsonRenderer, dumps
from dockergc.render.table import TableRenderer
from dockergc.store.rootinfo import DEFAULT_CONFIG

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find and safely reclaim what Docker's overlay2 data root leaks "
    "(orphaned layer dirs, stale -init dirs, dangling links). "
    "Exit codes: 0 ok, 1 error, 2 usage, 3 refused as unsafe.",
)

_state = {"debug": False}

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Docker data root [default: daemon.json data-root, else /var/lib/docker]"
    ),
]
ConfigOpt = Annotated[
    Path, typer.Option("--config-file", help="The daemon's config file, read to find the root.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
MinAgeOpt = Annotated[
    str,
    typer.Option(
        "--min-age",
        help="Grace period: younger candidates are kept (an in-flight pull or build may own them).",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Keep paths (relative to the root) or names matching this glob; repeatable.",
    ),
]


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    _state["debug"] = debug


def _policy(min_age: str, exclude: list[str] | None) -> Policy:
    return Policy(min_age=parse_duration(min_age, "--min-age"), excludes=tuple(exclude or ()))


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
    min_age: MinAgeOpt = "1h",
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
    policy = _policy(min_age, exclude)
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every known error is one line on stderr and its exit code."""
    try:
        app(args=argv, prog_name="dockergc")
    except SystemExit as exc:  # typer's own exit: usage errors are 2, --help is 0
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_ERROR)
    except DockerGCError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"dockergc: {exc}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("dockergc: interrupted", err=True)
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback by default
        if _state["debug"]:
            raise
        typer.echo(
            f"dockergc: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback)",
            err=True,
        )
        return EXIT_ERROR
    return EXIT_OK


def console_main() -> None:
    sys.exit(main())
