"""The prune executor's reading of the daemon's build-cache replies, on a client whose
answers are scripted (a subclass of the SDK's APIClient: no daemon needed). The real
daemon's behaviour is in test_engine_prune_volumes.py; these are the replies it gives
rarely: a record gone before the run, a prune that deleted more than asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker

from dockergc.prune.executor import DAEMON_KEPT, run_prune
from dockergc.prune.plan import PruneItem, PrunePlan


class ScriptedClient(docker.APIClient):  # type: ignore[misc]
    def __init__(self, records: list[str], replies: dict[str, dict[str, Any]]) -> None:
        super().__init__(base_url="unix:///nonexistent.sock", version="1.41")
        self.records = records
        self.replies = replies

    def df(self) -> dict[str, Any]:
        return {"LayersSize": 0, "BuildCache": [{"ID": r, "Size": 10} for r in self.records]}

    def prune_builds(self, filters: Any = None, keep_storage: Any = None, all: Any = None) -> Any:
        pattern = filters["id"]
        reply = self.replies[pattern]
        self.records = [r for r in self.records if r not in (reply.get("CachesDeleted") or [])]
        return reply


def item(rid: str) -> PruneItem:
    return PruneItem("build-cache", rid, (rid,), 60, 10, "build cache unused for over 0s")


def test_cache_outcomes_follow_the_daemons_reply(tmp_path: Path) -> None:
    client = ScriptedClient(
        ["aaa", "bbb", "aaa2"],
        {
            "^aaa$": {"CachesDeleted": ["aaa", "aaa2"], "SpaceReclaimed": 20},
            "^bbb$": {"CachesDeleted": None, "SpaceReclaimed": 0},
        },
    )
    plan = PrunePlan(0.0, str(tmp_path), (item("aaa"), item("bbb"), item("ccc")), (), 0, 0)
    result = run_prune(client, tmp_path, plan)
    got = {o.item.id: (o.status, o.detail, o.reclaimed) for o in result.outcomes}
    assert got == {
        "aaa": ("removed", "the daemon also deleted aaa2", 20),
        "bbb": ("kept", DAEMON_KEPT, 0),
        "ccc": ("gone", "no longer exists", None),  # not there when the run began
    }
    assert result.freed_bytes == 20  # the daemon's df before and after
    journal = (tmp_path / ".dockergc/prunes" / result.run_id / "journal.jsonl").read_text()
    assert '"status": "kept"' in journal and '"reclaimed": 20' in journal
