"""Run read-only readers in forked children while the parent reads the rest.

At 50k layers reading overlay2/ and layerdb/ each take about a second of mostly
Python-side work when cached, and several seconds of waiting on the disk when not.
Threads lose both ways (the GIL makes the cached case three times slower); processes
use both cores when cached and keep several reads in flight when not. A child only
reads and pickles its result down a pipe. Whatever goes wrong there
(a crash, an exception, a truncated pipe) makes the parent run the reader itself:
the answer is the same, only slower, and a real error surfaces in the parent.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Beside(Generic[T]):
    """``fn(*args)`` under way in a child process; ``result()`` collects it."""

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self.fn, self.args = fn, args
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: read, send, leave without running any parent cleanup
            status = 1
            try:
                os.close(read_end)
                data = pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write_end, "wb") as out:
                    out.write(data)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self.pid, self.fd = pid, read_end

    def result(self) -> T:
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            _, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            try:
                return pickle.loads(b"".join(chunks))  # type: ignore[no-any-return]
            except (pickle.UnpicklingError, EOFError, ValueError):
                pass
        return self.fn(*self.args)


class Inline(Generic[T]):
    """The same interface, computed here: for small roots, where a fork costs more."""

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self.value = fn(*args)

    def result(self) -> T:
        return self.value


def each(
    fn: Callable[..., T], root: object, groups: list[list[str]], *args: object
) -> list[Beside[T] | Inline[T]]:
    """``fn(root, group, *args)`` for every group, each in a child process (one group,
    or one CPU: computed here, all at once)."""
    groups = [g for g in groups if g]
    if len(groups) < 2 or (os.cpu_count() or 1) < 2:
        return [Inline(fn, root, [n for g in groups for n in g], *args)]
    return [Beside(fn, root, g, *args) for g in groups]


def spread(
    fn: Callable[..., T], root: object, names: list[str], *args: object, shares: int
) -> list[Beside[T] | Inline[T]]:
    """``each`` over ``shares`` contiguous chunks of ``names``: results in name order."""
    size = -(-len(names) // shares) if shares > 0 else len(names)
    return each(fn, root, [names[i : i + size] for i in range(0, len(names), size or 1)], *args)
