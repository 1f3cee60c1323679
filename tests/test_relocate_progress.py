"""The copy's progress: rsync's progress2 output parsed (never failing the copy), shown
on stderr (one line in place at a terminal, a line every 10 s elsewhere, none on --json's
stdout) and journaled as ``progress`` records that replay, resume and rollback skip."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dockergc.relocate import executor
from dockergc.relocate import progress as P
from dockergc.relocate import steps as S
from dockergc.relocate.executor import Context
from dockergc.relocate.impl import RSYNC
from dockergc.relocate.verify import compare
from tests.test_relocate_guards import CONFIG, _dockergc_cli, _fixture_root, fake_engine

__all__ = ["fake_engine"]  # the fixture, for the CLI test below

# What rsync 3.2.7 writes with --info=progress2 (each update begun with \r, the last
# ended with \n), with lines no rsync writes mixed in.
OUTPUT = (
    b"\r              0   0%    0.00kB/s    0:00:00  "
    b"\r      1,048,576  10%    1.00MB/s    0:00:09  "
    b"\rsome warning: not progress\n"
    b"\r     30,000,003  33%   40.64MB/s    0:00:00 (xfr#2, to-chk=2/7)"
    b"\r  1.234.567.890  42%   12,34MB/s   ??:??:??  "  # another locale's separators
    b"\r  5,000,000,000 250%    9.99GB/s    0:00:01  "  # no such percent: ignored
    b"\r     99 100%  not a rate"
    b"\r      2,000,000  20%    1.00MB/s    0:00:02 (xfer#1, to-check=1/3)\n"  # rsync 3.0
    b"\r\xff\xfe binary junk\r\r\n"
    b"\r     90,000,011 100%   40.77MB/s    0:00:02 (xfr#4, to-chk=0/7)\n"
)


def test_progress2_lines_are_parsed_and_everything_else_ignored() -> None:
    lines, rest = P.split_updates(b"", OUTPUT[:60])
    more, rest = P.split_updates(rest, OUTPUT[60:])
    assert rest == b""
    samples = [s for s in map(P.parse, lines + more) if s is not None]
    mb = 1024 * 1024
    assert samples == [
        P.Sample(0, 0, 0.0, None),  # rsync's 0:00:00 at rate 0 is no estimate
        P.Sample(1_048_576, 10, 1.0 * mb, 9),
        P.Sample(30_000_003, 33, 40.64 * mb, None),  # ends a file: the time is elapsed
        P.Sample(1_234_567_890, 42, 12.34 * mb, None),
        P.Sample(2_000_000, 20, 1.0 * mb, None),
        P.Sample(90_000_011, 100, 40.77 * mb, None),
    ]
    assert P.describe(samples[1]) == "copy: 1.0 MiB of 10.0 MiB (10%), 1.0 MiB/s, ETA 0:00:09"
    assert P.describe(samples[0]) == "copy: 0 B (0%), 0 B/s"
    assert P.describe(samples[-1]).startswith("copy: 85.8 MiB of 85.8 MiB (100%)")
    total = P.estimate_total(samples[2])
    assert total is not None and 30_000_003 * 100 / 34 < total <= 30_000_003 * 100 / 33
    for junk in ("", "   ", "x" * 10000, "1 2 3", "12,345 -5% 1.00MB/s 0:00:01"):
        assert P.parse(junk) is None


def test_a_line_split_across_reads_is_read_whole_and_endless_junk_is_dropped() -> None:
    line = b"\r      1,048,576  10%    1.00MB/s    0:00:09  \r"
    got: list[str] = []
    pending = b""
    for i in range(len(line)):  # one byte a read
        lines, pending = P.split_updates(pending, line[i : i + 1])
        got += lines
    assert [P.parse(x) for x in got] == [P.Sample(1_048_576, 10, 1024.0 * 1024, 9)]
    _, pending = P.split_updates(b"", b"y" * 100_000)
    assert pending == b""


def test_the_display_throttles_and_a_terminal_gets_one_line() -> None:
    s = P.Sample(1_048_576, 10, 1024.0 * 1024, 9)
    log = io.StringIO()
    shown = P.Display(log, tty=False)
    for now in (0.0, 1.0, 9.9, 10.0, 15.0, 20.5):
        shown.update(s, now)
    shown.finish(2 * 1024 * 1024, 2.0, ok=True)
    assert log.getvalue().splitlines() == [P.describe(s)] * 3 + [
        "copy: 2.0 MiB in 0:00:02, 1.0 MiB/s"
    ]
    term = io.StringIO()
    shown = P.Display(term, tty=True)
    for now in (0.0, 0.1, 0.6):
        shown.update(s, now)
    shown.finish(None, 1.0, ok=False)
    assert term.getvalue() == ("\r\x1b[K" + P.describe(s)) * 2 + "\r\x1b[K"


def test_rsync_supports_the_progress_options() -> None:
    assert "--info=progress2" in RSYNC and "--no-inc-recursive" in RSYNC
    rsync = shutil.which("rsync")
    assert rsync is not None
    # Options rsync does not know are a usage error (exit 1) before anything is copied.
    proc = subprocess.run([rsync, *P.RSYNC_PROGRESS, "--version"], capture_output=True)
    assert proc.returncode == 0, proc.stderr


def _small_root(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "volumes/v/_data").mkdir(parents=True)
    for i in range(3):
        (old / f"volumes/v/_data/f{i}").write_bytes(os.urandom(256 * 1024))
    return old, new


def test_a_relocation_journals_progress_that_resume_and_rollback_skip(tmp_path: Path) -> None:
    old, new = _small_root(tmp_path)
    steps: list[S.Step] = [S.Copy(str(old), str(new)), S.VerifyCopy(str(old), str(new))]
    state = tmp_path / "state"
    journal = executor.begin(state, "r", old, new, steps)
    shown = io.StringIO()
    ctx = Context("r", copy_display=P.Display(shown, tty=False, every=0.0), journal_every=0.0)
    assert executor.run(journal, ctx).state == "relocated"
    records = journal.records()
    progress = [r for r in records if r["type"] == "progress"]
    assert progress, records
    for r in progress:
        assert r["seq"] == 0 and r["step"] == "copy"
        assert set(r) >= {"bytes", "total", "rate", "eta", "percent", "t"}
    assert progress[-1]["bytes"] >= 3 * 256 * 1024 and progress[-1]["percent"] == 100
    lines = shown.getvalue().splitlines()
    assert lines[0] == "copy: listing the files to copy; then progress every 0 s"
    assert lines[-2].startswith("copy: 768.0 KiB of 768.0 KiB (100%), "), lines
    assert lines[-1].startswith("copy: 768.0 KiB in 0:00:0"), lines
    assert compare(str(old), str(new))[1] == []
    # Progress records mid-journal (a copy killed after some): a resume and a rollback
    # read past them.
    new2 = tmp_path / "new2"
    steps = [S.Copy(str(old), str(new2)), S.VerifyCopy(str(old), str(new2))]
    journal2 = executor.begin(state, "r2", old, new2, steps)
    journal2.append({"type": "intent", "seq": 0, "step": S.step_dict(steps[0])})
    journal2.append({"type": "progress", "seq": 0, "step": "copy", "bytes": 1, "total": 9})
    journal2.append({"type": "some-future-record", "seq": "not a number"})
    assert executor.view_of(journal2).state == "running"
    assert executor.resume(journal2, Context("r2")).state == "relocated"
    assert compare(str(old), str(new2))[1] == []
    assert executor.rollback(journal2, Context("r2")).state == "rolled-back"
    assert not any(new2.iterdir())


def test_a_short_copy_journals_no_progress_by_default(tmp_path: Path) -> None:
    """The first record comes after 10 s: a short copy's journal is its steps alone."""
    old, new = _small_root(tmp_path)
    journal = executor.begin(tmp_path / "state", "r", old, new, [S.Copy(str(old), str(new))])
    executor.run(journal, Context("r"))
    assert [r["type"] for r in journal.records()] == ["begin", "intent", "done", "end"]


def test_output_rsync_does_not_write_never_fails_the_copy(tmp_path: Path) -> None:
    old, new = _small_root(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rsync = shutil.which("rsync")
    (bin_dir / "rsync").write_text(
        "#!/bin/sh\nprintf '\\377\\r 12%% 1,2 zz\\r  5 5%% 1.00XB/s 0:00:01\\r'\n"
        "head -c 100000 /dev/zero\n"
        f'exec {rsync} "$@"\n'
    )
    (bin_dir / "rsync").chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{path}"
    try:
        journal = executor.begin(tmp_path / "s", "r", old, new, [S.Copy(str(old), str(new))])
        ctx = Context("r", copy_display=P.Display(io.StringIO(), tty=True), journal_every=0.0)
        assert executor.run(journal, ctx).state == "relocated"
    finally:
        os.environ["PATH"] = path
    assert compare(str(old), str(new))[1] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="relocation and mounts need root")
def test_json_stdout_stays_one_document_while_progress_goes_to_stderr(
    tmp_path: Path, fake_engine: tuple[str, Path]
) -> None:
    host, config = fake_engine
    old, new, state = _fixture_root(tmp_path), tmp_path / "new", tmp_path / "state"
    rsync = shutil.which("rsync")
    fake = (
        f"printf '\\r      1,048,576  10%%    1.00MB/s    0:00:09  \\rjunk\\r'\nexec {rsync} \"$@\""
    )
    args = ["--to", str(new), "--root", str(old), "--config-file", str(config), "--json"]
    args += ["--host", host, "--stop-cmd", "true", "--start-cmd", "true"]
    proc = _dockergc_cli([*args, "--state-dir", str(state), "--yes"], state, fake)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["state"] == "relocated"
    copy = [x for x in proc.stderr.splitlines() if x.startswith("copy: ")]
    # Progress lines every 10 s: this copy takes less, so only its first and last.
    assert copy[0] == "copy: listing the files to copy; then progress every 10 s", copy
    assert len(copy) == 2 and " in 0:00:0" in copy[1], copy
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr  # not a terminal
    assert config.read_bytes() != CONFIG  # switched to the new root


def test_a_failed_copy_still_names_rsyncs_last_error(tmp_path: Path) -> None:
    old, new = _small_root(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rsync").write_text(
        "#!/bin/sh\nprintf '\\r      1,048,576  10%%    1.00MB/s    0:00:09  \\r'\n"
        "yes 'rsync: noise' | head -n 30000 >&2\n"
        "echo 'rsync error: some files could not be transferred (code 23)' >&2\nexit 23\n"
    )
    (bin_dir / "rsync").chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{path}"
    shown = io.StringIO()
    try:
        journal = executor.begin(tmp_path / "s", "r", old, new, [S.Copy(str(old), str(new))])
        ctx = Context("r", copy_display=P.Display(shown, tty=True))
        with pytest.raises(executor.RelocationFailed) as failed:
            executor.run(journal, ctx)
    finally:
        os.environ["PATH"] = path
    said = str(failed.value)  # the first line (the cause) and the last (the summary)
    assert (
        "copy failed (rsync exit 23): rsync: noise ... rsync error: some files could not be" in said
    )
    assert shown.getvalue().endswith("\r\x1b[K")  # the line cleared, no success line
