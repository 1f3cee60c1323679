"""The plan as one JSON object: the contract ``apply`` and monitoring read."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from dockergc import __version__
from dockergc.plan import Plan

# ensure_ascii keeps odd file names (invalid UTF-8 as surrogates) representable.
_ENCODER = json.JSONEncoder(indent=2, sort_keys=False, ensure_ascii=True)


def dumps(doc: Any) -> str:
    return _ENCODER.encode(doc)


def plan_document(plan: Plan, host: str | None = None) -> dict[str, Any]:
    """The plan's JSON object, saying which host made it with which dockergc (the fleet
    report's rows); ``Plan.from_dict`` ignores both."""
    doc = plan.to_dict()
    head = {"version": doc.pop("version"), "host": host or socket.gethostname()}
    return {**head, "dockergc_version": __version__, **doc}


class JsonRenderer:
    name = "json"

    def __init__(self, host: str | None = None) -> None:
        self.host = host

    def render(self, plan: Plan) -> str:
        return dumps(plan_document(plan, self.host))

    def chunks(self, plan: Plan) -> Iterator[str]:
        """The same text in pieces, for writing a plan of many thousand actions without
        holding the whole string."""
        yield from _ENCODER.iterencode(plan_document(plan, self.host))
        yield "\n"
