"""Roots the real dockerd wrote, made hostile: an image Docker loads and runs whose config
Python's parser cannot take, a mount record given another container's mount-id, and
BuildKit's snapshots.db padded with gigabytes of zeros."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import on_root, run_cli
from tests.engine import Engine
from tests.realstate import copy_root
from tests.test_hostile_metadata import DEEP, assert_padding_costs_no_memory

pytestmark = pytest.mark.engine

CONTENT = "image/overlay2/imagedb/content/sha256"


def deep_image(e: Engine, tag: str = "deep:1") -> str:
    """``docker save`` base:1, nest a 3000-deep value in its config, rename the config by
    its new digest, ``docker load`` it as ``tag``; return the new image id (hex)."""
    saved = e.base / "base.tar"
    e.run("save", "-o", str(saved), "base:1")
    with tarfile.open(saved) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else b"") for m in src]  # type: ignore[union-attr]
    files = {m.name: body for m, body in members}
    manifest = json.loads(files["manifest.json"])
    config = json.loads(files[manifest[0]["Config"]])
    data = (json.dumps(config, separators=(",", ":"))[:-1] + ',"x":' + DEEP + "}").encode()
    new = hashlib.sha256(data).hexdigest()
    manifest[0]["Config"], manifest[0]["RepoTags"] = f"{new}.json", [tag]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        for m, body in members:  # the layers as saved; the old config and indexes go
            if "/" in m.name.strip("/") or m.isdir():
                dst.addfile(m, io.BytesIO(body) if m.isfile() else None)
        for name, body in ((f"{new}.json", data), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))
    e.run("load", input=out.getvalue())
    return new


def graph_dirs(e: Engine, ref: str) -> set[str]:
    """overlay2/<id> of every layer dir of an image, as the daemon reports them."""
    data = json.loads(e.run("inspect", "-f", "{{json .GraphDriver.Data}}", ref).stdout)
    paths = [data.get("UpperDir", ""), *data.get("LowerDir", "").split(":")]
    return {"overlay2/" + Path(p).parent.name for p in paths if p}


@pytest.fixture(scope="module")
def twin(engine: tuple[Engine, dict[str, str]]) -> Iterator[tuple[Engine, str, set[str]]]:
    """A stopped copy of the session root holding the deep image (which Docker ran), its
    id and its layer dirs."""
    e, _ = engine
    deep = deep_image(e)
    assert (e.root / CONTENT / deep).exists()
    e.run("run", "--rm", "--network", "none", "deep:1", "true")  # Docker takes it
    dirs = graph_dirs(e, "deep:1")
    e.stop()
    try:
        copy = copy_root(e)
    finally:
        e.start()
        e.run("rmi", "deep:1")  # the session's other tests see the root they expect
    try:
        yield copy, deep, dirs
    finally:
        copy.destroy()


def plan(root: Path) -> dict:  # type: ignore[type-arg]
    proc = run_cli("plan", *on_root(root), "--json")
    assert "internal error" not in proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_an_image_docker_runs_but_python_cannot_parse_is_kept_and_named(
    twin: tuple[Engine, str, set[str]],
) -> None:
    copy, deep, dirs = twin
    rel = f"{CONTENT}/{deep}"
    p = plan(copy.root)
    kept = {k["path"]: k["reason"] for k in p["kept"]}
    assert "too deep" in kept.get(rel, ""), p["kept"]
    assert any(deep in f for f in p["frozen"]), p["frozen"]
    assert dirs and not {a["path"] for a in p["actions"]} & dirs
    gc = run_cli("gc", *on_root(copy.root), "--yes", "--json")
    assert "internal error" not in gc.stderr
    assert all((copy.root / d).is_dir() for d in dirs)


def test_running_containers_rw_dir_is_not_planned_after_a_mount_id_swap(
    twin: tuple[Engine, str, set[str]], engine: tuple[Engine, dict[str, str]]
) -> None:
    copy, deep, _ = twin
    e, _ = engine
    (copy.root / CONTENT / deep).unlink(missing_ok=True)  # as if rmi'd: a healthy root
    repos = copy.root / "image/overlay2/repositories.json"
    doc = json.loads(repos.read_text())
    doc["Repositories"].pop("deep", None)
    repos.write_text(json.dumps(doc))
    assert plan(copy.root)["frozen"] == []
    ids = {
        n: e.run("inspect", "-f", "{{.Id}}", n).stdout.strip() for n in ("c_running", "c_stopped")
    }
    mounts = copy.root / "image/overlay2/layerdb/mounts"
    running_rw = (mounts / ids["c_running"] / "mount-id").read_text()
    (mounts / ids["c_running"] / "mount-id").write_text(
        (mounts / ids["c_stopped"] / "mount-id").read_text()
    )
    p = plan(copy.root)
    assert f"overlay2/{running_rw}" not in {a["path"] for a in p["actions"]}
    assert any("claimed by two records" in f for f in p["frozen"]), p["frozen"]
    assert (copy.root / "overlay2" / running_rw).is_dir()


def test_real_buildkit_snapshots_db_padded_to_2_gib(twin: tuple[Engine, str, set[str]]) -> None:
    copy, _, _ = twin
    after = assert_padding_costs_no_memory(copy.root)
    assert after["keys"], "the BuildKit build left no records"
