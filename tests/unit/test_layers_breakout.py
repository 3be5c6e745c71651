"""Hostile layers: no entry may touch anything outside the layer directory.

The classes of attack come from moby's archive tests, containerd's
TestBreakouts and umoci's extract tests. Each test unpacks into box/l<N>
beside an `outside` directory holding a canary file, and checks afterwards
that the canary is unchanged and that nothing appeared outside the box.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from imagefactory import Entry, layer_tar
from minicontainer.errors import ImageError
from minicontainer.layers import unpack_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes: root only")


class Box:
    """A sandbox: layers unpack under box/, the canary lives in outside/."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.outside = tmp / "outside"
        self.outside.mkdir()
        self.canary = self.outside / "canary"
        self.canary.write_text("untouched")
        self.canary.chmod(0o600)
        (tmp / "box").mkdir()
        self.layers: list[Path] = []
        self.attempts = 0
        self.warnings: list[str] = []
        self.before = self._outside_state()

    def _outside_state(self) -> dict[str, tuple[int, int, int]]:
        state = {}
        for path in [self.tmp, *self.tmp.rglob("*")]:
            if "box" in path.relative_to(self.tmp).parts:
                continue
            st = os.lstat(path)
            state[str(path)] = (st.st_mode, st.st_uid, st.st_nlink)
        return state

    def unpack(self, *entries: Entry) -> Path:
        self.attempts += 1
        dest = self.tmp / "box" / f"l{self.attempts}"
        dest.mkdir(parents=True)
        unpack_layer(io.BytesIO(layer_tar(entries)), dest, self.layers, self.warnings.append)
        self.layers.append(dest)
        return dest

    def assert_outside_untouched(self) -> None:
        assert self.canary.read_text() == "untouched"
        assert self._outside_state() == self.before
        assert os.listxattr(self.outside) == []


@pytest.fixture
def box(tmp_path: Path):
    b = Box(tmp_path)
    yield b
    b.assert_outside_untouched()


def sym(name: str, target: str) -> Entry:
    return Entry(name, "symlink", linkname=target)


def f(name: str, data: bytes = b"evil", **kw) -> Entry:
    return Entry(name, data=data, **kw)


def test_dotdot_name_is_refused(box: Box) -> None:
    with pytest.raises(ImageError, match="climbs out"):
        box.unpack(f("../outside/canary"))
    with pytest.raises(ImageError, match="climbs out"):
        box.unpack(f("a/../../outside/evil"))


def test_absolute_names_stay_inside(box: Box) -> None:
    layer = box.unpack(f(str(box.canary)), f("/../../x"))
    assert (layer / str(box.canary).lstrip("/")).read_bytes() == b"evil"
    assert (layer / "x").read_bytes() == b"evil"


@pytest.mark.parametrize("target", ["/", "..", "../..", "/..", "../../../../.."])
def test_symlink_to_root_or_parent_then_write_same_layer(box: Box, target: str) -> None:
    layer = box.unpack(sym("up", target), f("up/outside/canary"), f("up/evil"))
    assert (layer / "evil").read_bytes() == b"evil"          # clamped at the image root
    assert (layer / "outside" / "canary").read_bytes() == b"evil"
    assert os.readlink(layer / "up") == target                 # kept verbatim


def test_symlink_to_outside_then_write_in_later_layer(box: Box) -> None:
    box.unpack(sym("s", str(box.outside)))
    upper = box.unpack(f("s/canary"), f("s/new"))
    inside = upper / str(box.outside).lstrip("/")
    assert (inside / "canary").read_bytes() == b"evil"
    assert (inside / "new").exists()
    assert not (upper / "s").exists()  # the write went through the lower symlink


def test_multi_hop_symlink_chain(box: Box) -> None:
    layer = box.unpack(sym("a", "b"), sym("b", "c/../d"), Entry("c", "dir"),
                       sym("d", "../../.." + str(box.outside)), f("a/canary"))
    assert (layer / str(box.outside).lstrip("/") / "canary").read_bytes() == b"evil"


def test_multi_hop_chain_across_layers(box: Box) -> None:
    box.unpack(sym("a", "/b"))
    box.unpack(sym("b", "../c"))
    top = box.unpack(sym("c", str(box.outside)), f("a/canary"))
    assert (top / str(box.outside).lstrip("/") / "canary").read_bytes() == b"evil"


def test_symlink_loop_is_refused(box: Box) -> None:
    with pytest.raises(ImageError, match="too many levels"):
        box.unpack(sym("a", "b"), sym("b", "a"), f("a/x"))
    with pytest.raises(ImageError, match="too many levels"):
        box.unpack(sym("self", "self/x"), f("self/y"))


def test_hardlink_climbing_out_is_refused(box: Box) -> None:
    with pytest.raises(ImageError, match="climbs out"):
        box.unpack(Entry("h", "hardlink", linkname="../outside/canary"))


def test_hardlink_to_absolute_path_resolves_inside(box: Box) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        box.unpack(Entry("h", "hardlink", linkname=str(box.canary)))
    layer = box.unpack(f(str(box.canary), b"mine"), Entry("h", "hardlink", linkname=str(box.canary)))
    assert (layer / "h").read_bytes() == b"mine"
    assert os.stat(layer / "h").st_nlink == 2


def test_hardlink_through_symlinked_parent(box: Box) -> None:
    layer = box.unpack(sym("s", str(box.outside)), f(str(box.canary), b"inside"),
                       Entry("h", "hardlink", linkname="s/canary"))
    assert (layer / "h").read_bytes() == b"inside"


def test_hardlink_to_symlink_links_the_symlink(box: Box) -> None:
    layer = box.unpack(sym("s", str(box.canary)), Entry("h", "hardlink", linkname="s"),
                       f("h", b"overwrite"))
    assert os.readlink(layer / "s") == str(box.canary)
    assert (layer / "h").read_bytes() == b"overwrite"   # replaced, not written through
    box.unpack(sym("s2", str(box.canary)), Entry("h2", "hardlink", linkname="s2"))
    assert os.readlink(box.layers[-1] / "h2") == str(box.canary)


def test_file_entry_replaces_symlink_instead_of_following_it(box: Box) -> None:
    layer = box.unpack(sym("c", str(box.canary)), f("c", b"x", mode=0o777))
    assert not os.path.islink(layer / "c")
    assert (layer / "c").stat().st_mode & 0o777 == 0o777


@needs_root
def test_whiteout_climbing_out(box: Box) -> None:
    with pytest.raises(ImageError, match="climbs out"):
        box.unpack(f("../outside/.wh.canary", b""))
    layer = box.unpack(sym("s", str(box.outside)), f("s/.wh.canary", b""))
    whiteout = layer / str(box.outside).lstrip("/") / "canary"
    assert whiteout.is_char_device()


@needs_root
def test_opaque_marker_through_symlink_stays_inside(box: Box) -> None:
    layer = box.unpack(sym("s", str(box.outside)), f("s/.wh..wh..opq", b""))
    inner = layer / str(box.outside).lstrip("/")
    assert os.getxattr(inner, "trusted.overlay.opaque") == b"y"


def test_directory_override_same_layer(box: Box) -> None:
    layer = box.unpack(sym("d", str(box.outside)), Entry("d", "dir"), f("d/canary"))
    assert (layer / "d").is_dir() and not (layer / "d").is_symlink()
    assert (layer / "d" / "canary").read_bytes() == b"evil"


def test_directory_override_across_layers(box: Box) -> None:
    box.unpack(sym("d", str(box.outside)))
    upper = box.unpack(Entry("d", "dir"), f("d/canary"))
    assert (upper / "d" / "canary").read_bytes() == b"evil"


def test_symlink_replacing_directory_then_write(box: Box) -> None:
    layer = box.unpack(Entry("d", "dir"), f("d/a"), sym("d", str(box.outside)), f("d/canary"))
    assert (layer / str(box.outside).lstrip("/") / "canary").read_bytes() == b"evil"


def test_parent_that_is_a_file_is_refused(box: Box) -> None:
    with pytest.raises(ImageError, match="not a directory"):
        box.unpack(f("file"), f("file/x"))


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh..."])
def test_invalid_whiteout_names_are_refused(box: Box, name: str) -> None:
    with pytest.raises(ImageError, match="invalid whiteout"):
        box.unpack(f(f"dir/{name}", b""))


def test_whiteout_as_directory_is_refused(box: Box) -> None:
    with pytest.raises(ImageError, match="whiteout"):
        box.unpack(f(".wh.x/y"))


def test_device_nodes_are_skipped_with_a_warning(box: Box) -> None:
    layer = box.unpack(Entry("dev/sda", "block", devmajor=8), Entry("dev/mem", "char", devmajor=1, devminor=1),
                       Entry("fifo", "fifo", mode=0o640))
    assert not (layer / "dev" / "sda").exists() and not (layer / "dev" / "mem").exists()
    assert len(box.warnings) == 2 and "device" in box.warnings[0]
    assert (layer / "fifo").is_fifo() and (layer / "fifo").stat().st_mode & 0o777 == 0o640


def test_overlay_xattrs_from_the_archive_are_ignored(box: Box) -> None:
    layer = box.unpack(Entry("d", "dir", xattrs={"trusted.overlay.redirect": b"/etc"}))
    assert "trusted.overlay.redirect" not in os.listxattr(layer / "d")
    assert any("ignored xattr" in w for w in box.warnings)
