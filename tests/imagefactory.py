"""Test fixtures: image archives written in-process, in every layout minicontainer reads.

Nothing binary is committed: each test describes its layers as `Entry` values
and writes the archive it needs (docker-save classic or Docker 25+, an OCI
layout with a nested or multi-platform index, a flat root filesystem tar),
including hostile ones.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from minicontainer.archive import host_platform
from minicontainer.demo import (Entry, busybox_entries, image_config, layer_tar, sha256,
                                write_docker_save)

__all__ = ["Entry", "layer_tar", "compress", "image_config", "docker_save", "oci_archive",
           "flat_rootfs", "tar_of", "busybox_image", "sha256"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA = {"": "application/vnd.oci.image.layer.v1.tar",
               "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def compress(data: bytes, kind: str) -> bytes:
    """A layer tar as stored: "" (plain), "gzip" or "zstd"."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def tar_of(out: Path, members: dict[str, bytes]) -> Path:
    """A tar of the given files (for archives broken on purpose)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def docker_save(out: Path, layers: list[bytes], config: dict[str, Any] | None = None,
                tags: list[str] | None = None, layout: str = "classic",
                config_bytes: bytes | None = None) -> Path:
    """`docker save` output: "classic" (<id>/layer.tar) or "docker25" (blobs/ + index.json).

    `layers` are uncompressed tars, as docker save writes them.
    """
    config_bytes = config_bytes or image_config(layers, config)
    tags = ["test:latest"] if tags is None else tags
    if layout == "classic":
        write_docker_save(out, layers, config_bytes, tags)
        return out
    blobs = {sha256(b): b for b in [*layers, config_bytes]}
    manifest = _manifest(config_bytes, layers, "")
    blobs[sha256(manifest)] = manifest
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**_descriptor(OCI_MANIFEST, manifest),
         "annotations": {"io.containerd.image.name": f"docker.io/library/{tags[0]}",
                         "org.opencontainers.image.ref.name": tags[0].rsplit(":", 1)[-1]}}
        if tags else _descriptor(OCI_MANIFEST, manifest)]}
    docker_manifest = [{"Config": _blob(config_bytes), "RepoTags": tags,
                        "Layers": [_blob(layer) for layer in layers]}]
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode(),
             "manifest.json": json.dumps(docker_manifest).encode(), "blobs/": None}
    files.update({_blob(b): b for b in blobs.values()})
    return _write(out, files)


def oci_archive(out: Path, layers: list[bytes], config: dict[str, Any] | None = None,
                tags: list[str] | None = None, compression: str = "gzip",
                platforms: list[tuple[str, str]] | None = None, nested: bool = False,
                tamper: dict[str, bytes] | None = None) -> Path:
    """An OCI image layout as a tar (what `podman save --format oci-archive` writes).

    `platforms` makes a multi-platform index, one image per (os, arch); `nested`
    puts that index behind another one, as skopeo and buildx do; `tamper`
    replaces blob bytes (by digest) after the manifests are written.
    """
    stored = [compress(layer, compression) for layer in layers]
    blobs: dict[str, bytes] = {sha256(b): b for b in stored}
    entries = []
    for os_name, arch in platforms or [host_platform()[:2]]:
        config_bytes = json.dumps({**json.loads(image_config(layers, config)),
                                   "os": os_name, "architecture": arch}).encode()
        manifest = _manifest(config_bytes, stored, compression)
        blobs[sha256(config_bytes)] = config_bytes
        blobs[sha256(manifest)] = manifest
        desc = _descriptor(OCI_MANIFEST, manifest)
        if platforms:
            desc["platform"] = {"os": os_name, "architecture": arch}
        entries.append(desc)
    if nested:
        inner = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        blobs[sha256(inner)] = inner
        entries = [_descriptor(OCI_INDEX, inner)]
    for desc in entries:
        if tags:
            desc["annotations"] = {"org.opencontainers.image.ref.name": tags[0]}
    index = {"schemaVersion": 2, "manifests": entries}
    files: dict[str, bytes | None] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                                      "index.json": json.dumps(index).encode()}
    for digest, data in blobs.items():
        files[_blob_path(digest)] = (tamper or {}).get(digest, data)
    return _write(out, files)


def flat_rootfs(out: Path, entries: list[Entry], compression: str = "") -> Path:
    """A `docker export`-style root filesystem tar."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(compress(layer_tar(entries), compression))
    return out


def busybox_image(out: Path, busybox: Path, extra_files: dict[str, Any] | None = None,
                  config: dict[str, Any] | None = None, tags: list[str] | None = None) -> Path:
    """A one-layer docker-save image: busybox with its applets, plus `extra_files`.

    `extra_files` maps a path to its content (str or bytes, mode 0644), or to an
    `Entry` for anything else (a mode, an owner, a symlink…). `config` is merged
    over the default runtime config (Cmd ["sh"], a PATH).
    """
    entries = busybox_entries(busybox)
    entries += [Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"
                      b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
                Entry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n")]
    for path, value in (extra_files or {}).items():
        if isinstance(value, Entry):
            entries.append(value)
        else:
            data = value.encode() if isinstance(value, str) else value
            entries.append(Entry(path.lstrip("/"), data=data))
    runtime = {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               **(config or {})}
    return docker_save(out, [layer_tar(_with_parents(entries))], runtime,
                       tags if tags is not None else ["busybox-test:latest"])


def _with_parents(entries: list[Entry]) -> list[Entry]:
    """Add directory entries for parents nobody listed (later entries of a path win)."""
    present = {e.name.strip("/") for e in entries}
    extra = []
    for e in entries:
        parts = e.name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in present:
                present.add(parent)
                extra.append(Entry(parent, "dir", mode=0o755))
    return extra + entries


def _blob(data: bytes) -> str:
    return _blob_path(sha256(data))


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _descriptor(media: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media, "digest": sha256(data), "size": len(data)}


def _manifest(config_bytes: bytes, stored_layers: list[bytes], compression: str) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config_bytes),
        "layers": [_descriptor(LAYER_MEDIA[compression], layer) for layer in stored_layers],
    }).encode()


def _write(out: Path, files: dict[str, bytes | None]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out
