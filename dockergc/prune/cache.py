"""Which build-cache records a prune removes (pure).

BuildKit deletes a record only once no other record is built on it: asked to prune a
parent whose child stays, the daemon keeps it and says so only by leaving it out of
CachesDeleted (dockerd 20.10 kept the base image's 0-byte, shared "from local" record
this way while an older prune run reported it removed). So a record is planned only
when every record built on it goes too, and records go children first.
"""

from __future__ import annotations

from dockergc.prune.ctdgraph import Ledger
from dockergc.prune.facts import CacheRecord, EngineFacts


def cache_name(record: CacheRecord) -> str:
    return record.description.strip() or record.kind or record.id


def last_used(record: CacheRecord) -> float:
    return record.last_used or record.created


class CacheSet:
    def __init__(self, facts: EngineFacts, ledger: Ledger | None = None) -> None:
        """``ledger``: the containerd store's references; a record's bytes are then what
        releasing its leases frees (its snapshot, and blobs no image holds)."""
        self.ledger = ledger
        self.bytes: dict[str, int] = {}  # with a ledger: what each removed record frees
        self.by_id = {r.id: r for r in facts.cache}
        self.children: dict[str, set[str]] = {}
        for record in facts.cache:
            for parent in record.parents:
                self.children.setdefault(parent, set()).add(record.id)
        self.removed: dict[str, str] = {}  # id -> rule, in the order chosen

    def frees(self, record: CacheRecord) -> int:
        """Bytes pruning it frees: a shared record's data is an image layer's too."""
        if self.ledger is not None:
            return self.bytes.get(record.id, 0)
        return 0 if record.shared else record.size

    @property
    def freed(self) -> int:
        return sum(self.frees(self.by_id[r]) for r in self.removed)

    def _take(self, record_id: str, rule: str) -> int:
        self.removed[record_id] = rule
        if self.ledger is not None:
            self.bytes[record_id] = self.ledger.release_item("build-cache", record_id)
        return self.frees(self.by_id[record_id])

    def staying_children(self, record_id: str, going: set[str]) -> set[str]:
        return self.children.get(record_id, set()) - going

    def select_older_than(self, limit: float, now: float, rule: str) -> list[tuple[str, str]]:
        """Choose the records unused for ``limit`` seconds whose children all go too;
        (id, why) for each one a staying child keeps."""
        going = {r.id for r in self.by_id.values() if not r.in_use and now - last_used(r) >= limit}
        kept: dict[str, str] = {}
        changed = True
        while changed:  # dropping a record can keep its parents in turn
            changed = False
            for rid in sorted(going):
                staying = self.staying_children(rid, going)
                if staying:
                    going.discard(rid)
                    kept[rid] = f"{len(staying)} build-cache record(s) built on it stay"
                    changed = True
        for record in sorted(self.by_id.values(), key=last_used):
            if record.id in going:
                self._take(record.id, rule)
        return sorted(kept.items())

    def evict(self, record_id: str, rule: str) -> int | None:
        """Remove one unused, unshared record under disk pressure, and the parents that
        leaves childless and that could go too; the bytes freed, or None if it stays."""
        if not self._evictable(record_id):
            return None
        freed, pending = 0, [record_id]
        while pending:  # a worklist, not recursion: BuildKit chains can be long
            rid = pending.pop()
            if not self._evictable(rid):
                continue
            freed += self._take(rid, rule)
            pending.extend(p for p in self.by_id[rid].parents if p in self.by_id)
        return freed

    def _evictable(self, record_id: str) -> bool:
        record = self.by_id[record_id]
        # Shared: on overlay2 its data is an image layer's, it frees nothing; with a
        # ledger it may free its own snapshot, and goes like any other record.
        return not (
            record_id in self.removed
            or record.in_use
            or (record.shared and self.ledger is None)
            or self.staying_children(record_id, set(self.removed))
        )

    def depths(self) -> dict[str, int]:
        """Each record's distance from its chain's base (the longest, with merges)."""
        memo: dict[str, int] = {}
        for start in self.by_id:
            stack = [start]
            while stack:
                rid = stack[-1]
                if rid in memo:
                    stack.pop()
                    continue
                parents = [p for p in self.by_id[rid].parents if p in self.by_id]
                todo = [p for p in parents if p not in memo and p not in stack]  # no cycles
                if todo:
                    stack.extend(todo)
                    continue
                memo[rid] = 1 + max((memo.get(p, -1) for p in parents), default=-1)
                stack.pop()
        return memo

    def children_first(self) -> list[tuple[CacheRecord, str]]:
        depth = self.depths()
        ordered = sorted(self.removed, key=lambda rid: -depth[rid])
        return [(self.by_id[rid], self.removed[rid]) for rid in ordered]
