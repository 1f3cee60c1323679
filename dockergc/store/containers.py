"""Read containers/<id>/config.v2.json into records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import UnreadableFile, list_dir, parse_json, read_text
from dockergc.store.ids import is_hex64


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    image: str | None
    driver: str | None
    running: bool
    id_matches: bool = True  # config's ID is the dir name and State an object


@dataclass(frozen=True)
class ContainerStore:
    containers: tuple[ContainerRecord, ...]
    unreadable: tuple[str, ...]  # container dirs whose config we could not read
    findings: tuple[Finding, ...]


def _parse(cid: str, text: str) -> ContainerRecord:
    doc = parse_json(text)
    if not isinstance(doc, dict):
        raise ValueError("config is not a JSON object")
    state = doc.get("State") if isinstance(doc.get("State"), dict) else {}
    image = doc.get("Image")
    driver = doc.get("Driver")
    name = doc.get("Name")
    return ContainerRecord(
        id_matches=doc.get("ID") == cid and isinstance(doc.get("State"), dict),
        id=cid,
        name=name.lstrip("/") if isinstance(name, str) else "",
        image=image if isinstance(image, str) else None,
        driver=driver if isinstance(driver, str) else None,
        running=bool(state.get("Running")) if isinstance(state, dict) else False,
    )


def read_containers(root: Path) -> ContainerStore:
    findings: list[Finding] = []
    containers: list[ContainerRecord] = []
    unreadable: list[str] = []
    try:
        entries = list_dir(root / "containers")
    except UnreadableFile as exc:
        return ContainerStore((), ("*",), (Finding("containers", exc.kind, f"dir {exc}"),))
    for entry in entries:
        rel = Path("containers") / entry.name
        if not is_hex64(entry.name):
            findings.append(Finding(str(rel), "unknown-entry", "not a container id; kept"))
            continue
        try:
            record = _parse(entry.name, read_text(root / rel / "config.v2.json"))
            containers.append(record)
            if not record.id_matches:
                findings.append(
                    Finding(
                        str(rel / "config.v2.json"),
                        "bad-format",
                        "config's ID or State does not fit this container",
                    )
                )
        except UnreadableFile as exc:
            if exc.kind == "missing" and not os.path.lexists(root / rel):
                # Removed since listed; a container is no root of the graph (its mount
                # record is), so this is as if containers/ were listed a moment later.
                findings.append(Finding(str(rel), "vanished", "container vanished while read"))
                continue
            unreadable.append(entry.name)
            findings.append(Finding(str(rel / "config.v2.json"), exc.kind, f"container {exc}"))
        except ValueError as exc:
            unreadable.append(entry.name)
            findings.append(
                Finding(
                    str(rel / "config.v2.json"), "bad-json", f"container config unusable: {exc}"
                )
            )
    return ContainerStore(tuple(containers), tuple(unreadable), tuple(findings))
