"""The run journal: append-only JSON lines, each fsync'd before the change it announces.

Layout: ``<root>/.dockergc/runs/<run_id>/{journal.jsonl, plan.json, q/}``. The journal
and the quarantine live under the root, on its filesystem, so every delete is an
atomic rename and every rollback a rename back. ``replay`` turns records into the
run's state; it is pure, so crash recovery can be tested record by record.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockergc.errors import RefusedError, UsageError
from dockergc.execute.ops import Change, change_from_dict
from dockergc.lock import STATE_DIR

RUNS = f"{STATE_DIR}/runs"


def refuse_unsafe_state(root: Path) -> None:
    """Refuse (exit 3) when ``.dockergc`` or ``.dockergc/runs`` is a symlink or not a
    directory: journals read or written through it could be anyone's."""
    for rel in (STATE_DIR, RUNS):
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise RefusedError(f"{root / rel} is {what}; refusing to use it")


def new_run_id(now: float | None = None) -> str:
    """Sortable by time to the millisecond, unique by a random suffix."""
    t = now or time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(t * 1000) % 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


def run_dir_rel(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


def quarantine_rel(run_id: str, seq: int) -> str:
    return f"{RUNS}/{run_id}/q/{seq:06d}"


class Journal:
    def __init__(self, root: Path, run_id: str, base: str = RUNS) -> None:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise UsageError(f"{run_id!r} is not a run id")
        refuse_unsafe_state(root)
        self.root = root
        self.run_id = run_id
        self.dir = root / base / run_id
        self.path = self.dir / "journal.jsonl"

    def exists(self) -> bool:
        return self.path.is_file() and not self.path.is_symlink()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it: after this returns, it survives a crash."""
        line = json.dumps({"t": round(time.time(), 3), **record}, ensure_ascii=True) + "\n"
        new = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            size = os.fstat(fd).st_size
            # A line torn by a power loss must not swallow this record too: readers drop
            # a line that does not parse, so start on a line of our own.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # make the new file's directory entry durable too
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (a crash mid-write) is ignored."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise UsageError(f"no run {self.run_id} under {self.root}") from exc
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


@dataclass
class Step:
    seq: int
    action_id: str
    kind: str
    path: str
    bytes: int
    op: Change  # a move, or a group of moves that stand or fall together
    # intent | moved | partly-moved (a group a failure split: some parts in quarantine) |
    # not-moved | lost | restored | purged | restore-skipped
    status: str
    reason: str = ""
    freed: int | None = None  # a record op's bytes really freed (deleted through the store)


@dataclass
class RunView:
    run_id: str
    root: str
    created: float
    mode: str
    state: str  # running|interrupted|applied|rolled-back|partially-rolled-back|purged
    steps: list[Step] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    ended: float | None = None
    purged_bytes: int = 0
    total: int = 0  # actions in the plan
    signal: str | None = None  # what interrupted it, if something did

    @property
    def in_doubt(self) -> list[Step]:
        return [s for s in self.steps if s.status == "intent"]

    @property
    def quarantined(self) -> list[Step]:
        return [s for s in self.steps if s.status in ("moved", "partly-moved", "restore-skipped")]

    @property
    def deleted(self) -> list[Step]:
        """Steps carried out through the store's own client (irreversible)."""
        return [s for s in self.steps if s.status == "deleted"]

    @property
    def freed_bytes(self) -> int:
        """What the deleted steps really freed, as measured after each."""
        return sum(s.freed or 0 for s in self.deleted)

    @property
    def bytes(self) -> int:
        return self.freed_bytes + sum(
            s.bytes for s in self.steps if s.status in ("moved", "restore-skipped", "purged")
        )


def replay(run_id: str, records: list[dict[str, Any]]) -> RunView:
    """Rebuild a run's state from its journal records (pure)."""
    begin = next((r for r in records if r.get("type") == "begin"), {})
    view = RunView(
        run_id,
        str(begin.get("root", "")),
        float(begin.get("t", 0)),
        str(begin.get("mode", "offline")),
        "running",
        total=int(begin.get("actions", 0)),
    )
    steps: dict[int, Step] = {}
    for r in records:
        kind = r.get("type")
        seq = int(r.get("seq", -1))
        if kind == "intent":
            steps[seq] = Step(
                seq,
                r["action_id"],
                r["kind"],
                r["path"],
                int(r["bytes"]),
                change_from_dict(r["op"]),
                "intent",
            )
        elif kind == "done" and seq in steps:
            steps[seq].status = r.get("outcome", "moved")
            steps[seq].reason = r.get("reason", "")
            if isinstance(r.get("freed"), int):
                steps[seq].freed = r["freed"]
        elif kind == "skip":
            view.skipped.append(
                {k: r[k] for k in ("action_id", "kind", "path", "reason") if k in r}
            )
        elif kind == "undo-done" and seq in steps:
            steps[seq].status = "restored"
        elif kind == "undo-skip" and seq in steps:
            steps[seq].status = "restore-skipped"
            steps[seq].reason = r.get("reason", "")
        elif kind == "purge-done" and seq in steps:
            steps[seq].status = "purged"
            view.purged_bytes += int(r.get("freed", 0))
        elif kind in ("end", "rollback-end", "purge-end"):
            view.state = str(r.get("state", view.state))
            view.ended = float(r.get("t", 0))
            view.signal = r.get("signal")
    view.steps = [steps[k] for k in sorted(steps)]
    if (
        view.state in ("applied", "rolled-back", "partially-rolled-back")
        and view.steps
        and all(s.status in ("purged", "restored") for s in view.steps)
        and any(s.status == "purged" for s in view.steps)
    ):
        view.state = "purged"
    return view


def list_runs(root: Path) -> list[str]:
    refuse_unsafe_state(root)
    base = root / RUNS
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "journal.jsonl").is_file())


def load(root: Path, run_id: str) -> RunView:
    return replay(run_id, Journal(root, run_id).records())
