"""The plan as one JSON object: the contract ``apply`` and monitoring read."""

from __future__ import annotations

import json
from typing import Any

from dockergc.plan import Plan


def dumps(doc: Any) -> str:
    # ensure_ascii keeps odd file names (invalid UTF-8 as surrogates) representable.
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=True)


class JsonRenderer:
    name = "json"

    def render(self, plan: Plan) -> str:
        return dumps(plan.to_dict())
