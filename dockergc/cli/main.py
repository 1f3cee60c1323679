"""dockergc's entry point: run the typer app and render every known error once."""

from __future__ import annotations

import sys

from dockergc.cli import prune_cmds, relocate_cmds, report_cmds, run_cmds  # noqa: F401
from dockergc.cli.app import _state, app, say
from dockergc.errors import EXIT_ERROR, EXIT_OK, DockerGCError
from dockergc.measure import raise_fd_limit


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every known error is one line on stderr and its exit code."""
    raise_fd_limit()
    try:
        app(args=argv, prog_name="dockergc")
    except SystemExit as exc:  # typer's own exit: usage errors are 2, --help is 0
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_ERROR)
    except DockerGCError as exc:
        if _state["debug"]:
            raise
        say(f"dockergc: {exc}", err=True)
        if exc.hint:
            say(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:  # before a run began or after it ended: nothing half-done
        say("dockergc: interrupted", err=True)
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback by default
        if _state["debug"]:
            raise
        say(
            f"dockergc: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback)",
            err=True,
        )
        return EXIT_ERROR
    return EXIT_OK


def console_main() -> None:
    sys.exit(main())
