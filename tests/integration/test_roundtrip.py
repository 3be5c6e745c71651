"""Image → container → image: diff, commit, save, load elsewhere, export; the image never changes.

One container of the demo image adds a file, changes one, deletes one of a
lower layer, and empties and refills a lower directory (an opaque directory).
Each round trip must carry exactly that, and at the end every file of the
original image's layers must be as it was, byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from conftest import MC
from minicontainer import image as images
from minicontainer.store import Store

WORK = ("echo new > /home/student/new.txt; echo more >> /etc/motd; rm /etc/os-release; "
        "rm -rf /usr/sbin; mkdir /usr/sbin; echo only > /usr/sbin/only")
CHECK = "cat /home/student/new.txt; tail -n1 /etc/motd; ls /usr/sbin; test -e /etc/os-release || echo gone"
CHECK_OUT = "new\nmore\nonly\ngone\n"


def tree_fingerprint(folders: list[Path]) -> dict[str, tuple]:
    """Every entry of the folders: type, mode, owner, content hash or link target, xattrs."""
    seen = {}
    for folder in folders:
        for path in sorted([folder, *folder.rglob("*")]):
            st = os.lstat(path)
            if path.is_symlink():
                body = os.readlink(path)
            elif path.is_file():
                body = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                body = st.st_rdev
            xattrs = {n: os.getxattr(path, n, follow_symlinks=False)
                      for n in os.listxattr(path, follow_symlinks=False)}
            seen[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, body, sorted(xattrs.items()))
    return seen


def demo_layers(root: Path) -> list[Path]:
    store = Store.open(root)
    return images.find(store, "minicontainer-demo").layer_dirs(store)


@pytest.fixture
def changed(mc: MC, demo_tar: Path):
    """The demo image loaded, a container "box" that did WORK (exited), and the layers' fingerprint."""
    mc("load", str(demo_tar), check=True)
    before = tree_fingerprint(demo_layers(mc.root))
    mc("run", "--name", "box", "minicontainer-demo", "sh", "-c", WORK, check=True)
    yield before
    mc("rm", "-f", "box")


def test_diff_shows_what_the_container_did_and_nothing_else(mc: MC, changed) -> None:
    lines = mc("diff", "box", check=True).stdout.splitlines()
    for expected in ("A /home/student/new.txt", "C /etc/motd", "D /etc/os-release",
                     "C /usr/sbin", "D /usr/sbin/chroot", "A /usr/sbin/only"):
        assert expected in lines
    assert not [line for line in lines if "hostname" in line or "resolv.conf" in line]
    # another container of the same image sees the image, not box's writes
    other = mc("run", "--rm", "minicontainer-demo", "sh", "-c", "cat /etc/os-release >/dev/null && "
               "ls /usr/sbin && test ! -e /home/student/new.txt && echo clean", check=True)
    assert "chroot" in other.stdout and other.stdout.endswith("clean\n")


def test_commit_save_load_export_round_trip(mc: MC, changed, tmp_path: Path) -> None:
    image_id = mc("commit", "box", "classroom:v1", check=True).stdout.strip()
    assert image_id.startswith("sha256:")
    history = mc("history", "classroom:v1", check=True).stdout
    assert "minicontainer commit" in history.splitlines()[1]

    ran = mc("run", "--rm", "classroom:v1", "sh", "-c", CHECK, check=True)
    assert ran.stdout == CHECK_OUT

    saved = tmp_path / "saved.tar"
    mc("save", "classroom:v1", "-o", str(saved), check=True)
    with tarfile.open(saved) as outer:
        names = outer.getnames()
        assert "manifest.json" in names
        layer_names = [n for n in names if n.endswith("/layer.tar")]
        assert len(layer_names) == 3
        top = [outer.extractfile(n).read() for n in layer_names]
    inner_names = set()
    for blob in top:
        with tarfile.open(fileobj=io.BytesIO(blob)) as inner:
            inner_names |= set(inner.getnames())
    assert {"etc/.wh.os-release", "usr/sbin/.wh..wh..opq", "home/student/new.txt"} <= inner_names

    elsewhere = MC(tmp_path / "second-store")
    loaded = elsewhere("load", str(saved), check=True).stdout
    assert "classroom:v1" in loaded
    assert f"Loaded image ID: {image_id}" in loaded  # the same bytes, so the same id
    assert elsewhere("run", "--rm", "classroom:v1", "sh", "-c", CHECK, check=True).stdout == CHECK_OUT

    flat = tmp_path / "flat.tar"
    mc("export", "box", "-o", str(flat), check=True)
    with tarfile.open(flat) as tar:
        exported = {m.name.rstrip("/"): m for m in tar.getmembers()}
        assert tar.extractfile(exported["home/student/new.txt"]).read() == b"new\n"
    assert "usr/sbin/only" in exported and "bin/busybox" in exported
    assert "etc/os-release" not in exported and "usr/sbin/chroot" not in exported
    assert not [n for n in exported if ".wh." in n]

    assert tree_fingerprint(demo_layers(mc.root)) == changed  # the image never changed


def test_export_of_a_running_container(mc: MC, changed, tmp_path: Path) -> None:
    mc("run", "-d", "--name", "live", "minicontainer-demo", "sh", "-c", "echo up > /up; sleep 600",
       check=True)
    try:
        mc("exec", "live", "cat", "/up", check=True)  # the file is written once exec can read it
        flat = tmp_path / "live.tar"
        mc("export", "live", "-o", str(flat), check=True)
        with tarfile.open(flat) as tar:
            assert tar.extractfile("up").read() == b"up\n"
        assert mc("diff", "live", check=True).stdout.splitlines() == ["A /up"]
    finally:
        mc("rm", "-f", "live")
    assert tree_fingerprint(demo_layers(mc.root)) == changed


@pytest.mark.podman
@pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed")
def test_podman_loads_and_runs_a_saved_commit(mc: MC, changed, tmp_path: Path) -> None:
    mc("commit", "box", "classroom:v1", check=True)
    saved = tmp_path / "saved.tar"
    mc("save", "classroom:v1", "-o", str(saved), check=True)
    # vfs: podman's layers are plain copies, so it mounts nothing on the host
    root, runroot = tempfile.mkdtemp(prefix="mcpod-"), tempfile.mkdtemp(prefix="mcpodrun-")
    podman = ["podman", "--root", root, "--runroot", runroot, "--storage-driver", "vfs"]
    try:
        load = subprocess.run([*podman, "load", "-i", str(saved)], capture_output=True, text=True)
        assert load.returncode == 0, load.stderr
        ran = subprocess.run([*podman, "run", "--rm", "--network", "none", "localhost/classroom:v1",
                              "sh", "-c", CHECK], capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == CHECK_OUT
    finally:
        subprocess.run([*podman, "rmi", "--all", "--force"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


def test_export_and_diff_of_a_copied_root(mc: MC, demo_tar: Path, tmp_path: Path) -> None:
    """Without overlayfs (MINICONTAINER_ROOTFS=copy) export still works; diff says why it cannot."""
    mc("run", "--name", "copied", str(demo_tar), "sh", "-c", "echo x > /copied-file", check=True,
       env={"MINICONTAINER_ROOTFS": "copy"})
    try:
        flat = tmp_path / "copied.tar"
        mc("export", "copied", "-o", str(flat), check=True)
        with tarfile.open(flat) as tar:
            assert tar.extractfile("copied-file").read() == b"x\n"
        refused = mc("diff", "copied")
        assert refused.returncode == 125 and "copied root filesystem" in refused.stderr
    finally:
        mc("rm", "-f", "copied")


def test_save_gives_back_the_loaded_image_with_its_id(mc: MC, demo_tar: Path, tmp_path: Path) -> None:
    original = mc("load", str(demo_tar), check=True).stdout.splitlines()[-1]
    saved = tmp_path / "demo-again.tar"
    mc("save", "minicontainer-demo", "-o", str(saved), check=True)
    assert MC(tmp_path / "other")("load", str(saved), check=True).stdout.splitlines()[-1] == original
    assert saved.read_bytes() == demo_tar.read_bytes()  # the very archive: same layers, config, writer
    # the archive is gone: the layers are re-tarred from the store; still loadable, still runnable
    moved = tmp_path / "moved.tar"
    shutil.copy(demo_tar, moved)
    fresh = MC(tmp_path / "third")
    fresh("load", str(moved), check=True)
    moved.unlink()
    retarred = tmp_path / "retarred.tar"
    fresh("save", "minicontainer-demo", "-o", str(retarred), check=True)
    again = MC(tmp_path / "fourth")
    again("load", str(retarred), check=True)
    assert again("run", "--rm", "minicontainer-demo", "cat", "/etc/os-release", check=True).stdout.startswith("NAME=")
    assert "d" == again("run", "--rm", "minicontainer-demo", "sh", "-c",
                        "test -e /etc/draft.txt && echo s || echo d", check=True).stdout.strip()


def test_save_to_stdout_is_the_same_archive(mc: MC, demo_tar: Path, tmp_path: Path) -> None:
    mc("load", str(demo_tar), check=True)
    to_file = tmp_path / "saved.tar"
    mc("save", "minicontainer-demo", "-o", str(to_file), check=True)
    piped = subprocess.run([sys.executable, "-m", "minicontainer", "save", "minicontainer-demo"],
                           capture_output=True, env={**os.environ, "MINICONTAINER_ROOT": str(mc.root)})
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == to_file.read_bytes()
    assert not list((mc.root / "tmp").iterdir())  # its staging file is gone
