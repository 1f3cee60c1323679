"""Carry out a prune plan through the daemon, journaled, re-checking each item first.

The only module of the prune family that asks the daemon to delete anything. Every
item is re-checked right before its request (a container started since the plan, an
image a container now uses or that gained a tag, is kept); the daemon's refusals
(409 conflicts: in use, has children) are recorded per item and the run goes on.
An image with several tags is untagged one tag at a time; if the final delete is
refused, the tags taken off are put back (each untag's reverse), so a failed item
never leaves an image with fewer names. Deletions themselves have no inverse: that is
what the dry run is for. What the daemon freed is its own accounting (system df)
before and after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockergc.execute.journal import Journal, new_run_id
from dockergc.lock import STATE_DIR
from dockergc.prune.facts import daemon_usage, parse_time
from dockergc.prune.plan import REMOVABLE_STATES, PruneItem, PrunePlan

PRUNES = f"{STATE_DIR}/prunes"


@dataclass(frozen=True)
class TagOp:
    image: str
    ref: str

    def reverse(self) -> UntagOp:
        return UntagOp(self.image, self.ref)

    def apply(self, client: Any) -> None:
        repo, _, tag = self.ref.rpartition(":")
        client.tag(self.image, repo, tag)


@dataclass(frozen=True)
class UntagOp:
    image: str
    ref: str

    def reverse(self) -> TagOp:
        return TagOp(self.image, self.ref)

    def apply(self, client: Any) -> None:
        client.remove_image(self.ref, force=False, noprune=True)


@dataclass
class Outcome:
    item: PruneItem
    status: str  # removed, kept (re-check), conflict (daemon refused), gone, error
    detail: str = ""
    reclaimed: int | None = None  # what the daemon said it reclaimed (build cache only)


@dataclass
class PruneResult:
    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    planned_bytes: int = 0
    freed_bytes: int = 0  # the daemon's own accounting, before minus after

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "planned_bytes": self.planned_bytes,
            "freed_bytes": self.freed_bytes,
            "outcomes": [
                {**o.item.as_dict(), "status": o.status, "detail": o.detail} for o in self.outcomes
            ],
        }


def _status_of(exc: Exception) -> int:
    return int(getattr(exc, "status_code", 0) or 0)


def recheck(client: Any, item: PruneItem, planned_at: float) -> str | None:
    """None if ``item`` may go now; else why it stays."""
    if item.kind == "container":
        doc = client.inspect_container(item.id)
        state = doc.get("State") or {}
        if state.get("Status") not in REMOVABLE_STATES:
            return f"is {state.get('Status')} now"
        started = parse_time(state.get("StartedAt"))
        if started and started > planned_at:
            return "was started after the plan was made"
    elif item.kind == "image":
        doc = client.inspect_image(item.id)
        tags = sorted(t for t in doc.get("RepoTags") or [] if t != "<none>:<none>")
        planned = sorted(n for n in item.names if ":" in n)
        if tags != planned:
            return f"its tags changed since the plan ({', '.join(tags) or 'none'})"
        users = client.containers(all=True, filters={"ancestor": item.id})
        if users:
            return f"container {users[0]['Names'][0].lstrip('/')} uses it now"
    return None


def _remove_image(client: Any, item: PruneItem, journal: Journal) -> None:
    tags = [n for n in item.names if ":" in n]
    taken: list[UntagOp] = []
    try:
        for ref in tags[:-1]:
            op = UntagOp(item.id, ref)
            journal.append({"type": "untag", "id": item.id, "ref": ref})
            op.apply(client)
            taken.append(op)
        # The last name (or the id of an untagged image) deletes it; noprune: exactly the
        # planned images go, parents being items of their own.
        client.remove_image(tags[-1] if tags else item.id, force=False, noprune=True)
    except Exception:
        for op in reversed(taken):
            back = op.reverse()
            journal.append({"type": "retag", "id": item.id, "ref": back.ref})
            back.apply(client)
        raise


def _remove(client: Any, item: PruneItem, journal: Journal) -> int | None:
    if item.kind == "container":
        client.remove_container(item.id, v=False, force=False)
    elif item.kind == "image":
        _remove_image(client, item, journal)
    else:
        result = client.prune_builds(filters={"id": item.id}, all=True)
        return int((result or {}).get("SpaceReclaimed") or 0)
    return None


Progress = Callable[[str], None]


def run_prune(
    client: Any, root: Path, plan: PrunePlan, progress: Progress = lambda _: None
) -> PruneResult:
    import docker.errors

    run_id = new_run_id()
    journal = Journal(root, run_id, base=PRUNES)
    journal.dir.mkdir(parents=True, exist_ok=True)
    result = PruneResult(run_id, planned_bytes=plan.bytes)
    before = daemon_usage(client.df())
    journal.append(
        {
            "type": "begin",
            "items": len(plan.items),
            "planned_bytes": plan.bytes,
            "daemon_used_before": before,
        }
    )
    for n, item in enumerate(plan.items, 1):
        label = f"[{n}/{len(plan.items)}] {item.kind} {item.names[0] if item.names else item.id}"
        try:
            why = recheck(client, item, plan.created)
            if why:
                outcome = Outcome(item, "kept", why)
            else:
                journal.append({"type": "intent", "seq": n, **item.as_dict()})
                reclaimed = _remove(client, item, journal)
                outcome = Outcome(item, "removed", reclaimed=reclaimed)
        except docker.errors.NotFound:
            outcome = Outcome(item, "gone", "no longer exists")
        except docker.errors.APIError as exc:
            status = "conflict" if _status_of(exc) == 409 else "error"
            outcome = Outcome(item, status, str(exc.explanation or exc).strip()[:300])
        journal.append(
            {
                "type": "done",
                "seq": n,
                "id": item.id,
                "status": outcome.status,
                "detail": outcome.detail,
            }
        )
        result.outcomes.append(outcome)
        progress(f"{label}: {outcome.status}{': ' + outcome.detail if outcome.detail else ''}")
    after = daemon_usage(client.df())
    result.freed_bytes = before - after
    journal.append(
        {
            "type": "end",
            "freed_bytes": result.freed_bytes,
            "daemon_used_after": after,
            "t_end": time.time(),
        }
    )
    return result
