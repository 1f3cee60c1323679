"""One dispatch point per family of operations: type -> the function that carries it out.

Used by gc's operations (execute/ops.py) and relocation's steps (relocate/executor.py),
so neither grows an ``if kind == ...`` chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Impl = Callable[..., Any]


class Registry:
    def __init__(self, family: str) -> None:
        self.family = family
        self._impls: dict[type, Impl] = {}

    def implementation_for(self, op_type: type) -> Callable[[Impl], Impl]:
        """Decorator: register the function that carries out ``op_type``."""

        def register(fn: Impl) -> Impl:
            self._impls[op_type] = fn
            return fn

        return register

    def perform(self, op: Any, *args: Any) -> Any:
        try:
            impl = self._impls[type(op)]
        except KeyError:
            raise TypeError(f"no {self.family} implementation for {type(op).__name__}") from None
        return impl(op, *args)
