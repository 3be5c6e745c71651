"""Archives made by real tools (podman, skopeo) load, and show the tree podman shows.

An image is built in-process, loaded into a throwaway podman storage, then
written back out by podman (docker-archive, oci-archive) and skopeo
(oci-archive, an `oci:` directory tarred, docker-archive). Each must load here
with the right layers, and the merged tree (overlayfs over our unpacked layers)
must list the same files, types, modes and owners as `podman export`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import imagefactory as fac
from imagefactory import Entry, layer_tar

pytestmark = [pytest.mark.podman,
              pytest.mark.skipif(not (shutil.which("podman") and shutil.which("skopeo")),
                                 reason="podman and skopeo are not installed")]

TAG = "localhost/mc-real:1"


@pytest.fixture
def podman():
    """podman on a private, temporary storage (vfs: no mounts), emptied afterwards.

    Short paths: podman puts sockets under its runroot, and socket paths are limited.
    """
    root, runroot = Path(tempfile.mkdtemp(prefix="mcpod-")), Path(tempfile.mkdtemp(prefix="mcpodrun-"))
    base = ["podman", "--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs"]

    def run(*args: str) -> str:
        result = subprocess.run([*base, *args], capture_output=True, text=True)
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
        return result.stdout
    yield run
    subprocess.run([*base, "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)


def tricky_image(out: Path, busybox: Path) -> Path:
    """Two layers with what image tools must get right: whiteouts, opaque dirs, links, modes."""
    from minicontainer.demo import busybox_entries

    base = busybox_entries(busybox) + [
        Entry("data", "dir"), Entry("data/gone", data=b"g"), Entry("data/kept", data=b"k"),
        Entry("data/dir", "dir", mode=0o750, uid=1000, gid=1000), Entry("data/dir/old", data=b"o"),
        Entry("data/tool", data=b"#!/bin/sh\n", mode=0o4755), Entry("data/file-then-dir", data=b"f"),
        Entry("data/fifo", "fifo", mode=0o600)]
    upper = [
        Entry("data", "dir"), Entry("data/.wh.gone", data=b""), Entry("data/dir", "dir", mode=0o770, uid=1000),
        Entry("data/dir/.wh..wh..opq", data=b""), Entry("data/dir/new", data=b"n", uid=33, gid=44),
        Entry("data/alias", "hardlink", linkname="data/tool", mode=0o4755), Entry("data/file-then-dir", "dir"),
        Entry("data/file-then-dir/x", data=b"x", mode=0o2755), Entry("data/abs", "symlink", linkname="/etc/passwd"),
        Entry("data/sticky", "dir", mode=0o1777)]
    return fac.docker_save(out, [layer_tar(base), layer_tar(upper)], {"Cmd": ["sh"]}, [TAG])


def listing_of_tar(path: Path) -> dict[str, tuple]:
    result: dict[str, tuple] = {}
    with tarfile.open(path) as tar:
        for m in tar:
            if m.islnk():  # the second name of a hard link: the same inode as the first
                result[m.name.strip("./")] = result[m.linkname.strip("./")]
                continue
            kind = "dir" if m.isdir() else "symlink" if m.issym() else "fifo" if m.isfifo() else "file"
            result[m.name.strip("./")] = (kind, m.mode & 0o7777, m.uid, m.gid, m.size if m.isfile() else 0,
                                          m.linkname if m.issym() else "")
    return result


def listing_of_tree(top: Path) -> dict[str, tuple]:
    result = {}
    for path in top.rglob("*"):
        st = os.lstat(path)
        kind = ("dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode)
                else "fifo" if stat.S_ISFIFO(st.st_mode) else "file")
        result[path.relative_to(top).as_posix()] = (
            kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size if kind == "file" else 0,
            os.readlink(path) if kind == "symlink" else "")
    return result


def merged_listing(tmp_path: Path, layer_dirs: list[str]) -> dict[str, tuple]:
    target = tmp_path / "merged"
    target.mkdir(exist_ok=True)
    lowerdir = ":".join(reversed(layer_dirs))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(target)], check=True)
    try:
        return listing_of_tree(target)
    finally:
        subprocess.run(["umount", str(target)], check=True)


EXPORTS: dict[str, Callable[[Callable[..., str], Path], Path]] = {
    "podman docker-archive": lambda pm, d: (pm("save", "-o", str(d / "a.tar"), TAG), d / "a.tar")[1],
    "podman oci-archive": lambda pm, d: (pm("save", "--format", "oci-archive", "-o", str(d / "a.tar"), TAG),
                                         d / "a.tar")[1],
}


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, capture_output=True)


@pytest.mark.parametrize("how", ["podman docker-archive", "podman oci-archive", "skopeo oci-archive",
                                 "skopeo oci dir, tarred", "skopeo docker-archive from oci"])
def test_archives_of_real_tools(mc, podman, tmp_path: Path, busybox: Path, how: str) -> None:
    original = tricky_image(tmp_path / "orig.tar", busybox)
    podman("load", "-q", "-i", str(original))
    podman_id = podman("images", "--no-trunc", "--format", "{{.ID}}", TAG).strip()
    saved = tmp_path / "podman-docker.tar"
    podman("save", "-q", "-o", str(saved), TAG)
    if how == "podman docker-archive":
        archive = saved
    elif how == "podman oci-archive":
        archive = tmp_path / "podman-oci.tar"
        podman("save", "-q", "--format", "oci-archive", "-o", str(archive), TAG)
    elif how == "skopeo oci-archive":
        archive = tmp_path / "skopeo-oci.tar"
        skopeo("copy", "-q", f"docker-archive:{saved}", f"oci-archive:{archive}:{TAG}")
    elif how == "skopeo oci dir, tarred":
        layout = tmp_path / "layout"
        skopeo("copy", "-q", f"docker-archive:{saved}", f"oci:{layout}:{TAG}")
        archive = tmp_path / "layout.tar"
        subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    else:
        oci = tmp_path / "skopeo-oci.tar"
        skopeo("copy", "-q", f"docker-archive:{saved}", f"oci-archive:{oci}:{TAG}")
        archive = tmp_path / "back.tar"
        skopeo("copy", "-q", f"oci-archive:{oci}", f"docker-archive:{archive}:{TAG}")

    loaded = mc("load", str(archive), check=True).stdout
    assert f"Loaded image: {TAG}" in loaded
    [info] = json.loads(mc("inspect", TAG, check=True).stdout)
    if how == "podman docker-archive":
        assert info["Id"] == podman_id  # same config bytes: the same image id as podman's
    assert info["RootFS"]["Layers"] == json.loads(
        podman("image", "inspect", TAG))[0]["RootFS"]["Layers"]

    container = podman("create", TAG).strip()
    exported = tmp_path / "export.tar"
    podman("export", "-o", str(exported), container)
    podman("rm", container)
    theirs = listing_of_tar(exported)
    ours = merged_listing(tmp_path, info["Metadata"]["LayerDirs"])
    assert {k: v for k, v in ours.items() if k.startswith("data")} == \
           {k: v for k, v in theirs.items() if k.startswith("data")}
    assert set(ours) == set(theirs)
