"""Writing images back out: a layer directory becomes a layer tar again.

Loading turned each layer tar into a directory in overlayfs's own format (see
layers.py): a deleted file is a character device 0/0, a directory that hides
everything below it carries the xattr `trusted.overlay.opaque=y`. Going the
other way is the same dictionary read backwards, and it is what `docker commit`
and `docker save` do:

    character device 0/0 called NAME         →  empty file `.wh.NAME`
    directory with trusted.overlay.opaque=y  →  the directory, then `.wh..wh..opq` inside it
    anything else                            →  itself (hard links stay hard links)

`save IMAGE -o FILE` writes the classic `docker save` layout with the writer
the demo image uses, so `docker load` and `podman load` read it. The store
keeps the unpacked layers, not the original tar bytes: a layer is copied from
the archive it was loaded from while that file is still there, unchanged, and
re-tarred from the store otherwise. A re-made tar may hash differently from the
one that was loaded (entry order, header details); the saved config then lists
the new digests, and the saved image gets a new id. Docker avoids this by
keeping a "tar-split" record of every original header; we keep the code short.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from minicontainer.errors import ImageError
from minicontainer.layers import DIR_FLAGS, OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX
from minicontainer.store import Store, remove_tree

if TYPE_CHECKING:
    from minicontainer.image import Image

OVERLAY_XATTRS = "trusted.overlay."  # overlayfs bookkeeping: never part of an image


@dataclass
class LayerTar:
    """A layer tar written to disk, and what its bytes hash to (its diff_id)."""

    path: Path
    diff_id: str
    size: int


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs's mark for "deleted here": a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    """overlayfs's mark for "this directory hides what the layers below had in it"."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def walk(top: Path, skip: frozenset[str] = frozenset()) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every entry below `top` as (name inside the layer, path, lstat), parents first, sorted.

    Sorted, so that the same directory always gives the same tar bytes (hence
    the same diff_id); names in `skip` are left out with everything below them.

    A running container can change its files while we read them, even swap a
    directory for a symlink to "/". So no name is resolved from `top` down:
    each directory is opened with O_NOFOLLOW relative to its parent's
    descriptor (openat(2)), and the path handed out is
    /proc/self/fd/<that descriptor>/<name>, which the kernel resolves through
    the open directory itself (proc(5)); only `name` is looked up, never
    followed. layers.py unpacks by the same rule.
    """
    fd = os.open(top, DIR_FLAGS)
    try:
        yield from _walk_at(fd, "", skip)
    finally:
        os.close(fd)


def _walk_at(fd: int, rel: str, skip: frozenset[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    for name in sorted(os.listdir(fd)):
        inner = f"{rel}/{name}" if rel else name
        if inner in skip:
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted meanwhile (a running container)
        yield inner, Path(f"/proc/self/fd/{fd}/{name}"), st
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, or no longer a directory: nothing below to read
            try:
                yield from _walk_at(child, inner, skip)
            finally:
                os.close(child)


def _xattrs(path: Path) -> dict[str, str]:
    """The entry's extended attributes as PAX `SCHILY.xattr.*` headers (binary-safe)."""
    headers = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return headers
    for name in sorted(names):
        if name.startswith(OVERLAY_XATTRS):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return headers


def _header(tar: tarfile.TarFile, path: Path, name: str, st: os.stat_result,
            links: dict[tuple[int, int], str]) -> tarfile.TarInfo | None:
    """The tar header of one entry: numeric owners only, xattrs, hard links by inode."""
    info = tar.gettarinfo(str(path), arcname=name)
    if info is None:  # a socket: tar cannot hold it, Docker skips it too
        return None
    info.uname = info.gname = ""  # names would be the *host's* names for these ids
    # Whole seconds: sub-second times do not survive an unpack and re-tar exactly,
    # and the same tree must always give the same bytes (the same diff_id).
    info.mtime = int(st.st_mtime)
    info.pax_headers = _xattrs(path)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        first = links.setdefault((st.st_dev, st.st_ino), name)
        if first != name:
            info.type, info.linkname, info.size = tarfile.LNKTYPE, first, 0
    return info


def add_tree(tar: tarfile.TarFile, top: Path, *, whiteouts: bool = True,
             skip: frozenset[str] = frozenset()) -> int:
    """Write the tree under `top` into `tar`; returns the number of entries written.

    With `whiteouts` (a layer or an upper dir), overlayfs's deletion marks are
    turned back into the tar spelling of image-spec layer.md. A merged view
    (export) has none: overlayfs hides them there.
    """
    links: dict[tuple[int, int], str] = {}
    count = 0
    for name, path, st in walk(top, skip=skip):
        if whiteouts and is_whiteout(st):
            _add_marker(tar, _sibling(name, WHITEOUT_PREFIX + Path(name).name))
            count += 1
            continue
        info = _header(tar, path, name, st, links)
        if info is None:
            continue
        if info.isreg():
            with _open_regular(path) as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
        count += 1
        if whiteouts and info.isdir() and is_opaque(path):
            _add_marker(tar, f"{name}/{OPAQUE_MARKER}")
            count += 1
    return count


def _open_regular(path: Path) -> IO[bytes]:
    """Open a file we saw as a regular file, refusing whatever may have replaced it since.

    O_NOFOLLOW: a symlink put there now is not followed (ELOOP); O_NONBLOCK: a
    FIFO put there now does not hang us; then fstat(2) checks it is a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{path.name}: changed into something else while being read")
    return os.fdopen(fd, "rb")


def _sibling(name: str, other: str) -> str:
    parent = os.path.dirname(name)
    return f"{parent}/{other}" if parent else other


def _add_marker(tar: tarfile.TarFile, name: str) -> None:
    """An empty regular file that only means something by its name (`.wh.*`).

    Its date is fixed (0): unpacking keeps only the name, so any other date
    would make the same layer tar differently after a load and a save.
    """
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info)


class _HashingWriter:
    """A file wrapper that hashes every byte written (the diff_id, computed in passing)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)


def write_layer_tar(top: Path, out: Path, *, whiteouts: bool = True,
                    skip: frozenset[str] = frozenset()) -> LayerTar:
    """Tar the directory `top` (a layer, an upper dir or a merged root) into the file `out`."""
    with open(out, "wb") as raw:
        hashing = _HashingWriter(raw)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tar:
            add_tree(tar, top, whiteouts=whiteouts, skip=skip)
    return LayerTar(out, "sha256:" + hashing.sha.hexdigest(), hashing.size)


def add_tree_to_file(top: Path, out: Path) -> int:
    """A merged root (no whiteouts) as a flat tar at `out`, renamed into place when complete."""
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tar:
            count = add_tree(tar, top, whiteouts=False)
    os.replace(tmp, out)
    return count


def save_image(store: Store, ref: str, out: Path) -> str:
    """`save IMAGE -o FILE`: the image as a `docker save` archive; returns the saved image id.

    A layer whose original tar is still at hand (the unchanged archive it was
    loaded from) is copied byte for byte; any other is re-tarred from the
    store. If a re-made tar hashes differently, the config is rewritten with
    the new diff_ids (everything else kept), and the saved image gets a new id.
    """
    from minicontainer import image as images
    from minicontainer.demo import write_docker_save

    img = images.find(store, ref)
    originals = original_layers(store, set(img.layers))
    work = store.mkdtemp("save-")
    try:
        blobs = []
        for i, folder in enumerate(img.layer_dirs(store)):
            if img.layers[i] in originals:
                blobs.append(originals[img.layers[i]])
                continue
            if not folder.is_dir():
                raise ImageError(f"image {img.short_id}: layer {img.layers[i]} is missing from the store")
            blobs.append(write_layer_tar(folder, work / f"{i}.tar").path.read_bytes())
        config_bytes = _config_for(store, img, blobs)
        return write_docker_save(Path(out), blobs, config_bytes, img.tags)
    finally:
        remove_tree(work)


def save_to_stream(store: Store, ref: str, out: IO[bytes]) -> str:
    """`save IMAGE > FILE`: the archive is written in the store's tmp/, then copied to `out`."""
    work = store.mkdtemp("save-")
    try:
        image_id = save_image(store, ref, work / "image.tar")
        with open(work / "image.tar", "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        return image_id
    finally:
        remove_tree(work)


def original_layers(store: Store, wanted: set[str]) -> dict[str, bytes]:
    """The layer tars with these diff_ids, byte for byte as loaded, where the archive is still there.

    The store keeps unpacked layers, not tars, but it notes which archive file
    (path, inode, size, mtime) gave which images. Such a file, unchanged, gives
    back the very bytes, hence the very diff_ids and image id. Each tar is
    checked against its diff_id before it is used.
    """
    from minicontainer import archive as arc
    from minicontainer import image as images
    from minicontainer.errors import MiniContainerError
    from minicontainer.store import read_json

    found: dict[str, bytes] = {}
    notes = sorted(store.archive_cache.glob("*.json")) if store.archive_cache.is_dir() else []
    for note in notes:
        if not wanted - found.keys():
            break
        try:
            record = read_json(note)
            path = Path(record["path"])
            if record.get("stat") != images.stat_key(path.stat()):
                continue  # changed or replaced since it was loaded
            with arc.open_archive(path, store.tmp) as archive:
                for layer in (layer for image in archive.images() for layer in image.layers):
                    if layer.diff_id is not None and layer.diff_id not in wanted - found.keys():
                        continue
                    with archive.open_layer(layer) as raw:
                        data = _read_all(arc.decompressed(raw, layer.compression))
                    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
                    if diff_id in wanted and (layer.diff_id is None or layer.diff_id == diff_id):
                        found[diff_id] = data
        except (OSError, ValueError, KeyError, TypeError, MiniContainerError):
            continue  # any doubt: the layer is re-tarred instead
    return found


def _read_all(stream: IO[bytes]) -> bytes:
    chunks = []
    while chunk := stream.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _config_for(store: Store, img: Image, blobs: list[bytes]) -> bytes:
    """The stored config bytes if the diff_ids still match, else a copy listing the new ones."""
    original = store.image_dir(img.id).joinpath("config.json").read_bytes()
    new_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    if new_ids == img.layers:
        return original  # the same bytes, hence the same image id
    config = json.loads(original)
    config.setdefault("rootfs", {"type": "layers"})["diff_ids"] = new_ids
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
