"""Image archives for the benchmark: writing a docker-save archive, and unpacking one for runc.

An image archive is only a tar of tars plus a little JSON. This module writes the
classic `docker save` layout (`manifest.json`, one config blob, one blob per
layer) from plain directories, gzipping each layer as registries do, and does
the reverse with GNU tar to give runc and the `unshare` floor a root filesystem
of the very same image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class LayerBlob:
    """One gzipped layer as written: where it is, and the two digests an image names it by."""

    path: Path
    diff_id: str  # sha256 of the uncompressed tar (what the config lists)
    digest: str  # sha256 of the gzip stream (what a registry would list)
    created_by: str


@dataclass
class BuiltImage:
    """A docker-save archive on disk and the facts the benchmark needs about it."""

    archive: Path
    image_id: str  # the config digest, as `sha256:…`
    layers: list[LayerBlob] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.image_id.split(":", 1)[1][:12]


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through it on the way to `sink`."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.sink.write(data)
        return len(data)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Numeric ids only: image layers never carry the build machine's user names."""
    info.uname = info.gname = ""
    return info


def write_layer(source: Path, out: Path, created_by: str) -> LayerBlob:
    """Tar `source`'s contents (sorted, numeric owners), gzip it, and hash both streams.

    The tar stream is hashed before gzip sees it (the diff_id) and the gzip
    stream after (the blob digest), so the layer is read once.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as gz:
            uncompressed = _HashingWriter(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(source)):
                    tar.add(source / name, arcname=name, filter=_root_owned)
    return LayerBlob(out, "sha256:" + uncompressed.sha.hexdigest(),
                     "sha256:" + compressed.sha.hexdigest(), created_by)


def write_docker_archive(out: Path, layers: list[LayerBlob], tag: str, cmd: list[str]) -> BuiltImage:
    """Write the classic `docker save` layout: manifest.json, <config>.json, <layer>/layer.tar.gz."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2025-05-20T00:00:00Z",
        "config": {"Env": [PATH_ENV], "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2025-05-20T00:00:00Z", "created_by": layer.created_by}
                    for layer in layers],
    }
    config_bytes = json.dumps(config, indent=2).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_names = [f"{layer.digest.split(':', 1)[1]}/layer.tar.gz" for layer in layers]
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [tag], "Layers": layer_names}]

    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, f"{config_hex}.json", config_bytes)
        for name, layer in zip(layer_names, layers):
            tar.add(layer.path, arcname=name, filter=_root_owned)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    partial.rename(out)  # a half-written archive never looks like a cached one
    return BuiltImage(out, f"sha256:{config_hex}", layers)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def image_id_of(archive: Path) -> str:
    """The image id (config digest) of a docker-save archive, read from its manifest."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = tar.extractfile(manifest[0]["Config"]).read()
    return "sha256:" + hashlib.sha256(config).hexdigest()


def unpack_rootfs(archive: Path, rootfs: Path) -> Path:
    """Unpack a docker-save archive's layers, in order, into one directory with GNU tar.

    Plain whiteouts (`.wh.NAME`) are applied; opaque ones are only dropped, which
    is enough for the busybox and Debian images the benchmark runs `true` in.
    """
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        for name in manifest[0]["Layers"]:
            blob = tar.extractfile(name)
            proc = subprocess.Popen(["tar", "-x", "--numeric-owner", "-C", str(rootfs)],
                                    stdin=subprocess.PIPE)
            data = blob.read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            proc.communicate(data)
            if proc.returncode:
                raise RuntimeError(f"tar failed on layer {name} of {archive}")
            _apply_whiteouts(rootfs)
    return rootfs


def _apply_whiteouts(rootfs: Path) -> None:
    for marker in list(rootfs.rglob(".wh.*")):
        if marker.name != ".wh..wh..opq":
            victim = marker.with_name(marker.name[len(".wh."):])
            if victim.is_dir() and not victim.is_symlink():
                shutil.rmtree(victim)
            else:
                victim.unlink(missing_ok=True)
        marker.unlink()


def busybox_image(out: Path, busybox: Path) -> BuiltImage:
    """A one-layer image of a static busybox with one link per applet (/bin/true, /bin/sleep…)."""
    staging = out.parent / "busybox-layer"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "bin").mkdir(parents=True)
    (staging / "etc").mkdir()
    shutil.copy2(busybox, staging / "bin" / "busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (staging / "bin" / applet).symlink_to("busybox")
    (staging / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (staging / "etc" / "group").write_text("root:x:0:\n")
    for d in ("tmp", "proc", "sys", "dev", "root"):
        (staging / d).mkdir()
    layer = write_layer(staging, out.parent / "busybox-layer.tar.gz", "COPY busybox /bin/")
    shutil.rmtree(staging)
    image = write_docker_archive(out, [layer], "bench/busybox:latest", ["/bin/sh"])
    layer.path.unlink()
    return image
