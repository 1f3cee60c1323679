"""The typer app, its global options and the option types commands share."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dockergc import api
from dockergc.config import DEFAULT_PATH, Setting, load, override
from dockergc.durations import parse_duration
from dockergc.errors import RefusedError, UsageError
from dockergc.plan import Policy

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Find and safely reclaim what Docker's overlay2 data root leaks "
    "(orphaned layer dirs, stale -init dirs, dangling links). Deletes are moves into a "
    "quarantine under the root, undone by 'rollback' until 'purge'. "
    "Exit codes: 0 ok, 1 error, 2 usage, 3 refused as unsafe, 4 plan --check found work.",
)

_state = {"debug": False}

LIVE_FLOOR_SECONDS = 3600.0

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Docker data root [default: daemon.json data-root, else /var/lib/docker]"
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config-file",
        help="The daemon's config file, read to find the root [default: /etc/docker/daemon.json].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
MinAgeOpt = Annotated[
    str | None,
    typer.Option(
        "--min-age",
        help="Grace period: younger candidates are kept (an in-flight pull, build or create "
        "may own them) [default: 1h; 24h with --live].",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Keep paths (relative to the root) or names matching this glob; repeatable.",
    ),
]
MetricsOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        help="Write Prometheus metrics (node_exporter textfile format) here, atomically.",
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]
LiveOpt = Annotated[
    bool,
    typer.Option(
        "--live",
        help="Allow a root a running daemon uses: grace period at least 1h (default 24h), "
        "a fresh graph and every mount namespace re-checked right before each move.",
    ),
]


_config: dict[str, object] = {"path": DEFAULT_PATH, "required": False}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="DOCKERGC_CONFIG",
            help="dockergc's config file [default: /etc/dockergc/config.toml].",
        ),
    ] = None,
) -> None:
    _state["debug"] = debug
    _config["path"], _config["required"] = (config, True) if config else (DEFAULT_PATH, False)


def settings(**flags: object) -> dict[str, Setting]:
    """Effective settings: defaults, then the config file, then the flags given."""
    path = _config["path"]
    assert isinstance(path, Path)
    return override(load(path, required=bool(_config["required"])), **flags)


def target_from(root: Path | None, daemon_config: Path | None) -> api.Target:
    """The data root, from --root, else the config file, else daemon.json / the default."""
    s = settings(
        root=str(root) if root else None,
        daemon_config=str(daemon_config) if daemon_config else None,
    )
    chosen = s["root"].value
    return api.resolve_target(Path(chosen) if chosen else None, Path(s["daemon_config"].value))


def policy_from_flags(min_age: str | None, exclude: list[str] | None, live: bool = False) -> Policy:
    """The plan policy the flags (or the config file) ask for; --live insists on a long
    grace period."""
    s = settings(min_age=min_age, live_min_age=min_age if live else None, excludes=exclude)
    chosen = s["live_min_age" if live else "min_age"]
    seconds = parse_duration(str(chosen.value), chosen.source)
    if live and seconds < LIVE_FLOOR_SECONDS:
        raise UsageError("--live needs --min-age of at least 1h: in-flight pulls and builds")
    daemon = "the running daemon (--live)" if live else None
    return Policy(min_age=seconds, excludes=tuple(s["excludes"].value), daemon=daemon)


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, only --yes may proceed."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise RefusedError("refusing to change anything without --yes (stdin is not a terminal)")
    if not typer.confirm(question, default=False):
        raise RefusedError("nothing changed: not confirmed")


def say(text: str, err: bool = False) -> None:
    """Print a line. A reader that went away (``dockergc gc | head -1``) silences the
    rest of the output and never stops the work: output goes to /dev/null from then on."""
    try:
        typer.echo(text, err=err)
    except OSError:  # a closed pipe, or a terminal hung up (EIO)
        silence(sys.stderr if err else sys.stdout)


def silence(stream: object) -> None:
    """Point ``stream``'s fd at /dev/null (so flushing it at exit cannot fail either)."""
    try:
        fileno = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fileno)
    finally:
        os.close(null)
