"""Readers on their own: ChainIDs, mountinfo, bbolt (valid and hostile), root checks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from dockergc.errors import RefusedError, RootError, UsageError
from dockergc.fixture.bbolt_write import write_bbolt
from dockergc.store import bbolt
from dockergc.store.ids import chain_ids
from dockergc.store.mountinfo import MountTable, parse_mountinfo, pinned_paths, root_fs_path
from dockergc.store.rootinfo import (
    check_overlay2_root,
    detect_store,
    locate_root,
    read_daemon_config,
)


def test_chain_ids_match_what_dockerd_wrote() -> None:
    # diff_ids of an image dockerd 20.10 built here, and the layerdb dirs it created for them.
    diffs = [
        "sha256:21c7654b7c5532bfb1dd8930587d43f9c28397d98036325744e3cef5275e2e3a",
        "sha256:c9862df2b43abc0cb1ded24ff18dcaeec29dc7f53e39c35468c3fa48789fc514",
        "sha256:eead725baf1c963ee188b0dca633f88c9d3770f8c9779bbc70934a64e0810f64",
    ]
    assert chain_ids(diffs) == [
        "sha256:21c7654b7c5532bfb1dd8930587d43f9c28397d98036325744e3cef5275e2e3a",
        "sha256:cfdcf16d68274ef21e0ca8409aa4381c7a39b4ad37391cbd59cd10caabfc7163",
        "sha256:67655284d02811fe3c98ad0debe947cd0650ee191fb1e446f14e59ff789d661b",
    ]
    assert chain_ids([]) == []


MOUNTINFO = (
    "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "90 22 0:50 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay "
    "rw,lowerdir=/var/lib/docker/overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA,"
    "upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work\n"
    "91 22 254:0 /var/lib/docker/containers/c1/hosts /etc/hosts rw - ext4 /dev/vda rw\n"
    "92 22 254:0 /var/lib/docker /rootfs/var/lib/docker rw - ext4 /dev/vda rw\n"
    "93 22 0:51 / /var/lib/docker/overlay2/with\\040space/merged rw - tmpfs tmpfs rw\n"
    "garbage line\n"
)


def test_mountinfo_parsing_and_pins() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert len(entries) == 5
    assert entries[4].mount_point == "/var/lib/docker/overlay2/with space/merged"
    root = "/var/lib/docker"
    fs = root_fs_path(entries, root)
    assert fs == ("254:0", "/var/lib/docker")
    pins = pinned_paths(MountTable(tuple(entries), 1, 0), root, fs)
    assert "/var/lib/docker/overlay2/abc/merged" in pins
    assert "/var/lib/docker/overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA" in pins
    assert "/var/lib/docker/containers/c1/hosts" in pins
    # The whole root bind-mounted elsewhere (cAdvisor) pins nothing inside it by itself.
    assert "/var/lib/docker" not in pins or "bind" not in pins["/var/lib/docker"]
    assert "/var/lib/docker/overlay2/with space/merged" in pins


def test_bbolt_round_trip_with_overflow_pages() -> None:
    buckets = {f"key{i:04d}".encode(): {b"parent": b"p" * 40} for i in range(400)}
    tree = bbolt.parse(write_bbolt(buckets))
    assert set(tree.buckets) == set(buckets)
    assert tree.buckets[b"key0007"].values == {b"parent": b"p" * 40}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:100],  # truncated
        lambda d: b"\0" * len(d),  # zeroed
        lambda d: d[: 4096 * 3] + b"\xff" * (len(d) - 4096 * 3),  # garbage root page
        lambda d: d[:16] + struct.pack("<I", 0xDEADBEEF) + d[20:],  # bad magic page 0
    ],
)
def test_bbolt_rejects_hostile_files(mangle: object) -> None:
    data = write_bbolt({b"a" * 25: {b"committed": b"b" * 25}})
    bad = mangle(data)  # type: ignore[operator]
    try:
        tree = bbolt.parse(bad)
    except bbolt.BboltError:
        return
    # Surviving a mangle is fine only when the result is still the real content.
    assert tree.buckets == {} or b"a" * 25 in tree.buckets


def test_bbolt_page_cycle_is_an_error() -> None:
    data = bytearray(write_bbolt({b"k": {}}))
    # Turn the root leaf (page 3) into a branch page that points at itself.
    struct.pack_into("<QHHI", data, 3 * 4096, 3, 0x01, 1, 0)
    struct.pack_into("<IIQ", data, 3 * 4096 + 16, 0, 0, 3)
    with pytest.raises(bbolt.BboltError):
        bbolt.parse(bytes(data))


def _root(tmp_path: Path, *dirs: str) -> Path:
    root = tmp_path / "docker"
    for d in dirs:
        (root / d).mkdir(parents=True)
    return root


@pytest.mark.parametrize("driver", ["aufs", "devicemapper", "btrfs", "zfs", "vfs"])
def test_other_drivers_are_refused(tmp_path: Path, driver: str) -> None:
    root = _root(tmp_path, f"image/{driver}", driver)
    with pytest.raises(RefusedError, match=driver):
        check_overlay2_root(root, None)


def test_containerd_image_store_is_detected(tmp_path: Path) -> None:
    """The containerd store is told by what the daemon is told (daemon.json features, a
    running dockerd's --feature flag) before what the disk looks like: an upgraded host
    keeps its old image/overlay2 beside the new store."""
    root = _root(tmp_path / "a", "rootfs/overlayfs", "containers")
    assert detect_store(root, None)[0] == "containerd"
    upgraded = _root(tmp_path / "u", "image/overlay2", "overlay2", "rootfs/overlayfs")
    cfg = tmp_path / "daemon.json"
    cfg.write_text(
        json.dumps({"data-root": str(upgraded), "features": {"containerd-snapshotter": True}})
    )
    store, why = detect_store(upgraded, read_daemon_config(cfg))
    assert store == "containerd" and "features.containerd-snapshotter" in why
    assert detect_store(upgraded, None)[0] == "overlay2"
    flags = ["--data-root", str(upgraded), "--feature", "containerd-snapshotter"]
    assert detect_store(upgraded, None, flags)[0] == "containerd"
    off = ["--feature", "containerd-snapshotter=false"]
    assert detect_store(upgraded, None, off)[0] == "overlay2"
    # Nothing but a managed containerd's dir: not a root dockergc understands.
    bare = _root(tmp_path / "b", "containerd/daemon")
    with pytest.raises(RefusedError, match="no image/overlay2"):
        detect_store(bare, None)


def test_overlay2_metadata_without_overlay2_dir_is_refused(tmp_path: Path) -> None:
    root = _root(tmp_path, "image/overlay2")
    with pytest.raises(RefusedError, match="containerd image store"):
        check_overlay2_root(root, None)


def test_root_location(tmp_path: Path) -> None:
    real = _root(tmp_path, "image/overlay2", "overlay2")
    link = tmp_path / "link"
    link.symlink_to(real)
    info = locate_root(link, None)
    assert info.path == real and info.given == link
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"graph": str(real)}))
    assert locate_root(None, read_daemon_config(cfg)).path == real
    with pytest.raises(RootError):
        locate_root(tmp_path / "nope", None)
    with pytest.raises(RefusedError):
        locate_root(Path("/"), None)
    cfg.write_text("{broken")
    with pytest.raises(UsageError):
        read_daemon_config(cfg)
