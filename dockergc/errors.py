"""Typed errors, each with the exit code the CLI renders it with.

Exit codes are a contract (README, runbooks, the packaged timer rely on them):
0 ok, 1 error, 2 usage, 3 refused as unsafe.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


class DockerGCError(Exception):
    """Base of every error dockergc reports on purpose: one line, one exit code."""

    exit_code = EXIT_ERROR
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UsageError(DockerGCError):
    """The command line or a file given on it is not usable as asked."""

    exit_code = EXIT_USAGE


class RootError(DockerGCError):
    """The data root is missing or unreadable."""


class RefusedError(DockerGCError):
    """Going on could hurt the host: a root we do not understand, a live daemon, a mount."""

    exit_code = EXIT_REFUSED


class PlanFileError(UsageError):
    """A saved plan file is missing, unreadable or not a dockergc plan."""


class Interrupted(DockerGCError):
    """Ctrl-C or SIGTERM stopped a run after its current step; the journal says where.

    Exits 128 + the signal number, as a shell reports a process a signal ended:
    130 for SIGINT (Ctrl-C), 143 for SIGTERM."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
