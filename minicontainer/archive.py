"""Reading image archives: what is inside `docker save`, OCI layouts and plain root filesystems.

An image archive is a tar file holding small JSON documents and big layer
blobs. This module reads only the JSON (and checks it against its digests); it
hands each layer blob out as a stream, to be unpacked by layers.py. Three
layouts exist in the wild, and the format is told from the content, never from
the file name:

- `docker save` / `podman save` (docker-archive): `manifest.json` lists the
  config file and the layer tars; Docker 25+ adds an OCI `index.json` and keeps
  the blobs under `blobs/sha256/`.
- OCI image layout (`oci-layout`, `index.json`, `blobs/`): an index points to
  manifests (or to further indexes: one per platform), a manifest points to a
  config and to layer blobs, every pointer is a content digest.
- A flat root filesystem tar (`docker export`): a single layer, no config.

Digests are the whole integrity story: the image id is the sha256 of the
config bytes, the config lists the sha256 of every *uncompressed* layer
(`rootfs.diff_ids`), and an OCI manifest also names the sha256 of every
*compressed* blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from minicontainer.errors import ImageError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
# Layer media types and the compression each one states ("" = plain tar,
# None = the type does not say: look at the magic bytes).
LAYER_TYPES: dict[str, str | None] = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class LayerRef:
    """One layer blob inside an archive, and what its bytes must hash to."""

    member: str                 # its name inside the archive tar
    diff_id: str | None         # sha256 of the uncompressed tar (None: learn it while unpacking)
    digest: str | None = None   # sha256 of the blob as stored (OCI descriptors give it)
    compression: str | None = None  # "", "gzip", "zstd", or None = sniff the magic bytes
    size: int = 0               # bytes in the archive (for the progress bar)


@dataclass
class ArchiveImage:
    """One image found in an archive: its config (exact bytes), layers and tags."""

    config_bytes: bytes
    config: dict[str, Any]
    layers: list[LayerRef]
    tags: list[str] = field(default_factory=list)
    flat: bool = False          # a root filesystem tar: the config is made up after unpacking

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()


class HashingReader:
    """A read-only stream that hashes (and counts) every byte that passes through it.

    Wrapping a stream this way lets the layer be verified in the same single pass
    that unpacks it: no second read of a 100 MB blob.
    """

    def __init__(self, raw: IO[bytes], on_read: Any = None) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0
        self.on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.count += len(data)
        if self.on_read is not None and data:
            self.on_read(len(data))
        return data

    def drain(self) -> None:
        """Read to the end: the digest covers the padding after the tar's last entry too."""
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class GzipReader:
    """gzip decompression with plain zlib: no extra buffering layer, and concatenated
    members (which `pigz` and some registries produce) are read to the end."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self.pending = b""  # compressed bytes read but not yet inflated

    def read(self, n: int = -1) -> bytes:
        limit = n if n > 0 else 0
        try:
            while True:
                if self.inflater.eof:
                    rest = self.inflater.unused_data + self.pending
                    if not rest:
                        rest = self.raw.read(1 << 20)
                    if not rest:
                        return b""
                    self.inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
                    self.pending = rest
                if not self.pending:
                    self.pending = self.raw.read(1 << 20)
                    if not self.pending:
                        raise ImageError("unexpected end of gzip data (truncated?)")
                data = self.inflater.decompress(self.pending, limit)
                self.pending = self.inflater.unconsumed_tail
                if data or n == 0:
                    return data
        except zlib.error as e:
            raise ImageError(f"corrupt gzip data: {e}") from None


def decompressed(raw: IO[bytes], compression: str | None) -> IO[bytes]:
    """The uncompressed stream of a layer blob (by media type, else by magic bytes)."""
    if compression is None:
        head = raw.read(6)
        compression = _compression_of(head)
        raw = _PeekReader(head, raw)
    if compression == "gzip":
        return GzipReader(raw)
    if compression == "zstd":
        import zstandard  # lazy: only zstd layers pay for the import

        return _ZstdReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    if compression == "":
        return raw
    raise ImageError(f"unsupported layer compression {compression!r}")


class _ZstdReader:
    """Turns zstandard's exceptions into ImageError, so corrupt data gets one clear line."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def read(self, n: int = -1) -> bytes:
        import zstandard

        try:
            return self.reader.read(n)
        except zstandard.ZstdError as e:
            raise ImageError(f"corrupt zstd data: {e}") from None


class _PeekReader:
    """A stream with its first bytes pushed back after sniffing them."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if n < 0:
            data, self.head = self.head + self.raw.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        if len(data) < n:
            data += self.raw.read(n - len(data))
        return data


def sniff_compression(raw: IO[bytes]) -> str:
    """Tell gzip, zstd, bzip2, xz and plain tar apart by their first bytes (seekable stream)."""
    head = raw.read(6)
    raw.seek(-len(head), os.SEEK_CUR)
    return _compression_of(head)


def _compression_of(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    return ""


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) of this machine, spelled as OCI/Go spell them."""
    machine = platform.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
        "i386": ("386", ""), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return "linux", arch, variant


class Archive:
    """An open image archive: an index of its tar members, read without touching layer bytes.

    Python's tarfile reads a member's 512-byte header and then *seeks* over its
    data, so listing a 250 MB `docker save` costs a few dozen small reads.
    """

    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self.path = path
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        for info in tar:
            self.members[_member_name(info.name)] = info

    def has(self, name: str) -> bool:
        return name in self.members

    def member(self, name: str, what: str) -> tarfile.TarInfo:
        """The member called `name`, following the symlinks `docker save` uses for shared layers."""
        name = _member_name(name)
        for _ in range(16):
            info = self.members.get(name)
            if info is None:
                raise ImageError(f"{what} {name!r} is missing from the archive")
            if info.isfile():
                return info
            if info.issym():
                name = _member_name(posixpath.join(posixpath.dirname(name), info.linkname))
            elif info.islnk():
                name = _member_name(info.linkname)
            else:
                raise ImageError(f"{what} {name!r} is not a file in the archive")
        raise ImageError(f"{what} {name!r}: too many links in the archive")

    def open(self, name: str, what: str = "blob") -> IO[bytes]:
        """A stream of one member's bytes (read straight from the archive file)."""
        stream = self.tar.extractfile(self.member(name, what))
        assert stream is not None  # member() only returns regular files
        return stream

    def read(self, name: str, what: str, limit: int = 64 << 20) -> bytes:
        info = self.member(name, what)
        if info.size > limit:
            raise ImageError(f"{what} {name!r} is too large for a JSON document ({info.size} bytes)")
        with self.open(name, what) as f:
            data = f.read()
        if len(data) != info.size:
            raise ImageError(f"{what} {name!r} is truncated")
        return data

    def read_json(self, name: str, what: str, digest: str | None = None) -> tuple[bytes, Any]:
        data = self.read(name, what)
        if digest is not None:
            check_digest(data, digest, f"{what} {name}")
        return data, parse_json(data, f"{what} {name!r}")

    def images(self) -> list[ArchiveImage]:
        """Every image this archive holds (format told from the content)."""
        if self.has("manifest.json"):
            return self._docker_images()
        if self.has("index.json"):
            if not self.has("oci-layout"):
                raise ImageError("index.json without oci-layout: not an OCI image layout")
            return self._oci_images()
        if not self.members:
            raise ImageError("the archive is an empty tar")
        if self.has("oci-layout") or any(n.startswith("blobs/sha256/") for n in self.members):
            raise ImageError("image blobs but no manifest.json or index.json")
        if self.has("repositories"):
            raise ImageError("legacy `docker save` format without manifest.json is not supported")
        return [self._flat_image()]

    # ------------------------------------------------------------ docker save

    def _docker_images(self) -> list[ArchiveImage]:
        _, manifest = self.read_json("manifest.json", "manifest")
        if not isinstance(manifest, list) or not manifest:
            raise ImageError("manifest.json: expected a non-empty list of images")
        images = []
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise ImageError("manifest.json: an entry lacks Config or Layers")
            config_name = entry["Config"]
            config_bytes, config = self.read_json(config_name, "config", _digest_from_name(config_name))
            diff_ids = _diff_ids(config, config_name)
            if len(diff_ids) != len(entry["Layers"]):
                raise ImageError(f"manifest.json lists {len(entry['Layers'])} layers "
                                 f"but config {config_name} has {len(diff_ids)} diff_ids")
            layers = []
            for name, diff_id in zip(entry["Layers"], diff_ids):
                info = self.member(name, "layer")
                layers.append(LayerRef(member=name, diff_id=diff_id,
                                       digest=_digest_from_name(name), size=info.size))
            tags = [t for t in entry.get("RepoTags") or [] if isinstance(t, str)]
            images.append(ArchiveImage(config_bytes, config, layers, tags))
        return images

    # ------------------------------------------------------------ OCI layout

    def _oci_images(self) -> list[ArchiveImage]:
        _, layout = self.read_json("oci-layout", "oci-layout")
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise ImageError("oci-layout: imageLayoutVersion missing")
        _, index = self.read_json("index.json", "index")
        found: list[tuple[dict[str, Any], list[str]]] = []
        skipped: list[str] = []
        for desc in _descriptors(index, "index.json"):
            manifest = self._pick_manifest(desc, "index.json", skipped)
            if manifest is not None:
                found.append((manifest, _tags_of(desc)))
        if not found:
            want = "/".join(p for p in host_platform() if p)
            have = ", ".join(sorted(set(skipped))) or "no image manifests"
            raise ImageError(f"no image for platform {want} in the archive (it has: {have})")
        return [self._oci_image(manifest, tags) for manifest, tags in found]

    def _pick_manifest(self, desc: dict[str, Any], where: str, skipped: list[str],
                       depth: int = 0) -> dict[str, Any] | None:
        """Follow one descriptor down to an image manifest for this host's platform."""
        if depth > 8:
            raise ImageError(f"{where}: indexes nested too deeply")
        if not _platform_matches(desc.get("platform")):
            skipped.append(_platform_name(desc["platform"]))
            return None
        media = desc.get("mediaType", "")
        _, doc = self.read_json(_blob_name(desc, where), "manifest", desc["digest"])
        media = media or doc.get("mediaType", "") if isinstance(doc, dict) else media
        if not isinstance(doc, dict):
            raise ImageError(f"blob {desc['digest']}: expected a JSON object")
        if media in INDEX_TYPES or (not media and "manifests" in doc):
            best = None
            for child in _best_platform_first(_descriptors(doc, desc["digest"])):
                best = self._pick_manifest(child, desc["digest"], skipped, depth + 1)
                if best is not None:
                    break
            return best
        if media in MANIFEST_TYPES or (not media and "layers" in doc):
            return doc
        raise ImageError(f"blob {desc['digest']}: unsupported media type {media!r}")

    def _oci_image(self, manifest: dict[str, Any], tags: list[str]) -> ArchiveImage:
        config_desc = manifest.get("config")
        if not isinstance(config_desc, dict) or "digest" not in config_desc:
            raise ImageError("manifest has no config descriptor")
        media = config_desc.get("mediaType", "")
        if media and media not in CONFIG_TYPES:
            raise ImageError(f"config {config_desc['digest']}: unsupported media type {media!r} "
                             "(not a container image)")
        config_bytes, config = self.read_json(_blob_name(config_desc, "manifest"), "config",
                                              config_desc["digest"])
        diff_ids = _diff_ids(config, config_desc["digest"])
        layer_descs = manifest.get("layers")
        if not isinstance(layer_descs, list) or len(layer_descs) != len(diff_ids):
            raise ImageError(f"manifest lists {len(layer_descs or [])} layers "
                             f"but config has {len(diff_ids)} diff_ids")
        layers = []
        for desc, diff_id in zip(layer_descs, diff_ids):
            name = _blob_name(desc, "manifest")
            media = desc.get("mediaType", "")
            if media and media not in LAYER_TYPES:
                raise ImageError(f"layer {desc['digest']}: unsupported media type {media!r}")
            info = self.member(name, "layer")
            if isinstance(desc.get("size"), int) and desc["size"] != info.size:
                raise ImageError(f"layer {desc['digest']}: size {info.size} in the archive, "
                                 f"{desc['size']} in the manifest")
            layers.append(LayerRef(member=name, diff_id=diff_id, digest=desc["digest"],
                                   compression=LAYER_TYPES.get(media), size=info.size))
        return ArchiveImage(config_bytes, config, layers, tags)

    # ------------------------------------------------------------ flat root filesystem

    def _flat_image(self) -> ArchiveImage:
        """The archive itself is the only layer; its config is written once its diff_id is known."""
        layer = LayerRef(member="", diff_id=None, compression="", size=self.path.stat().st_size)
        return ArchiveImage(b"", {}, [layer], [], flat=True)

    def open_layer(self, layer: LayerRef) -> IO[bytes]:
        if layer.member == "":  # a flat rootfs: the whole (already decompressed) file
            return open(self.path, "rb")
        return self.open(layer.member, "layer")


def flat_config(diff_id: str) -> bytes:
    """The config of a flat root filesystem: one layer, Cmd /bin/sh (as `docker import` + a CMD).

    No dates in it, so the same tar always gets the same image id.
    """
    _, arch, variant = host_platform()
    config: dict[str, Any] = {
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": [DEFAULT_PATH]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "minicontainer load (a flat root filesystem tar)"}],
    }
    if variant and arch == "arm":
        config["variant"] = variant
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


@contextmanager
def open_archive(path: Path, scratch: Path) -> Iterator[Archive]:
    """Open an archive file; a compressed archive (`docker save | gzip`) is first
    decompressed into `scratch`, because tar members must be seekable."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an archive") from None
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    plain: Path | None = None
    try:
        kind = sniff_compression(f)
        if kind:
            plain = _decompress_to(f, kind, scratch)
            f.close()
            f = open(plain, "rb")
        head = f.read(512)
        f.seek(0)
        if not head:
            raise ImageError("empty file")
        if len(head) < 512 or not _looks_like_tar(head):
            raise ImageError("not a tar archive")
        try:
            tar = tarfile.open(fileobj=f, mode="r:", encoding="utf-8", errors="surrogateescape")
            yield Archive(Path(plain or path), tar)
        except tarfile.TarError as e:
            raise ImageError(f"broken tar archive: {e}") from None
        except EOFError:
            raise ImageError("truncated archive") from None
    finally:
        f.close()
        if plain is not None:
            plain.unlink(missing_ok=True)


def _decompress_to(f: BinaryIO, kind: str, scratch: Path) -> Path:
    import bz2  # rare outer compressions: imported only when met
    import lzma

    out = scratch / f"archive-{os.getpid()}-{id(f)}.tar"
    if kind == "gzip":
        src: Any = GzipReader(f)
    elif kind == "zstd":
        src = decompressed(f, "zstd")
    elif kind == "bzip2":
        src = bz2.BZ2File(f)
    else:
        src = lzma.LZMAFile(f)
    try:
        with open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
        out.unlink(missing_ok=True)
        raise ImageError(f"corrupt {kind} data: {e}") from None
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def _looks_like_tar(head: bytes) -> bool:
    """A tar header block: ustar magic, or at least a valid header checksum (v7 tars)."""
    if head[257:262] == b"ustar" or head == bytes(512):  # all zeros: a tar with no entries
        return True
    try:
        stored = int(head[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(head[:148]) + 8 * 32 + sum(head[156:512])
    return stored == computed


def check_digest(data: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256":
        raise ImageError(f"{what}: unsupported digest algorithm {algorithm!r}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ImageError(f"{what}: digest mismatch (expected sha256:{expected}, got sha256:{actual})")


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{what}: invalid JSON ({e})") from None


def _member_name(name: str) -> str:
    """Archive member names as written by different tools: `./x`, `x`, `/x` are one name."""
    return posixpath.normpath("/" + name).lstrip("/")


def _digest_from_name(name: str) -> str | None:
    """`blobs/sha256/<hex>` and docker's `<hex>.json` name their own digest."""
    parts = _member_name(name).split("/")
    if len(parts) == 3 and parts[0] == "blobs" and _is_hex64(parts[2]):
        return f"{parts[1]}:{parts[2]}"
    if len(parts) == 1 and parts[0].endswith(".json") and _is_hex64(parts[0][:-5]):
        return "sha256:" + parts[0][:-5]
    return None


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _blob_name(desc: Any, where: str) -> str:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise ImageError(f"{where}: a descriptor has no digest")
    algorithm, _, hexpart = desc["digest"].partition(":")
    if algorithm != "sha256" or not _is_hex64(hexpart):
        raise ImageError(f"{where}: unsupported digest {desc['digest']!r}")
    return f"blobs/sha256/{hexpart}"


def _descriptors(doc: Any, where: str) -> list[dict[str, Any]]:
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise ImageError(f"{where}: no manifests list")
    for desc in manifests:
        _blob_name(desc, where)
    return manifests


def _diff_ids(config: Any, where: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageError(f"config {where}: rootfs.diff_ids missing")
    for d in diff_ids:
        algorithm, _, hexpart = d.partition(":")
        if algorithm != "sha256" or not _is_hex64(hexpart):
            raise ImageError(f"config {where}: bad diff_id {d!r}")
    return diff_ids


def _tags_of(desc: dict[str, Any]) -> list[str]:
    """Tags from OCI annotations: containerd's full name, else the ref name."""
    notes = desc.get("annotations") or {}
    for key in (CONTAINERD_NAME, REF_NAME):
        name = notes.get(key)
        if isinstance(name, str) and name:
            if key == REF_NAME and ":" not in name and "/" not in name:
                return []  # a bare tag like "latest" names no repository
            return [name]
    return []


def _platform_matches(plat: Any) -> bool:
    if not isinstance(plat, dict):
        return True
    want_os, want_arch, want_variant = host_platform()
    if plat.get("os") != want_os or plat.get("architecture") != want_arch:
        return False
    variant = plat.get("variant", "")
    return not variant or not want_variant or variant == want_variant or want_arch == "arm64"


def _platform_name(plat: dict[str, Any]) -> str:
    return "/".join(str(plat.get(k)) for k in ("os", "architecture", "variant") if plat.get(k))


def _best_platform_first(descs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An exact variant match before a looser one."""
    _, _, variant = host_platform()
    return sorted(descs, key=lambda d: (d.get("platform") or {}).get("variant", "") != variant)
