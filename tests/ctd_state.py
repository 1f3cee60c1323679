"""Real dockerd 28.5 state on the containerd image store (``Engine(store="containerd")``):
what to build, how crashes leave leases behind, how to prove the daemon still works.

The overlay2 equivalents are tests/realstate.py (state, checks) and tests/crash.py (kills).
Facts behind the choices here (moby v28.5.2, containerd v2.1.9, BuildKit v0.25.2):

- ``docker load`` goes through containerd's client: ``Client.Import`` and then
  ``image.Unpack`` each hold a lease with a random id and ``containerd.io/gc.expire`` 24 h
  ahead, no other label. A SIGKILL of dockerd mid-load leaves that lease, holding the
  blobs (and, during unpack, the snapshots) written so far; ``docker image prune`` only
  deletes leases labelled ``moby/prune.images`` (pull, commit, export), so not these.
- Every container has a lease named by its id, no labels, no expiry, holding the
  snapshots ``<id>`` and ``<id>-init``; dockerd drops a container at start whose lease is
  missing ("rw layer lease not found").
- BuildKit keeps one lease per cache record (25-char id, ``containerd.io/gc.flat``), with
  ``-variants`` and ``-view`` companions, and temporary leases (``buildkit/lease.temporary``,
  deleted by BuildKit itself at dockerd start); build history lives in ``moby_history``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dockergc.store.bbolt import Bucket, parse
from tests.engine import Engine
from tests.realstate import APP, MULTI

# BuildKit multi-stage build whose first stage is the one whose CACHED line verify_all
# checks after a crash; 2 MiB of random data so its snapshot is visible in du.
BK_MULTI = """FROM base:1 AS build
RUN echo built > /artifact && dd if=/dev/urandom of=/junk bs=1M count=2 2>/dev/null
FROM base:1
COPY --from=build /artifact /artifact
RUN echo done > /done
"""
BK_CACHED_STEP = "[build 2/2] RUN echo built"
# A build that stays in its RUN step long enough to be killed there.
SLOW_BUILD = """FROM base:1
RUN dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null && echo half > /half && sleep 30
"""
NAMESPACE = "moby"
GO_EPOCH_OFFSET = 62135596800  # seconds from 0001-01-01 to 1970-01-01 (Go's time.Time)


@dataclass
class Baseline:
    """What ``populate`` made and ``verify_all`` checks again."""

    work: Path  # build contexts and saved tars
    images: list[str]  # tags that must run
    containers: dict[str, str]  # name -> id
    volume: str
    tars: dict[str, Path]  # tag -> ``docker save`` of it
    bk_context: Path  # the BuildKit multi-stage context whose stage must stay CACHED
    leases: set[str] = field(default_factory=set)  # moby leases of the idle engine


@dataclass(frozen=True)
class Lease:
    """A lease as containerd's meta.db holds it, with what it keeps alive."""

    id: str
    labels: dict[str, str]
    created: datetime | None
    snapshots: tuple[str, ...]  # snapshot keys (any snapshotter)
    content: tuple[str, ...]  # blob digests
    ingests: tuple[str, ...]

    @property
    def expires(self) -> datetime | None:
        """``containerd.io/gc.expire``, if set and readable."""
        value = self.labels.get("containerd.io/gc.expire")
        if value is None:
            return None
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        return None


# -- reading containerd ------------------------------------------------------------------


def ctd_root(e: Engine) -> Path:
    """containerd's root of an Engine (its config.toml names ``ctd_dir/root``)."""
    return e.ctd_dir / "root"


def ctr(e: Engine, *args: str, namespace: str = NAMESPACE, check: bool = True) -> str:
    """Run this engine's ``ctr`` against its containerd in ``namespace``; its stdout."""
    exe = os.path.join(os.path.dirname(e.bins.containerd), "ctr")
    proc = subprocess.run(
        [exe, "-a", str(e.ctd_sock), "-n", namespace, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _go_time(raw: bytes | None) -> datetime | None:
    """A Go ``time.Time.MarshalBinary`` value (version 1 or 2), as UTC."""
    if not raw or raw[0] not in (1, 2) or len(raw) < 13:
        return None
    secs = int.from_bytes(raw[1:9], "big", signed=True) - GO_EPOCH_OFFSET
    nanos = int.from_bytes(raw[9:13], "big")
    return datetime.fromtimestamp(secs, UTC) + timedelta(microseconds=nanos // 1000)


def collect(e: Engine) -> None:
    """Run containerd's GC now and wait for it: deleting a lease with ``--sync`` does (as
    dockergc's ``ctr.collect``). Its own deletes' GC may wait: it is scheduled."""
    # In a namespace of its own: in moby's, a lease left by a kill in between would look
    # like an abandoned load's to the tests that count those. The GC spans every namespace.
    ctr(e, "leases", "create", "--id", "collect", "--expires", "1m", namespace="tests-collect")
    ctr(e, "leases", "rm", "--sync", "collect", namespace="tests-collect")
    ctr(e, "namespaces", "rm", "tests-collect")  # empty again: nothing to report


def read_leases(e: Engine, namespace: str = NAMESPACE) -> dict[str, Lease]:
    """Every lease of ``namespace`` in meta.db, read from copies of the live file until
    two agree: a copy taken while containerd commits can mix two transactions."""
    last = _read_leases_once(e, namespace)
    for _ in range(5):
        again = _read_leases_once(e, namespace)
        if again == last:
            return again
        last = again
    return last


def _read_leases_once(e: Engine, namespace: str) -> dict[str, Lease]:
    meta = ctd_root(e) / "io.containerd.metadata.v1.bolt/meta.db"
    with tempfile.NamedTemporaryFile(dir=e.base, prefix="meta-") as tmp:
        shutil.copyfile(meta, tmp.name)
        db = parse(Path(tmp.name).read_bytes())
    ns = db.buckets.get(b"v1", Bucket()).buckets.get(namespace.encode(), Bucket())
    out: dict[str, Lease] = {}
    for raw_id, lb in ns.buckets.get(b"leases", Bucket()).buckets.items():
        labels = lb.buckets.get(b"labels", Bucket()).values
        snaps = lb.buckets.get(b"snapshots", Bucket()).buckets.values()
        lid = raw_id.decode()
        out[lid] = Lease(
            id=lid,
            labels={k.decode(): v.decode() for k, v in labels.items()},
            created=_go_time(lb.values.get(b"createdat")),
            snapshots=tuple(sorted(k.decode() for s in snaps for k in s.values)),
            content=tuple(sorted(k.decode() for k in lb.buckets.get(b"content", Bucket()).values)),
            ingests=tuple(sorted(k.decode() for k in lb.buckets.get(b"ingests", Bucket()).values)),
        )
    return out


def snapshot_dirs(e: Engine) -> set[str]:
    """Names under the overlayfs snapshotter's ``snapshots/`` (its numeric ids)."""
    d = ctd_root(e) / "io.containerd.snapshotter.v1.overlayfs/snapshots"
    return set(os.listdir(d)) if d.is_dir() else set()


def blob_files(e: Engine) -> set[str]:
    """Digests (hex) of the blobs in containerd's content store."""
    d = ctd_root(e) / "io.containerd.content.v1.content/blobs/sha256"
    return set(os.listdir(d)) if d.is_dir() else set()


def du_bytes(path: Path) -> int:
    """Disk usage of ``path`` in bytes (``du -sxB1``; hard links counted once)."""
    out = subprocess.run(["du", "-sxB1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


# -- dockerd lifecycle -------------------------------------------------------------------


def dockerd_pid(e: Engine) -> int:
    """The running dockerd's pid, from its pidfile."""
    return int(e.pidfile.read_text().strip())


def start_dockerd(e: Engine, timeout: float = 60) -> None:
    """Start dockerd again on the containerd that is already running (``Engine.start``
    would start a second containerd)."""
    log = open(e.base / "dockerd.log", "ab")  # noqa: SIM115
    e.dockerd = subprocess.Popen(e.dockerd_args(), stdout=log, stderr=log, env=e.bins.env())
    e._wait(e._answers, timeout, "dockerd")


def stop_dockerd(e: Engine, timeout: float = 60) -> None:
    """Stop dockerd cleanly (SIGTERM: it stops its containers first), containerd staying
    up, as `systemctl stop docker` does on a host whose containerd is shared."""
    pid = dockerd_pid(e)
    os.kill(pid, signal.SIGTERM)
    if e.dockerd and e.dockerd.pid == pid:
        e.dockerd.wait(timeout)
    else:
        _wait_gone(pid, timeout)
    e.pidfile.unlink(missing_ok=True)
    e.dockerd = None


def kill_dockerd(e: Engine) -> None:
    """SIGKILL dockerd and wait until it is gone (its containers' shims keep running)."""
    pid = dockerd_pid(e)
    os.kill(pid, signal.SIGKILL)
    if e.dockerd and e.dockerd.pid == pid:
        e.dockerd.wait(30)
    else:
        _wait_gone(pid)
    # a zombie still "runs" for dockerd's pidfile check: the next start would refuse
    e.pidfile.unlink(missing_ok=True)
    e.dockerd = None


def kill_containerd(e: Engine) -> None:
    """SIGKILL containerd (ours, by its Popen or by the pid whose cmdline names our dir)."""
    pid = e.ctd.pid if e.ctd else _pid_with_cmdline(str(e.ctd_dir / "config.toml"))
    os.kill(pid, signal.SIGKILL)
    if e.ctd and e.ctd.pid == pid:
        e.ctd.wait(30)
    else:
        _wait_gone(pid)
    e.ctd = None
    with contextlib.suppress(FileNotFoundError):
        e.ctd_sock.unlink()


def _pid_with_cmdline(needle: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    return int(entry)
    raise RuntimeError(f"no process with {needle!r} in its cmdline")


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # a SIGKILLed child of another process stays a zombie until reaped
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} did not exit")


def _wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not happen within {timeout}s")


# -- building state ----------------------------------------------------------------------


def bk_build(e: Engine, tag: str, context: Path) -> str:
    """A BuildKit build (buildx plugin) with plain progress; its progress output."""
    out = e.run(
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "-t",
        tag,
        str(context),
        env=e.bins.client_env(buildkit=True),
    )
    return out.stdout + out.stderr


def cached_steps(progress: str) -> set[str]:
    """The step names a plain BuildKit progress log reports CACHED (``#5 [build 2/2] RUN …``
    then ``#5 CACHED``)."""
    names: dict[str, str] = {}
    cached: set[str] = set()
    for line in progress.splitlines():
        num, _, rest = line.partition(" ")
        if rest.startswith("[") and num not in names:
            names[num] = rest
        elif rest == "CACHED" and num in names:
            cached.add(names[num])
    return cached


def populate(e: Engine, work: Path | None = None) -> Baseline:
    """base:1 (import), app:1 (legacy builder, whiteouts and an opaque dir), bk:1 (BuildKit
    multi-stage, then rebuilt as bk:2 from cache), a volume with data, a stopped and a
    running container, and ``docker save`` tars of app:1 and bk:1."""
    work = work or Path(tempfile.mkdtemp(dir=e.base, prefix="ctd-state-"))
    work.mkdir(parents=True, exist_ok=True)
    if "base:1" not in e.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
        e.import_base()
    e.build("app:1", APP)
    ctx = work / "bk"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(BK_MULTI)
    bk_build(e, "bk:1", ctx)
    assert BK_CACHED_STEP in " ".join(cached_steps(bk_build(e, "bk:2", ctx)))
    e.build("bkm:1", MULTI, buildkit=True)
    e.run("volume", "create", "vol1")
    net = ("--network", "none")
    e.run("run", "--rm", *net, "-v", "vol1:/v", "base:1", "sh", "-c", "echo data > /v/x")
    e.run("create", *net, "-v", "vol1:/v", "--name", "c_stopped", "app:1", "cat", "/v/x")
    e.run("start", "-a", "c_stopped")
    e.run("run", "-d", *net, "--name", "c_running", "bk:1", "sleep", "100000")
    tars = {}
    for tag in ("app:1", "bk:1"):
        tars[tag] = work / (tag.replace(":", "_") + ".tar")
        e.run("save", "-o", str(tars[tag]), tag)
    return Baseline(
        work=work,
        images=["base:1", "app:1", "bk:1", "bk:2", "bkm:1"],
        containers={n: inspect(e, n, "{{.Id}}") for n in ("c_stopped", "c_running")},
        volume="vol1",
        tars=tars,
        bk_context=ctx,
        leases=set(read_leases(e)),
    )


def inspect(e: Engine, name: str, fmt: str) -> str:
    """``docker inspect -f fmt name``, stripped."""
    return e.run("inspect", "-f", fmt, name).stdout.strip()


def random_image_tar(dest: Path, layers: int = 8, mb: int = 6, tag: str = "big:1") -> Path:
    """A ``docker save``-format tar (manifest.json, config, uncompressed layers), each layer
    one file of ``mb`` MiB of random bytes, built without any engine: loading it takes
    long enough to be killed mid-way, and every load of it is new to the engine."""
    diff_ids, entries = [], []
    for n in range(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            data = os.urandom(mb << 20)
            info = tarfile.TarInfo(f"layer{n}.bin")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        blob = buf.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        diff_ids.append("sha256:" + digest)
        entries.append((f"blobs/sha256/{digest}", blob))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/layer0.bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"layer {n}"} for n in range(layers)],
        }
    ).encode()
    cfg = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
    manifest = [{"Config": cfg, "RepoTags": [tag], "Layers": [p for p, _ in entries]}]
    with tarfile.open(dest, "w") as t:
        for path, blob in [
            *entries,
            (cfg, config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(path)
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))
    return dest


# -- crashes -----------------------------------------------------------------------------


def _left(e: Engine, before: set[str], fault: datetime) -> list[str]:
    """The leases made between ``before`` was read and the ``fault`` (a kill, a signal):
    a lease dockerd takes for a moment after it (an API call, BuildKit's start-up GC) is
    not the fault's leftover."""
    return sorted(
        i
        for i, lease in read_leases(e).items()
        if i not in before and (lease.created is None or lease.created <= fault)
    )


def _after_restart(e: Engine, before: set[str], fault: datetime) -> list[str]:
    start_dockerd(e)
    return _left(e, before, fault)


def _start_load(e: Engine, tar: Path) -> subprocess.Popen[bytes]:
    """``docker load -i tar`` in the background, its output discarded."""
    return subprocess.Popen(
        e.docker_argv("load", "-i", str(tar)),
        env=e.bins.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def crash_load(e: Engine, tar: Path, phase: str = "unpack", after: int = 2) -> list[str]:
    """SIGKILL dockerd while it loads ``tar`` (``random_image_tar``), once ``after`` new
    blobs are in the content store (``phase="import"``) or ``after`` new snapshot dirs
    exist (``phase="unpack"``); restart it; return the ids of the leases the load left."""
    if phase not in ("import", "unpack"):
        raise ValueError(phase)
    before = set(read_leases(e))
    count = blob_files if phase == "import" else snapshot_dirs
    start = len(count(e))
    client = _start_load(e, tar)
    try:
        _wait_for(lambda: len(count(e)) >= start + after, 120, f"{after} new {phase} items")
        kill_dockerd(e)
        fault = datetime.now(UTC)
    finally:
        client.wait(60)
    return _after_restart(e, before, fault)


def crash_build(e: Engine, work: Path | None = None) -> list[str]:
    """SIGKILL dockerd while BuildKit runs the RUN step of ``SLOW_BUILD`` (8 MiB written,
    then a sleep); restart it; return the ids of the leases the build left."""
    ctx = Path(tempfile.mkdtemp(dir=work or e.base, prefix="slow-"))
    (ctx / "Dockerfile").write_text(SLOW_BUILD)
    before = set(read_leases(e))
    client = subprocess.Popen(
        e.docker_argv(
            "build", "--progress", "plain", "--network", "none", "-t", "slow:1", str(ctx)
        ),
        env=e.bins.client_env(buildkit=True),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert client.stdout is not None
        for line in client.stdout:
            if "RUN dd" in line:  # the step started; give it time to write its data
                time.sleep(2)
                break
        kill_dockerd(e)
        fault = datetime.now(UTC)
    finally:
        client.kill()
        client.wait(60)
    return _after_restart(e, before, fault)


def crash_containerd_load(e: Engine, tar: Path, after: int = 2) -> list[str]:
    """SIGKILL containerd while dockerd loads ``tar`` (after ``after`` new snapshot dirs),
    restart containerd (dockerd reconnects by itself), wait for dockerd to answer; return
    the ids of the leases left."""
    before = set(read_leases(e))
    start = len(snapshot_dirs(e))
    client = _start_load(e, tar)
    try:
        _wait_for(lambda: len(snapshot_dirs(e)) >= start + after, 120, "snapshots")
        kill_containerd(e)
        fault = datetime.now(UTC)
    finally:
        client.wait(120)
    e.start_containerd()
    _wait_for(lambda: e.run("images", check=False, timeout=30).returncode == 0, 120, "dockerd")
    return _left(e, before, fault)


def crash_rm(e: Engine, name: str, delay: float) -> dict[str, object]:
    """SIGKILL dockerd ``delay`` seconds into ``docker rm -f name``, restart it; report what
    is left of the container: its lease, its snapshots, ``containers/<id>``,
    ``rootfs/overlayfs/<id>``, and whether ``docker ps -a`` still lists it."""
    cid = inspect(e, name, "{{.Id}}")
    client = subprocess.Popen(
        e.docker_argv("rm", "-f", name),
        env=e.bins.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    kill_dockerd(e)
    client.wait(60)
    start_dockerd(e)
    leases = read_leases(e)
    snaps = ctr(e, "snapshots", "ls").split()
    return {
        "id": cid,
        "lease": cid in leases,
        "snapshots": [s for s in (cid, cid + "-init") if s in snaps],
        "container_dir": (e.root / "containers" / cid).exists(),
        "rootfs_dir": (e.root / "rootfs/overlayfs" / cid).exists(),
        "listed": cid in e.container_ids(),
    }


# -- checks ------------------------------------------------------------------------------


def verify_all(e: Engine, baseline: Baseline) -> None:
    """Every image runs, app:1's whiteouts and opaque dir hold, every container starts (the
    stopped one prints its volume's data), the cached BuildKit stage still shows CACHED,
    and every saved tar loads again."""
    net = ("--network", "none")
    for image in baseline.images:
        e.run("run", "--rm", *net, image, "true")
    out = e.run(
        "run",
        "--rm",
        *net,
        "app:1",
        "sh",
        "-c",
        "test ! -e /bin/vi && test ! -e /data/sub && cat /data/new /data/k",
    ).stdout
    assert out.split() == ["y", "keep"], out
    assert e.run("start", "-a", "c_stopped").stdout.split() == ["data"]
    e.run("start", "c_running")
    assert inspect(e, "c_running", "{{.State.Running}}") == "true"
    assert set(e.container_ids()) >= set(baseline.containers.values())
    progress = bk_build(e, "bk:3", baseline.bk_context)
    assert BK_CACHED_STEP in " ".join(cached_steps(progress)), progress[-3000:]
    for tag, tar in baseline.tars.items():
        e.run("load", "-i", str(tar))
        e.run("run", "--rm", *net, tag, "true")
