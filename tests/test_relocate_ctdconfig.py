"""containerd's config.toml switched for a relocation: only ``root`` changes, every other
byte (comments, order, plugin tables) is kept, and unusual layouts are refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dockergc.relocate.ctdconfig import ConfigError, root_of, switched

REAL = b"""# operator's notes
version = 2
root = "/var/lib/containerd"  # moved in 2024
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  root = "/not/this/one"
"""


def test_only_the_top_level_root_changes() -> None:
    out = switched(REAL, "/srv/ctd")
    assert out == REAL.replace(b'root = "/var/lib/containerd"', b'root = "/srv/ctd"', 1)
    doc = tomllib.loads(out.decode())
    assert doc["root"] == "/srv/ctd"
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["root"] == "/not/this/one"
    assert root_of(out) == "/srv/ctd" and root_of(REAL) == "/var/lib/containerd"


def test_a_config_on_the_default_root_gets_one_before_its_first_table() -> None:
    src = b'version = 2\n\n[grpc]\n  address = "/x.sock"\n'
    out = switched(src, "/srv/ctd")
    assert out == b'version = 2\n\nroot = "/srv/ctd"\n[grpc]\n  address = "/x.sock"\n'
    assert root_of(src) == "/var/lib/containerd"


def test_no_file_and_a_file_without_tables() -> None:
    assert switched(None, "/srv/ctd") == b'root = "/srv/ctd"\n'
    assert switched(b"version = 2", "/a b") == b'version = 2\nroot = "/a b"\n'
    assert root_of(None) == "/var/lib/containerd"


def test_single_quoted_and_crlf_lines_keep_their_shape() -> None:
    src = b"version = 2\r\nroot = '/old'\r\n"
    assert switched(src, "/new") == b'version = 2\r\nroot = "/new"\r\n'


@pytest.mark.parametrize(
    "src",
    [
        b'root = """\n/old"""\n',  # a multi-line string
        b"root = [",  # not TOML
        b"\xff = 1",  # not UTF-8
    ],
)
def test_unusual_or_broken_configs_are_refused(src: bytes) -> None:
    with pytest.raises(ConfigError):
        switched(src, "/new")


def test_control_characters_are_refused() -> None:
    with pytest.raises(ConfigError):
        switched(b"", "/new\nroot")


def test_a_root_set_by_an_imported_file_is_found(tmp_path: Path) -> None:
    """containerd merges imports over the main file (its resolveImports: relative to the
    importing file, '*' globbed, imports of imports too): a root set there wins."""
    from dockergc.relocate.ctdconfig import roots_in_imports

    (tmp_path / "conf.d").mkdir()
    main = tmp_path / "config.toml"
    main.write_text('version = 2\nroot = "/a"\nimports = ["conf.d/*.toml", "/nonexistent.toml"]\n')
    (tmp_path / "conf.d/10-gpu.toml").write_text('[plugins.x]\n  root = "/not/top"\n')
    (tmp_path / "conf.d/20-more.toml").write_text(f'imports = ["{tmp_path}/deep.toml"]\n')
    (tmp_path / "deep.toml").write_text(f'root = "/b"\nimports = ["{main}"]\n')  # a cycle
    found = roots_in_imports(str(main), main.read_bytes())
    assert found == [(f"{tmp_path}/deep.toml", "/b")]
    (tmp_path / "deep.toml").write_text("root = [")
    with pytest.raises(ConfigError, match="deep.toml \\(imported\\): not valid TOML"):
        roots_in_imports(str(main), main.read_bytes())
    assert roots_in_imports(str(main), b'root = "/a"\n') == []
    assert roots_in_imports(str(main), None) == []
