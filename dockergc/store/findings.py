"""Findings: what a reader saw that it could not trust. Always reported, always kept."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Finding:
    """Something malformed or unexpected under the root; its path is never deleted."""

    path: str  # relative to the data root
    kind: str  # short machine-readable tag, e.g. "bad-json", "unknown-dir"
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "reason": self.message}
