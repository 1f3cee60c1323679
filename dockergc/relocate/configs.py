"""The operator's config files a relocation switches, by kind: one set of steps
(BackupConfig, SwitchConfig, RestoreConfig) backs up, switches and restores each, judged by
sha256 against the journal's record of the original. A kind only says how the switched
bytes are made from the original ones; reading, hashing and atomic writes are
``daemonjson``'s for every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dockergc.errors import UsageError
from dockergc.relocate import ctdconfig, daemonjson
from dockergc.relocate.steps import CONTAINERD_TOML, DAEMON_JSON


@dataclass(frozen=True)
class Kind:
    name: str
    key: str  # what the switch sets, for messages
    switched: Callable[[bytes | None, str], bytes]  # (original or None, new root) -> bytes


KINDS = {
    DAEMON_JSON: Kind(DAEMON_JSON, "data-root", daemonjson.switched),
    CONTAINERD_TOML: Kind(CONTAINERD_TOML, "root", ctdconfig.switched),
}


def kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(
            f"config kind {name!r} in the journal is not one this dockergc knows; finish the "
            "run with the dockergc version that started it"
        ) from None


def switched(name: str, original: bytes | None, new_root: str) -> bytes:
    """The config of kind ``name`` naming ``new_root``: a pure function of the original."""
    return kind(name).switched(original, new_root)
