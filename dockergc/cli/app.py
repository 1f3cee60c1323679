"""The typer app, its global options and the option types commands share."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from dockergc import __version__, api
from dockergc.config import DEFAULT_PATH, Setting, load, override
from dockergc.durations import parse_duration
from dockergc.errors import RefusedError, UsageError
from dockergc.plan import Policy
from dockergc.stores.interface import Store

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Find and safely reclaim what Docker's overlay2 data root leaks "
    "(orphaned layer dirs, stale -init dirs, dangling links). Deletes are moves into a "
    "quarantine under the root, undone by 'rollback' until 'purge'. "
    "Exit codes: 0 ok, 1 error, 2 usage, 3 refused as unsafe, 4 plan --check found work.",
)

# debug: --debug; quiet: -q; json_printed: stdout already holds this run's JSON object
# (an error after it is then not printed there a second time).
_state = {"debug": False, "quiet": False, "json_printed": False}

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
CtdAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--containerd-address",
        help="Containerd image store: containerd's socket [default: dockerd's --containerd, "
        "else daemon.json containerd, else /run/containerd/containerd.sock].",
    ),
]
CtdRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--containerd-root",
        help="Containerd image store: containerd's root [default: root in "
        "--containerd-config, else /var/lib/containerd].",
    ),
]
CtdConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--containerd-config",
        help="Containerd image store: containerd's config.toml [default: "
        "/etc/containerd/config.toml].",
    ),
]
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


_config: dict[str, object] = {"path": DEFAULT_PATH, "required": False, "source": "default"}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dockergc {__version__}")
        raise typer.Exit()


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
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print only errors (and the JSON object --json asks for): no reports, "
            "notes or progress lines. Files (--out, --html, metrics) are still written.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    _state["debug"], _state["quiet"], _state["json_printed"] = debug, quiet, False
    _config["path"], _config["required"] = (config, True) if config else (DEFAULT_PATH, False)
    from_env = config is not None and os.environ.get("DOCKERGC_CONFIG") == str(config)
    _config["source"] = ("DOCKERGC_CONFIG" if from_env else "--config") if config else "default"


def dockergc_config() -> tuple[Path, str]:
    """The config file this invocation reads, and how it was chosen."""
    path = _config["path"]
    assert isinstance(path, Path)
    return path, str(_config["source"])


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


def store_from(
    target: api.Target, address: str | None, root: Path | None, config: Path | None
) -> Store:
    """The store family of the target; a containerd store's socket and root from the
    flags, else the config file, else what dockerd and containerd's config say."""
    s = settings(
        containerd_address=address,
        containerd_root=str(root) if root else None,
        containerd_config=str(config) if config else None,
    )
    named = s["containerd_config"]
    flags = api.ContainerdFlags(
        address=s["containerd_address"].value,
        root=Path(s["containerd_root"].value) if s["containerd_root"].value else None,
        config=Path(named.value) if named.source != "default" else None,
    )
    return api.open_store(target, flags)


def policy_from_flags(min_age: str | None, exclude: list[str] | None, live: bool = False) -> Policy:
    """The plan policy the flags (or the config file) ask for; --live insists on a long
    grace period."""
    s = settings(min_age=min_age, live_min_age=min_age if live else None, excludes=exclude)
    chosen = s["live_min_age" if live else "min_age"]
    seconds = parse_duration(str(chosen.value), chosen.named)
    if live and seconds < LIVE_FLOOR_SECONDS:
        raise UsageError(
            f"--live needs a grace period of at least 1h (in-flight pulls and builds); "
            f"{chosen.named} is {chosen.value}"
        )
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


def say(text: str, err: bool = False, always: bool = False) -> None:
    """Print a line (nothing under -q unless ``always``: errors, a report shown before a
    question). A reader that went away (``dockergc gc | head -1``) silences the
    rest of the output and never stops the work: output goes to /dev/null from then on."""
    if _state["quiet"] and not always:
        return
    try:
        typer.echo(text, err=err)
    except OSError:  # a closed pipe, or a terminal hung up (EIO)
        silence(sys.stderr if err else sys.stdout)


def is_quiet() -> bool:
    return bool(_state["quiet"])


def say_json(doc: object) -> None:
    """Print the one JSON object --json promises (-q does not silence it)."""
    from dockergc.render.jsonfmt import dumps

    say(dumps(doc), always=True)
    _state["json_printed"] = True


def say_chunks(chunks: Iterable[str]) -> None:
    """Print a JSON object given in pieces (a plan of many thousand actions)."""
    try:
        sys.stdout.writelines(chunks)
        sys.stdout.flush()
    except OSError:
        silence(sys.stdout)
    _state["json_printed"] = True


def emit(json: bool, doc: object, text: str) -> None:
    """A command's result: the JSON object under --json, else the text."""
    if json:
        say_json(doc)
    else:
        say(text)


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
