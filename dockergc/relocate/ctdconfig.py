"""containerd's config.toml as relocation sees it: the switched content, a pure function of
the original bytes and the new root, written like daemon.json (``daemonjson.write_atomic``).

Python reads TOML but does not write it, and an operator's config.toml carries comments,
ordering and plugin tables that a re-serialisation would lose. So only the top-level
``root = "…"`` line is rewritten (or one is added before the first table when the file
relies on the default root), and the result is checked by parsing both: the new document
must equal the old one with ``root`` set to the new root and nothing else changed.
"""

from __future__ import annotations

import glob
import json
import os
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


def roots_in_imports(config: str, data: bytes | None, most: int = 64) -> list[tuple[str, str]]:
    """(file, root) for every file ``config`` imports, directly or through another import,
    that sets ``root``: containerd merges imports over the main file, so such a root wins
    and a switch of the main file's line would not take.

    Paths resolve as containerd's ``resolveImports`` does (relative to the importing
    file's directory, ``*`` globbed); a missing file sets nothing. An import that cannot be
    read or parsed raises ConfigError: what it sets is unknown."""
    found: list[tuple[str, str]] = []
    seen = {os.path.realpath(config)}
    pending = [(config, data)]
    while pending:
        parent, body = pending.pop(0)
        imports = parse(body).get("imports", []) if body is not None else []
        if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
            raise ConfigError(f"{parent}: 'imports' is not a list of paths")
        for path in _resolve(parent, imports):
            if os.path.realpath(path) in seen:
                continue
            seen.add(os.path.realpath(path))
            if len(seen) > most:
                raise ConfigError(f"{config}: more than {most} imported files")
            try:
                with open(path, "rb") as f:
                    imported = f.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ConfigError(f"cannot read {path} (imported): {exc.strerror}") from exc
            try:
                root = parse(imported).get("root")
            except ConfigError as exc:
                raise ConfigError(f"{path} (imported): {exc}") from exc
            if isinstance(root, str) and root:
                found.append((path, root))
            pending.append((path, imported))
    return found


def _resolve(parent: str, imports: list[str]) -> list[str]:
    out: list[str] = []
    for path in imports:
        path = os.path.normpath(path)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(parent), path)
        out.extend(sorted(glob.glob(path)) if "*" in path else [path])
    return out
