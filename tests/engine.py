"""A real containerd + dockerd on a private data root, for tests that need the truth.

Each Engine has its own data root, exec root, sockets and pidfile under a short temp
dir (unix socket paths are limited to 108 bytes), and never touches the host's
/etc/docker/daemon.json or /var/lib/docker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOCKER = "/usr/bin/docker"  # Debian 12's 20.10 client: BuildKit built in
# Every real-engine test that is not about one engine's own behaviour runs on each of these.
ENGINE_VERSIONS = ("20.10", "28.5")
BUSYBOX = "/usr/bin/busybox"
# Where .ci/get-engine-28.5 unpacks Debian unstable's 28.5 engine (overridable).
ENGINE_28_5_DEFAULT = "/var/cache/dockergc-ci/docker-28.5"


@dataclass(frozen=True)
class EngineBinaries:
    """One engine version's programs. ``path_prefix`` goes first on PATH of every daemon
    and client we start, so dockerd and containerd find their own containerd-shim-runc-v2
    and docker-init (runc stays Debian 12's); ``docker_config`` (DOCKER_CONFIG) holds
    ``cli-plugins/docker-buildx`` where the client builds with BuildKit only through it."""

    version: str
    dockerd: str
    containerd: str
    docker: str
    path_prefix: str = ""
    docker_config: str | None = None
    hint: str = "apt-get install docker.io busybox-static"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: our environment) with this version's PATH prefix."""
        env = dict(os.environ if base is None else base)
        if self.path_prefix:
            env["PATH"] = self.path_prefix + ":" + env.get("PATH", os.defpath)
        return env

    def client_env(self, buildkit: bool = False) -> dict[str, str]:
        env = self.env()
        env["DOCKER_BUILDKIT"] = "1" if buildkit else "0"
        if self.docker_config:
            env["DOCKER_CONFIG"] = self.docker_config
        return env


def binaries(version: str) -> EngineBinaries:
    if version == "20.10":  # Debian 12's docker.io and containerd 1.6, installed
        return EngineBinaries(version, "/usr/sbin/dockerd", "/usr/bin/containerd", DOCKER)
    if version == "28.5":  # Debian unstable's docker.io, docker-cli, containerd 2.1, unpacked
        top = Path(os.environ.get("DOCKERGC_ENGINE_28_5") or ENGINE_28_5_DEFAULT)
        return EngineBinaries(
            version,
            str(top / "usr/sbin/dockerd"),
            str(top / "usr/bin/containerd"),
            str(top / "usr/bin/docker"),
            path_prefix=f"{top}/usr/bin:{top}/usr/sbin",
            docker_config=str(top / "docker-config"),
            hint=f"run .ci/get-engine-28.5 {top}",
        )
    raise ValueError(f"unknown engine version {version!r} (known: {', '.join(ENGINE_VERSIONS)})")


def engine_available(version: str = "20.10") -> str | None:
    """None if a real engine of ``version`` can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    bins = binaries(version)
    needed = [(t, bins.hint) for t in (bins.dockerd, bins.containerd, bins.docker)]
    if bins.docker_config:
        needed.append((os.path.join(bins.docker_config, "cli-plugins/docker-buildx"), bins.hint))
    needed.append((BUSYBOX, "apt-get install busybox-static"))
    needed.append(("/usr/sbin/runc", "apt-get install runc"))
    for tool, hint in needed:
        if not os.path.exists(tool):
            return f"engine {version}: {tool} is missing ({hint})"
    return None


def busybox_rootfs(dest: Path) -> Path:
    """A minimal rootfs: busybox and its applet links."""
    (dest / "bin").mkdir(parents=True)
    for d in ("etc", "tmp", "dev", "proc", "sys"):
        (dest / d).mkdir()
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            os.symlink("busybox", dest / "bin" / applet)
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return dest


class Engine:
    """``root_in_config``: the data root is named in daemon.json (not on the command line),
    as on a real host, so that relocation's config switch is what moves it."""

    def __init__(
        self,
        base: Path | None = None,
        root_in_config: bool = False,
        version: str = "20.10",
        store: str = "overlay2",
    ) -> None:
        """``store="containerd"`` starts dockerd with the containerd image store (28.5's
        ``--feature containerd-snapshotter``): images live in containerd's root."""
        if store == "containerd" and version == "20.10":
            raise ValueError("the containerd image store needs dockerd 23+ (use 28.5)")
        self.store = store
        self.version = version
        self.bins = binaries(version)
        self.base = base or Path(tempfile.mkdtemp(prefix="dgc-", dir="/tmp"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.root = self.base / "root"
        self.exec_root = self.base / "exec"
        self.sock = self.base / "d.sock"
        self.ctd_dir = self.base / "ctd"
        self.ctd_sock = self.ctd_dir / "c.sock"
        self.config = self.base / "daemon.json"
        self.root_in_config = root_in_config
        self.config.write_text(
            json.dumps({"data-root": str(self.root)}) if root_in_config else "{}\n"
        )
        self.pidfile = self.base / "d.pid"
        self.ctd: subprocess.Popen[bytes] | None = None
        self.dockerd: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        self.start_containerd(timeout)
        dlog = open(self.base / "dockerd.log", "ab")  # noqa: SIM115
        self.dockerd = subprocess.Popen(
            self.dockerd_args(), stdout=dlog, stderr=dlog, env=self.bins.env()
        )
        self._wait(self._answers, timeout, "dockerd")

    def start_containerd(self, timeout: float = 60, root: Path | None = None) -> None:
        """containerd alone, rooted in ``root`` (default: under our base dir)."""
        if why := engine_available(self.version):
            raise RuntimeError(why)  # in CI, where engine tests are never skipped
        self.ctd_dir.mkdir(parents=True, exist_ok=True)
        toml = self.ctd_dir / "config.toml"
        toml.write_text(
            "version = 2\n"
            f'root = "{root or self.ctd_dir / "root"}"\nstate = "{self.ctd_dir}/state"\n'
            f'[grpc]\n  address = "{self.ctd_sock}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
        )
        log = open(self.base / "containerd.log", "ab")  # noqa: SIM115
        self.ctd = subprocess.Popen(
            [self.bins.containerd, "--config", str(toml)],
            stdout=log,
            stderr=log,
            env=self.bins.env(),
        )
        self._wait(lambda: self.ctd_sock.exists(), timeout, "containerd socket")

    def dockerd_args(self) -> list[str]:
        root = [] if self.root_in_config else ["--data-root", str(self.root)]
        return [
            self.bins.dockerd,
            f"--containerd={self.ctd_sock}",
            *root,
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.pidfile),
            "-H",
            f"unix://{self.sock}",
            "--config-file",
            str(self.config),
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            *(["--feature", "containerd-snapshotter"] if self.store == "containerd" else []),
        ]

    def control_scripts(self, fail_unless_root: Path | None = None) -> tuple[str, str]:
        """(stop command, start command) for dockergc relocate, like systemctl would be.

        With ``fail_unless_root``, start fails whenever daemon.json names another root:
        a daemon that will not come up on the new disk.
        """
        import shlex

        start, stop = self.base / "start.sh", self.base / "stop.sh"
        guard = ""
        if fail_unless_root:
            guard = (
                f"grep -q '\"{fail_unless_root}\"' {self.config} || "
                "{ echo 'refusing to start' >&2; exit 1; }\n"
            )
        path = ""
        if self.bins.path_prefix:
            path = f"PATH={shlex.quote(self.bins.path_prefix)}:$PATH; export PATH\n"
        start.write_text(
            "#!/bin/sh\n"
            + guard
            + path
            + f"[ -f {self.pidfile} ] && kill -0 $(cat {self.pidfile}) 2>/dev/null && exit 0\n"
            + f"setsid {shlex.join(self.dockerd_args())} >>{self.base}/dockerd.log 2>&1 &\n"
        )
        stop.write_text(
            "#!/bin/sh\n"
            f"[ -f {self.pidfile} ] || exit 0\npid=$(cat {self.pidfile})\n"
            "kill -TERM $pid 2>/dev/null || exit 0\n"
            "for i in $(seq 200); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.2; done\n"
            "kill -KILL $pid\n"
        )
        return f"sh {stop}", f"sh {start}"

    def start_detached(self, timeout: float = 60) -> tuple[str, str]:
        """Start containerd, then dockerd through the start script (not as our child, as
        systemd would); return the (stop, start) commands."""
        self.ctd_dir.mkdir(parents=True, exist_ok=True)
        self.start(timeout)  # containerd + a first dockerd to create the root
        if self.dockerd:
            self.dockerd.terminate()
            self.dockerd.wait(40)
            self.dockerd = None
        stop, start = self.control_scripts()
        subprocess.run(start.split(), check=True)
        self._wait(self._answers, timeout, "dockerd (detached)")
        return stop, start

    def _answers(self) -> bool:
        if self.dockerd and self.dockerd.poll() is not None:
            raise RuntimeError("dockerd exited:\n" + self.log_tail())
        if not self.sock.exists():
            return False
        info = self.run("info", "--format", "{{.Driver}} {{json .DriverStatus}}", check=False)
        if info.returncode != 0:
            return False
        # Every test here is about the overlay2 graphdriver's data root. 28.5 picks it on a
        # fresh root (the containerd image store is opt-in there, "containerd-snapshotter");
        # a daemon on the containerd store would leave image/ and overlay2/ empty.
        driver = info.stdout.strip()
        if self.store == "containerd":
            if "io.containerd.snapshotter" not in driver:
                raise RuntimeError(f"dockerd {self.version} is not on containerd: {driver}")
            return True
        if not driver.startswith("overlay2 ") or "io.containerd.snapshotter" in driver:
            raise RuntimeError(f"dockerd {self.version} is not on overlay2: {driver}")
        return True

    def log_tail(self, lines: int = 30) -> str:
        text = (self.base / "dockerd.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _wait(ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not come up in {timeout}s")

    def stop(self) -> None:
        """SIGTERM dockerd (it stops containers first), then containerd; unmount leftovers."""
        self._stop_by_pidfile()
        for proc, grace in ((self.dockerd, 40), (self.ctd, 15)):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.dockerd = self.ctd = None
        self.unmount_all()

    def _stop_by_pidfile(self) -> None:
        """A dockerd a control script started is not our child: stop it by its pidfile."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if self.dockerd and self.dockerd.pid == pid:
            return
        try:  # a pidfile a SIGKILL left names a dead dockerd, its pid perhaps reused since
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if str(self.pidfile).encode() not in fh.read().split(b"\0"):
                    return
        except OSError:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def unmount_all(self) -> None:
        """Lazily unmount whatever is still mounted under our base dir, deepest first."""
        base = str(self.base)
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh if line.split()[4].startswith(base)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def destroy(self) -> None:
        self._kill_containers()
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_containers(self) -> None:
        """SIGKILL the running containers of an engine about to be thrown away: dockerd's
        own stop gives each 10 s, and ``sleep`` as pid 1 ignores SIGTERM."""
        if not self.sock.exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            running = self.run("ps", "-q", check=False, timeout=20).stdout.split()
            if running:
                self.run("kill", *running, check=False, timeout=30)

    # -- docker CLI --------------------------------------------------------------------

    def run(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**self.bins.client_env(), **(env or {})}
        proc = subprocess.run(
            self.docker_argv(*args),
            capture_output=True,
            env=full_env,
            input=input,
            timeout=timeout,
        )
        out = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def docker_argv(self, *args: str) -> list[str]:
        """This version's client, talking to this engine: ``docker -H … args``."""
        return [self.bins.docker, "-H", f"unix://{self.sock}", *args]

    def import_base(self, tag: str = "base:1") -> str:
        """Import the busybox rootfs as ``tag`` (again, after a prune: the rootfs is made
        once per engine)."""
        rootfs = self.base / "rootfs"
        if not rootfs.is_dir():
            busybox_rootfs(rootfs)
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
        return self.run("import", "-", tag, input=tar.stdout).stdout.strip()

    def build(
        self, tag: str, dockerfile: str, buildkit: bool = False, files: dict[str, str] | None = None
    ) -> None:
        ctx = Path(tempfile.mkdtemp(dir=self.base, prefix="ctx-"))
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, text in (files or {}).items():
            (ctx / name).write_text(text)
        args = ["build", "-q", "-t", tag, str(ctx)]
        if buildkit:
            args = ["build", "-q", "--network", "none", "-t", tag, str(ctx)]
        self.run(*args, env=self.bins.client_env(buildkit))

    def image_ids(self) -> list[str]:
        out = self.run("images", "-aq", "--no-trunc").stdout.split()
        return sorted(set(out))

    def container_ids(self) -> list[str]:
        return sorted(self.run("ps", "-aq", "--no-trunc").stdout.split())


@contextlib.contextmanager
def loop_fs(size_mb: int, fstype: str = "ext4") -> Iterator[Path]:
    """A real second disk: an ext4 file system in a file, loop-mounted at a fresh dir."""
    work = Path(tempfile.mkdtemp(prefix="dgc-loop-", dir="/tmp"))
    image, mnt = work / "disk.img", work / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", f"{size_mb}M", str(image)], check=True)
    subprocess.run([f"mkfs.{fstype}", "-q", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
