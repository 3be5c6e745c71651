"""The store: where images and containers live on disk, and how to change it safely.

Layout (root `/var/lib/minicontainer`, or `--root` / `MINICONTAINER_ROOT`):

    layers/<hex>/         one unpacked layer (the hex of its chain id: for the lowest layer
                          its diff_id, above it the layer plus everything below), read-only
                          once renamed into place; shared by every image and container using it
    layers/<hex>.json     its diff_id, size in bytes and file count
    images/<hex>/         one image (the hex of its config digest = its id):
                          config.json (the exact bytes of the archive's config) and
                          image.json (layer list, tags, sizes)
    containers/<id>/      one container: config.json + rootfs/ (an OCI bundle),
                          upper/ and work/ (its writable layer), state.json, log
    tmp/                  staging: everything is built here, then renamed into place
    locks/                lock files (flock) so that concurrent commands cooperate
    archives/             archive file (path, inode, size, mtime) → the image ids it holds,
                          so loading the same file again reads nothing but this note

Two habits keep the store consistent whatever happens (Ctrl-C, kill -9, a full
disk): nothing is written in place (write a temporary file or directory on the
same filesystem, then `rename(2)`, which is atomic), and work that two commands
might do at once is done under a lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minicontainer.errors import MiniContainerError

DEFAULT_ROOT = Path("/var/lib/minicontainer")


def digest_hex(digest: str) -> str:
    """`sha256:ab12…` → `ab12…` (the form used for directory names)."""
    algorithm, _, hexpart = digest.partition(":")
    return hexpart if hexpart else algorithm


@dataclass(frozen=True)
class Store:
    """The on-disk home of layers, images and containers."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """The store at `root`, else $MINICONTAINER_ROOT, else /var/lib/minicontainer."""
        chosen = Path(root or os.environ.get("MINICONTAINER_ROOT") or DEFAULT_ROOT).absolute()
        store = cls(chosen)
        for sub in (store.layers, store.images, store.containers, store.tmp, store.locks):
            sub.mkdir(parents=True, exist_ok=True)
        return store

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def archive_cache(self) -> Path:
        return self.root / "archives"

    def layer_dir(self, diff_id: str) -> Path:
        return self.layers / digest_hex(diff_id)

    def image_dir(self, image_id: str) -> Path:
        return self.images / digest_hex(image_id)

    def container_dir(self, container_id: str) -> Path:
        return self.containers / container_id

    def mkdtemp(self, prefix: str) -> Path:
        """A new private directory under tmp/, on the same filesystem as its final place.

        Its name carries the creator's pid (`layer-<pid>-<random>`), so that
        sweep_tmp() can tell the staging of a live command from the leftovers
        of one that was killed with SIGKILL before it could clean up.
        """
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=self.tmp))

    def sweep_tmp(self) -> list[Path]:
        """Remove staging directories whose creator is dead; return what was removed.

        Nothing in tmp/ is ever visible as an image or a container (things
        appear by rename out of it), so deleting an orphan there loses nothing.
        """
        removed = []
        for entry in self.tmp.iterdir():
            _, _, rest = entry.name.rpartition("-")[0].rpartition("-")
            if rest.isdigit() and not _alive(int(rest)):
                remove_tree(entry)
                removed.append(entry)
        return removed

    @contextmanager
    def lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """Hold `locks/<name>.lock` (flock(2)) for the duration of the block.

        flock locks die with the process that holds them, so a command killed
        with SIGKILL can never leave the store locked.
        """
        path = self.locks / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `path` so that readers see the old content or the new, never a half.

    Write a temporary file beside it, fsync it, rename(2) it over the target.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with _ignore_missing():
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """atomic_write_bytes for a JSON document (indented: students read these files)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.load(f)


def remove_tree(path: Path) -> None:
    """Delete a tree if it exists (missing is fine: removal is idempotent).

    shutil.rmtree recurses once per directory level, so a container (or a
    hostile layer) that nests a few thousand directories would make it fail
    with RecursionError; rm(1) walks iteratively and never follows symlinks.
    """
    import shutil  # imported here: it pulls in bz2 and lzma, which `run` never needs

    if path.is_symlink() or not path.is_dir():
        with _ignore_missing():
            path.unlink()
        return
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except (RecursionError, OSError):
        import subprocess

        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)
        if path.exists() or path.is_symlink():
            raise MiniContainerError(f"cannot remove {path}") from None


def _alive(pid: int) -> bool:
    """Does process `pid` exist? (kill(2) with signal 0 checks without signalling.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _ignore_missing() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        pass
