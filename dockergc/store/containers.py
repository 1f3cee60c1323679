"""Read containers/<id>/config.v2.json into records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dockergc.store.findings import Finding
from dockergc.store.fsread import (
    UnreadableFile,
    lexists_at,
    open_dir_at,
    open_dir_in,
    parse_json,
    read_text,
    scan_fd,
)
from dockergc.store.ids import is_hex64


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    image: str | None
    driver: str | None
    running: bool
    id_matches: bool = True  # config's ID is the dir name and State an object
    # State.Dead or State.RemovalInProgress: a removal began (a daemon stopped mid-way
    # through `rm`, or through a --rm container's removal as it shut down)
    removing: bool = False


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
        removing=isinstance(state, dict)
        and (state.get("Dead") is True or state.get("RemovalInProgress") is True),
    )


def _read_config(cfd: int, cid: str) -> str:
    """containers/<cid>/config.v2.json, through the containers dir's fd: a container dir
    that is a symlink is refused (``where`` names it), never read through."""
    dfd = open_dir_at(cfd, cid, f"containers/{cid}")
    try:
        return read_text("config.v2.json", dir_fd=dfd)
    finally:
        os.close(dfd)


def read_containers(root: Path) -> ContainerStore:
    findings: list[Finding] = []
    containers: list[ContainerRecord] = []
    unreadable: list[str] = []
    try:
        cfd = open_dir_in(root, "containers")
    except UnreadableFile as exc:
        if exc.kind == "missing":
            return ContainerStore((), (), ())
        where = exc.where or "containers"
        return ContainerStore((), ("*",), (Finding(where, exc.kind, f"dir {exc}"),))
    try:
        entries = scan_fd(cfd)
    except UnreadableFile as exc:
        os.close(cfd)
        return ContainerStore((), ("*",), (Finding("containers", exc.kind, f"dir {exc}"),))
    try:
        for entry in entries:
            _read_one(cfd, entry.name, containers, unreadable, findings)
    finally:
        os.close(cfd)
    return ContainerStore(tuple(containers), tuple(unreadable), tuple(findings))


def _read_one(
    cfd: int,
    name: str,
    containers: list[ContainerRecord],
    unreadable: list[str],
    findings: list[Finding],
) -> None:
    rel = Path("containers") / name
    if not is_hex64(name):
        findings.append(Finding(str(rel), "unknown-entry", "not a container id; kept"))
        return
    try:
        record = _parse(name, _read_config(cfd, name))
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
        if exc.kind == "missing" and not lexists_at(name, cfd):
            # Removed since listed; a container is no root of the graph (its mount
            # record is), so this is as if containers/ were listed a moment later.
            findings.append(Finding(str(rel), "vanished", "container vanished while read"))
            return
        unreadable.append(name)
        where = exc.where or str(rel / "config.v2.json")
        findings.append(Finding(where, exc.kind, f"container {exc}"))
    except ValueError as exc:
        unreadable.append(name)
        findings.append(
            Finding(str(rel / "config.v2.json"), "bad-json", f"container config unusable: {exc}")
        )
