"""Real dockerd state for the engine tests: what to build, how crashes break it, how to
prove the daemon still accepts the result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from dockergc.store.ids import chain_ids
from tests.conftest import run_cli
from tests.engine import Engine

APP = """FROM base:1
RUN echo hello > /hello.txt && mkdir -p /data/sub && echo x > /data/sub/f && echo keep > /data/k
RUN rm /bin/vi && rm -rf /data/sub && echo y > /data/new
"""
# Its top layer becomes the interrupted pull: 16 MiB to see in df, an opaque dir (xattr),
# a whiteout (char device 0/0), so quarantine and rollback are checked on all of them.
VICTIM = """FROM app:1
RUN dd if=/dev/urandom of=/blob bs=1M count=16 2>/dev/null && rm -rf /data && mkdir /data \\
    && echo v > /data/v && rm /hello.txt
"""
GONE = "FROM base:1\nRUN echo being-removed > /gone\n"
MULTI = """FROM base:1 AS build
RUN echo built > /artifact && echo junk > /junk
FROM base:1
COPY --from=build /artifact /artifact
RUN echo done > /done
"""


def populate(e: Engine) -> dict[str, str]:
    """Images (legacy and BuildKit), containers stopped and running, a volume."""
    e.import_base()
    e.build("app:1", APP)
    e.build("victim:1", VICTIM)
    e.build("gone:1", GONE)
    e.build("bk:1", MULTI, buildkit=True)
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
        "echo data > /v/x",
    )
    e.run(
        "create",
        "--network",
        "none",
        "-v",
        "vol1:/v",
        "--name",
        "c_stopped",
        "app:1",
        "sh",
        "-c",
        "cat /v/x /hello.txt",
    )
    e.run("start", "-a", "c_stopped")
    e.run("create", "--network", "none", "--name", "c_doomed", "base:1", "true")
    e.run("run", "-d", "--network", "none", "--name", "c_running", "app:1", "sleep", "100000")
    ids = {"doomed": e.run("inspect", "-f", "{{.Id}}", "c_doomed").stdout.strip()}
    upper = e.run("inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "c_doomed").stdout.strip()
    ids["doomed_mount"] = Path(upper).parent.name
    for tag in ("victim:1", "gone:1"):
        ids[tag] = e.run("inspect", "-f", "{{.Id}}", tag).stdout.strip()
        layers = json.loads(e.run("inspect", "-f", "{{json .RootFS.Layers}}", tag).stdout)
        ids[tag + "/top"] = chain_ids(layers)[-1]
    ids["images"] = " ".join(e.image_ids())
    return ids


def copy_root(e: Engine, base: Path | None = None) -> Engine:
    """A stopped copy of ``e``'s root in a new Engine of the same version (rsync -aHAX
    keeps whiteouts)."""
    twin = Engine(base, version=e.version)
    subprocess.run(
        [
            "rsync",
            "-aHAX",
            "--numeric-ids",
            "--sparse",
            "--exclude=/.dockergc",
            f"{e.root}/",
            f"{twin.root}/",
        ],
        check=True,
    )
    return twin


def plan_json(root: Path, *extra: str) -> dict:
    out = run_cli("plan", "--root", str(root), "--config-file", "/nonexistent", "--json", *extra)
    return json.loads(out.stdout)


def inject_crash_leftovers(root: Path, ids: dict[str, str]) -> set[tuple[str, str]]:
    """Undo the metadata steps a crash interrupts; return the (kind, path) the plan must list."""
    img = root / "image/overlay2"
    ldb = img / "layerdb/sha256"
    expected: set[tuple[str, str]] = set()

    def drop_image(image_id: str, tag: str) -> None:
        (img / "imagedb/content/sha256" / image_id[7:]).unlink()
        shutil.rmtree(img / "imagedb/metadata/sha256" / image_id[7:], ignore_errors=True)
        repos = json.loads((img / "repositories.json").read_text())
        del repos["Repositories"][tag.split(":")[0]]
        (img / "repositories.json").write_text(json.dumps(repos))

    def link_of(cache: str) -> str:
        return "overlay2/l/" + (root / "overlay2" / cache / "link").read_text()

    # An interrupted pull: the layer dir exists, its layerdb entry and image never did.
    top = ids["victim:1/top"][7:]
    cache = (ldb / top / "cache-id").read_text()
    drop_image(ids["victim:1"], "victim:1")
    shutil.rmtree(ldb / top)
    expected |= {("orphan-layer", f"overlay2/{cache}"), ("orphan-link", link_of(cache))}

    # An interrupted container removal: container dir and mount record gone, dirs left.
    mount = ids["doomed_mount"]
    shutil.rmtree(root / "containers" / ids["doomed"])
    shutil.rmtree(img / "layerdb/mounts" / ids["doomed"])
    expected |= {
        ("orphan-layer", f"overlay2/{mount}"),
        ("orphan-link", link_of(mount)),
        ("stale-init", f"overlay2/{mount}-init"),
        ("orphan-link", link_of(mount + "-init")),
    }

    # An interrupted layer deletion: layerdb entry renamed -removing, dir not yet gone.
    top = ids["gone:1/top"][7:]
    cache = (ldb / top / "cache-id").read_text()
    drop_image(ids["gone:1"], "gone:1")
    removing = f"{top}-3f9a1c0b7d2e4f60-removing"
    (ldb / top).rename(ldb / removing)
    expected |= {
        ("removing-layer", f"image/overlay2/layerdb/sha256/{removing}"),
        ("orphan-layer", f"overlay2/{cache}"),
        ("orphan-link", link_of(cache)),
    }

    # A dangling short link, and the temp dir of an interrupted registration.
    os.symlink("../" + "ab" * 32 + "/diff", root / "overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA")
    expected.add(("dangling-link", "overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA"))
    (img / "layerdb/tmp/write-set-4242").mkdir()
    expected.add(("write-set", "image/overlay2/layerdb/tmp/write-set-4242"))
    return expected


def assert_everything_works(e: Engine) -> None:
    """Every image runs, every container starts, data, whiteouts and build cache intact."""
    for image in e.image_ids():
        e.run("run", "--rm", "--network", "none", image, "/bin/sh", "-c", "true")
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
    assert e.run("start", "-a", "c_stopped").stdout.split() == ["data", "hello"]
    assert "hello" in e.run("logs", "c_stopped").stdout
    e.run("start", "c_running")
    assert "true" in e.run("inspect", "-f", "{{.State.Running}}", "c_running").stdout
    e.build("bk:2", MULTI, buildkit=True)
    e.run("run", "--rm", "--network", "none", "bk:2", "cat", "/artifact", "/done")
