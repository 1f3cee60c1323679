"""``held_open`` (a --live re-check before each move) answers by identity, through
dockergc.host: a process that reaches a candidate dir through a bind alias of the root,
in its own mount namespace or in ours, or that runs chrooted, still keeps it.

Needs root (mount namespaces, bind mounts, chroot), as dockergc does in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockergc.execute import runner
from dockergc.execute.verify import held_open
from dockergc.fixture.demo import write_demo_root
from tests.test_live_rechecks import kept, live, orphan_layers, wrong_clock_plan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount namespaces)")

# Opens argv[1] for append (or chroots into it with argv[2] == "chroot"), says so on
# stdout, then sleeps.
HOLDER = (
    "import os, sys, time\n"
    "f = open(sys.argv[1], 'a') if len(sys.argv) == 2 else os.chroot(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def in_private_namespace(root: Path, alias: Path, *argv: str) -> subprocess.Popen[str]:
    """``argv`` run in a private mount namespace where ``alias`` is a bind mount of
    ``root`` (in ours it is an empty dir); ready when it says so."""
    alias.mkdir(exist_ok=True)
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
        + [str(root), str(alias), *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]]]]:
    root = write_demo_root(tmp_path / "docker")
    procs: list[subprocess.Popen[str]] = []
    yield root, procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_process_in_a_private_namespace_holding_a_file_through_an_alias(
    demo: tuple[Path, list[subprocess.Popen[str]]], tmp_path: Path
) -> None:
    """Its /proc links name the file as it sees it: /…/alias/overlay2/<dir>/diff/f, a
    path that does not even exist in our namespace. gc --live keeps the dir."""
    root, procs = demo
    plan = wrong_clock_plan(root)
    first, second = orphan_layers(plan)[:2]
    alias = tmp_path / "alias"
    held = f"{alias}/{first}/diff/being-written"
    time.sleep(0.05)
    holder = in_private_namespace(root, alias, sys.executable, "-c", HOLDER, held)
    procs.append(holder)
    assert not os.path.exists(held)  # the name means nothing here
    reason = held_open(root, first)
    assert reason is not None and reason.startswith(f"in use now: pid {holder.pid} (python")
    assert reason.endswith(f" holds {held} (fd 3)"), reason
    assert held_open(root, second) is None

    view = runner.start_run(root, wrong_clock_plan(root), live(live_slack=0))
    assert kept(view)[first] == reason
    assert (root / first).is_dir()
    assert second in {s.path for s in view.steps if s.status == "moved"}


def test_a_bind_alias_in_our_own_namespace(tmp_path: Path) -> None:
    """dockergc and the holder share a namespace where the root has a second name."""
    root = write_demo_root(tmp_path / "docker")
    first = orphan_layers(wrong_clock_plan(root))[0]
    alias = tmp_path / "alias"
    alias.mkdir()
    held = f"{alias}/{first}/diff/usr"
    os.makedirs(f"{root}/{first}/diff/usr")
    check = (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from dockergc.execute.verify import held_open\n"
        "sitter = subprocess.Popen(['sleep', '60'], cwd=sys.argv[2])\n"
        "import time; time.sleep(0.3)\n"
        "print(sitter.pid, held_open(Path(sys.argv[1]), sys.argv[3]), sep='\\n')\n"
        "sitter.kill()\n"
    )
    script = 'mount --bind "$1" "$2" && exec "$3" -c "$4" "$1" "$5" "$6"'
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
        + [str(root), str(alias), sys.executable, check, held, first],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert out[1] == f"in use now: pid {out[0]} (sleep) holds {held} (its cwd)", out


def test_a_process_chrooted_into_the_dir_or_beside_it(
    demo: tuple[Path, list[subprocess.Popen[str]]], tmp_path: Path
) -> None:
    """Chrooted into a candidate (through an alias, in its own namespace): held as its
    root. Chrooted at the alias with a file open in a candidate: /proc names the file
    from the top of its mount tree, not from its root, and it is found all the same."""
    root, procs = demo
    first, second = orphan_layers(wrong_clock_plan(root))[:2]
    jail = tmp_path / "jail"
    inside = in_private_namespace(
        root, jail, sys.executable, "-c", HOLDER, f"{jail}/{first}/diff", "chroot"
    )
    procs.append(inside)
    reason = held_open(root, first)
    assert reason is not None and reason.startswith(f"in use now: pid {inside.pid} (python")
    assert reason.endswith(f" holds {jail}/{first}/diff (its root)"), reason
    assert held_open(root, second) is None
    opener = (
        "import os, sys, time\n"
        "f = open(sys.argv[1], 'a'); os.chroot(sys.argv[2])\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    beside = tmp_path / "beside"
    procs.append(
        in_private_namespace(
            root, beside, sys.executable, "-c", opener, f"{beside}/{second}/diff/f", str(beside)
        )
    )
    reason = held_open(root, second)
    assert reason is not None and reason.endswith(f"holds {beside}/{second}/diff/f (fd 3)")


def test_vanished_unreadable_and_own_processes_are_skipped(tmp_path: Path) -> None:
    """On a fake /proc: a pid without its files (it ended), one whose fd is gone, and
    this process itself, all holding the dir by name, are never reported nor errors."""
    from dockergc.host.detect import holders_under  # (imported here: absent before)

    cand = tmp_path / "cand"
    (cand / "sub").mkdir(parents=True)
    (cand / "sub" / "f").write_text("")
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)  # ended: nothing left to read
    for pid in (8, os.getpid(), 9):
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "root").symlink_to("/")
        (proc / str(pid) / "cwd").symlink_to("/")
        (proc / str(pid) / "comm").write_text(f"p{pid}\n")
    (proc / "8" / "fd" / "3").symlink_to(cand / "sub" / "gone")  # closed meanwhile
    (proc / str(os.getpid()) / "fd" / "3").symlink_to(cand / "sub" / "f")
    (proc / "9" / "fd" / "4").symlink_to(cand / "sub" / "f")
    st = os.stat(cand)
    found = [h.describe() for h in holders_under((st.st_dev, st.st_ino), proc)]
    assert found == [f"pid 9 (p9) holds {cand}/sub/f (fd 4)"]
