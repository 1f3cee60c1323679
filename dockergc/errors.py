"""Typed errors, each with the exit code the CLI renders it with.

Exit codes are a contract (README, runbooks, the packaged timer rely on them):
0 ok, 1 error, 2 usage, 3 refused as unsafe.
Under ``--json`` an error is also one JSON object on stdout (``error_dict``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


class DockerGCError(Exception):
    """Base of every error dockergc reports on purpose: one line, one exit code."""

    exit_code = EXIT_ERROR
    kind = "error"  # the "type" of the JSON error object ``--json`` prints
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def to_dict(self) -> dict[str, object]:
        """The error as ``--json`` prints it: {"error": {type, message, hint, exit_code}}."""
        return error_dict(self.kind, str(self), self.exit_code, self.hint)


def error_dict(
    kind: str, message: str, exit_code: int, hint: str | None = None
) -> dict[str, object]:
    """One JSON error object; the fleet report reads these as a host's refusal or error."""
    body: dict[str, object] = {"type": kind, "message": message, "exit_code": exit_code}
    if hint:
        body["hint"] = hint
    return {"error": body}


class UsageError(DockerGCError):
    """The command line or a file given on it is not usable as asked."""

    exit_code = EXIT_USAGE
    kind = "usage"


class RootError(DockerGCError):
    """The data root is missing or unreadable."""

    kind = "root"


class RefusedError(DockerGCError):
    """Going on could hurt the host: a root we do not understand, a live daemon, a mount."""

    exit_code = EXIT_REFUSED
    kind = "refused"


class PlanFileError(UsageError):
    """A saved plan file is missing, unreadable or not a dockergc plan."""

    kind = "plan-file"


class Interrupted(DockerGCError):
    """Ctrl-C or SIGTERM stopped a run after its current step; the journal says where.

    Exits 128 + the signal number, as a shell reports a process a signal ended:
    130 for SIGINT (Ctrl-C), 143 for SIGTERM."""

    kind = "interrupted"

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
