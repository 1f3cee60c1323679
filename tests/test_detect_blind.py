"""Without CAP_SYS_PTRACE dockergc cannot look into other processes: unknown means
"may use the root", never "holds nothing"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dockergc.fixture.demo import write_demo_root
from dockergc.host import detect


def test_without_cap_sys_ptrace_gc_refuses_instead_of_seeing_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("capsh") is None:
        pytest.skip("needs root and capsh (libcap2-bin)")
    root = write_demo_root(tmp_path / "docker")
    holder = subprocess.Popen(["sleep", "120"], cwd=root / "volumes")
    try:
        gc = (
            f"exec {sys.executable} -m dockergc gc --root {root} --config-file /x --min-age 0 --yes"
        )
        out = subprocess.run(
            ["capsh", "--drop=cap_sys_ptrace", "--", "-c", gc], capture_output=True, text=True
        )
        assert out.returncode == 3, out.stderr
        assert "lacks CAP_SYS_PTRACE" in out.stderr, out.stderr
        assert not list((root / ".dockergc/runs").glob("*/journal.jsonl"))
    finally:
        holder.kill()
        holder.wait()


def test_without_cap_sys_ptrace_a_live_move_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc --live checks holders right before each move: blind, it keeps the item."""
    from dockergc.execute.verify import held_open

    (tmp_path / "dir").mkdir()
    monkeypatch.setattr(detect, "blind", lambda proc=detect.PROC: True)
    reason = held_open(tmp_path, "dir")
    assert reason is not None and "lacks CAP_SYS_PTRACE" in reason
    monkeypatch.undo()
    assert held_open(tmp_path, "dir") is None
