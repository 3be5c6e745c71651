"""Archive formats and integrity: every layout loads to the same image; bad input is refused."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

import imagefactory as fac
from imagefactory import Entry, layer_tar
from minicontainer import image as images
from minicontainer import layers
from minicontainer.archive import host_platform
from minicontainer.errors import ImageError
from minicontainer.store import Store

LAYERS = [layer_tar([Entry("etc", "dir", mode=0o755), Entry("etc/hello", data=b"one")]),
          layer_tar([Entry("etc/hello", data=b"two"), Entry("etc/extra", data=b"3")])]
CONFIG = {"Cmd": ["/bin/sh"], "Env": ["A=1"]}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def top_file(store: Store, img: images.Image, name: str) -> bytes:
    return (img.layer_dirs(store)[-1] / name).read_bytes()


@pytest.mark.parametrize("layout", ["classic", "docker25"])
def test_docker_save_layouts(store: Store, tmp_path: Path, layout: str) -> None:
    archive = fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG, ["demo:1"], layout=layout)
    img = images.load(store, archive)
    assert img.tags == ["demo:1"]
    assert img.layers == [fac.sha256(layer) for layer in LAYERS]
    assert img.config["config"]["Cmd"] == ["/bin/sh"]
    assert top_file(store, img, "etc/hello") == b"two"
    assert img.id == "sha256:" + store.image_dir(img.id).name
    assert (store.image_dir(img.id) / "config.json").read_bytes() == fac.image_config(LAYERS, CONFIG)


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_oci_layer_compressions_give_the_same_image(store: Store, tmp_path: Path, compression: str) -> None:
    classic = images.load(store, fac.docker_save(tmp_path / "d.tar", LAYERS, CONFIG))
    oci = images.load(store, fac.oci_archive(tmp_path / "o.tar", LAYERS, CONFIG, ["x:y"], compression))
    assert oci.layers == classic.layers
    assert oci.layer_dirs(store) == classic.layer_dirs(store)  # shared, unpacked once
    assert oci.tags == ["x:y"]


def test_nested_multi_platform_index_picks_the_host(store: Store, tmp_path: Path) -> None:
    archive = fac.oci_archive(tmp_path / "o.tar", LAYERS, CONFIG, platforms=[
        ("linux", "s390x"), ("linux", host_platform()[1]),
        ("windows", "amd64")], nested=True)
    img = images.load(store, archive)
    assert img.config["os"] == "linux" and img.config["architecture"] != "s390x"


def test_missing_platform_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    archive = fac.oci_archive(tmp_path / "o.tar", LAYERS, platforms=[("linux", "s390x"), ("linux", "mips")])
    with pytest.raises(ImageError, match=r"no image for platform linux/\w+ in the archive \(it has: linux/mips, linux/s390x\)"):
        images.load(store, archive)


@pytest.mark.parametrize("compression", ["", "gzip"])
def test_flat_rootfs_is_a_one_layer_image(store: Store, tmp_path: Path, compression: str) -> None:
    archive = fac.flat_rootfs(tmp_path / "root.tar", [Entry("bin", "dir"), Entry("bin/sh", data=b"sh")],
                              compression)
    img = images.load(store, archive)
    assert img.config["config"]["Cmd"] == ["/bin/sh"]
    assert len(img.layers) == 1 and top_file(store, img, "bin/sh") == b"sh"
    again = images.load(store, fac.flat_rootfs(tmp_path / "copy.tar", [Entry("bin", "dir"),
                                                Entry("bin/sh", data=b"sh")], compression))
    assert again.id == img.id


def test_compressed_docker_save(store: Store, tmp_path: Path) -> None:
    plain = fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG)
    packed = tmp_path / "a.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert images.load(store, packed).layers == [fac.sha256(x) for x in LAYERS]
    assert list(store.tmp.iterdir()) == []


def test_second_load_reads_no_layer(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG)
    first = images.load(store, archive)

    def fail(*a, **k):
        raise AssertionError("a layer was unpacked again")
    monkeypatch.setattr(layers, "unpack_layer", fail)
    assert images.load(store, archive).id == first.id
    copy = tmp_path / "copy.tar"  # another file: the JSON is read, the layers are not
    copy.write_bytes(archive.read_bytes())
    assert images.load(store, copy).id == first.id


def test_shared_layers_unpack_once(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images.load(store, fac.docker_save(tmp_path / "a.tar", LAYERS[:1], CONFIG, ["a:1"]))
    calls = []
    real = layers.unpack_layer
    monkeypatch.setattr(layers, "unpack_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    images.load(store, fac.docker_save(tmp_path / "b.tar", LAYERS, CONFIG, ["b:1"]))
    assert len(calls) == 1
    assert len([p for p in store.layers.iterdir() if p.is_dir()]) == 2


# ---------------------------------------------------------------- refusals


def corrupt(data: bytes) -> bytes:
    return data.replace(b"two", b"TWO")


BAD_ARCHIVES = {
    "empty file": (lambda p: p.write_bytes(b""), "empty file"),
    "not a tar": (lambda p: p.write_bytes(b"hello world" * 100), "not a tar archive"),
    "empty tar": (lambda p: fac.tar_of(p, {}), "empty tar"),
    "no manifest": (lambda p: fac.tar_of(p, {"blobs/x": b"x", "oci-layout": b"{}"}), "no manifest.json or index.json"),
    "bad json": (lambda p: fac.tar_of(p, {"manifest.json": b"[{"}), "invalid JSON"),
    "missing blob": (lambda p: fac.tar_of(p, {"manifest.json": json.dumps(
        [{"Config": "c.json", "Layers": []}]).encode()}), "'c.json' is missing"),
    "index without layout": (lambda p: fac.tar_of(p, {"index.json": b"{}"}), "oci-layout"),
}


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_bad_archives_are_refused_naming_the_problem(store: Store, tmp_path: Path, case: str) -> None:
    make, message = BAD_ARCHIVES[case]
    path = tmp_path / "bad.tar"
    make(path)
    with pytest.raises(ImageError, match=message) as err:
        images.load(store, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert images.list_images(store) == []
    assert list(store.tmp.iterdir()) == []


def test_truncated_archive(store: Store, tmp_path: Path) -> None:
    whole = fac.docker_save(tmp_path / "a.tar", [layer_tar([Entry("f", data=os.urandom(100000))])])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:60000])
    with pytest.raises(ImageError):
        images.load(store, cut)
    assert list(store.layers.iterdir()) == [] and list(store.tmp.iterdir()) == []


def test_layer_not_matching_its_diff_id(store: Store, tmp_path: Path) -> None:
    config = fac.image_config(LAYERS, CONFIG)
    archive = fac.docker_save(tmp_path / "a.tar", [LAYERS[0], corrupt(LAYERS[1])], config_bytes=config)
    with pytest.raises(ImageError, match=f"does not match diff_id {fac.sha256(LAYERS[1])}"):
        images.load(store, archive)
    assert images.list_images(store) == []
    assert len([p for p in store.layers.iterdir() if p.is_dir()]) == 1  # the good lower layer stays


def test_config_digest_mismatch(store: Store, tmp_path: Path) -> None:
    archive = fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG, layout="docker25")
    config_name = json.loads(fac_read(archive, "manifest.json"))[0]["Config"]
    fac.tar_of(tmp_path / "b.tar", {**members(archive), config_name: b'{"rootfs":{}}'})
    with pytest.raises(ImageError, match="config .*digest mismatch"):
        images.load(store, tmp_path / "b.tar")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_oci_blob_digest_mismatch_and_corrupt_compression(store: Store, tmp_path: Path, compression: str) -> None:
    stored = fac.compress(LAYERS[0], compression)
    broken = stored[:20] + bytes(64) + stored[84:]
    archive = fac.oci_archive(tmp_path / "o.tar", LAYERS[:1], compression=compression,
                              tamper={fac.sha256(stored): broken})
    with pytest.raises(ImageError, match=f"layer {fac.sha256(stored)}"):
        images.load(store, archive)


def test_unsupported_media_type(store: Store, tmp_path: Path) -> None:
    archive = fac.oci_archive(tmp_path / "o.tar", LAYERS[:1], compression="gzip")
    files = members(archive)
    for name, data in files.items():
        if b"tar+gzip" in data:
            files[name] = data.replace(b"tar+gzip", b"tar+bzip9")
    fac.tar_of(tmp_path / "b.tar", files)
    with pytest.raises(ImageError, match="digest mismatch|unsupported media type"):
        images.load(store, tmp_path / "b.tar")


def members(archive: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def fac_read(archive: Path, name: str) -> bytes:
    return members(archive)[name]


# ---------------------------------------------------------------- finding and removing


def test_resolve_by_id_prefix_tag_and_path(store: Store, tmp_path: Path) -> None:
    archive = fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG, ["docker.io/library/thing:2"])
    img = images.load(store, archive)
    hexid = img.id.split(":")[1]
    for ref in (img.id, hexid, hexid[:4], "thing:2", "docker.io/library/thing:2", str(archive)):
        assert images.resolve(store, ref).id == img.id
    with pytest.raises(ImageError, match="no such image"):
        images.resolve(store, "thing")  # means thing:latest


def test_tags_move_and_rmi_untags_then_deletes(store: Store, tmp_path: Path) -> None:
    old = images.load(store, fac.docker_save(tmp_path / "a.tar", LAYERS[:1], CONFIG, ["app:1", "app:latest"]))
    new = images.load(store, fac.docker_save(tmp_path / "b.tar", LAYERS, CONFIG, ["app:latest"]))
    assert images.get(store, old.id).tags == ["app:1"] and new.tags == ["app:latest"]
    images.remove(store, "app:latest")
    assert not store.image_dir(new.id).exists()
    assert sorted(images.prune_layers(store)) == [new.chain_ids()[1]]
    assert old.layer_dirs(store)[0].is_dir()


def test_rmi_by_id_of_an_image_with_several_tags_needs_force(store: Store, tmp_path: Path) -> None:
    img = images.load(store, fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG, ["app:1", "app:2"]))
    with pytest.raises(ImageError, match="referenced by 2 tags"):
        images.remove(store, img.id)
    assert images.get(store, img.id).tags == ["app:1", "app:2"]  # refused: nothing changed
    images.remove(store, img.id, force=True)
    assert not store.image_dir(img.id).exists()


def test_rmi_refuses_an_image_a_container_uses(store: Store, tmp_path: Path) -> None:
    img = images.load(store, fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG, ["used:1"]))
    (store.containers / "c1").mkdir()
    (store.containers / "c1" / "state.json").write_text(json.dumps({"image": img.id}))
    with pytest.raises(ImageError, match="used by container c1"):
        images.remove(store, "used:1")
    images.remove(store, "used:1", force=True)
    assert images.get(store, img.id).tags == []  # kept, dangling: the container stacks its layers
    assert images.prune_layers(store) == []


def test_history_maps_layers_to_entries(store: Store, tmp_path: Path) -> None:
    img = images.load(store, fac.docker_save(tmp_path / "a.tar", LAYERS, CONFIG))
    rows = images.history(img)
    assert [r["layer"] for r in rows] == list(reversed(img.layers))
    assert rows[0]["created_by"] == "layer 2"
