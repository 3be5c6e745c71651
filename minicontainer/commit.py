"""From a container back to an image: `diff`, `commit` and `export`.

A container's whole private state on disk is one directory, its overlayfs
*upperdir*: every file it wrote, a character device 0/0 for every file it
deleted, the xattr `trusted.overlay.opaque=y` on every directory it emptied
and refilled. The image's layers below were only ever read. So:

- `diff` lists that directory: A (added), C (changed), D (deleted), like `docker diff`;
- `commit` tars it (save.py turns the overlay marks back into `.wh.` entries)
  and stacks it as one more read-only layer on the image's layers: a new
  image, made of the old layers, untouched, plus one;
- `export` tars the *merged* view (what the container sees as `/`) into one
  flat root filesystem, with no layers and no history.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from minicontainer import image as images
from minicontainer import layers, save
from minicontainer.archive import ArchiveImage, LayerRef
from minicontainer.bundle import A_UPPERDIR
from minicontainer.container import Container
from minicontainer.errors import ContainerError, ImageError
from minicontainer.explain import SILENT, Narration
from minicontainer.store import Store, digest_hex, remove_tree


@dataclass
class Change:
    """One line of `diff`: A, C or D and the path inside the container."""

    kind: str
    path: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


# ---------------------------------------------------------------- where a container keeps its changes


def upper_dir(container: Container) -> Path:
    """The container's writable layer (its overlay upperdir)."""
    if container.state.rootfs_mode != "overlay":
        raise ContainerError(f"container {container.id[:12]} has a copied root filesystem "
                             "(no overlayfs here): its changes cannot be told from the image's files")
    upper = _bundle_config(container).get("annotations", {}).get(A_UPPERDIR)
    return Path(upper) if upper else container.dir / "upper"


def _bundle_config(container: Container) -> dict[str, Any]:
    """The container's OCI config.json ({} if it cannot be read)."""
    try:
        return json.loads((container.dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def image_of(store: Store, container: Container) -> images.Image:
    """The image the container was made from (by id: tags may have moved since)."""
    try:
        return images.get(store, container.state.image)
    except ImageError:
        raise ContainerError(f"container {container.id[:12]}: its image {container.state.image} "
                             "is no longer in the store") from None


# ---------------------------------------------------------------- diff


def in_lowers(lowers_top_first: list[Path], parts: tuple[str, ...]) -> bool:
    """Whether the image (its layers merged as overlayfs would) has the path `parts`.

    Look in each layer from the top: a whiteout there means "deleted", an
    entry means "present"; a file or an opaque directory on the way means
    layers further down cannot supply the path.
    """
    for layer in lowers_top_first:
        here, hides_below = layer, False
        for i, part in enumerate(parts):
            here = here / part
            try:
                st = os.lstat(here)
            except (FileNotFoundError, NotADirectoryError):
                break  # not in this layer: look in the next one down (unless hidden)
            if save.is_whiteout(st):
                return False
            if i == len(parts) - 1:
                return True
            if not stat.S_ISDIR(st.st_mode):
                return False
            hides_below = hides_below or save.is_opaque(here)
        if hides_below:  # an opaque directory on the way: layers below have nothing there
            return False
    return False


def mount_points(container: Container, upper: Path, lowers_top_first: list[Path]) -> frozenset[str]:
    """Files and directories the runtime created in the upper dir only to mount on them.

    /etc/hostname, /etc/hosts, /etc/resolv.conf (and /proc, /dev… when the
    image lacks them) are bind-mount targets, not the container's work:
    Docker keeps them in a separate "init" layer, so `docker diff` and
    `docker commit` never show them. We leave them out instead.
    """
    found = set()
    for m in _bundle_config(container).get("mounts") or []:
        name = str(m.get("destination", "")).strip("/")
        if name and os.path.lexists(upper / name) and not in_lowers(lowers_top_first, tuple(name.split("/"))):
            found.add(name)
    return frozenset(found)


def changes(upper: Path, lowers_top_first: list[Path], skip: frozenset[str] = frozenset()) -> list[Change]:
    """The A/C/D lines for an upper dir over the given (unpacked) layers, sorted by path."""
    found: list[Change] = []
    for name, path, st in save.walk(upper, skip=skip):
        parts = tuple(name.split("/"))
        shown = "/" + name
        if save.is_whiteout(st):
            found.append(Change("D", shown))
            continue
        found.append(Change("C" if in_lowers(lowers_top_first, parts) else "A", shown))
        if stat.S_ISDIR(st.st_mode) and save.is_opaque(path):
            found += _hidden_by_opaque(upper, lowers_top_first, parts)
    return _without_mount_parents(sorted(found, key=lambda c: c.path), skip)


def _without_mount_parents(found: list[Change], skip: frozenset[str]) -> list[Change]:
    """Drop a "C /etc" that is there only because a mount point was made inside it."""
    parents = {"/" + "/".join(name.split("/")[:i]) for name in skip for i in range(1, name.count("/") + 1)}
    shown = [c.path for c in found]
    return [c for c in found if not (c.kind == "C" and c.path in parents
                                     and not any(p.startswith(c.path + "/") for p in shown))]


def _hidden_by_opaque(upper: Path, lowers_top_first: list[Path], parts: tuple[str, ...]) -> list[Change]:
    """An emptied directory deletes what the image had in it (unless written again)."""
    hidden = set()
    for layer in lowers_top_first:
        folder = layer.joinpath(*parts)
        if folder.is_dir() and not folder.is_symlink():
            hidden |= {n for n in os.listdir(folder) if in_lowers(lowers_top_first, parts + (n,))}
    return [Change("D", "/" + "/".join(parts + (n,))) for n in sorted(hidden)
            if not os.path.lexists(upper.joinpath(*parts, n))]


def diff(store: Store, ref: str) -> list[Change]:
    """`diff CONTAINER`: what the container changed, compared with its image."""
    container = Container.find(store, ref)
    upper, lowers = upper_dir(container), list(reversed(image_of(store, container).layer_dirs(store)))
    return changes(upper, lowers, mount_points(container, upper, lowers))


# ---------------------------------------------------------------- commit


def commit(store: Store, ref: str, tag: str | None = None, *, message: str = "",
           author: str = "", narrator: Narration = SILENT) -> images.Image:
    """`commit CONTAINER [REPO[:TAG]]`: the image's layers plus the container's as a new image.

    The new layer is written as a tar (so it has a real diff_id) and then
    unpacked into the store exactly as `load` unpacks any layer; the layers
    below are shared, not copied.
    """
    container = Container.find(store, ref)
    img = image_of(store, container)
    upper = upper_dir(container)
    work = store.mkdtemp("commit-")
    try:
        lowers = list(reversed(img.layer_dirs(store)))
        layer = save.write_layer_tar(upper, work / "layer.tar",
                                     skip=mount_points(container, upper, lowers))
        narrator.step(lambda: f"tar {upper} → {layer.path} ({layer.size} bytes): diff_id {layer.diff_id}",
                      "the container's writable layer, its overlay whiteouts turned back into .wh. entries")
        diff_ids = img.layers + [layer.diff_id]
        chain = images.chain_ids(diff_ids)[-1]
        config = _committed_config(img.config, container, layer.diff_id, message, author)
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        refs = [LayerRef(member="", diff_id=d) for d in diff_ids]
        tags = [images.normalize_tag(tag)] if tag else []
        with store.lock("gc", shared=True):  # as `load`: `image prune` must wait for the new image
            _store_layer(store, layer, chain, img.layer_dirs(store), narrator)
            # register is the image half's own way of recording an image and moving tags.
            return images.register(store, ArchiveImage(config_bytes, config, refs, tags), narrator)
    finally:
        remove_tree(work)


def _store_layer(store: Store, layer: save.LayerTar, chain: str, below: list[Path],
                 narrator: Narration = SILENT) -> None:
    """Unpack the new layer tar into layers/<chain>/ under its lock, as `load` does any layer."""
    narrator.step(lambda: f"unpack {layer.path} into {store.layer_dir(chain)}",
                  "one more read-only layer: the lower layers are shared, never copied")
    with store.lock(f"layer-{digest_hex(chain)}"):
        if store.layer_dir(chain).is_dir():  # the same change committed before: already there
            return
        tmp = store.mkdtemp("layer-")
        try:
            os.chmod(tmp, 0o755)
            with open(layer.path, "rb") as f:
                stats = layers.unpack_layer(f, tmp, below)
            images.put_in_place(store, tmp, chain, layer.diff_id, stats)
        except BaseException:
            remove_tree(tmp)
            raise


def _committed_config(base: dict[str, Any], container: Container, diff_id: str, message: str,
                      author: str) -> dict[str, Any]:
    """The image config, one layer and one history entry longer.

    As `docker commit` does, the container's command becomes the new image's
    Cmd (after the image's Entrypoint, which stays).
    """
    config = json.loads(json.dumps(base))  # a deep copy: the old image's dict stays as it was
    created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    config["created"] = created
    if author:
        config["author"] = author
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [diff_id]
    entry = {"created": created, "created_by": "minicontainer commit"}
    if message:
        entry["comment"] = message
    config["history"] = list(config.get("history") or []) + [entry]
    runtime = config.setdefault("config", {})
    entrypoint = list(runtime.get("Entrypoint") or [])
    command = list(container.state.command)
    if command[:len(entrypoint)] == entrypoint:
        runtime["Cmd"] = command[len(entrypoint):]
    return config


# ---------------------------------------------------------------- export


def export(store: Store, ref: str, out: Path) -> int:
    """`export CONTAINER -o FILE`: the container's root as one flat tar; returns the entry count.

    The merged view is made the kernel's way: a short-lived child process gets
    a private mount namespace, mounts a *read-only* overlay of the upper dir
    stacked on the image's layers (all as lowerdirs: nothing is written, not
    even a workdir), tars it, and exits; its mount dies with its namespace.
    """
    container = Container.find(store, ref)
    if container.state.rootfs_mode == "copy":  # no overlay: rootfs/ is already the merged view
        return save.add_tree_to_file(container.dir / "rootfs", Path(out))
    img = image_of(store, container)
    lowers = [upper_dir(container)] + list(reversed(img.layer_dirs(store)))
    mountpoint = store.mkdtemp("export-")
    try:
        return int(in_child(lambda: _tar_merged(lowers, mountpoint, Path(out))))
    except ContainerError as e:
        raise ContainerError(f"export failed: {e}") from None
    finally:
        remove_tree(mountpoint)


def _tar_merged(lowers_top_first: list[Path], mountpoint: Path, out: Path) -> int:
    """mount(2) overlay `lowerdir=upper:layerN:…:layer1` read-only on `mountpoint`, tar it."""
    from minicontainer import linux

    existing = [p for p in lowers_top_first if p.is_dir()]
    data = "lowerdir=" + ":".join(str(p) for p in existing)
    if len(existing) == 1:  # overlayfs wants two lowerdirs when there is no upperdir
        data += ":" + str(existing[0])
    linux.mount("overlay", str(mountpoint), "overlay", linux.MS_RDONLY | linux.MS_NODEV, data)
    return save.add_tree_to_file(mountpoint, out)


def in_child(work: Callable[[], Any], unshare_flags: int | None = None) -> Any:
    """Run `work` in a forked child inside new namespaces; return its (JSON) result.

    unshare(2) `unshare_flags` (by default CLONE_NEWNS, a mount namespace),
    then, with a new mount namespace, mount(2) MS_REC|MS_PRIVATE on "/" so
    nothing the child mounts propagates back (mount_namespaces(7)). When the
    child exits, its namespaces and every mount in them are gone: no mount
    can leak, whatever happens. The answer (or the error) comes back over a pipe.
    """
    from minicontainer import linux

    flags = linux.CLONE_NEWNS if unshare_flags is None else unshare_flags
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        try:
            linux.unshare(flags)
            if flags & linux.CLONE_NEWNS:
                linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            answer = {"ok": work()}
        except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
            answer = {"error": f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else str(e)}
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    answer = json.loads(raw or b'{"error": "the child process died"}')
    if "error" in answer:
        raise ContainerError(answer["error"])
    return answer["ok"]
