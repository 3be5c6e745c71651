"""Images in the store: load an archive once, then find, list, inspect and remove it.

An image is an inert template: a config (JSON: the command, environment,
working directory… and the list of layer digests) plus read-only layers. Its
id is the sha256 of the config bytes, so the same image loaded twice is the
same image, and a layer shared by two images is unpacked once.

Loading follows two store habits (see store.py): every layer is unpacked into
a private temporary directory and renamed into place only once it is complete
and verified, and each layer is unpacked under its own lock, so two commands
loading the same archive at once do the work once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minicontainer.errors import ImageError
from minicontainer.explain import SILENT, Narration
from minicontainer.store import (Store, atomic_write_bytes, atomic_write_json, digest_hex,
                                 read_json, remove_tree)

if TYPE_CHECKING:  # reading archives is only needed on a cold load: imported there
    from minicontainer import archive as arc
    from minicontainer import layers

PROGRESS_AFTER = 1.0  # seconds: short loads stay quiet


@dataclass
class Image:
    """One image of the store."""

    id: str            # "sha256:<hex>": the digest of the config bytes
    config: dict[str, Any]
    layers: list[str]  # diff_ids, lowest first
    tags: list[str]
    size: int
    created: str

    def chain_ids(self) -> list[str]:
        return chain_ids(self.layers)

    def layer_dirs(self, store: Store) -> list[Path]:
        """The unpacked layers, lowest first: overlayfs lowerdirs, never written to."""
        return [store.layer_dir(c) for c in self.chain_ids()]

    @property
    def short_id(self) -> str:
        return digest_hex(self.id)[:12]


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain id of each layer: the layer *and everything below it* (image-spec config.md).

    chain(L0) = diff_id(L0); chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln)).
    Unpacked layers are stored under it because unpacking resolves paths through
    the lower layers (see layers.py), so the same diff on another base may differ.
    """
    result: list[str] = []
    for diff_id in diff_ids:
        if result:
            diff_id = "sha256:" + hashlib.sha256(f"{result[-1]} {diff_id}".encode()).hexdigest()
        result.append(diff_id)
    return result


# ---------------------------------------------------------------- loading


def load(store: Store, path: Path, *, progress: bool = False, narrator: Narration = SILENT) -> Image:
    """Load an archive into the store (idempotent) and return its (first) image."""
    return load_all(store, path, progress=progress, narrator=narrator)[0]


def load_all(store: Store, path: Path, *, progress: bool = False,
             narrator: Narration = SILENT) -> list[Image]:
    """Load every image of an archive. Layers already in the store are not read again."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    with store.lock("gc", shared=True):  # `image prune` must not delete what we are adding
        known = _remembered(store, path, st)
        if known is not None:
            narrator.step(lambda: f"read {_cache_file(store, path)}: {path}, same inode, size and mtime "
                                  f"→ {', '.join(i.id for i in known)}",
                          "this very file was loaded before: not one byte of it is read again")
            return known
        try:
            images = _load_archive(store, path, progress, narrator)
        except ImageError as e:
            raise ImageError(f"{path}: {e}") from None
        except OSError as e:  # a full disk, a read error…: name the file, keep it one line
            raise ImageError(f"{path}: {e.strerror or e}") from None
        _remember(store, path, st, images)
        return images


def _load_archive(store: Store, path: Path, progress: bool, narrator: Narration = SILENT) -> list[Image]:
    from minicontainer import archive as arc

    store.sweep_tmp()  # staging left by a load or run that was killed (SIGKILL cannot clean up)
    with arc.open_archive(path, store.tmp) as archive:
        found = archive.images()
        kind = ("a docker-save archive (manifest.json)" if archive.has("manifest.json") else
                "an OCI image layout (oci-layout, index.json)" if archive.has("index.json") else
                "a flat root filesystem tar")
        narrator.step(lambda: f"open {path}: {kind}, {len(found)} image(s), "
                              f"{sum(len(i.layers) for i in found)} layer(s)",
                      "only the tar headers and the JSON are read; the JSON is checked against its digests")
        todo = sum(layer.size for image in found for layer in image.layers
                   if layer.diff_id is None or not _has_layer(store, image, layer))
        bar = _Progress(todo, progress)
        try:
            images = []
            for image in found:
                if image.flat:
                    diff_id = _unpack(store, archive, image.layers[0], [], bar, narrator=narrator)
                    image.layers[0].diff_id = diff_id
                    image.config_bytes = arc.flat_config(diff_id)
                    image.config = json.loads(image.config_bytes)
                else:
                    below: list[Path] = []
                    for layer, chain in zip(image.layers, chain_ids(_diff_ids(image))):
                        _ensure_layer(store, archive, layer, chain, below, bar, narrator)
                        below.append(store.layer_dir(chain))
                images.append(register(store, image, narrator))
        finally:
            bar.finish()
    return images


def _diff_ids(image: arc.ArchiveImage) -> list[str]:
    return [layer.diff_id or "" for layer in image.layers]


def _has_layer(store: Store, image: arc.ArchiveImage, layer: arc.LayerRef) -> bool:
    index = image.layers.index(layer)
    return store.layer_dir(chain_ids(_diff_ids(image))[index]).is_dir()


def _ensure_layer(store: Store, archive: arc.Archive, layer: arc.LayerRef, chain: str,
                  below: list[Path], bar: _Progress, narrator: Narration = SILENT) -> None:
    """Unpack one layer unless the store has it; under its lock, so only once."""
    final = store.layer_dir(chain)
    if final.is_dir():
        narrator.step(lambda: f"stat {final}: layer {layer.diff_id} is in the store already",
                          "layers are shared: one unpacked copy serves every image and container using it")
        return
    with store.lock(f"layer-{digest_hex(chain)}"):
        if final.is_dir():  # another command unpacked it while we waited
            return
        _unpack(store, archive, layer, below, bar, chain, narrator)


def _unpack(store: Store, archive: arc.Archive, layer: arc.LayerRef, below: list[Path],
            bar: _Progress, chain: str | None = None, narrator: Narration = SILENT) -> str:
    """Unpack, hash and verify a layer in one pass; rename it into place. Returns its diff_id."""
    from minicontainer import archive as arc
    from minicontainer import layers

    what = f"layer {layer.digest or layer.diff_id or layer.member or archive.path.name}"
    tmp = store.mkdtemp("layer-")
    os.chmod(tmp, 0o755)  # mkdtemp's 0700, unless the tar's own "./" entry says otherwise
    try:
        with archive.open_layer(layer) as raw:
            blob = arc.HashingReader(raw, bar.update)
            tar = arc.HashingReader(arc.decompressed(blob, layer.compression))
            try:
                stats = layers.unpack_layer(tar, tmp, below)
                tar.drain()
                blob.drain()
            except ImageError as e:
                raise ImageError(f"{what}: {e}") from None
        if layer.digest is not None and blob.digest() != layer.digest:
            raise ImageError(f"{what}: digest mismatch (the blob hashes to {blob.digest()})")
        diff_id = tar.digest()
        if layer.diff_id is not None and diff_id != layer.diff_id:
            raise ImageError(f"{what}: its content does not match diff_id {layer.diff_id} "
                             f"(it hashes to {diff_id})")
        chain = chain or diff_id
        final = store.layer_dir(chain)
        narrator.step(lambda: f"unpack {layer.member or archive.path.name} into {tmp}: {stats.files} files; "
                              f"blob {blob.digest()}" + (" = its digest" if layer.digest else "")
                              + f"; diff_id {diff_id}" + (" = the config's" if layer.diff_id else "")
                              + f"; rename → {final}",
                      "verified while unpacking, in one pass; renamed into place only once whole and right")
        if layer.diff_id is not None:  # the caller holds this layer's lock
            put_in_place(store, tmp, chain, diff_id, stats)
        else:  # a flat rootfs: its name is known only now
            with store.lock(f"layer-{digest_hex(chain)}"):
                put_in_place(store, tmp, chain, diff_id, stats)
        return diff_id
    except BaseException:
        remove_tree(tmp)
        raise


def put_in_place(store: Store, tmp: Path, chain: str, diff_id: str, stats: layers.LayerStats) -> None:
    """rename(2) the finished layer into place: it appears whole or not at all."""
    final = store.layer_dir(chain)
    if final.is_dir():  # the same flat rootfs loaded twice at once: keep the first
        remove_tree(tmp)
        return
    os.rename(tmp, final)
    atomic_write_json(store.layers / f"{digest_hex(chain)}.json",
                      {"diff_id": diff_id, "chain_id": chain, "size": stats.size, "files": stats.files})


def register(store: Store, found: arc.ArchiveImage, narrator: Narration = SILENT) -> Image:
    """Write images/<id>/ (config.json + image.json), or update the tags of an existing one."""
    from datetime import datetime, timezone

    image_id = found.id
    narrator.step(lambda: f"write {store.image_dir(image_id)}/config.json, image.json: image id {image_id}"
                          + (f", tags {found.tags}" if found.tags else ""),
                  "an image's id is the sha256 of its config, which names every layer by its diff_id")
    diff_ids = _diff_ids(found)
    with store.lock("images"):
        final = store.image_dir(image_id)
        if not final.is_dir():
            tmp = store.mkdtemp("image-")
            try:
                atomic_write_bytes(tmp / "config.json", found.config_bytes)
                atomic_write_json(tmp / "image.json", {
                    "id": image_id, "layers": diff_ids, "tags": [],
                    "size": sum(_layer_size(store, c) for c in chain_ids(diff_ids)),
                    "created": str(found.config.get("created") or ""),
                    "loaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                })
                os.chmod(tmp, 0o755)
                os.rename(tmp, final)
            except BaseException:
                remove_tree(tmp)
                raise
        _move_tags(store, image_id, [normalize_tag(t) for t in found.tags])
    return get(store, image_id)


def _layer_size(store: Store, chain: str) -> int:
    try:
        return int(read_json(store.layers / f"{digest_hex(chain)}.json").get("size", 0))
    except (OSError, ValueError):
        return 0


def _move_tags(store: Store, image_id: str, tags: list[str]) -> None:
    """Give `tags` to `image_id`, taking them from any other image (a tag names one image).

    Called with the "images" lock held.
    """
    for other in _image_records(store):
        mine = other["id"] == image_id
        wanted = sorted(set(other["tags"]) | set(tags)) if mine else \
            [t for t in other["tags"] if t not in tags]
        if wanted != other["tags"]:
            other["tags"] = wanted
            atomic_write_json(store.image_dir(other["id"]) / "image.json", other)


class _Progress:
    """A progress bar on stderr, shown only on a terminal and only once a load is slow."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0 and sys.stderr.isatty()
        self.start = time.monotonic()
        self.done = 0
        self.bar: Any = None

    def update(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        if self.bar is None and time.monotonic() - self.start > PROGRESS_AFTER:
            import click

            self.bar = click.progressbar(length=self.total, label="Unpacking layers",
                                         file=sys.stderr)
            self.bar.update(self.done)
        elif self.bar is not None:
            self.bar.update(n)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()


# ---------------------------------------------------------------- the archive cache


def _cache_file(store: Store, path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode(errors="surrogateescape")).hexdigest()
    return store.archive_cache / f"{key[:32]}.json"


def stat_key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _remembered(store: Store, path: Path, st: os.stat_result) -> list[Image] | None:
    """The images this very file (same inode, size, mtime) gave last time, if still stored.

    This is what keeps a second `run image.tar` fast: no tar header is read at all.
    """
    try:
        record = read_json(_cache_file(store, path))
        if record.get("stat") != stat_key(st):
            return None
        images = [get(store, image_id) for image_id in record["images"]]
    except (OSError, ValueError, KeyError, TypeError, ImageError):
        return None
    with store.lock("images"):
        for image_id, tags in zip(record["images"], record.get("tags", [])):
            _move_tags(store, image_id, tags)  # `load` puts the archive's tags back
    return [get(store, image.id) for image in images]


def _remember(store: Store, path: Path, st: os.stat_result, images: list[Image]) -> None:
    store.archive_cache.mkdir(exist_ok=True)
    atomic_write_json(_cache_file(store, path), {
        "path": str(path.resolve()), "stat": stat_key(st),
        "images": [i.id for i in images], "tags": [i.tags for i in images],
    })


# ---------------------------------------------------------------- finding images


def _image_records(store: Store) -> list[dict[str, Any]]:
    records = []
    for entry in sorted(store.images.iterdir()):
        try:
            records.append(read_json(entry / "image.json"))
        except (OSError, ValueError):
            continue  # not (yet) an image: a rename in progress or debris
    return records


def get(store: Store, image_id: str) -> Image:
    """The image with exactly this id."""
    folder = store.image_dir(image_id)
    try:
        record = read_json(folder / "image.json")
        config = json.loads((folder / "config.json").read_bytes())
    except FileNotFoundError:
        raise ImageError(f"no such image: {image_id}") from None
    except ValueError as e:
        raise ImageError(f"image {image_id}: damaged record ({e})") from None
    return Image(id=record["id"], config=config, layers=list(record["layers"]),
                 tags=list(record.get("tags", [])), size=int(record.get("size", 0)),
                 created=str(record.get("created", "")))


def list_images(store: Store) -> list[Image]:
    """Every image of the store, newest first."""
    images = []
    for record in _image_records(store):
        try:
            images.append(get(store, record["id"]))
        except ImageError:
            continue
    return sorted(images, key=lambda i: i.created, reverse=True)


def normalize_tag(tag: str) -> str:
    """`busybox` means `busybox:latest` (a tag after the last `/`, else "latest")."""
    name = tag.split("@", 1)[0]
    if ":" not in name.rsplit("/", 1)[-1]:
        tag = f"{name}:latest"
    return tag


def _short_name(tag: str) -> str:
    """The tag without the registry prefixes tools add: `docker.io/library/x:1` is `x:1`."""
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag


def find(store: Store, ref: str) -> Image:
    """An image of the store by id (`sha256:` optional, a prefix of 4+ hex digits) or tag."""
    hexpart = ref[len("sha256:"):] if ref.startswith("sha256:") else ref
    if len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart):
        matches = [p.name for p in store.images.iterdir() if p.name.startswith(hexpart)]
        if len(matches) > 1:
            raise ImageError(f"image id prefix {ref!r} is ambiguous ({len(matches)} images)")
        if matches:
            return get(store, matches[0])
    wanted = normalize_tag(ref)
    for record in _image_records(store):
        for tag in record.get("tags", []):
            if tag == wanted or _short_name(tag) == _short_name(wanted):
                return get(store, record["id"])
    raise ImageError(f"no such image: {ref}")


def resolve(store: Store, ref: str, *, progress: bool = False, narrator: Narration = SILENT) -> Image:
    """IMAGE as the user typed it: an archive file (loaded if needed), an id prefix, or a tag.

    An existing file wins, so that `minicontainer run ./busybox` means the file.
    """
    if Path(ref).is_file():
        return load(store, Path(ref), progress=progress, narrator=narrator)
    return find(store, ref)


# ---------------------------------------------------------------- removing


def _users(store: Store, image_id: str) -> list[str]:
    """Containers whose state.json says they were made from this image."""
    users = []
    for state in sorted(store.containers.glob("*/state.json")):
        try:
            if read_json(state).get("image") == image_id:
                users.append(state.parent.name)
        except (OSError, ValueError, AttributeError):
            continue
    return users


def remove(store: Store, ref: str, *, force: bool = False) -> Image:
    """`rmi`: untag, or delete the image when no tag is left (its layers stay until prune).

    Removing by tag when the image has other tags only removes that tag, as Docker
    does; removing by id an image with several tags needs `force`, as in Docker
    and podman. An image a container uses is refused; with `force` it is untagged but
    kept (dangling), because the container still stacks its layers.
    """
    image = find(store, ref)
    tag = next((t for t in image.tags if normalize_tag(ref) in (t, _short_name(t))
                or _short_name(normalize_tag(ref)) == _short_name(t)), None)
    with store.lock("images"):
        record = read_json(store.image_dir(image.id) / "image.json")
        if tag is not None and len(record["tags"]) > 1:
            record["tags"] = [t for t in record["tags"] if t != tag]
            atomic_write_json(store.image_dir(image.id) / "image.json", record)
            return image
        if tag is None and len(record["tags"]) > 1 and not force:  # by id: which name was meant?
            raise ImageError(f"image {image.short_id} is referenced by {len(record['tags'])} tags "
                             f"({', '.join(record['tags'])}): remove them by name, or use --force")
        users = _users(store, image.id)
        if users and not force:
            raise ImageError(f"image {image.short_id} is used by container {users[0]}"
                             f" (remove it first, or use --force)")
        if users:
            record["tags"] = []
            atomic_write_json(store.image_dir(image.id) / "image.json", record)
            return image
        doomed = store.mkdtemp("rmi-")
        os.rename(store.image_dir(image.id), doomed / "image")  # gone at once, deleted after
    remove_tree(doomed)
    return image


def prune_layers(store: Store) -> list[str]:
    """Delete unpacked layers no image uses; returns their chain ids."""
    removed = []
    with store.lock("gc"):
        used = {digest_hex(c) for record in _image_records(store)
                for c in chain_ids(record.get("layers", []))}
        for entry in sorted(store.layers.iterdir()):
            name = entry.name[:-5] if entry.name.endswith(".json") else entry.name
            if name in used:
                continue
            if entry.is_dir():
                doomed = store.mkdtemp("prune-")
                os.rename(entry, doomed / "layer")
                remove_tree(doomed)
                removed.append(f"sha256:{name}")
            else:
                entry.unlink(missing_ok=True)
    return removed


def history(image: Image) -> list[dict[str, Any]]:
    """The config's history, newest first, each entry with the layer it made (if any)."""
    entries = image.config.get("history") or []
    diff_ids = list(image.layers)
    rows = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        layer = None if entry.get("empty_layer") else (diff_ids.pop(0) if diff_ids else None)
        rows.append({"layer": layer, "created": entry.get("created", ""),
                     "created_by": entry.get("created_by", ""), "comment": entry.get("comment", "")})
    for layer in diff_ids:  # more layers than history entries: still show them
        rows.append({"layer": layer, "created": "", "created_by": "", "comment": ""})
    return list(reversed(rows))


def layer_size(store: Store, image: Image, diff_id: str) -> int:
    """Bytes of regular file content in the unpacked layer `diff_id` of `image`."""
    chain = image.chain_ids()[image.layers.index(diff_id)]
    return _layer_size(store, chain)


def inspect(store: Store, image: Image) -> dict[str, Any]:
    """What `docker image inspect` shows, in its field names."""
    config = image.config
    return {
        "Id": image.id,
        "RepoTags": image.tags,
        "Created": image.created,
        "Size": image.size,
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Author": config.get("author", ""),
        "Config": config.get("config") or {},
        "RootFS": {"Type": "layers", "Layers": image.layers},
        "History": config.get("history") or [],
        "Metadata": {"LayerDirs": [str(p) for p in image.layer_dirs(store)]},
    }
