"""dockergc(1), written from the CLI's own help so the two never disagree.

``dockergc man > /usr/share/man/man1/dockergc.1`` installs it (the command is hidden
from ``--help``); ``python -m dockergc.cli.manpage FILE`` writes it at build time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
import typer.main

from dockergc import __version__

EXIT_STATUS = (
    ("0", "success"),
    ("1", "an error (a bad plan file in 'report', a step that failed)"),
    ("2", "a usage error: a flag, a config key or a file given is not usable; nothing changed"),
    ("3", "refused as unsafe (a live daemon, a process in the root, the lock held)"),
    ("4", "plan --check found work"),
    ("130, 143", "stopped by SIGINT or SIGTERM after the current step (resume as it says)"),
)


def _roff(text: str) -> str:
    """Escape text for a man page line: backslashes, hyphens, a leading dot or quote."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line if line[:1] in (".", "'") else line) for line in out.split("\n")]
    return "\n".join(lines)


def _options(command: Any, ctx: Any) -> list[str]:
    lines: list[str] = []
    for param in command.params:
        record = param.get_help_record(ctx)
        if record is None or getattr(param, "hidden", False):
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{_roff(names)}\\fR", _roff(help_text or "")]
    return lines


def _commands(group: Any, ctx: Any, prefix: str) -> list[str]:
    lines: list[str] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = command.context_class(command, info_name=name, parent=ctx)
        path = f"{prefix} {name}"
        if hasattr(command, "list_commands"):  # a group: config
            lines += _commands(command, sub, path)
            continue
        usage = " ".join(command.collect_usage_pieces(sub))
        lines += [f'.SS "{_roff(path)} {_roff(usage)}"', _roff(command.help or ""), ".PP"]
        lines += _options(command, sub)
    return lines


def man_page(app: typer.Typer) -> str:
    """The whole page, in troff's man macros."""
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="dockergc")
    summary = (group.help or "").split(". ")[0].rstrip(".")
    lines = [
        f'.TH DOCKERGC 1 "" "dockergc {__version__}" "User Commands"',
        ".SH NAME",
        "dockergc \\- " + _roff(summary[0].lower() + summary[1:]),
        ".SH SYNOPSIS",
        ".B dockergc",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _roff(group.help or ""),
        ".SH GLOBAL OPTIONS",
        *_options(group, ctx),
        ".SH COMMANDS",
        *_commands(group, ctx, "dockergc"),
        ".SH EXIT STATUS",
    ]
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", _roff(meaning)]
    lines += [
        ".SH FILES",
        ".TP",
        "\\fB/etc/dockergc/config.toml\\fR",
        "defaults for every command ('dockergc config show' prints them and their source)",
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBDOCKERGC_CONFIG\\fR",
        "the config file to read instead of /etc/dockergc/config.toml",
        ".SH SEE ALSO",
        "\\fBdocker\\fR(1), \\fBdockerd\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page to the file named, or to stdout."""
    import dockergc.cli.main  # noqa: F401  (registers every command on the app)
    from dockergc.cli.app import app

    args = sys.argv[1:] if argv is None else argv
    text = man_page(app)
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
