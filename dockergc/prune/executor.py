"""Carry out a prune plan through the daemon, journaled, re-checking each item first.

The only module of the prune family that asks the daemon to delete anything. Every
item is re-checked right before its request (a container started since the plan, an
image a container now uses or that gained a tag, a volume a container now mounts, is
kept); the daemon's refusals (409 conflicts: in use, has children) are recorded per
item and the run goes on. One re-check and one removal per kind, found through a
registry. An image with several tags is untagged one tag at a time; if the final
delete is refused, the tags taken off are put back (each untag's reverse), so a failed
item never leaves an image with fewer names. Deletions themselves have no inverse:
that is what the dry run is for. What is reported is what the daemon did: for build
cache its prune reply (a record missing from CachesDeleted was kept, whatever was
asked), for everything else its own accounting (system df) before and after.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockergc.execute.journal import Journal, new_run_id
from dockergc.lock import STATE_DIR
from dockergc.prune.ctdread import disk_bytes, settled_disk_bytes
from dockergc.prune.facts import LOCAL_DRIVER, daemon_usage, parse_time
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
    status: str  # removed, kept (re-check, or the daemon kept it), conflict (refused), gone, error
    detail: str = ""
    reclaimed: int | None = None  # what the daemon said it reclaimed (build cache only)


@dataclass
class PruneResult:
    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    planned_bytes: int = 0  # what the plan said the daemon's accounting would drop
    freed_bytes: int = 0  # the daemon's own accounting, before minus after
    # Volumes apart: system df adds up apparent sizes and walks every volume to do it,
    # so theirs are our measure (allocated bytes) of the ones planned and removed.
    planned_volume_bytes: int = 0
    volume_bytes: int = 0
    # What freed_bytes is: the daemon's accounting, or (containerd image store) the disk.
    measured_by: str = "daemon"

    @property
    def freed_source(self) -> str:
        if self.measured_by == "disk":
            return "measured on disk (containerd's content and snapshots, containers/)"
        return "the daemon's accounting"

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "planned_bytes": self.planned_bytes,
            "freed_bytes": self.freed_bytes,
            "planned_volume_bytes": self.planned_volume_bytes,
            "volume_bytes": self.volume_bytes,
            **({"freed_measured_by": "disk"} if self.measured_by == "disk" else {}),
            "outcomes": [
                {
                    **o.item.as_dict(),
                    "status": o.status,
                    "detail": o.detail,
                    **({"reclaimed": o.reclaimed} if o.reclaimed is not None else {}),
                }
                for o in self.outcomes
            ],
        }


@dataclass(frozen=True)
class RunContext:
    journal: Journal
    cache_ids: frozenset[str]  # build-cache records the daemon had when the run began


@dataclass(frozen=True)
class Done:
    """What the daemon did with one item."""

    status: str = "removed"
    detail: str = ""
    reclaimed: int | None = None


Recheck = Callable[[Any, PruneItem, float], "str | None"]
Remover = Callable[[Any, PruneItem, RunContext], Done]
RECHECKS: dict[str, Recheck] = {}
REMOVERS: dict[str, Remover] = {}


def recheck_for(kind: str) -> Callable[[Recheck], Recheck]:
    def register(fn: Recheck) -> Recheck:
        RECHECKS[kind] = fn
        return fn

    return register


def remover_for(kind: str) -> Callable[[Remover], Remover]:
    def register(fn: Remover) -> Remover:
        REMOVERS[kind] = fn
        return fn

    return register


def _status_of(exc: Exception) -> int:
    return int(getattr(exc, "status_code", 0) or 0)


def recheck(client: Any, item: PruneItem, planned_at: float) -> str | None:
    """None if ``item`` may go now; else why it stays."""
    check = RECHECKS.get(item.kind)
    return check(client, item, planned_at) if check else None


@recheck_for("container")
def _recheck_container(client: Any, item: PruneItem, planned_at: float) -> str | None:
    doc = client.inspect_container(item.id)
    state = doc.get("State") or {}
    if state.get("Status") not in REMOVABLE_STATES:
        return f"is {state.get('Status')} now"
    started = parse_time(state.get("StartedAt"))
    if started and started > planned_at:
        return "was started after the plan was made"
    return None


@recheck_for("image")
def _recheck_image(client: Any, item: PruneItem, planned_at: float) -> str | None:
    doc = client.inspect_image(item.id)
    tags = sorted(t for t in doc.get("RepoTags") or [] if t != "<none>:<none>")
    planned = sorted(n for n in item.names if ":" in n)
    if tags != planned:
        return f"its tags changed since the plan ({', '.join(tags) or 'none'})"
    users = client.containers(all=True, filters={"ancestor": item.id})
    if users:
        return f"container {users[0]['Names'][0].lstrip('/')} uses it now"
    return None


@recheck_for("volume")
def _recheck_volume(client: Any, item: PruneItem, planned_at: float) -> str | None:
    doc = client.inspect_volume(item.id)  # NotFound: reported as gone
    if doc.get("Driver") != LOCAL_DRIVER or doc.get("Options"):
        return f"its driver or options changed since the plan ({doc.get('Driver')})"
    created = parse_time(doc.get("CreatedAt"))
    if created and created > planned_at:
        return "was created after the plan was made (same name, another volume)"
    users = client.containers(all=True, filters={"volume": item.id})
    for user in users:
        if any(m.get("Name") == item.id for m in user.get("Mounts") or []):
            return f"container {user['Names'][0].lstrip('/')} uses it now"
    # The daemon's own reference count, asked again: what DELETE will hold it to.
    listed = client.volumes(filters={"dangling": True, "name": item.id}) or {}
    if item.id not in {v.get("Name") for v in listed.get("Volumes") or []}:
        return "the daemon holds a reference to it now"
    return None


@remover_for("container")
def _remove_container(client: Any, item: PruneItem, run: RunContext) -> Done:
    client.remove_container(item.id, v=False, force=False)
    return Done()


@remover_for("image")
def _remove_image(client: Any, item: PruneItem, run: RunContext) -> Done:
    tags = [n for n in item.names if ":" in n]
    taken: list[UntagOp] = []
    try:
        for ref in tags[:-1]:
            op = UntagOp(item.id, ref)
            run.journal.append({"type": "untag", "id": item.id, "ref": ref})
            op.apply(client)
            taken.append(op)
        # The last name (or the id of an untagged image) deletes it; noprune: exactly the
        # planned images go, parents being items of their own.
        client.remove_image(tags[-1] if tags else item.id, force=False, noprune=True)
    except Exception:
        for op in reversed(taken):
            back = op.reverse()
            run.journal.append({"type": "retag", "id": item.id, "ref": back.ref})
            back.apply(client)
        raise
    return Done()


# BuildKit record ids are 25 lowercase base-36 characters.
CACHE_ID = re.compile(r"[a-z0-9]+")
DAEMON_KEPT = "daemon kept it (shared/in use)"


@remover_for("build-cache")
def _remove_cache(client: Any, item: PruneItem, run: RunContext) -> Done:
    if item.id not in run.cache_ids:
        return Done("gone", "no longer exists")
    if not CACHE_ID.fullmatch(item.id):
        return Done("error", f"{item.id!r} is not a BuildKit record id")
    # The daemon turns the id filter into BuildKit's "id~=VALUE", a regular expression
    # search (moby builder-next toBuildkitPruneInfo, 20.10 to 28.x): anchored, it can
    # match this record alone, never one whose id merely contains it.
    reply = client.prune_builds(filters={"id": f"^{item.id}$"}, all=True) or {}
    deleted = [str(d) for d in reply.get("CachesDeleted") or []]
    reclaimed = int(reply.get("SpaceReclaimed") or 0)
    if item.id not in deleted:
        # Asked for exactly this record, the daemon leaves out of CachesDeleted one it
        # would not delete: in use, or a base other records are still built on.
        return Done("kept", DAEMON_KEPT, 0)
    others = [d for d in deleted if d != item.id]
    return Done(
        "removed", f"the daemon also deleted {', '.join(others)}" if others else "", reclaimed
    )


@remover_for("volume")
def _remove_volume(client: Any, item: PruneItem, run: RunContext) -> Done:
    client.remove_volume(item.id, force=False)  # never force: in use must stay a 409
    return Done()


Progress = Callable[[str], None]


def run_prune(
    client: Any, root: Path, plan: PrunePlan, progress: Progress = lambda _: None
) -> PruneResult:
    import docker.errors

    run_id = new_run_id()
    journal = Journal(root, run_id, base=PRUNES)
    journal.dir.mkdir(parents=True, exist_ok=True)
    volumes = sum(i.bytes for i in plan.items if i.kind == "volume")
    result = PruneResult(run_id, planned_bytes=plan.bytes - volumes, planned_volume_bytes=volumes)
    df = client.df()
    before = daemon_usage(df)
    # On the containerd image store the daemon's LayersSize adds apparent blob sizes and
    # every snapshot's usage (containers' too, which SizeRw counts again) and image
    # deletes report nothing reclaimed: what was freed is measured on disk instead.
    ctd = (Path(plan.ctd_root), root) if plan.ctd_root else None
    if ctd:
        result.measured_by = "disk"
        disk_before = disk_bytes(*ctd)
    run = RunContext(journal, frozenset(str(r["ID"]) for r in df.get("BuildCache") or []))
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
                done = REMOVERS[item.kind](client, item, run)
                outcome = Outcome(item, done.status, done.detail, done.reclaimed)
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
                "reclaimed": outcome.reclaimed,
            }
        )
        result.outcomes.append(outcome)
        if item.kind == "volume" and outcome.status == "removed":
            result.volume_bytes += item.bytes
        progress(f"{label}: {outcome.status}{': ' + outcome.detail if outcome.detail else ''}")
    after = daemon_usage(client.df())
    result.freed_bytes = before - after
    if ctd:
        result.freed_bytes = disk_before - settled_disk_bytes(*ctd)
    journal.append(
        {
            "type": "end",
            "freed_bytes": result.freed_bytes,
            "volume_bytes": result.volume_bytes,
            "daemon_used_after": after,
            "t_end": time.time(),
        }
    )
    return result
