"""The packaged units on a real systemd: a Debian 12 system booted in systemd-nspawn.

dockergc is installed there as runbooks/nightly-cleanup.md says (a venv in /opt/dockergc,
pip install of the checkout, the command linked into /usr/local/bin), with the units and
/etc/dockergc/config.toml from packaging/ unchanged and a sample root from `dockergc demo`.
The booted tree is a copy of the one .ci/get-systemd-tree builds once
(DOCKERGC_SYSTEMD_TREE, default /var/cache/dockergc-ci/bookworm-systemd). A oneshot unit
that ended cleanly is unloaded at once: results come from `systemctl start`'s exit code,
the journal and the files the run left.

Skipped outside CI when the tools or the tree are missing; in CI (CI set) that fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.systemd

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "packaging"
TREE = Path(os.environ.get("DOCKERGC_SYSTEMD_TREE", "/var/cache/dockergc-ci/bookworm-systemd"))
PROM = "/var/lib/node_exporter/textfile_collector/dockergc.prom"  # packaging/config.toml's
ENV = [
    "env",
    "-i",
    "HOME=/root",
    "LANG=C.UTF-8",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
]
DROPIN = "/etc/systemd/system/dockergc.service.d/test.conf"
COPY_IGNORE = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"no {tool} (apt-get install systemd-container)"
    if not (TREE / ".complete").exists():
        return f"no booted tree at {TREE}: run .ci/get-systemd-tree"
    return None


@dataclass
class Box:
    """A booted container: run commands in it, read its files."""

    dir: Path
    pid: int  # its systemd, as seen from here

    def run(self, *argv: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", *ENV, *argv],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check is not None and proc.returncode != check:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}, wanted {check}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def sh(self, script: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-ec", script, check=check)

    def booted(self, deadline: float) -> None:
        """Wait for multi-user.target ("degraded" will do: a unit the container lacks)."""
        state = ""
        while time.monotonic() < deadline:
            # Fails at once (no state) until the container's bus is up.
            state = self.run("systemctl", "is-system-running", "--wait", check=None).stdout
            if state.strip() in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise AssertionError(f"the container did not finish booting: {state!r}")

    def start(self) -> tuple[int, str]:
        """`systemctl start dockergc.service`: its exit code and this run's journal."""
        cursor = self.run("journalctl", "-n", "0", "--show-cursor", "-q").stdout
        mark = cursor.strip().rpartition("cursor: ")[2]
        proc = self.run("systemctl", "start", "dockergc.service", check=None)
        # journald takes the service's stdout in its own time: have it write what it has.
        self.run("journalctl", "--sync", check=None)
        log = self.run(
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "--after-cursor",
            mark,
            "-u",
            "dockergc.service",
        ).stdout
        return proc.returncode, log

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.run("cat", PROM).stdout
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def fresh_root(self, root: str) -> None:
        """A new sample root at ``root``, the one daemon.json names (as relocate leaves it)."""
        self.sh(
            f"rm -rf /var/lib/docker /srv/docker; dockergc demo --dir {root} >/dev/null; "
            "mkdir -p /etc/docker; "
            f"""printf '{{"data-root": "{root}"}}\\n' >/etc/docker/daemon.json"""
        )

    def dropin(self, *exec_start: str) -> None:
        """Replace the service's commands (hardening and the rest stay as packaged)."""
        lines = ["[Service]", "ExecStart="] + [f"ExecStart={c}" for c in exec_start]
        self.sh(f"mkdir -p {Path(DROPIN).parent}; cat >{DROPIN} <<'EOF'\n" + "\n".join(lines))
        self.run("systemctl", "daemon-reload")

    def no_dropin(self) -> None:
        self.run("rm", "-f", DROPIN)
        self.run("systemctl", "daemon-reload")


def _wheels(dest: Path, src: Path) -> None:
    """dockergc's dependencies (and a setuptools to build it) as wheels: the container
    installs offline from them."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest)]
        + [str(src), "setuptools>=68"],
        check=True,
        capture_output=True,
        timeout=600,
    )


def _systemd_pid(nspawn: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {nspawn.returncode}")
        children = subprocess.run(
            ["ps", "--ppid", str(nspawn.pid), "-o", "pid=,comm="], capture_output=True, text=True
        ).stdout.split()
        if len(children) >= 2 and children[1] == "systemd":
            return int(children[0])
        time.sleep(0.2)
    raise AssertionError("the container's systemd did not start")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    if why := _missing():
        if os.environ.get("CI"):
            pytest.fail(f"the systemd tests must run in CI: {why}")
        pytest.skip(why)
    work = tmp_path_factory.mktemp("systemd")
    tree = work / "tree"
    subprocess.run(["cp", "-a", "--reflink=auto", str(TREE), str(tree)], check=True)
    src = tree / "root/dockergc-src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    _wheels(tree / "root/wheels", src)
    log = (work / "nspawn.log").open("wb")
    nspawn = subprocess.Popen(
        ["systemd-nspawn", "-D", str(tree), "--boot", "--register=no", "--keep-unit"]
        + ["-M", f"dockergc-ci-{os.getpid()}"],
        env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "0"},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        b = Box(tree, _systemd_pid(nspawn, time.monotonic() + 60))
        b.booted(time.monotonic() + 120)
        # The runbook's install, offline from the wheels fetched above.
        b.sh(
            "python3 -m venv /opt/dockergc\n"
            "/opt/dockergc/bin/pip install -q --no-index --find-links /root/wheels "
            "/root/dockergc-src\n"
            "ln -s /opt/dockergc/bin/dockergc /usr/local/bin/dockergc"
        )
        b.run("mkdir", "-p", "/etc/dockergc")
        for unit in ("dockergc.service", "dockergc.timer"):
            shutil.copy(PKG / "systemd" / unit, tree / "etc/systemd/system" / unit)
        shutil.copy(PKG / "config.toml", tree / "etc/dockergc/config.toml")
        b.run("systemctl", "daemon-reload")
        yield b
    finally:
        nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
        try:
            nspawn.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(nspawn.pid, signal.SIGKILL)
            nspawn.wait(10)
        log.close()
        shutil.rmtree(tree, ignore_errors=True)


def value(m: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    found = [v for (n, lab), v in m.items() if n == name and labels.items() <= dict(lab).items()]
    assert found, f"no {name}{labels} in the metrics"
    return sum(found)


def test_service_succeeds_on_a_fresh_host(box: Box) -> None:
    """Fresh host: no /var/lib/dockergc, no node_exporter dir, the example config as is."""
    box.run("dockergc", "demo", "--dir", "/var/lib/docker")
    code, log = box.start()
    assert code == 0, log
    assert "purged 0 run(s)" in log  # purge ran (retention from the config) ...
    assert "dockergc plan for /var/lib/docker" in log  # ... then gc, its summary in the journal
    assert "kept 14 item(s) worth reporting" in log  # every demo leftover is under 24h old
    assert "Finished dockergc.service" in log
    assert box.run("test", "-d", "/var/lib/dockergc").returncode == 0  # StateDirectory=
    m = box.metrics()
    assert value(m, "dockergc_last_run_success", result="nothing-to-do") == 1
    assert value(m, "dockergc_last_run_timestamp_seconds") > time.time() - 300
    assert value(m, "dockergc_reclaimable_bytes", root="/var/lib/docker") == 0
    assert value(m, "dockergc_quarantine_bytes") == 0


def test_timer_is_active_with_a_next_elapse(box: Box) -> None:
    box.run("systemctl", "enable", "--now", "dockergc.timer")
    shown = box.run(
        "systemctl", "show", "dockergc.timer", "-p", "ActiveState", "-p", "NextElapseUSecRealtime"
    ).stdout
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["ActiveState"] == "active", shown
    assert re.match(r"\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", props["NextElapseUSecRealtime"]), shown


def test_service_follows_a_relocated_root(box: Box) -> None:
    """After `relocate` + `finalize`: daemon.json names the new root, the old one is gone."""
    box.fresh_root("/srv/docker")
    code, log = box.start()
    assert code == 0, log
    assert "dockergc plan for /srv/docker" in log
    assert value(box.metrics(), "dockergc_last_run_success", root="/srv/docker") == 1


def test_hardening_lets_gc_move_and_purge_delete(box: Box) -> None:
    """The unit's sandbox (capabilities, syscall filter, ProtectSystem) lets gc rename into
    quarantine and purge delete what another uid owns, read-only, under /srv. The commands
    are the offline ones (no grace period), the rest of the unit as packaged."""
    box.fresh_root("/srv/docker")
    plan = json.loads(box.run("dockergc", "plan", "--min-age", "0", "--json").stdout)
    layer = next(a["path"] for a in plan["actions"] if a["kind"] == "orphan-layer")
    # Deleting this file needs CAP_DAC_OVERRIDE: its dir is another uid's and read-only.
    box.sh(
        f"d=/srv/docker/{layer}/diff/locked; mkdir -p $d; echo x >$d/file; "
        f"chown -R 65534:65534 $d; chmod 0555 $d"
    )
    box.dropin(
        "/usr/local/bin/dockergc gc --yes --min-age 0",
        "/usr/local/bin/dockergc purge --older-than 0s --yes",
    )
    try:
        code, log = box.start()
    finally:
        box.no_dropin()
    assert code == 0, log
    assert re.search(r"run \S+: applied; \d+ item\(s\) in quarantine", log), log
    assert "purged 1 run(s)" in log, log
    runs = json.loads(box.run("dockergc", "runs", "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["purged"], runs
    assert not box.sh("find /srv/docker/.dockergc/runs -path '*/q/*' | head -1").stdout
    m = box.metrics()  # written by gc, before the purge: what it moved
    assert value(m, "dockergc_last_run_success", result="applied") == 1
    assert value(m, "dockergc_quarantine_bytes") == value(m, "dockergc_reclaimed_bytes") > 0


def test_hardening_still_sees_other_processes(box: Box) -> None:
    """Another service's process with its cwd in the root: gc in the sandbox, with fewer
    capabilities than that process, still finds it (CAP_SYS_PTRACE), refuses (exit 3, a
    success for the unit) and says so in the metrics."""
    box.fresh_root("/srv/docker")
    holder = ["--unit", "holder", "-p", "WorkingDirectory=/srv/docker/overlay2"]
    box.run("systemd-run", *holder, "sleep", "600")
    box.run("systemctl", "is-active", "holder")
    box.dropin("/usr/local/bin/dockergc gc --yes --min-age 0")
    try:
        code, log = box.start()
    finally:
        box.no_dropin()
        box.run("systemctl", "stop", "holder")
    assert code == 0, log
    assert re.search(
        r"sleep \(pid \d+, /usr/bin/sleep\) has its cwd in /srv/docker/overlay2", log
    ), log
    m = box.metrics()
    assert value(m, "dockergc_last_run_success", result="refused") == 0
    assert value(m, "dockergc_last_run_timestamp_seconds") > time.time() - 300


def test_security_exposure_is_low(box: Box) -> None:
    out = box.run("systemd-analyze", "security", "--no-pager", "dockergc.service").stdout
    score = float(re.findall(r"Overall exposure level for dockergc.service: ([\d.]+)", out)[0])
    print(f"systemd-analyze security dockergc.service: {score}")
    assert score <= 2.0, out


# Relocation with its default stop and start commands, on the packaged units of Docker
# Engine 28.5 + containerd 2.1 (docker.socket, docker.service, containerd.service) under
# the container's systemd. Its cgroups are read-only in systemd-nspawn here (the host is
# cgroup v1), so no container process runs: what the move must keep is proved by reading
# through the daemon (docker cp out of a container's rw layer and its volume, docker save
# of every layer), which mounts what the old root held.
ENGINE = "28.5"
UNITS = ("docker.service", "docker.socket", "containerd.service")
OPERATOR_TOML = """# containerd's config, as an operator left it
version = 3

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"
"""


@pytest.fixture(scope="module")
def engine_box(box: Box, tmp_path_factory: pytest.TempPathFactory) -> Box:
    """The box with the 28.5 engine installed as its packages lay it out: the programs in
    /usr, runc, the packaged units, a docker group; a busybox rootfs tarball in /root."""
    from tests.engine import binaries, busybox_rootfs, engine_available

    why = engine_available(ENGINE)
    if why is None and not (box.dir / "usr/bin/rsync").exists():
        why = f"no rsync in {TREE}: run .ci/get-systemd-tree"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the systemd relocation tests must run in CI: {why}")
        pytest.skip(why)
    top = Path(binaries(ENGINE).dockerd).parents[2]
    for name in ("containerd", "containerd-shim-runc-v2", "ctr", "docker"):
        shutil.copy(top / "usr/bin" / name, box.dir / "usr/bin" / name)
    for name in ("dockerd", "docker-proxy"):  # 28.5 will not start without the proxy
        shutil.copy(top / "usr/sbin" / name, box.dir / "usr/sbin" / name)
    shutil.copy("/usr/sbin/runc", box.dir / "usr/sbin/runc")
    for unit in UNITS:
        shutil.copy(top / "usr/lib/systemd/system" / unit, box.dir / "etc/systemd/system" / unit)
    rootfs = busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    subprocess.run(
        ["tar", "-C", str(rootfs), "-cf", str(box.dir / "root/busybox.tar"), "."], check=True
    )
    box.run("groupadd", "-f", "docker")
    box.run("systemctl", "daemon-reload")
    return box


def _engine_on_systemd(box: Box, containerd_store: bool) -> None:
    """A fresh engine on /var/lib/docker (and /var/lib/containerd) started by systemd, with
    an image and a container whose rw layer and volume hold a file each."""
    box.sh(
        f"systemctl stop {' '.join(UNITS)}; "
        "rm -rf /var/lib/docker /var/lib/containerd /srv/docker /srv/containerd "
        "/var/lib/dockergc/relocations /etc/containerd; mkdir -p /etc/docker"
    )
    config = {"iptables": False, "ip6tables": False, "bridge": "none"}
    if containerd_store:
        config["features"] = {"containerd-snapshotter": True}
        box.run("mkdir", "-p", "/etc/containerd")
        (box.dir / "etc/containerd/config.toml").write_text(OPERATOR_TOML)
    (box.dir / "etc/docker/daemon.json").write_text(json.dumps(config, indent=2) + "\n")
    box.run("systemctl", "reset-failed", *UNITS)  # the tests before started them often
    started = box.run("systemctl", "start", *reversed(UNITS), check=None)
    assert started.returncode == 0, box.run("journalctl", "--no-pager", "-n", "40").stdout
    box.sh(
        "docker import /root/busybox.tar base:1 >/dev/null\n"
        "docker create --name keep -v data:/v base:1 sh >/dev/null\n"
        "rm -rf /tmp/p; mkdir -p /tmp/p/v; echo in-the-rw-layer >/tmp/p/rw\n"
        "echo in-the-volume >/tmp/p/v/kept\n"
        "tar -C /tmp/p -cf - . | docker cp - keep:/"
    )
    driver = box.run("docker", "info", "-f", "{{.Driver}}").stdout.strip()
    assert driver == ("overlayfs" if containerd_store else "overlay2"), driver


def _engine_kept_everything(box: Box, root: str) -> None:
    assert box.run("docker", "info", "-f", "{{.DockerRootDir}}").stdout.strip() == root
    active = box.run("systemctl", "is-active", *UNITS, check=None).stdout.split()
    assert active == ["active"] * len(UNITS), active
    assert "in-the-rw-layer" in box.sh("docker cp keep:/rw - | tar -xOf -").stdout
    assert "in-the-volume" in box.sh("docker cp keep:/v/kept - | tar -xOf -").stdout
    saved = box.sh("docker save base:1 | wc -c").stdout  # every layer read back
    assert int(saved) > 1_000_000, saved


def _relocate(box: Box, *extra: str, check: int = 0) -> dict:  # type: ignore[type-arg]
    """dockergc relocate with no --stop-cmd/--start-cmd: the defaults are what runs."""
    args = ("relocate", "--to", "/srv/docker", *extra, "--yes", "--json")
    out = box.run("dockergc", *args, check=check)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_relocate_with_its_default_commands_under_systemd(engine_box: Box) -> None:
    box = engine_box
    _engine_on_systemd(box, containerd_store=False)
    # An operator's restarts just before: with the relocation's stop and start they are
    # more than docker.service's 3 starts a minute (its StartLimitBurst).
    for _ in range(2):  # with the start above: 3, the limit
        box.run("systemctl", "restart", "docker.service")
    out = _relocate(box)
    assert out["state"] == "relocated", out
    assert 0 < out["downtime_seconds"] < 120, out
    config = json.loads((box.dir / "etc/docker/daemon.json").read_text())
    assert config == {
        "iptables": False,
        "ip6tables": False,
        "bridge": "none",
        "data-root": "/srv/docker",
    }
    _engine_kept_everything(box, "/srv/docker")
    assert box.run("test", "-d", "/var/lib/docker/overlay2").returncode == 0  # until finalize
    box.run("dockergc", "relocate", "finalize", "--yes")
    assert not box.run("find", "/var/lib/docker", "-mindepth", "1").stdout  # emptied
    _engine_kept_everything(box, "/srv/docker")


def test_relocate_both_roots_with_the_default_commands_under_systemd(engine_box: Box) -> None:
    """A containerd image store host: the defaults stop docker.socket, docker.service and
    containerd.service, and start them in the reverse order; containerd serves its new
    root (its meta.db is the one it holds open), config.toml switched byte for byte but
    its root."""
    box = engine_box
    _engine_on_systemd(box, containerd_store=True)
    out = _relocate(box, "--containerd-to", "/srv/containerd")
    assert out["state"] == "relocated" and out["containerd_new"] == "/srv/containerd", out
    assert 0 < out["downtime_seconds"] < 120, out
    toml = (box.dir / "etc/containerd/config.toml").read_text()
    # the root line before the first table, every other byte as the operator left it
    assert toml == OPERATOR_TOML.replace("\n[plugins]", '\nroot = "/srv/containerd"\n[plugins]')
    assert (
        json.loads((box.dir / "etc/docker/daemon.json").read_text())["data-root"] == "/srv/docker"
    )
    _engine_kept_everything(box, "/srv/docker")
    pid = box.run("systemctl", "show", "-p", "MainPID", "--value", "containerd.service").stdout
    held = box.sh(f"ls -l /proc/{pid.strip()}/fd | grep meta.db || true").stdout
    assert "/srv/containerd/io.containerd.metadata.v1.bolt/meta.db" in held, held
    assert (
        box.run("test", "-d", "/var/lib/containerd/io.containerd.content.v1.content").returncode
        == 0
    )
    box.run("dockergc", "relocate", "finalize", "--yes")
    for old in ("/var/lib/docker", "/var/lib/containerd"):
        assert not box.run("find", old, "-mindepth", "1").stdout, old  # emptied
    _engine_kept_everything(box, "/srv/docker")
    box.run("systemctl", "stop", *UNITS)


DOCKER_DROPIN = "/etc/systemd/system/docker.service.d/fail-on-new-root.conf"


def test_a_dockerd_that_fails_on_its_new_root_rolls_both_back_under_systemd(
    engine_box: Box,
) -> None:
    """docker.service fails while daemon.json names the new root, with Restart=always and
    its start limit (3 starts in 60 s) in play: the defaults stop everything again (an
    automatic restart included), both files come back byte for byte and the engine starts
    on its old roots. (A containerd that fails instead keeps `systemctl start` waiting
    about 2 min, dockerd's containerd timeout and systemd's restarts, before the same
    rollback.)"""
    box = engine_box
    _engine_on_systemd(box, containerd_store=True)
    files = ("etc/docker/daemon.json", "etc/containerd/config.toml")
    before = {f: (box.dir / f).read_bytes() for f in files}
    box.sh(
        f"mkdir -p {Path(DOCKER_DROPIN).parent}; cat >{DOCKER_DROPIN} <<'EOF'\n[Service]\n"
        "ExecStartPre=/bin/sh -c '! grep -q /srv/docker /etc/docker/daemon.json'\nEOF"
    )
    box.run("systemctl", "daemon-reload")
    try:
        out = _relocate(box, "--containerd-to", "/srv/containerd", check=1)
    finally:
        box.run("rm", "-f", DOCKER_DROPIN)
        box.run("systemctl", "daemon-reload")
    said = out["error"]["message"]
    assert "relocation failed at start-daemon" in said, out
    assert "rolled back: the daemon runs on /var/lib/docker again" in said, out
    journal = box.sh("cat /var/lib/dockergc/relocations/*/journal.jsonl").stdout
    assert '"type": "rollback-end"' in journal, journal
    assert {f: (box.dir / f).read_bytes() for f in files} == before
    _engine_kept_everything(box, "/var/lib/docker")
    pid = box.run("systemctl", "show", "-p", "MainPID", "--value", "containerd.service").stdout
    held = box.sh(f"ls -l /proc/{pid.strip()}/fd | grep meta.db || true").stdout
    assert "/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db" in held, held
    for new in ("/srv/docker", "/srv/containerd"):
        assert not box.run("find", new, "-mindepth", "1", check=None).stdout, new
    box.run("systemctl", "stop", *UNITS)
