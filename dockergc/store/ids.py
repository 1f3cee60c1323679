"""Digest and id shapes Docker uses, and ChainID computation."""

from __future__ import annotations

import hashlib
import re

HEX64 = re.compile(r"[0-9a-f]{64}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_hex64(name: str) -> bool:
    return HEX64.fullmatch(name) is not None


def is_digest(value: str) -> bool:
    return DIGEST.fullmatch(value) is not None


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainIDs of a layer stack, as moby's layer.CreateChainID computes them.

    chain(0) = diff(0); chain(n) = "sha256:" + hex(sha256(chain(n-1) + " " + diff(n))).
    """
    chains: list[str] = []
    for diff in diff_ids:
        if not chains:
            chains.append(diff)
        else:
            text = f"{chains[-1]} {diff}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains
