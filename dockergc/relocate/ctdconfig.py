"""containerd's config.toml as relocation sees it: the switched content, a pure function of
the original bytes and the new root, written like daemon.json (``daemonjson.write_atomic``).

Python reads TOML but does not write it, and an operator's config.toml carries comments,
ordering and plugin tables that a re-serialisation would lose. So only the top-level
``root = "…"`` line is rewritten (or one is added before the first table when the file
relies on the default root), and the result is checked by parsing both: the new document
must equal the old one with ``root`` set to the new root and nothing else changed.
"""

from __future__ import annotations

import json
import re
import tomllib

# A top-level key line: `root = "..."` or `root = '...'`, with optional spaces and comment.
_ROOT_LINE = re.compile(
    r"^(?P<lead>[ \t]*root[ \t]*=[ \t]*)"
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
    r"(?P<tail>[ \t]*(?:#.*)?)$"
)
_TABLE = re.compile(r"^[ \t]*\[")


class ConfigError(ValueError):
    """The config cannot be switched safely (unparsable, or an unusual shape)."""


def parse(data: bytes) -> dict[str, object]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc


def root_of(data: bytes | None, default: str = "/var/lib/containerd") -> str:
    """The root the config names (the default when it names none or there is no file)."""
    if data is None:
        return default
    root = parse(data).get("root")
    return root if isinstance(root, str) and root else default


def switched(original: bytes | None, new_root: str) -> bytes:
    """The config that names ``new_root`` as containerd's root, every other byte kept."""
    quoted = json.dumps(new_root)  # a TOML basic string is a JSON string for these chars
    if any(ord(c) < 0x20 for c in new_root):
        raise ConfigError(f"root {new_root!r} has control characters")
    if original is None:
        return f"root = {quoted}\n".encode()
    before = parse(original)
    lines = original.decode("utf-8").splitlines(keepends=True)
    out: list[str] = []
    done = False
    in_table = False
    for line in lines:
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if _TABLE.match(body):
            if not done:  # the file relies on the default root: name it before any table
                out.append(f"root = {quoted}\n")
                done = True
            in_table = True
        match = _ROOT_LINE.match(body) if not in_table else None
        if match and not done:
            out.append(f"{match['lead']}{quoted}{match['tail']}{ending}")
            done = True
            continue
        out.append(line)
    if not done:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(f"root = {quoted}\n")
    data = "".join(out).encode("utf-8")
    after = parse(data)
    expected = {**before, "root": new_root}
    if after != expected:
        raise ConfigError(
            "the switched config would differ in more than 'root' (an unusual layout, "
            "e.g. a multi-line root value): edit 'root' by hand"
        )
    return data
