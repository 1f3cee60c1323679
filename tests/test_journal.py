"""The journal survives a torn last line: the next record is still read."""

from __future__ import annotations

from pathlib import Path

from dockergc.execute.journal import Journal


def test_a_record_after_a_torn_line_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "r1")
    journal.dir.mkdir(parents=True)
    journal.append({"type": "begin"})
    with open(journal.path, "a") as fh:  # power lost mid-write: no newline
        fh.write('{"type": "intent", "seq"')
    journal.append({"type": "end", "state": "applied"})
    assert [r["type"] for r in journal.records()] == ["begin", "end"]
