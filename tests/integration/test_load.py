"""The image commands end to end: load, images, history, inspect, rmi, image prune.

Also what only root can check: the unpacked layers, stacked by the kernel's
overlayfs exactly as a container will see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import imagefactory as fac
from imagefactory import Entry, layer_tar


def test_demo_image_commands(mc, demo_tar: Path, store_root: Path) -> None:
    loaded = mc("load", str(demo_tar), check=True)
    assert "Loaded image: minicontainer-demo:latest" in loaded.stdout
    image_id = loaded.stdout.split("Loaded image ID: ")[1].strip()
    assert (store_root / "images" / image_id.split(":")[1] / "config.json").exists()

    listing = mc("images", check=True).stdout.splitlines()
    assert listing[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
    assert listing[1].split()[:4] == ["minicontainer-demo", "latest", image_id[7:19], "2"]

    history = mc("history", "minicontainer-demo", check=True).stdout
    assert "deletes etc/draft.txt" in history and "<missing>" in history

    [info] = json.loads(mc("inspect", image_id[7:13], check=True).stdout)
    assert info["Id"] == image_id
    assert info["Config"]["Cmd"] == ["/usr/local/bin/hello"]
    assert len(info["RootFS"]["Layers"]) == 2

    top = Path(info["Metadata"]["LayerDirs"][1])
    draft = os.lstat(top / "etc" / "draft.txt")  # the demo's whiteout, in overlay format
    assert (draft.st_mode & 0o170000) == 0o020000 and draft.st_rdev == 0

    assert mc("rmi", "minicontainer-demo", check=True).stdout.startswith("Untagged: minicontainer-demo:latest")
    assert mc("images", check=True).stdout.count("\n") == 1
    pruned = mc("image", "prune", check=True).stdout
    assert "Removed 2 unused layer(s)" in pruned
    assert [p for p in (store_root / "layers").iterdir()] == []


@pytest.mark.parametrize("content", [b"", b"not an archive at all" * 50, b"\x1f\x8b\x08\x00garbage" * 10])
def test_bad_input_exit_125_one_line(mc, tmp_path: Path, store_root: Path, content: bytes) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(content)
    result = mc("load", str(bad))
    assert result.returncode == 125
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr
    assert mc("images", check=True).stdout.count("\n") == 1
    assert list((store_root / "tmp").iterdir()) == []


def test_missing_file_and_unknown_image(mc, tmp_path: Path) -> None:
    assert mc("load", str(tmp_path / "nope.tar")).returncode == 125
    result = mc("inspect", "nosuchimage")
    assert result.returncode == 125 and "no such image" in result.stderr


def test_concurrent_loads_unpack_each_layer_once(mc, tmp_path: Path, store_root: Path) -> None:
    layers = [layer_tar([Entry(f"d{i}", "dir")] + [Entry(f"d{i}/f{j}", data=os.urandom(2000))
                                                  for j in range(300)]) for i in range(3)]
    archive = fac.docker_save(tmp_path / "big.tar", layers, {"Cmd": ["sh"]}, ["big:1"])
    env = {**os.environ, "MINICONTAINER_ROOT": str(store_root)}
    procs = [subprocess.Popen([sys.executable, "-m", "minicontainer", "load", str(archive)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert len({out.split("Loaded image ID: ")[1] for out, _ in outputs}) == 1
    assert len([p for p in (store_root / "layers").iterdir() if p.is_dir()]) == 3
    assert list((store_root / "tmp").iterdir()) == []


def overlay_view(tmp_path: Path, lowers: list[Path]):
    """Mount the layers read-only as overlayfs (top first in lowerdir), as the runtime does."""
    target = tmp_path / "merged"
    target.mkdir()
    lowerdir = ":".join(str(p) for p in reversed(lowers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(target)],
                   check=True)
    return target


def test_overlay_sees_what_the_image_means(mc, tmp_path: Path, store_root: Path) -> None:
    base = layer_tar([Entry("usr", "dir"), Entry("usr/lib", "dir"), Entry("usr/lib/libc.so", data=b"c"),
                      Entry("lib", "symlink", linkname="usr/lib"), Entry("etc", "dir"),
                      Entry("etc/gone", data=b"g"), Entry("etc/kept", data=b"k"),
                      Entry("opt", "dir"), Entry("opt/old", data=b"o"), Entry("tool", data=b"t")])
    upper = layer_tar([Entry("lib/x", data=b"x"), Entry("etc/.wh.gone", data=b""),
                       Entry("opt", "dir"), Entry("opt/.wh..wh..opq", data=b""), Entry("opt/new", data=b"n"),
                       Entry("alias", "hardlink", linkname="tool")])
    archive = fac.docker_save(tmp_path / "a.tar", [base, upper], {"Cmd": ["sh"]}, ["stack:1"])
    mc("load", str(archive), check=True)
    [info] = json.loads(mc("inspect", "stack:1", check=True).stdout)
    merged = overlay_view(tmp_path, [Path(p) for p in info["Metadata"]["LayerDirs"]])
    try:
        assert (merged / "lib" / "x").read_bytes() == b"x"
        assert (merged / "lib" / "libc.so").read_bytes() == b"c"   # /usr/lib still whole
        assert os.readlink(merged / "lib") == "usr/lib"
        assert sorted(os.listdir(merged / "etc")) == ["kept"]
        assert sorted(os.listdir(merged / "opt")) == ["new"]
        assert (merged / "alias").read_bytes() == b"t"
    finally:
        subprocess.run(["umount", str(merged)], check=True)
