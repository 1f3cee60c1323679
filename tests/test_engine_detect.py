"""Offline commands refuse a root a real dockerd uses, however it reaches that root.

Each case starts one real dockerd (or containerd) on the root one way, against a
containerd shared by the module, puts a leftover layer dir in the root, and runs the
command: it must exit 3 naming the process (pid) and leave the root as it was.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.engine import ENGINE_VERSIONS, Engine

pytestmark = pytest.mark.engine

ORPHAN = "ab" * 32


@dataclass
class Case:
    """One dockerd's launch: argv, cwd, and the root dockergc is pointed at."""

    engine: Engine  # paths under the case's base dir; its dockerd is the one started
    argv: list[str] = field(default_factory=list)
    cwd: Path | None = None
    gc_root: Path | None = None
    name: str = "dockerd"  # what the refusal must call the process
    then: Callable[[], None] | None = None  # done once the daemon runs
    says: str = ""  # what else the refusal must say

    @property
    def base(self) -> Path:
        return self.engine.base

    @property
    def root(self) -> Path:
        return self.engine.root

    @property
    def dockerd(self) -> str:
        """The engine version's dockerd, by its absolute path."""
        return self.engine.bins.dockerd

    def flags(self, config: dict[str, str] | str | None = None) -> list[str]:
        """dockerd's minimal flags; ``config``: daemon.json contents, or a path to pass."""
        e = self.engine
        if not isinstance(config, str):
            e.config.write_text(json.dumps(config or {}))
        return [
            f"--containerd={e.ctd_sock}",
            *("--exec-root", str(e.exec_root), "--pidfile", str(e.pidfile)),
            *(
                "-H",
                f"unix://{e.sock}",
                "--config-file",
                config if isinstance(config, str) else str(e.config),
            ),
            *("--iptables=false", "--ip-masq=false", "--bridge=none"),
        ]

    def alias(self) -> Path:
        """A bind mount of the root, in our mount namespace."""
        alias = self.base / "alias"
        alias.mkdir()
        self.root.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(self.root), str(alias)], check=True)
        return alias


def data_root(c: Case) -> None:
    c.argv = [c.dockerd, "--data-root", str(c.root), *c.flags()]


def legacy_g(c: Case) -> None:
    c.argv = [c.dockerd, "-g", str(c.root), *c.flags()]


def legacy_g_attached(c: Case) -> None:
    c.argv = [c.dockerd, f"-g{c.root}", *c.flags()]


def json_edited_after_start(c: Case) -> None:
    """daemon.json names another root once dockerd runs (a move being prepared)."""
    c.argv = [c.dockerd, *c.flags({"data-root": str(c.root)})]
    c.then = lambda: c.engine.config.write_text(json.dumps({"data-root": str(c.base / "new")}))
    c.says = "open; its configuration names another root"


def json_data_root(c: Case) -> None:
    c.argv = [c.dockerd, *c.flags({"data-root": str(c.root)})]


def json_graph(c: Case) -> None:
    c.argv = [c.dockerd, *c.flags({"graph": str(c.root)})]


def symlinked(c: Case) -> None:
    c.root.mkdir()
    (c.base / "link").symlink_to(c.root)
    c.argv = [c.dockerd, "--data-root", str(c.base / "link"), *c.flags()]


def data_root_equals(c: Case) -> None:
    c.argv = [c.dockerd, f"--data-root={c.root}", *c.flags()]


def relative_data_root(c: Case) -> None:
    """--data-root relative to dockerd's cwd. 28.5 runs with it (``docker info`` then says
    DockerRootDir "root"); 20.10 hangs at start with one, so this way is 28.5's alone."""
    c.argv, c.cwd = [c.dockerd, "--data-root", c.root.name, *c.flags()], c.base
    c.says = f"(--data-root, relative to its cwd {c.base})"


def containerd_inside(c: Case) -> None:
    """dockerd's managed containerd keeps its root in R/containerd/daemon; here it runs
    alone (no dockerd), on a root laid out the way dockerd leaves it."""
    for d in ("image/overlay2/imagedb", "image/overlay2/layerdb", "overlay2/l"):
        (c.root / d).mkdir(parents=True)
    c.name = "containerd"


def bind_alias_daemon_side(c: Case) -> None:
    c.argv = [c.dockerd, "--data-root", str(c.alias()), *c.flags()]


def bind_alias_dockergc_side(c: Case) -> None:
    c.argv, c.gc_root = [c.dockerd, "--data-root", str(c.root), *c.flags()], c.alias()


def json_alias(c: Case) -> None:
    c.argv = [c.dockerd, *c.flags({"data-root": str(c.alias())})]


def relative_config_file(c: Case) -> None:
    (c.base / "rel.json").write_text(json.dumps({"data-root": str(c.root)}))
    c.argv, c.cwd = [c.dockerd, *c.flags("rel.json")], c.base


def private_namespace(c: Case) -> None:
    """The root is bind-mounted at B only inside dockerd's own mount namespace."""
    inner = c.base / "ns"
    inner.mkdir()
    c.root.mkdir(exist_ok=True)
    cmd = shlex.join(["mount", "--bind", str(c.root), str(inner)])
    cmd += " && exec " + shlex.join([c.dockerd, "--data-root", str(inner), *c.flags()])
    c.argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", cmd]


def renamed(name: str) -> Callable[[Case], None]:
    def launch(c: Case) -> None:
        shutil.copy2(c.dockerd, c.base / name)
        c.argv, c.name = [str(c.base / name), "--data-root", str(c.root), *c.flags()], name

    return launch


# -g/--graph and daemon.json "graph" are gone since dockerd 23.0 (moby#43981,
# docker/cli#3739): 28.5 exits at start ("unknown shorthand flag: 'g' in -g", "the
# following directives don't match any configuration option: graph"). Hosts still run
# 20.10 with them, so those ways stay, on 20.10 only.
ALL, ONLY_20_10, ONLY_28_5 = ENGINE_VERSIONS, ("20.10",), ("28.5",)

# id, the way, whether HEAD (path strings, names dockerd/containerd only) refused it,
# the engine versions that have the way.
WAYS = [
    ("data-root", data_root, True, ALL),
    ("legacy-g", legacy_g, True, ONLY_20_10),
    ("legacy-g-attached", legacy_g_attached, False, ONLY_20_10),
    ("daemon-json-edited-after-start", json_edited_after_start, False, ALL),
    ("daemon-json-data-root", json_data_root, True, ALL),
    ("daemon-json-graph", json_graph, True, ONLY_20_10),
    ("symlinked-data-root", symlinked, True, ALL),
    ("data-root-equals", data_root_equals, True, ALL),
    ("relative-data-root", relative_data_root, True, ONLY_28_5),
    ("containerd-root-inside", containerd_inside, True, ALL),
    ("bind-alias-daemon-side", bind_alias_daemon_side, False, ALL),
    ("bind-alias-dockergc-side", bind_alias_dockergc_side, False, ALL),
    ("daemon-json-alias", json_alias, False, ALL),
    ("relative-config-file", relative_config_file, False, ALL),
    ("private-mount-namespace", private_namespace, False, ALL),
    ("renamed-dockerd-ce", renamed("dockerd-ce"), False, ALL),
    ("renamed-anything", renamed("storaged"), False, ALL),  # the same way: found by open files
]


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def containerd(request: pytest.FixtureRequest) -> Iterator[Engine]:
    shared = Engine(version=request.param)
    try:
        shared.start_containerd()
        yield shared
    finally:
        shared.destroy()


@pytest.fixture
def case(containerd: Engine) -> Iterator[Case]:
    e = Engine(version=containerd.version)
    e.ctd_sock = containerd.ctd_sock
    try:
        yield Case(e)
    finally:
        e.destroy()


def start(c: Case) -> int:
    """Start the case's daemon; its pid."""
    e = c.engine
    if not c.argv:  # containerd alone, rooted inside the data root
        e.ctd_dir, e.ctd_sock = e.base / "ctd2", e.base / "ctd2" / "c.sock"
        e.start_containerd(root=c.root / "containerd" / "daemon")
        assert e.ctd is not None
        return e.ctd.pid
    log = open(e.base / "dockerd.log", "ab")  # noqa: SIM115
    e.dockerd = subprocess.Popen(c.argv, cwd=c.cwd, stdout=log, stderr=log, env=e.bins.env())
    e._wait(e._answers, 60, "dockerd")
    return e.dockerd.pid


def leftover(root: Path) -> Path:
    """A layer dir nothing references, as a crash mid-pull leaves it."""
    d = root / "overlay2" / ORPHAN
    (d / "diff").mkdir(parents=True)
    (d / "diff" / "f").write_text("x" * 4096)
    (d / "link").write_text("Q" * 26)
    return d


def state(root: Path) -> tuple[list[str], bool]:
    return sorted(p.name for p in (root / "overlay2").iterdir()), (root / ".dockergc").exists()


def refused(c: Case, pid: int, *args: str) -> None:
    before = state(c.root)
    out = run_cli(*args, check=None)
    assert out.returncode == 3, f"{args[0]} exited {out.returncode}:\n{out.stdout}{out.stderr}"
    assert f"{c.name} (pid {pid}" in out.stderr and "--live" in out.stderr, out.stderr
    assert c.says in out.stderr, out.stderr
    assert state(c.root) == before


@pytest.mark.parametrize(
    ("containerd", "way", "head_refused"),
    [
        pytest.param(v, w, h, id=f"{v}-{i}")
        for v in ENGINE_VERSIONS
        for i, w, h, versions in WAYS
        if v in versions
    ],
    indirect=["containerd"],  # each way on the engine versions that have it
)
def test_gc_refuses_a_root_a_daemon_uses(
    case: Case, way: Callable[[Case], None], head_refused: bool
) -> None:
    way(case)
    pid = start(case)
    if case.then:
        case.then()
    leftover(case.root)
    root = case.gc_root or case.root
    refused(case, pid, "gc", "--root", str(root), "--config-file", "/x", "--min-age", "0", "--yes")
    assert (case.root / "overlay2" / ORPHAN / "diff" / "f").exists()


def test_every_changing_command_refuses_through_a_private_namespace(case: Case) -> None:
    """apply, apply --resume, rollback, purge and gc, against a daemon only its own mount
    namespace shows on the root; each made on a root first gc'd while no daemon ran."""
    data_root(case)
    case.engine.dockerd = subprocess.Popen(
        case.argv, stdout=subprocess.DEVNULL, env=case.engine.bins.env()
    )
    case.engine._wait(case.engine._answers, 60, "dockerd")
    case.engine.stop()
    on = ("--root", str(case.root), "--config-file", "/x")
    leftover(case.root)
    run_id = json.loads(run_cli("gc", *on, "--min-age", "0", "--yes", "--json").stdout)["run_id"]
    leftover(case.root)
    plan = case.base / "plan.json"
    run_cli("plan", *on, "--min-age", "0", "--out", str(plan))
    shutil.rmtree(case.base / "ns", ignore_errors=True)
    private_namespace(case)
    pid = start(case)
    refused(case, pid, "apply", str(plan), "--yes")
    refused(case, pid, "apply", "--resume", run_id, *on, "--yes")
    refused(case, pid, "rollback", run_id, *on, "--yes")
    refused(case, pid, "purge", "--run", run_id, *on, "--yes")
    refused(case, pid, "gc", *on, "--min-age", "0", "--yes")
    runs = json.loads(run_cli("runs", *on, "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["applied"]
    run_cli("purge", "--run", run_id, *on, "--live", "--yes")  # --live is the way in
    runs = json.loads(run_cli("runs", *on, "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["purged"]
