"""Legal layers: whiteouts, opaque directories, replacements, links and metadata (layer.md)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from imagefactory import Entry, layer_tar
from minicontainer.errors import ImageError
from minicontainer.layers import OPAQUE_XATTR, clean_name, unpack_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts, chown and capabilities need root")


class Stack:
    """Layers unpacked one above the other, as `load` does."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dirs: list[Path] = []
        self.warnings: list[str] = []

    def add(self, *entries: Entry) -> Path:
        dest = self.tmp / f"l{len(self.dirs)}"
        dest.mkdir()
        unpack_layer(io.BytesIO(layer_tar(entries)), dest, self.dirs, self.warnings.append)
        self.dirs.append(dest)
        return dest


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path)


def d(name: str, **kw) -> Entry:
    return Entry(name, "dir", mode=kw.pop("mode", 0o755), **kw)


def f(name: str, data: bytes = b"x", **kw) -> Entry:
    return Entry(name, data=data, **kw)


def sym(name: str, target: str, **kw) -> Entry:
    return Entry(name, "symlink", linkname=target, **kw)


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_clean_name() -> None:
    assert clean_name("./a//b/./c/") == ("a", "b", "c")
    assert clean_name("/a/../../b") == ("b",)
    assert clean_name("a/../b") == ("b",)
    with pytest.raises(ImageError):
        clean_name("a/../../b")


@needs_root
def test_whiteout_becomes_char_device(stack: Stack) -> None:
    stack.add(d("etc"), f("etc/a"), f("etc/b"))
    top = stack.add(f("etc/.wh.a", b""))
    assert is_whiteout(top / "etc" / "a")
    assert not (top / "etc" / "b").exists()
    assert (stack.dirs[0] / "etc" / "a").exists()  # lower layers are never changed


@needs_root
@pytest.mark.parametrize("marker_first", [True, False])
def test_opaque_whatever_its_position_keeps_same_layer_entries(stack: Stack, marker_first: bool) -> None:
    stack.add(d("dir"), f("dir/old"))
    entries = [f("dir/.wh..wh..opq", b""), f("dir/new")]
    top = stack.add(d("dir"), *(entries if marker_first else entries[::-1]))
    assert os.getxattr(top / "dir", OPAQUE_XATTR) == b"y"
    assert (top / "dir" / "new").exists() and not (top / "dir" / "old").exists()


@needs_root
def test_whiteout_then_same_name_in_same_layer_survives_as_opaque_dir(stack: Stack) -> None:
    stack.add(d("a"), f("a/old"))
    top = stack.add(f(".wh.a", b""), f("a/new"))
    assert (top / "a").is_dir() and (top / "a" / "new").exists()
    assert os.getxattr(top / "a", OPAQUE_XATTR) == b"y"


@needs_root
def test_whiteout_after_same_layer_dir_makes_it_opaque(stack: Stack) -> None:
    stack.add(d("a"), f("a/old"))
    top = stack.add(d("a"), f("a/new"), f(".wh.a", b""))
    assert (top / "a" / "new").exists()
    assert os.getxattr(top / "a", OPAQUE_XATTR) == b"y"


def test_aufs_metadata_is_skipped(stack: Stack) -> None:
    top = stack.add(d(".wh..wh.plnk"), f(".wh..wh.plnk/123.456"), f(".wh..wh.aufs", b""), f("kept"))
    assert sorted(p.name for p in top.iterdir()) == ["kept"]


def test_file_replaced_by_directory_and_back(stack: Stack) -> None:
    stack.add(f("a"), d("b"), f("b/inner"))
    top = stack.add(d("a"), f("a/x"), f("b", b"now a file"))
    assert (top / "a" / "x").exists()
    assert (top / "b").read_bytes() == b"now a file"


def test_same_layer_later_entry_wins(stack: Stack) -> None:
    top = stack.add(d("x"), f("x/y"), f("x", b"file"), f("z", b"1"), f("z", b"2"))
    assert (top / "x").read_bytes() == b"file"
    assert (top / "z").read_bytes() == b"2"


def test_lib_symlink_then_later_layer_writes_through_it(stack: Stack) -> None:
    """`lib -> usr/lib` below, `lib/x` above: the file lands in usr/lib, the symlink stays."""
    stack.add(d("usr"), d("usr/lib"), f("usr/lib/libc.so"), sym("lib", "usr/lib"), d("var"),
              sym("var/run", "/run"), d("run"))
    top = stack.add(f("lib/x"), f("var/run/pid", b"1"))
    assert (top / "usr" / "lib" / "x").exists()
    assert (top / "run" / "pid").read_bytes() == b"1"
    assert not (top / "lib").exists() and not (top / "var" / "run").exists()


def test_implied_parent_copies_lower_metadata(stack: Stack) -> None:
    stack.add(d("srv", mode=0o750, uid=7, gid=8, mtime=1234))
    top = stack.add(f("srv/file"))
    st = os.stat(top / "srv")
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert int(st.st_mtime) == 1234
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (7, 8)
    fresh = stack.add(f("new/deep/file"))
    assert stat.S_IMODE(os.stat(fresh / "new").st_mode) == 0o755


def test_hardlink_within_a_layer(stack: Stack) -> None:
    top = stack.add(f("a", b"data"), Entry("b", "hardlink", linkname="a"))
    assert os.stat(top / "a").st_ino == os.stat(top / "b").st_ino


def test_hardlink_to_lower_layer_copies_up(stack: Stack) -> None:
    base = stack.add(d("bin"), f("bin/tool", b"#!", mode=0o755, mtime=99))
    top = stack.add(Entry("bin/alias", "hardlink", linkname="bin/tool", mode=0o755))
    assert (top / "bin" / "tool").read_bytes() == b"#!"
    assert os.stat(top / "bin" / "tool").st_ino == os.stat(top / "bin" / "alias").st_ino
    assert stat.S_IMODE(os.stat(top / "bin" / "alias").st_mode) == 0o755
    assert os.stat(base / "bin" / "tool").st_nlink == 1


@needs_root
def test_metadata_numeric_ids_special_bits_xattrs_mtimes(stack: Stack) -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service
    top = stack.add(
        d("tmp", mode=0o1777, mtime=1000),
        f("tmp/suid", mode=0o4755, uid=4242, gid=4343, mtime=2000),
        f("tmp/sgid", mode=0o2755, mtime=2000),
        f("tmp/cap", mode=0o755, uid=1000, xattrs={"security.capability": cap, "user.note": b"hi"}),
        sym("tmp/link", "/nowhere", uid=5, gid=6),
    )
    suid = os.stat(top / "tmp" / "suid")
    assert stat.S_IMODE(suid.st_mode) == 0o4755 and (suid.st_uid, suid.st_gid) == (4242, 4343)
    assert stat.S_IMODE(os.stat(top / "tmp" / "sgid").st_mode) == 0o2755
    assert stat.S_IMODE(os.stat(top / "tmp").st_mode) == 0o1777
    assert os.getxattr(top / "tmp" / "cap", "security.capability") == cap
    assert os.getxattr(top / "tmp" / "cap", "user.note") == b"hi"
    assert os.lstat(top / "tmp" / "link").st_uid == 5
    assert int(os.stat(top / "tmp").st_mtime) == 1000  # set after its children were made
    assert int(suid.st_mtime) == 2000


def test_root_entry_sets_layer_root_metadata(stack: Stack) -> None:
    top = stack.add(d("./", mode=0o711, mtime=5), f("a"))
    st = os.stat(top)
    assert stat.S_IMODE(st.st_mode) == 0o711 and int(st.st_mtime) == 5


def test_truncated_layer_is_an_error(tmp_path: Path) -> None:
    data = layer_tar([f("big", b"y" * 10000)])[:3000]
    (tmp_path / "l").mkdir()
    with pytest.raises(ImageError):
        unpack_layer(io.BytesIO(data), tmp_path / "l", [])
