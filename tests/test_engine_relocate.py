"""Relocation of a real dockerd's root to a real second disk (loop-mounted ext4).

Success: the daemon ends on the new root; every image runs, containers start with their
logs, volume data, bind mounts and whiteouts intact; finalize empties the old root.
Faults: a target too small, a target that fills up mid-copy, the copy killed, a daemon
that will not start on the new root. Each ends on the old root with nothing lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dockergc.execute.journal import new_run_id
from dockergc.relocate import executor
from dockergc.relocate import steps as S
from dockergc.relocate.daemonjson import sha256_of
from dockergc.relocate.plan import Control, plan_relocation
from tests.conftest import run_cli
from tests.engine import ENGINE_VERSIONS, Engine, loop_fs
from tests.realstate import APP

pytestmark = pytest.mark.engine


@pytest.fixture(params=ENGINE_VERSIONS)
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, str, str, Path]]:
    """A detached daemon whose root is named in its daemon.json, with real state."""
    e = Engine(root_in_config=True, version=request.param)
    try:
        stop, start = e.start_detached()
        e.import_base()
        e.build("app:1", APP)
        bind_src = tmp_path / "bind-src"
        bind_src.mkdir()
        (bind_src / "b").write_text("bound")
        e.run("volume", "create", "vol1")
        e.run(
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "vol1:/v",
            "base:1",
            "sh",
            "-c",
            "echo data > /v/x; dd if=/dev/urandom of=/v/big bs=1M count=64 2>/dev/null",
        )
        e.run(
            "run",
            "--network",
            "none",
            "-v",
            "vol1:/v",
            "-v",
            f"{bind_src}:/b",
            "--name",
            "c_stopped",
            "app:1",
            "sh",
            "-c",
            "cat /v/x /hello.txt /b/b",
        )
        e.run("run", "-d", "--network", "none", "--name", "c_running", "app:1", "sleep", "1d")
        yield e, stop, start, tmp_path
    finally:
        e.destroy()


def state_of(e: Engine) -> tuple[str, int, int]:
    info = json.loads(e.run("info", "--format", "{{json .}}").stdout)
    return info["DockerRootDir"], info["Images"], info["Containers"]


def assert_intact(e: Engine, root: Path) -> None:
    assert state_of(e)[0] == str(root)
    for image in e.image_ids():
        e.run("run", "--rm", "--network", "none", image, "true")
    out = e.run(
        "run",
        "--rm",
        "--network",
        "none",
        "app:1",
        "sh",
        "-c",
        "test ! -e /bin/vi && test ! -e /data/sub && cat /data/new /data/k",
    ).stdout
    assert out.split() == ["y", "keep"]
    assert e.run("start", "-a", "c_stopped").stdout.split() == ["data", "hello", "bound"]
    assert e.run("logs", "c_stopped").stdout.count("hello") >= 2  # the old log is kept
    e.run("start", "c_running")
    assert e.run("inspect", "-f", "{{.State.Running}}", "c_running").stdout.strip() == "true"


def relocate_cli(
    e: Engine, stop: str, start: str, to: Path, state: Path, *extra: str, check: int = 0
) -> subprocess.CompletedProcess[str]:
    proc = run_cli(
        "relocate",
        "--to",
        str(to),
        "--root",
        str(e.root),
        "--config-file",
        str(e.config),
        "--stop-cmd",
        stop,
        "--start-cmd",
        start,
        "--host",
        f"unix://{e.sock}",
        "--state-dir",
        str(state),
        "--yes",
        *extra,
        check=check,
    )
    return proc


# A container writing a line every 10 ms into its volume all through the move; SIGTERM
# (the daemon's stop) ends it at once.
WRITER = "trap 'exit 0' TERM; i=0; while :; do echo line $i >> /v/log; i=$((i+1)); sleep 0.01; done"


def test_relocate_to_a_new_disk_and_finalize(host: tuple[Engine, str, str, Path]) -> None:
    """The default: pre-copy while a container writes, stop, final pass, verify, switch.
    Every line written before the stop is on the new root (the old root is frozen from
    the stop on, so the two logs must be equal), whiteouts and opaque dirs intact."""
    e, stop, start, tmp = host
    e.run(
        *("run", "-d", "--network", "none", "-v", "vol1:/v", "--name", "writer", "base:1"),
        *("sh", "-c", WRITER),
    )
    # A --rm container running at the stop: the daemon removes it as it starts on the
    # new root, which must not fail the post-verify (nor may counts taken at preflight).
    e.run("run", "-d", "--rm", "--network", "none", "--name", "transient", "base:1", "sleep", "600")
    before = state_of(e)
    with loop_fs(1200) as disk:
        new = disk / "docker"
        dry = relocate_cli(e, stop, start, new, tmp / "state", "--dry-run").stdout
        assert "preflight passed" in dry and f"bind mount {tmp}/bind-src" in dry
        assert state_of(e)[0] == before[0]  # the dry run changed nothing
        proc = relocate_cli(e, stop, start, new, tmp / "state", "--json")
        out = json.loads(proc.stdout)
        assert out["state"] == "relocated", out
        assert [s["step"] for s in out["steps"]][:2] == ["pre-copy", "stop-daemon"]
        assert 0 < out["downtime_seconds"] < 120 and "estimated downtime" not in proc.stdout
        (journal,) = (tmp / "state/relocations").glob("*/journal.jsonl")
        records = [json.loads(line) for line in journal.read_text().splitlines()]
        assert records[-1]["downtime_seconds"] == out["downtime_seconds"]
        # What the daemon listed at the stop, journaled for post-verify: all of it.
        (listed,) = [r["listed_before_stop"] for r in records if "listed_before_stop" in r]
        assert (len(listed["images"]), len(listed["containers"])) == before[1:]
        assert any("downtime_estimate" in r for r in records)
        log = "volumes/vol1/_data/log"
        written = (e.root / log).read_text().splitlines()
        assert (new / log).read_text().splitlines() == written
        assert written == [f"line {i}" for i in range(len(written))] and len(written) > 50
        assert json.loads(e.config.read_text())["data-root"] == str(new)
        assert state_of(e) == (str(new), before[1], before[2] - 1)  # the --rm one gone
        assert_intact(e, new)
        assert (e.root / "overlay2").is_dir()  # the old root is untouched until finalize
        run_cli("relocate", "finalize", "--state-dir", str(tmp / "state"), "--yes")
        assert not any(p for p in e.root.iterdir() if p.name != ".dockergc")
        assert_intact(e, new)
        subprocess.run(stop.split(), check=True)


def test_target_too_small_is_refused_before_anything(host: tuple[Engine, str, str, Path]) -> None:
    e, stop, start, tmp = host
    before = state_of(e)
    with loop_fs(40) as disk:
        proc = relocate_cli(e, stop, start, disk / "docker", tmp / "state", check=3)
        out = proc.stdout + proc.stderr
        assert "[FAIL] free space" in out and "preflight failed" in out
    assert state_of(e) == before
    assert "data-root" in e.config.read_text() and str(e.root) in e.config.read_text()


def _run_with_fault(
    e: Engine, stop: str, start: str, new: Path, tmp: Path, fault: object
) -> executor.RelocationView:
    run_id = new_run_id()
    control = Control(stop, start, f"unix://{e.sock}", e.config)
    _, images, containers = state_of(e)
    steps = plan_relocation(
        e.root, new, control, run_id, images, containers, False, config_sha256=sha256_of(e.config)
    )
    journal = executor.begin(tmp / "state", run_id, e.root, new, steps)
    ctx = executor.Context(run_id, before_step=fault)  # type: ignore[arg-type]
    with pytest.raises(executor.RelocationFailed):
        executor.run(journal, ctx)
    return executor.view_of(journal)


def test_target_filling_up_mid_copy_rolls_back(host: tuple[Engine, str, str, Path]) -> None:
    e, stop, start, tmp = host
    before = state_of(e)
    with loop_fs(1200) as disk:

        def fill(step: S.Step) -> None:
            if isinstance(step, S.Copy):  # another writer takes the space after preflight
                st = os.statvfs(disk)
                left = st.f_bfree * st.f_frsize - 20 * 2**20  # root may use the reserve
                subprocess.run(["fallocate", "-l", str(left), str(disk / "filler")], check=True)

        view = _run_with_fault(e, stop, start, disk / "docker", tmp, fill)
        assert view.state == "rolled-back" and "copy failed" in view.error
        assert not any((disk / "docker").iterdir())
    assert state_of(e) == before
    assert_intact(e, e.root)


def test_killed_copy_rolls_back(host: tuple[Engine, str, str, Path]) -> None:
    e, stop, start, tmp = host
    before = state_of(e)

    def kill_rsync_soon(step: S.Step) -> None:
        if not isinstance(step, S.Copy):
            return

        def killer() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for p in psutil.process_iter(["name", "cmdline"]):
                    if p.info["name"] == "rsync" and step.new + "/" in (p.info["cmdline"] or []):
                        p.kill()
                        return
                time.sleep(0.005)

        threading.Thread(target=killer, daemon=True).start()

    with loop_fs(1200) as disk:
        view = _run_with_fault(e, stop, start, disk / "docker", tmp, kill_rsync_soon)
        assert view.state == "rolled-back" and "copy failed" in view.error
    assert state_of(e) == before
    assert_intact(e, e.root)


def test_daemon_failing_on_the_new_root_rolls_back(host: tuple[Engine, str, str, Path]) -> None:
    e, _, _, tmp = host
    before = state_of(e)
    stop, start = e.control_scripts(fail_unless_root=e.root)
    with loop_fs(1200) as disk:
        proc = relocate_cli(e, stop, start, disk / "docker", tmp / "state", check=1)
        out = proc.stdout + proc.stderr
        assert "relocation failed at start-daemon" in out and "rolled back" in out
        assert not any((disk / "docker").iterdir())
    assert json.loads(e.config.read_text())["data-root"] == str(e.root)
    assert state_of(e) == before
    assert_intact(e, e.root)


def test_resume_after_dockergc_itself_died(host: tuple[Engine, str, str, Path]) -> None:
    e, stop, start, tmp = host
    before = state_of(e)

    class Died(BaseException):
        pass

    def die_at_switch(step: S.Step) -> None:
        if isinstance(step, S.SwitchConfig):
            raise Died()  # not an error dockergc handles: the process is simply gone

    with loop_fs(1200) as disk:
        run_id = new_run_id()
        control = Control(stop, start, f"unix://{e.sock}", e.config)
        steps = plan_relocation(
            e.root,
            disk / "docker",
            control,
            run_id,
            before[1],
            before[2],
            False,
            config_sha256=sha256_of(e.config),
        )
        journal = executor.begin(tmp / "state", run_id, e.root, disk / "docker", steps)
        with pytest.raises(Died):
            executor.run(journal, executor.Context(run_id, before_step=die_at_switch))
        assert executor.view_of(journal).state == "running"
        out = json.loads(
            run_cli(
                "relocate", "--resume", run_id, "--state-dir", str(tmp / "state"), "--yes", "--json"
            ).stdout
        )
        assert out["state"] == "relocated"
        assert state_of(e) == (str(disk / "docker"), before[1], before[2])
        assert_intact(e, disk / "docker")
        subprocess.run(stop.split(), check=True)


def _shadowed_entries(old: Path) -> list[str]:
    """What lies under the bind mount at ``old`` (a non-recursive bind of its filesystem)."""
    view = Path(tempfile.mkdtemp(prefix="dgc-peek-"))
    subprocess.run(["mount", "--bind", "/", str(view)], check=True)
    try:
        return sorted(os.listdir(view / old.relative_to("/")))
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()


def test_bind_mode_keeps_the_path_rolls_back_and_finalizes(
    host: tuple[Engine, str, str, Path],
) -> None:
    e, stop, start, tmp = host
    before = state_of(e)
    config_before = e.config.read_text()
    with loop_fs(1200) as disk:
        new = disk / "docker"
        try:
            out = relocate_cli(e, stop, start, new, tmp / "state", "--bind")
            assert f"{new} {e.root} none bind 0 0" in out.stdout
            assert e.config.read_text() == config_before  # the path did not change
            assert state_of(e) == before
            assert_intact(e, e.root)
            assert os.statvfs(e.root).f_blocks == os.statvfs(disk).f_blocks  # on the new disk
            run_cli("relocate", "rollback", "--state-dir", str(tmp / "state"), "--yes")
            assert os.statvfs(e.root).f_blocks != os.statvfs(disk).f_blocks
            assert not any(new.iterdir())
            assert_intact(e, e.root)

            relocate_cli(e, stop, start, new, tmp / "state", "--bind")
            assert "overlay2" in _shadowed_entries(e.root)
            run_cli("relocate", "finalize", "--state-dir", str(tmp / "state"), "--yes")
            assert [p for p in _shadowed_entries(e.root) if p != ".dockergc"] == []
            assert_intact(e, e.root)
        finally:
            subprocess.run(stop.split(), check=False)
            subprocess.run(["umount", "-l", str(e.root)], capture_output=True)
