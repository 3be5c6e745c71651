"""diff/commit/save without a container: an upper dir back into a layer tar, and A/C/D lines.

Whiteouts (character devices 0/0) can be made without root on Linux 5.8+;
the opaque-directory xattr (trusted.*) needs CAP_SYS_ADMIN, so the tests
that need one skip without it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from minicontainer import commit, layers, save
from minicontainer.container import Container, ContainerState
from minicontainer.errors import ImageError
from minicontainer.store import Store


def whiteout(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))
    except PermissionError:
        pytest.skip("this kernel does not let us make whiteouts (mknod 0/0)")


def opaque(path: Path) -> None:
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    except OSError as e:
        pytest.skip(f"cannot set trusted.* xattrs here: {e.strerror}")


def members(tar_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    """An upper dir: a new file, a hard link to it, a symlink, a deleted file."""
    top = tmp_path / "upper"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "motd").write_text("changed\n")
    (top / "etc" / "motd.link").hardlink_to(top / "etc" / "motd")
    (top / "etc" / "os").symlink_to("/usr/lib/os-release")
    whiteout(top / "etc" / "draft.txt")
    return top


def test_whiteouts_become_wh_entries_and_hard_links_stay_links(upper: Path, tmp_path: Path) -> None:
    layer = save.write_layer_tar(upper, tmp_path / "layer.tar")
    found = members(layer.path)
    assert sorted(found) == ["etc", "etc/.wh.draft.txt", "etc/motd", "etc/motd.link", "etc/os"]
    assert found["etc/.wh.draft.txt"].isreg() and found["etc/.wh.draft.txt"].size == 0
    assert found["etc/motd.link"].islnk() and found["etc/motd.link"].linkname == "etc/motd"
    assert found["etc/os"].issym() and found["etc/os"].linkname == "/usr/lib/os-release"
    assert found["etc/motd"].uname == "" and found["etc/motd"].gname == ""
    assert layer.diff_id == "sha256:" + hashlib.sha256(layer.path.read_bytes()).hexdigest()


def test_the_same_tree_gives_the_same_diff_id(upper: Path, tmp_path: Path) -> None:
    first = save.write_layer_tar(upper, tmp_path / "a.tar")
    second = save.write_layer_tar(upper, tmp_path / "b.tar")
    assert first.diff_id == second.diff_id


def test_a_layer_tar_survives_unpack_and_retar_unchanged(upper: Path, tmp_path: Path) -> None:
    """What makes commit → save → load keep the image id: the same tree, the same bytes."""
    first = save.write_layer_tar(upper, tmp_path / "first.tar")
    back = tmp_path / "back"
    back.mkdir()
    with open(first.path, "rb") as f:
        layers.unpack_layer(f, back, [])
    assert save.write_layer_tar(back, tmp_path / "again.tar").diff_id == first.diff_id


def test_skip_leaves_out_a_subtree(upper: Path, tmp_path: Path) -> None:
    layer = save.write_layer_tar(upper, tmp_path / "layer.tar", skip=frozenset({"etc/motd"}))
    assert "etc/motd" not in members(layer.path)
    assert "etc/motd.link" in members(layer.path)


def test_opaque_dir_becomes_the_opq_marker_and_unpacks_back(tmp_path: Path) -> None:
    top = tmp_path / "upper"
    (top / "var" / "cache").mkdir(parents=True)
    (top / "var" / "cache" / "fresh").write_text("new\n")
    opaque(top / "var" / "cache")
    whiteout(top / "var" / "old")
    layer = save.write_layer_tar(top, tmp_path / "layer.tar")
    names = list(members(layer.path))
    # the marker must follow its directory: unpackers apply entries in order
    assert names.index("var/cache/.wh..wh..opq") == names.index("var/cache") + 1
    back = tmp_path / "back"
    back.mkdir()
    with open(layer.path, "rb") as f:
        layers.unpack_layer(f, back, [])
    assert os.getxattr(back / "var" / "cache", "trusted.overlay.opaque") == b"y"
    assert save.is_whiteout(os.lstat(back / "var" / "old"))
    assert (back / "var" / "cache" / "fresh").read_text() == "new\n"


def _lower(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    top = tmp_path / name
    for rel, text in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    top.mkdir(exist_ok=True)
    return top


def test_in_lowers_follows_overlay_rules(tmp_path: Path) -> None:
    base = _lower(tmp_path, "l1", {"etc/motd": "a", "etc/draft.txt": "b", "opt/app/x": "c"})
    top = _lower(tmp_path, "l2", {"etc/motd": "a2"})
    whiteout(top / "etc" / "draft.txt")
    lowers = [top, base]  # topmost first
    assert commit.in_lowers(lowers, ("etc", "motd"))
    assert commit.in_lowers(lowers, ("opt", "app", "x"))
    assert not commit.in_lowers(lowers, ("etc", "draft.txt"))  # deleted by the upper layer
    assert not commit.in_lowers(lowers, ("etc", "nothing"))


def test_in_lowers_stops_below_an_opaque_dir(tmp_path: Path) -> None:
    base = _lower(tmp_path, "l1", {"opt/app/x": "c"})
    top = _lower(tmp_path, "l2", {"opt/app/y": "d"})
    opaque(top / "opt" / "app")
    assert commit.in_lowers([top, base], ("opt", "app", "y"))
    assert not commit.in_lowers([top, base], ("opt", "app", "x"))


def test_changes_are_docker_diff_lines(upper: Path, tmp_path: Path) -> None:
    lower = _lower(tmp_path, "l1", {"etc/motd": "old", "etc/draft.txt": "d", "etc/hostname": ""})
    (upper / "etc" / "hostname").write_text("")  # a runtime mount point: not the container's work
    (upper / "home").mkdir()
    (upper / "home" / "new.txt").write_text("hi")
    lines = [str(c) for c in commit.changes(upper, [lower], skip=frozenset({"etc/hostname"}))]
    assert lines == ["C /etc", "D /etc/draft.txt", "C /etc/motd", "A /etc/motd.link", "A /etc/os",
                     "A /home", "A /home/new.txt"]


def test_a_dir_changed_only_by_a_mount_point_is_not_shown(tmp_path: Path) -> None:
    lower = _lower(tmp_path, "l1", {"etc/passwd": "root"})
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "resolv.conf").write_text("")
    assert commit.changes(upper, [lower], skip=frozenset({"etc/resolv.conf"})) == []


def test_opaque_dir_deletes_what_the_image_had_in_it(tmp_path: Path) -> None:
    lower = _lower(tmp_path, "l1", {"srv/a": "1", "srv/b": "2"})
    upper = tmp_path / "upper"
    (upper / "srv").mkdir(parents=True)
    (upper / "srv" / "b").write_text("again")
    opaque(upper / "srv")
    lines = [str(c) for c in commit.changes(upper, [lower])]
    assert lines == ["C /srv", "D /srv/a", "C /srv/b"]


def test_committed_config_adds_one_layer_and_takes_the_container_command(tmp_path: Path) -> None:
    base = {"created": "2023-11-14T22:13:20Z",
            "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["hello"], "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
            "history": [{"created_by": "ADD x /"}]}
    state = ContainerState(id="c" * 64, name="c", image="sha256:" + "2" * 64, image_ref="demo",
                           command=["/bin/sh", "-c", "echo hi > /x"], created="now")
    container = Container(Store(tmp_path), state)
    new = commit._committed_config(base, container, "sha256:" + "3" * 64, "a message", "me")
    assert new["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64, "sha256:" + "3" * 64]
    assert new["history"][-1]["created_by"] == "minicontainer commit"
    assert new["history"][-1]["comment"] == "a message"
    assert new["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert new["config"]["Cmd"] == ["echo hi > /x"]
    assert new["author"] == "me"
    assert base["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64]  # the old image's config untouched
    assert len(base["history"]) == 1


def test_xattrs_travel_as_pax_headers(tmp_path: Path) -> None:
    top = tmp_path / "upper"
    top.mkdir()
    (top / "f").write_text("x")
    try:
        os.setxattr(top / "f", "user.note", b"\xff\x00binary")
    except OSError as e:
        pytest.skip(f"no user xattrs on this filesystem: {e.strerror}")
    layer = save.write_layer_tar(top, tmp_path / "layer.tar")
    with tarfile.open(fileobj=io.BytesIO(layer.path.read_bytes()), encoding="utf-8",
                      errors="surrogateescape") as tar:
        value = tar.getmember("f").pax_headers["SCHILY.xattr.user.note"]
    assert value.encode("utf-8", "surrogateescape") == b"\xff\x00binary"


def test_a_file_swapped_for_a_symlink_or_fifo_is_not_read(tmp_path: Path) -> None:
    """A running container may swap a file while it is tarred: never follow, never hang."""
    secret = tmp_path / "host-secret"
    secret.write_text("not for the image")
    (tmp_path / "swapped").symlink_to(secret)
    with pytest.raises(OSError):
        save._open_regular(tmp_path / "swapped")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ImageError):
        save._open_regular(tmp_path / "fifo")


def test_walk_hands_out_paths_through_open_directories(upper: Path) -> None:
    seen = {name: path for name, path, _ in save.walk(upper)}
    assert set(seen) == {"etc", "etc/draft.txt", "etc/motd", "etc/motd.link", "etc/os"}
    assert str(seen["etc/motd"]).startswith("/proc/self/fd/")
