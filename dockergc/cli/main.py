"""dockergc's entry point: run the typer app and render every known error once.

An error is one line on stderr (and a hint); under ``--json`` it is also one JSON object
on stdout, ``{"error": {"type", "message", "exit_code", "hint"}}``, so a script (or the
fleet report) that reads stdout gets an object either way.
"""

from __future__ import annotations

import socket
import sys

import typer

from dockergc import __version__
from dockergc.cli import prune_cmds, relocate_cmds, report_cmds, run_cmds  # noqa: F401
from dockergc.cli.app import _state, app, say, say_json
from dockergc.errors import EXIT_ERROR, EXIT_OK, DockerGCError, error_dict
from dockergc.measure import raise_fd_limit

# typer's (vendored or not) click base class of usage errors, which --json renders too.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _wants_json(argv: list[str]) -> bool:
    args = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in args


def _hoist_quiet(args: list[str]) -> list[str]:
    """-q/--quiet is global, but users type it after the command too (``gc -q``): move it
    to the front (never past a ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in ("-q", "--quiet")]
    rest = [a for a in args[:end] if a not in ("-q", "--quiet")]
    return flags + rest + args[end:]


def _fail(json: bool, doc: dict[str, object], *lines: str) -> None:
    for line in lines:
        say(line, err=True, always=True)
    if json and not _state["json_printed"]:  # which host and dockergc: the fleet report's row
        say_json({**doc, "host": socket.gethostname(), "dockergc_version": __version__})


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every known error is one line on stderr and its exit code."""
    raise_fd_limit()
    args = _hoist_quiet(sys.argv[1:] if argv is None else list(argv))
    json = _wants_json(args)
    _state.update(json_printed=False, quiet=False, debug=False)  # main() may run again
    try:
        code = app(args=args, prog_name="dockergc", standalone_mode=False)
    except SystemExit as exc:  # shell completion exits on its own
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_ERROR)
    except _CLICK_ERROR as exc:  # a usage error typer found: exit 2, as click prints it
        code = int(getattr(exc, "exit_code", 2))
        if json:
            _fail(json, error_dict("usage", exc.format_message(), code))  # type: ignore[attr-defined]
        exc.show()  # type: ignore[attr-defined]
        return code
    except typer.Abort:  # a prompt's Ctrl-C or Ctrl-D
        _fail(json, error_dict("interrupted", "aborted", EXIT_ERROR), "Aborted!")
        return EXIT_ERROR
    except DockerGCError as exc:
        if _state["debug"]:
            raise
        hint = [f"hint: {exc.hint}"] if exc.hint else []
        _fail(json, exc.to_dict(), f"dockergc: {exc}", *hint)
        return exc.exit_code
    except KeyboardInterrupt:  # before a run began or after it ended: nothing half-done
        _fail(json, error_dict("interrupted", "interrupted", 130), "dockergc: interrupted")
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback by default
        if _state["debug"]:
            raise
        message = f"internal error: {type(exc).__name__}: {exc}"
        _fail(
            json,
            error_dict("internal", message, EXIT_ERROR),
            f"dockergc: {message} (run with --debug for the traceback)",
        )
        return EXIT_ERROR
    return code if isinstance(code, int) else EXIT_OK


def console_main() -> None:
    sys.exit(main())
