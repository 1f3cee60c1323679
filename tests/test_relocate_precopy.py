"""Relocation with a pre-copy (the default): its plan, its passes, the verification that
hashes what changed since the pre-copy began, the free-space margin, and the kill matrix
of the new steps on local trees (no daemon)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dockergc.relocate import daemonjson, executor
from dockergc.relocate import steps as S
from dockergc.relocate.executor import Context, perform
from dockergc.relocate.impl import Pass, RelocationFailed, enough_passes
from dockergc.relocate.plan import Control, plan_relocation
from dockergc.relocate.preflight import MARGIN_FLOOR, margin_for, rsync_fit
from dockergc.relocate.verify import compare
from tests.relocate_crash import record_labels, relocate_and_kill

MiB = 2**20


def test_the_precopy_plan_copies_before_the_stop_and_offline_is_unchanged(tmp_path: Path) -> None:
    control = Control("stop", "start", "unix:///s", tmp_path / "daemon.json")
    args = (Path("/old"), Path("/new"), control, "r1", 3, 2, False)
    offline = plan_relocation(*args, config_sha256="ab")
    pre = plan_relocation(*args, config_sha256="ab", precopy=True)
    assert [s.name for s in pre] == ["pre-copy", *[s.name for s in offline]]
    assert pre[1:] != offline  # only the verification differs: it knows the pre-copy
    assert [s for s in pre[1:] if s.name != "verify-copy"] == [
        s for s in offline if s.name != "verify-copy"
    ]
    assert pre[4] == S.VerifyCopy("/old", "/new", ".dockergc-relocation-r1")
    assert offline[3] == S.VerifyCopy("/old", "/new")
    assert pre[0].reverse() == S.RemoveCopy("/new", ".dockergc-relocation-r1")
    for step in pre:
        assert S.step_from_dict(S.step_dict(step)) == step
    assert not isinstance(pre[0], S.NEEDS_STOPPED)  # it runs beside the daemon


@pytest.mark.parametrize(
    ("passes", "enough"),
    [
        ([], False),
        ([Pass(1.0, 10)], False),  # the first pass never counts: a second measures the delta
        ([Pass(60, 3000 * MiB), Pass(2.0, 900 * MiB)], True),  # quick
        ([Pass(60, 3000 * MiB), Pass(20, 10 * MiB)], True),  # small
        ([Pass(60, 3000 * MiB), Pass(20, 900 * MiB)], False),  # shrinking
        ([Pass(60, 3000 * MiB), Pass(20, 900 * MiB), Pass(19, 850 * MiB)], True),  # no more
        ([Pass(60, 3000 * MiB), *[Pass(30, (900 - 200 * i) * MiB) for i in range(4)]], True),
    ],
    ids=["none", "first", "quick", "small", "shrinking", "not-shrinking", "most"],
)
def test_passes_go_on_while_the_delta_shrinks(passes: list[Pass], enough: bool) -> None:
    assert enough_passes(passes) is enough


def test_the_margin_is_proportional_with_a_floor() -> None:
    assert margin_for(5 * MiB) == MARGIN_FLOOR  # a 5 MB root fits a 400 MB disk
    assert 5 * MiB + margin_for(5 * MiB) < 400 * 10**6
    assert margin_for(400 * 2**30) == 20 * 2**30


RSYNC_327 = """rsync  version 3.2.7  protocol version 32
Capabilities:
    64-bit files, 64-bit inums, 64-bit timestamps, 64-bit long ints,
    socketpairs, symlinks, symtimes, hardlinks, hardlink-specials,
    hardlink-symlinks, IPv6, atimes, batchfiles, inplace, append, ACLs,
    xattrs, optional secluded-args, iconv, prealloc, stop-at, no crtimes
"""


@pytest.mark.parametrize(
    ("output", "fit", "says"),
    [
        (RSYNC_327, True, "/usr/bin/rsync 3.2.7"),
        ("rsync  version 3.0.9  protocol version 30\n", False, "needs 3.1.3 or later"),
        ("rsync  version 3.1.2  protocol version 31\n", False, "needs 3.1.3 or later"),
        (RSYNC_327.replace("ACLs,", "no ACLs,"), False, "built without ACLs"),
        (RSYNC_327.replace("    xattrs,", "    no xattrs,"), False, "built without xattrs"),
        ("openrsync: protocol version 29\n", False, "cannot tell its version"),
        ("", False, "cannot tell its version"),
    ],
)
def test_the_preflight_knows_an_rsync_the_copy_cannot_use(
    output: str, fit: bool, says: str
) -> None:
    ok, detail = rsync_fit("/usr/bin/rsync", output)
    assert ok is fit and says in detail


@pytest.mark.skipif(os.geteuid() != 0, reason="the preflight's probe makes device nodes")
def test_a_missing_rsync_fails_the_preflight_not_the_first_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on a real systemd host (Debian minbase has no rsync): the preflight passed
    and the pre-copy failed. Now the preflight says so, and nothing is made."""
    from dockergc.fixture.demo import write_demo_root
    from tests.conftest import run_cli

    old = write_demo_root(tmp_path / "docker")
    config = tmp_path / "daemon.json"
    config.write_text("{}")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    proc = run_cli(
        *("relocate", "--to", str(tmp_path / "new"), "--root", str(old)),
        *("--config-file", str(config), "--state-dir", str(tmp_path / "state")),
        *("--host", "unix:///nonexistent.sock", "--yes"),
        check=3,
    )
    out = proc.stdout + proc.stderr
    assert "[FAIL] rsync: not found on PATH" in out and "preflight FAILED" in out
    assert not (tmp_path / "new").exists()
    assert config.read_text() == "{}"


def _root(old: Path) -> None:
    (old / "overlay2/x/diff").mkdir(parents=True)
    (old / "overlay2/x/diff/layer").write_bytes(b"a" * 8192)
    (old / "image").mkdir()
    (old / "image/repositories.json").write_text("{}")
    (old / "containers/c").mkdir(parents=True)
    (old / "containers/c/c-json.log").write_text("line 0\n")


def _same_size_same_mtime(path: Path, data: bytes) -> None:
    """Change a file so rsync's quick check (size, mtime) cannot see it; its ctime moves."""
    st = os.stat(path)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_verify_hashes_what_changed_since_the_precopy(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _root(old)
    marker = S.marker_for("r")
    ctx = Context("r", max_passes=2)
    perform(S.PreCopy(str(old), str(new), "", marker), ctx)
    assert (new / marker).is_file() and (new / "overlay2/x/diff/layer").read_bytes()[:1] == b"a"
    with open(old / "containers/c/c-json.log", "a") as fh:  # the daemon writes on
        fh.write("line 1\n")
    perform(S.Copy(str(old), str(new), "", marker), ctx)
    perform(S.VerifyCopy(str(old), str(new), marker), ctx)
    assert (new / "containers/c/c-json.log").read_text() == "line 0\nline 1\n"
    # A change rsync's quick check misses (sizes and mtimes agree): the final pass after a
    # pre-copy rewrites it all the same (its ctime is after the pre-copy began) ...
    _same_size_same_mtime(old / "overlay2/x/diff/layer", b"b" * 8192)
    perform(S.Copy(str(old), str(new), "", marker), ctx)
    assert (new / "overlay2/x/diff/layer").read_bytes() == b"b" * 8192
    perform(S.VerifyCopy(str(old), str(new), marker), ctx)
    # ... and the verification hashes it: a copy that missed it is caught.
    _same_size_same_mtime(old / "overlay2/x/diff/layer", b"c" * 8192)
    assert compare(str(old), str(new))[1] == []  # by metadata alone, nothing differs
    with pytest.raises(RelocationFailed, match=r"overlay2/x/diff/layer: differs in extra"):
        perform(S.VerifyCopy(str(old), str(new), marker), ctx)
    since = os.stat(old / "overlay2/x/diff/layer").st_ctime + 60
    assert compare(str(old), str(new), since=since)[1] == []  # unchanged since: not hashed


def test_every_pass_is_journaled_with_its_label(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _root(old)
    records: list[dict[str, object]] = []
    lines: list[str] = []
    ctx = Context("r", record=records.append, journal_every=0.0, progress=lines.append)
    perform(S.PreCopy(str(old), str(new), "", S.marker_for("r")), ctx)
    passes = [r for r in records if "seconds" in r]
    assert [r["step"] for r in passes] == ["pre-copy pass 1", "pre-copy pass 2"]
    assert {r["step"] for r in records if "percent" in r} <= {"pre-copy pass 1", "pre-copy pass 2"}
    (estimate,) = [r for r in records if "downtime_estimate" in r]
    assert isinstance(estimate["downtime_estimate"], float)
    assert "estimated downtime" in lines[-1]


def _steps(tmp_path: Path) -> tuple[Path, Path, list[S.Step]]:
    old, new = tmp_path / "old", tmp_path / "new"
    _root(old)
    cfg = tmp_path / "daemon.json"
    cfg.write_bytes(b'{"data-root": "/old"}\n')
    backup, sha = f"{cfg}.dockergc-r.bak", daemonjson.sha256_of(cfg)
    marker = S.marker_for("r")
    return (
        cfg,
        new,
        [
            S.PreCopy(str(old), str(new), "", marker),
            S.Copy(str(old), str(new), "", marker),
            S.VerifyCopy(str(old), str(new), marker),
            S.BackupConfig(str(cfg), backup, sha),
            S.SwitchConfig(str(cfg), "/new", backup, sha),
        ],
    )


def test_killed_after_any_record_of_a_precopy_run(tmp_path: Path) -> None:
    """Killed during the pre-copy there is nothing to undo but the partial copy; killed
    later, as before: rollback empties the target and restores daemon.json, resume ends
    switched with an exact copy."""
    cfg, new, steps = _steps(tmp_path)
    original, old, state = cfg.read_bytes(), tmp_path / "old", tmp_path / "state"
    for n, label in enumerate(record_labels(steps)[:6], start=1):  # to verify-copy's done
        for how in ("rollback", "resume"):
            run_id = f"r{n}-{how}"
            relocate_and_kill(state, run_id, old, new, steps, n)
            journal = executor.journal_for(state, run_id)
            if how == "rollback":
                assert executor.rollback(journal, Context(run_id)).state == "rolled-back"
                assert cfg.read_bytes() == original, label
                assert not new.exists() or not any(new.iterdir()), label
            else:
                assert executor.resume(journal, Context(run_id)).state == "relocated", label
                assert compare(str(old), str(new))[1] == [], label
                assert daemonjson.read(cfg) == daemonjson.switched(original, "/new"), label
                daemonjson.write_atomic(cfg, original)


def test_the_final_pass_rewrites_what_the_quick_check_cannot_see(tmp_path: Path) -> None:
    """A bbolt file changed through mmap after the pre-copy read it keeps its size and
    mtime (seen: BuildKit's history_c8d.db on 28.5); rsync's quick check skips it. The
    final pass after a pre-copy rewrites the metadata files in place (hard links kept)."""
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "buildkit").mkdir(parents=True)
    db = old / "buildkit/history_c8d.db"
    db.write_bytes(b"A" * 8192)
    os.link(db, old / "buildkit/linked.db")
    marker = S.marker_for("r")
    perform(S.PreCopy(str(old), str(new), "", marker), Context("r"))
    st = os.stat(db)
    with open(db, "r+b") as fh:  # same size; mtime put back as an mmap write leaves it
        fh.write(b"B" * 4096)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    perform(S.Copy(str(old), str(new), "", marker), Context("r"))
    assert (new / "buildkit/history_c8d.db").read_bytes() == db.read_bytes()
    assert os.stat(new / "buildkit/history_c8d.db").st_nlink == 2
    perform(S.VerifyCopy(str(old), str(new), marker), Context("r"))


def _post_verify(
    old: Path,
    new: Path,
    monkeypatch: pytest.MonkeyPatch,
    images: set[str],
    containers: set[str],
    on: Path | None = None,
    graphdriver: bool = True,
    listed: tuple[set[str], set[str]] | None = None,
) -> None:
    """post-verify on ``new``, planned at preflight with 3 images and 99 containers, the
    daemon listing ``images`` and ``containers`` (ids) on ``on`` (default: ``new``), and
    ``listed`` (images, containers) before the stop, journaled by the stop step."""
    from dockergc import daemon
    from dockergc.relocate import counts

    state = daemon.EngineState(
        str(on or new), len(images), len(containers), (), frozenset(images), frozenset(containers)
    )
    monkeypatch.setattr(daemon, "engine_state", lambda host: state)
    step = S.PostVerify("unix:///x", str(new), 3 if graphdriver else -1, 99, old=str(old))
    before = None if listed is None else counts.Listed(frozenset(listed[0]), frozenset(listed[1]))
    perform(step, Context("r", listed=before))


def test_post_verify_checks_the_old_root_by_id_when_it_runs_not_at_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the pre-copy the daemon runs on for hours after preflight: containers removed
    or made meanwhile must not roll back a move that worked. The old root, stopped, says
    what the daemon must list, by id: more is fine (made since it answered), less is a
    loss, but for the containers the daemon itself drops as it starts: a --rm one, and
    one whose rw layer is gone (a removal the stop cut short)."""
    import json as jsonlib

    from dockergc.fixture.demo import write_demo_root
    from dockergc.store.images import read_images

    old = write_demo_root(tmp_path / "docker")  # 3 images, 1 container (web)
    new = tmp_path / "new"
    new.mkdir()
    imgs = {i.id for i in read_images(old).images}
    (web,) = [d for d in (old / "containers").iterdir()]
    assert jsonlib.loads((web / "config.v2.json").read_text())["Name"] == "/web"
    cid = web.name
    every = (imgs, {cid})
    _post_verify(old, new, monkeypatch, *every)
    _post_verify(old, new, monkeypatch, imgs | {"sha256:" + "e" * 64}, {cid, "f" * 64})
    lost_image = sorted(imgs)[0]
    with pytest.raises(RelocationFailed, match=f"1 image\\(s\\) missing: {lost_image[7:19]}"):
        _post_verify(old, new, monkeypatch, imgs - {lost_image}, {cid, "f" * 64})
    with pytest.raises(RelocationFailed, match=f"1 container\\(s\\) missing: {cid[:12]} \\(web\\)"):
        _post_verify(old, new, monkeypatch, imgs, {"f" * 64})  # one new cannot hide it
    with pytest.raises(RelocationFailed, match="reports root /elsewhere"):
        _post_verify(old, new, monkeypatch, *every, on=Path("/elsewhere"))
    # --rm: the daemon removes it as it starts
    (web / "hostconfig.json").write_text('{"AutoRemove": true}')
    _post_verify(old, new, monkeypatch, imgs, set())
    # A removal the stop cut short (seen on a real 20.10): Dead, RemovalInProgress,
    # hostconfig.json perhaps gone. The daemon drops it only once its rw layer record is
    # gone; while that is there, it keeps it (as Dead).
    (web / "hostconfig.json").unlink()
    config = jsonlib.loads((web / "config.v2.json").read_text())
    config["State"] = {**config["State"], "Dead": True, "RemovalInProgress": True}
    (web / "config.v2.json").write_text(jsonlib.dumps(config))
    with pytest.raises(RelocationFailed, match="1 container\\(s\\) missing"):
        _post_verify(old, new, monkeypatch, imgs, set())
    # On the containerd store the rw layer is containerd's: a removal begun may go.
    _post_verify(old, new, monkeypatch, set(), set(), graphdriver=False)
    mount = old / "image/overlay2/layerdb/mounts" / cid
    shutil.rmtree(mount)
    _post_verify(old, new, monkeypatch, imgs, set())
    config["State"] = {**config["State"], "Dead": False, "RemovalInProgress": False}
    (web / "config.v2.json").write_text(jsonlib.dumps(config))
    _post_verify(old, new, monkeypatch, imgs, set())  # no layer: it never loaded anyway
    with pytest.raises(RelocationFailed, match="1 container\\(s\\) missing"):
        _post_verify(old, new, monkeypatch, set(), set(), graphdriver=False)


def test_post_verify_expects_only_what_the_daemon_listed_before_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the daemon never loaded (an image config failing its digest, a container of
    another driver: seen on roots after a full disk) is not expected after the move: the
    stop step journals what the daemon listed, and post-verify reads it back."""
    from dockergc.fixture.demo import write_demo_root
    from dockergc.store.images import read_images

    old = write_demo_root(tmp_path / "docker")  # 3 images, 1 container (web)
    new = tmp_path / "new"
    new.mkdir()
    imgs = {i.id for i in read_images(old).images}
    (cid,) = os.listdir(old / "containers")
    unloaded = sorted(imgs)[0]
    good = imgs - {unloaded}
    _post_verify(old, new, monkeypatch, good, set(), listed=(good, set()))
    with pytest.raises(RelocationFailed, match=f"1 image\\(s\\) missing: {unloaded[7:19]}"):
        _post_verify(old, new, monkeypatch, good, set())  # no listing: the old root alone
    with pytest.raises(RelocationFailed, match=f"missing: {cid[:12]} \\(web\\)"):
        _post_verify(old, new, monkeypatch, good, set(), listed=(good, {cid}))
    # A container made or removed after the listing: not expected, or not on the old root.
    _post_verify(old, new, monkeypatch, good, {cid}, listed=(good, {cid, "a" * 64}))
    # On the containerd store the images are checked against the listing alone.
    ctd = {"sha256:" + "c" * 64}
    _post_verify(old, new, monkeypatch, ctd, {cid}, graphdriver=False, listed=(ctd, {cid}))
    with pytest.raises(RelocationFailed, match="1 image\\(s\\) missing: cccccccccccc"):
        _post_verify(old, new, monkeypatch, set(), {cid}, graphdriver=False, listed=(ctd, {cid}))

    # The graphdriver store: the old root's images that were listed (one listed but not
    # on the old root, removed in between, is not expected either).
    extra = "sha256:" + "e" * 64
    _post_verify(old, new, monkeypatch, good, set(), listed=(good | {extra}, set()))


def test_the_stop_step_journals_the_listing_of_a_dockerd_on_the_old_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its command runs, the move's stop journals what the daemon lists; not when
    no dockerd runs on the old root (a socket-activated API would start one), nor from
    a daemon on another root, nor in a rollback's stop (no root); the last one counts."""
    from dockergc import daemon
    from dockergc.host.detect import DaemonProcess
    from dockergc.relocate import counts

    old = tmp_path / "old"
    old.mkdir()
    cid, good = "c" * 64, frozenset({"sha256:" + "a" * 64})
    up, ran, on = [True], [], [str(old)]
    records: list[dict[str, object]] = []

    def state(host: str) -> daemon.EngineState:
        ran.append("listed")
        return daemon.EngineState(on[0], 1, 1, (), good, frozenset({cid}))

    def command(cmd: str, timeout: float = 0) -> None:
        ran.append(cmd)
        up[0] = False

    dockerd = [DaemonProcess(1, "dockerd", str(old))]
    monkeypatch.setattr(daemon, "engine_state", state)
    monkeypatch.setattr(daemon, "run_command", command)
    monkeypatch.setattr(daemon, "daemons_using", lambda root: dockerd if up[0] else [])
    stop = S.StopDaemon("stop", "start", "unix:///x", str(old))
    ctx = Context("r", record=lambda r: records.append({"type": "progress", **r}))
    perform(stop, ctx)
    assert ran == ["listed", "stop"]
    assert counts.listed_in(records) == counts.Listed(good, frozenset({cid}))
    ran.clear()
    perform(stop, ctx)  # a resume after the stop: nothing runs on the old root
    assert ran == ["stop"] and len(records) == 1
    ran.clear()
    up[0], on[0] = True, "/elsewhere"
    perform(stop, ctx)  # a daemon answering from another root: not this one's listing
    assert ran == ["listed", "stop"] and len(records) == 1
    ran.clear()
    up[0] = True
    perform(S.StopDaemon("stop", "start", "unix:///x", ""), ctx)  # a rollback's stop
    assert ran == ["stop"] and len(records) == 1

    def broken(host: str) -> daemon.EngineState:
        raise AttributeError("'list' object has no attribute 'get'")  # /info not an object

    monkeypatch.setattr(daemon, "engine_state", broken)
    up[0] = True
    perform(stop, ctx)  # not the answer the API writes: no listing, and no failure
    assert len(records) == 1
    later = counts.Listed(frozenset(), frozenset({cid}))
    assert counts.listed_in([*records, {"type": "progress", **later.record()}]) == later
    assert counts.listed_in([*records, {"listed_before_stop": 3}]) == counts.listed_in(records)
    assert counts.listed_in([]) is None


def test_a_signal_during_a_precopy_pass_runs_no_further_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM/SIGHUP to dockergc alone lets the pass under way finish (rsync is not
    signalled), then no other starts: each may take as long as the first."""
    from dockergc.execute.runner import _Stop
    from dockergc.relocate import impl

    old, new = tmp_path / "old", tmp_path / "new"
    _root(old)
    stop = _Stop()
    ran: list[str] = []

    def one_pass(argv: list[str], ctx: Context, label: str) -> tuple[int, str, int]:
        ran.append(label)
        stop.signum = 15  # SIGTERM, arriving during the first pass
        return 0, "", 10 * 2**30  # a big delta: passes would go on

    monkeypatch.setattr(impl, "_rsync", one_pass)
    perform(S.PreCopy(str(old), str(new), "", "m"), Context("r", stop=stop))
    assert ran == ["pre-copy pass 1"]
