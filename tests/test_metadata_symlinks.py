"""A symlink anywhere on the way to the metadata is never followed: each dir that holds
records, swapped for a symlink to an identical copy outside the root, is a finding that
freezes the plan and names the path; nothing is read through it, nothing is planned."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dockergc.api import plan_root, scan_root
from dockergc.plan import Policy
from tests.conftest import NO_MOUNTS
from tests.test_hostile_metadata import World

LDB = "image/overlay2/layerdb"


def targets(w: World) -> dict[str, str]:
    return {
        "imagedb": "image/overlay2/imagedb",
        "image/overlay2": "image/overlay2",
        "layerdb": LDB,
        "layerdb/sha256": f"{LDB}/sha256",
        "layerdb/sha256/<chain>": f"{LDB}/sha256/{w.app.chain_id[7:]}",
        "layerdb/mounts": f"{LDB}/mounts",
        "layerdb/mounts/<id>": f"{LDB}/mounts/{w.running.id}",
        "containers": "containers",
        "containers/<id>": f"containers/{w.running.id}",
        "buildkit": "buildkit",
        "overlay2/<id>": f"overlay2/{w.running.mount_id}",
        "overlay2/<id>-init": f"overlay2/{w.stopped.mount_id}-init",
    }


def swap_for_symlink(root: Path, rel: str, elsewhere: Path) -> None:
    """Move ``rel`` out of the root and leave a symlink to it: the same records, behind
    a symlink (as a copy of another root's would be)."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root / rel, elsewhere)
    (root / rel).symlink_to(elsewhere)


NAMES = [
    "imagedb",
    "image/overlay2",
    "layerdb",
    "layerdb/sha256",
    "layerdb/sha256/<chain>",
    "layerdb/mounts",
    "layerdb/mounts/<id>",
    "containers",
    "containers/<id>",
    "buildkit",
    "overlay2/<id>",
    "overlay2/<id>-init",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_symlinked_metadata_dir_freezes_naming_it(tmp_path: Path, name: str) -> None:
    w = World(tmp_path / "docker")
    healthy = w.plan()
    assert healthy.frozen == () and {a.path for a in healthy.actions} >= {f"overlay2/{w.orphan}"}
    rel = targets(w)[name]
    swap_for_symlink(w.root, rel, tmp_path / "elsewhere" / rel)
    plan = w.plan()
    assert plan.actions == ()
    assert any(f.startswith(f"{rel} is a symlink") for f in plan.frozen), plan.frozen
    kept = {k.path: k.kind for k in plan.kept}
    assert kept.get(rel) == "symlink", kept
    snap, _ = scan_root(w.root, NO_MOUNTS)
    assert any(f.path == rel and f.kind == "symlink" for f in snap.findings)


def test_nothing_is_read_through_a_symlinked_container_dir(tmp_path: Path) -> None:
    w = World(tmp_path / "docker")
    rel = f"containers/{w.running.id}"
    swap_for_symlink(w.root, rel, tmp_path / "other-root" / rel)
    snap, _ = plan_root(w.root, Policy(min_age=0), NO_MOUNTS)[:2]
    assert w.running.id not in {c.id for c in snap.containers.containers}
    assert w.running.id in snap.containers.unreadable


def test_an_operators_symlink_in_overlay2_is_reported_not_frozen(tmp_path: Path) -> None:
    w = World(tmp_path / "docker")
    (w.root / "overlay2" / "backup").symlink_to(tmp_path)
    plan = w.plan()
    assert plan.frozen == ()
    assert {k.path: k.kind for k in plan.kept}["overlay2/backup"] == "symlink"
    assert f"overlay2/{w.orphan}" in {a.path for a in plan.actions}


def test_a_dir_only_a_symlinked_layer_dirs_lower_names_is_not_planned(tmp_path: Path) -> None:
    """The rw dir's lower file, behind the symlink, is what keeps ``hidden``: unread, it
    would look orphaned (as it did before symlinked layer dirs froze the plan)."""
    w = World(tmp_path / "docker")
    hidden = w.b.interrupted_pull(w.base, {"h": b"h"})
    hlink = (w.root / "overlay2" / hidden / "link").read_text()
    lower = w.root / "overlay2" / w.running.mount_id / "lower"
    lower.write_text(lower.read_text() + f":l/{hlink}")
    rel = f"overlay2/{w.running.mount_id}"
    swap_for_symlink(w.root, rel, tmp_path / "elsewhere" / rel)
    plan = w.plan()
    assert f"overlay2/{hidden}" not in {a.path for a in plan.actions}
    assert any(rel in f for f in plan.frozen)
