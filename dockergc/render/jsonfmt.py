"""The plan as one JSON object: the contract ``apply`` and monitoring read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from dockergc.plan import Plan

# ensure_ascii keeps odd file names (invalid UTF-8 as surrogates) representable.
_ENCODER = json.JSONEncoder(indent=2, sort_keys=False, ensure_ascii=True)


def dumps(doc: Any) -> str:
    return _ENCODER.encode(doc)


class JsonRenderer:
    name = "json"

    def render(self, plan: Plan) -> str:
        return dumps(plan.to_dict())

    def chunks(self, plan: Plan) -> Iterator[str]:
        """The same text in pieces, for writing a plan of many thousand actions without
        holding the whole string."""
        yield from _ENCODER.iterencode(plan.to_dict())
        yield "\n"
