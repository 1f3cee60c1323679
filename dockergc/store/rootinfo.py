"""Find the data root and decide whether it is an overlay2 root we understand.

Refusing is the safe answer for anything else: aufs, devicemapper, btrfs, zfs and
vfs roots keep layers elsewhere, and the containerd image store (the default of
fresh Docker Engine 29 installs) keeps images under containerd's root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dockergc.errors import RefusedError, RootError, UsageError
from dockergc.store.fsread import parse_json

DEFAULT_ROOT = Path("/var/lib/docker")
DEFAULT_CONFIG = Path("/etc/docker/daemon.json")
OTHER_DRIVERS = ("aufs", "devicemapper", "btrfs", "zfs", "vfs", "fuse-overlayfs")
SYSTEM_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib64",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
        "/var",
        "/var/lib",
        "/tmp",
    ]
)


@dataclass(frozen=True)
class DaemonConfig:
    path: Path
    data_root: Path | None
    storage_driver: str | None
    containerd_snapshotter: bool
    containerd: str | None = None  # the "containerd" key: the socket dockerd talks to


@dataclass(frozen=True)
class RootInfo:
    given: Path  # as the user or daemon.json named it
    path: Path  # resolved once; every check uses this
    source: str  # "--root", "daemon.json data-root", "default"


def read_daemon_config(path: Path) -> DaemonConfig | None:
    """Parse daemon.json; missing is None, malformed is a usage error (say which file).

    Unlike files under the data root, this is the operator's own config in /etc: a
    symlink to a config-managed file is normal, so it is followed.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20 + 1)
        if len(data) > 1 << 20:
            raise UsageError(f"daemon config {path} is over 1 MiB; not a daemon.json")
        text = data.decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise UsageError(f"daemon config {path} is not valid UTF-8") from exc
    except OSError as exc:
        raise UsageError(f"daemon config {path} cannot be read: {exc.strerror}") from exc
    try:
        doc = parse_json(text) if text.strip() else {}
    except ValueError as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise UsageError(f"daemon config {path} is not valid JSON: {why}") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"daemon config {path} is not a JSON object")
    root = doc.get("data-root") or doc.get("graph")
    driver = doc.get("storage-driver")
    raw_features = doc.get("features")
    features: dict[str, object] = raw_features if isinstance(raw_features, dict) else {}
    return DaemonConfig(
        path=path,
        data_root=Path(root) if isinstance(root, str) and root else None,
        storage_driver=driver if isinstance(driver, str) else None,
        containerd_snapshotter=bool(features.get("containerd-snapshotter")),
        containerd=doc["containerd"] if isinstance(doc.get("containerd"), str) else None,
    )


def locate_root(given: Path | None, config: DaemonConfig | None) -> RootInfo:
    """Pick the root (flag, daemon.json, default) and resolve a symlinked root once."""
    if given is not None:
        chosen, source = given, "--root"
    elif config and config.data_root:
        chosen, source = config.data_root, f"{config.path} data-root"
    else:
        chosen, source = DEFAULT_ROOT, "default"
    if not chosen.is_absolute():
        chosen = Path.cwd() / chosen
    if not chosen.exists():
        raise RootError(f"data root {chosen} does not exist", hint="pass --root PATH")
    if not chosen.is_dir():
        raise RootError(f"data root {chosen} is not a directory")
    resolved = Path(os.path.realpath(chosen))
    if str(resolved) in SYSTEM_DIRS:
        raise RefusedError(f"refusing data root {resolved}: it is a system directory")
    return RootInfo(given=chosen, path=resolved, source=source)


def _config_applies(config: DaemonConfig, root: Path) -> bool:
    named = config.data_root or DEFAULT_ROOT
    try:
        return os.path.realpath(named) == str(root)
    except OSError:
        return False


# What a data root of the containerd image store holds instead of image/ and overlay2/.
CONTAINERD_STORE_MARKS = ("rootfs/overlayfs", "buildkit/containerd-overlayfs")


def _feature_on(args: list[str]) -> bool:
    """``--feature containerd-snapshotter`` (or ``=true``) on a dockerd command line."""
    from dockergc.host.detect import DOCKERD_FLAGS

    on = False
    for name, _typed, value in DOCKERD_FLAGS.parse(args):
        if name == "--feature":
            key, _, setting = value.partition("=")
            if key == "containerd-snapshotter":
                on = setting.lower() not in ("false", "0")
    return on


def detect_store(
    root: Path, config: DaemonConfig | None, dockerd_args: list[str] | None = None
) -> tuple[str, str]:
    """("overlay2" or "containerd", why) for the root; RefusedError for anything else.

    What the daemon is told wins over what the disk looks like: daemon.json's
    ``features.containerd-snapshotter``, then a running dockerd's ``--feature`` flag. An
    upgraded host keeps its old image/overlay2 beside the new store, so the disk alone
    decides only when nothing says otherwise."""
    if config and _config_applies(config, root) and config.containerd_snapshotter:
        return "containerd", f"{config.path} enables features.containerd-snapshotter"
    if dockerd_args and _feature_on(dockerd_args):
        return "containerd", "the running dockerd has --feature containerd-snapshotter"
    if not (root / "image" / "overlay2").is_dir():
        marks = [m for m in CONTAINERD_STORE_MARKS if (root / m).is_dir()]
        if marks and not any((root / "image" / d).is_dir() for d in OTHER_DRIVERS):
            return "containerd", f"no image/overlay2; {marks[0]}/ is there"
    check_overlay2_root(root, config)
    return "overlay2", "image/overlay2 and overlay2/ are there"


def check_overlay2_root(root: Path, config: DaemonConfig | None) -> None:
    """Raise RefusedError unless ``root`` is an overlay2 graphdriver root."""
    driver = config.storage_driver if config and _config_applies(config, root) else None
    if config and driver and driver != "overlay2":
        raise RefusedError(
            f"refusing {root}: {config.path} sets storage-driver "
            f"{driver!r}; dockergc understands overlay2 only"
        )
    has_overlay_images = (root / "image" / "overlay2").is_dir()
    if not has_overlay_images:
        for driver in OTHER_DRIVERS:
            if (root / "image" / driver).is_dir():
                raise RefusedError(
                    f"refusing {root}: its storage driver is {driver} (image/{driver}); "
                    "dockergc understands overlay2 only"
                )
        raise RefusedError(
            f"refusing {root}: no image/overlay2 metadata; not an overlay2 Docker data root"
        )
    if not (root / "overlay2").is_dir():
        raise RefusedError(
            f"refusing {root}: image/overlay2 exists but overlay2/ does not; "
            "a Docker 29+ daemon would switch to the containerd image store"
        )
