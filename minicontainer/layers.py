"""Unpacking one image layer safely: the rules of OCI image-spec `layer.md` on a real disk.

A layer is a tar of *changes* against the layers below it. Three ideas matter:

1. Deletions are files too. `.wh.NAME` says "NAME of the lower layers is gone";
   `.wh..wh..opq` in a directory says "hide everything the lower layers had in
   here". We store each layer as an overlayfs *lowerdir*, the way containerd's
   overlay snapshotter does: a whiteout becomes a character device 0/0 called
   NAME, an opaque directory gets the xattr `trusted.overlay.opaque=y`. The
   kernel's overlayfs then shows the merged tree to the container.

2. An archive is hostile until proven otherwise. No entry may create, change or
   delete anything outside the layer directory, whatever its name (`../x`,
   `/etc/x`), its link target, or the symlinks earlier entries and lower layers
   put in its path. So we never hand a path to the kernel and let it follow
   symlinks: every path is walked here one component at a time, with
   `openat(2)`/`fstatat(2)` and O_NOFOLLOW relative to a directory descriptor,
   and a symlink met on the way is resolved by *us*, as if the image root were
   `/` (`..` at the root stays at the root, an absolute target starts again at
   the image root). This is what libpathrs/securejoin and openat2's
   RESOLVE_IN_ROOT do. Python's `tarfile` extraction filters are not used: they
   strip setuid bits and refuse absolute symlinks, which real images need.

3. The parent path of an entry is resolved through the *whole image* as seen
   from its root, lower layers included: if layer 1 has `lib -> usr/lib` and
   layer 2 an entry `lib/x`, the file lands at `usr/lib/x` in layer 2. The
   container then reads `/lib/x` and still sees all of `/usr/lib` through `/lib`.
   This is what a tar extracted onto the merged root does (Docker's naive/vfs
   differ, and every `RUN` of a Dockerfile that produced the layer). podman and
   Docker's overlay drivers unpack each layer in isolation instead, where
   `lib/x` would make `/lib` a real directory hiding `/usr/lib`. Because the
   result depends on the lower layers, the store keys unpacked layers by chain
   id (the layer and everything below it), as Docker does.

The final component of an entry is never followed: a regular file, directory or
symlink entry *replaces* whatever symlink is there (tar semantics).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from minicontainer.errors import ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."   # .wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph: AUFS bookkeeping
OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_SYMLINK_HOPS = 40            # what the kernel allows (ELOOP beyond it)
MAX_CACHED_FDS = 400             # keep well below the usual 1024 descriptor limit
COPY_CHUNK = 1 << 20

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Path_ = tuple[str, ...]   # a clean path inside the image root, as its components
Warn = Callable[[str], None]


@dataclass
class LayerStats:
    """What one unpacked layer holds (written to the store beside it)."""

    size: int = 0    # bytes of regular file content
    files: int = 0   # entries created


def warn_stderr(message: str) -> None:
    print(f"minicontainer: warning: {message}", file=sys.stderr)


def unpack_layer(stream: IO[bytes], dest: Path, lowers: Sequence[Path],
                 warn: Warn = warn_stderr) -> LayerStats:
    """Unpack the uncompressed layer tar `stream` into the empty directory `dest`.

    `lowers` are the unpacked layers below this one, lowest first; they are
    only read (to resolve paths through their symlinks and to copy up files that
    hardlinks point at).
    """
    try:
        tar = tarfile.open(fileobj=stream, mode="r|", bufsize=COPY_CHUNK,  # type: ignore[call-overload]
                           encoding="utf-8", errors="surrogateescape")
    except tarfile.TarError as e:
        raise ImageError(f"not a tar archive ({e})") from None
    with _Unpacker(dest, list(reversed(lowers)), warn) as unpacker:
        try:
            for member in tar:
                unpacker.apply(tar, member)
        except tarfile.TarError as e:
            raise ImageError(f"broken layer tar: {e}") from None
        except EOFError:
            raise ImageError("truncated layer tar") from None
        unpacker.finish()
        return unpacker.stats


def clean_name(name: str) -> Path_:
    """An entry name as components inside the root; refuse names that climb out.

    Like Go's filepath.Clean in moby's archive code: `/a/../../x` is `/x` (an
    absolute name cannot rise above `/`), but a relative `a/../../x` leaves the
    layer, and is refused.
    """
    absolute = name.startswith("/")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            elif not absolute:
                raise ImageError(f"entry {name!r} climbs out of the layer")
        else:
            parts.append(part)
    return tuple(parts)


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


@dataclass
class _Lower:
    """An entry found in the lower layers: the directory fd holding it, its name, its stat."""

    dirfd: int
    name: str
    st: os.stat_result


@dataclass
class _LowerView:
    """The merged, read-only view of the layers below the one being unpacked.

    Looks paths up the way overlayfs would: topmost layer first, a whiteout
    device or a non-directory ends the search, an opaque directory hides the
    layers below it.
    """

    roots: list[int]                                     # top layer first
    dirs: dict[Path_, list[int]] = field(default_factory=dict)
    opened: list[int] = field(default_factory=list)

    def dirs_of(self, path: Path_) -> list[int]:
        """Descriptors of the directory `path` in every layer that contributes to it."""
        if not path:
            return self.roots
        cached = self.dirs.get(path)
        if cached is not None:
            return cached
        result: list[int] = []
        for parent in self.dirs_of(path[:-1]):
            st = _lstat(parent, path[-1])
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a file hides everything below it
            fd = os.open(path[-1], DIR_FLAGS, dir_fd=parent)
            self.opened.append(fd)
            result.append(fd)
            if _is_opaque(fd):
                break
        self.dirs[path] = result
        return result

    def lookup(self, path: Path_, name: str) -> _Lower | None:
        """What the lower layers show at `path/name` (None: nothing, or whited out)."""
        for dirfd in self.dirs_of(path):
            st = _lstat(dirfd, name)
            if st is None:
                continue
            return None if _is_whiteout(st) else _Lower(dirfd, name, st)
        return None

    def trim(self) -> None:
        """Close cached descriptors (called between entries, never while one is in use)."""
        if len(self.opened) > MAX_CACHED_FDS:
            self.close()

    def close(self) -> None:
        for fd in self.opened:
            os.close(fd)
        self.opened.clear()
        self.dirs.clear()


class _Unpacker:
    """Applies tar entries, one at a time, to one layer directory."""

    def __init__(self, dest: Path, lowers_top_first: list[Path], warn: Warn) -> None:
        self.warn = warn
        self.root = os.open(dest, DIR_FLAGS)
        self.lower_roots = [os.open(p, DIR_FLAGS) for p in lowers_top_first]
        self.lower = _LowerView(self.lower_roots)
        self.fds: dict[Path_, int] = {(): self.root}   # real directories of this layer
        self.opaque: set[Path_] = set()                # directories of this layer marked opaque
        self.dir_mtimes: dict[Path_, int] = {}         # restored last: children change them
        self.stats = LayerStats()
        self.is_root = os.geteuid() == 0

    def __enter__(self) -> _Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lower.close()
        for fd in set(self.fds.values()) | set(self.lower_roots):
            os.close(fd)

    # ------------------------------------------------------------ one entry

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._trim_caches()
        parts = clean_name(member.name)
        if not parts:  # the layer's own root: "./" — only its metadata can change
            if member.isdir():
                self._set_metadata(self.root, member, ())
            return
        *parent, base = parts
        if any(p.startswith(AUFS_META_PREFIX) for p in parts[:-1]):
            return  # inside AUFS's hard-link bookkeeping directories: not image content
        if any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
            raise ImageError(f"entry {member.name!r}: a whiteout cannot be a directory")
        if base == OPAQUE_MARKER:
            self._make_opaque(tuple(parent))
        elif base.startswith(AUFS_META_PREFIX):
            return
        elif base.startswith(WHITEOUT_PREFIX):
            self._whiteout(tuple(parent), base[len(WHITEOUT_PREFIX):], member)
        elif member.isreg():
            dirfd, where = self._resolve_dir(tuple(parent))
            self._replace(dirfd, where, base, member)
            self._write_file(dirfd, base, member, tar)
        elif member.isdir():
            dirfd, where = self._resolve_dir(tuple(parent))
            self._make_dir(dirfd, where, base, member)
        elif member.issym():
            dirfd, where = self._resolve_dir(tuple(parent))
            self._replace(dirfd, where, base, member)
            os.symlink(member.linkname, base, dir_fd=dirfd)
            self._set_metadata_at(dirfd, base, member)
        elif member.islnk():
            self._hardlink(tuple(parent), base, member)
        elif member.isfifo():
            dirfd, where = self._resolve_dir(tuple(parent))
            self._replace(dirfd, where, base, member)
            os.mkfifo(base, 0o600, dir_fd=dirfd)
            self._set_metadata_at(dirfd, base, member)
        elif member.ischr() or member.isblk():
            # A device node in an image would let the container open a host device
            # (say /dev/sda) through the layer, whatever the runtime's device policy
            # for /dev. Runtimes create the few devices a container needs themselves.
            self.warn(f"skipped device node {member.name!r} (images cannot bring device nodes)")
            return
        else:
            self.warn(f"skipped {member.name!r}: unsupported tar entry type {member.type!r}")
            return
        self.stats.files += 1

    def finish(self) -> None:
        """Give directories their mtimes last: creating their children changed them."""
        for path in sorted(self.dir_mtimes, key=len, reverse=True):
            mtime = self.dir_mtimes[path]
            fd = self._open_real(path)
            os.utime(fd, ns=(mtime, mtime))

    # ------------------------------------------------------------ path resolution

    def _resolve_dir(self, path: Path_) -> tuple[int, Path_]:
        """The directory `path` names in the image (symlinks resolved inside the root),
        as a descriptor of the real directory in this layer, created if needed."""
        cached = self.fds.get(path)
        if cached is not None:
            return cached, path
        todo = list(path)
        done: list[str] = []
        fd = self.root
        hops = 0
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if done:
                    done.pop()
                    fd = self._open_real(tuple(done))
                continue
            here = _lstat(fd, name)
            target: str | None = None
            if here is None:
                below = self.lower.lookup(tuple(done), name) if self._lower_visible(done) else None
                if below is not None and stat.S_ISLNK(below.st.st_mode):
                    target = os.readlink(below.name, dir_fd=below.dirfd)
                else:
                    fd = self._implied_dir(fd, tuple(done), name, below)
                    done.append(name)
                    continue
            elif stat.S_ISDIR(here.st_mode):
                fd = self._open_dir(fd, tuple(done), name)
                done.append(name)
                continue
            elif stat.S_ISLNK(here.st_mode):
                target = os.readlink(name, dir_fd=fd)
            elif _is_whiteout(here):
                # Deleted from the lower layers earlier in this layer, now used as a
                # directory again: a fresh directory that hides the old contents.
                os.unlink(name, dir_fd=fd)
                fd = self._implied_dir(fd, tuple(done), name, None)
                done.append(name)
                self._mark_opaque(fd, tuple(done))
                continue
            else:
                raise ImageError(f"{'/'.join(path)}: {'/'.join(done + [name])} is not a directory")
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ImageError(f"{'/'.join(path)}: too many levels of symbolic links")
            todo = target.split("/") + todo
            if target.startswith("/"):
                done, fd = [], self.root
        return fd, tuple(done)

    def _lower_visible(self, done: list[str]) -> bool:
        """Lower layers show through unless a directory on the way is opaque in this layer."""
        return not any(tuple(done[:i]) in self.opaque for i in range(1, len(done) + 1))

    def _open_dir(self, parent_fd: int, parent: Path_, name: str) -> int:
        path = parent + (name,)
        fd = self.fds.get(path)
        if fd is None:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            self.fds[path] = fd
        return fd

    def _open_real(self, path: Path_) -> int:
        """A directory of this layer by its real path (no symlinks in it by construction)."""
        fd = self.root
        for i, name in enumerate(path):
            fd = self._open_dir(fd, path[:i], name)
        return fd

    def _implied_dir(self, parent_fd: int, parent: Path_, name: str, below: _Lower | None) -> int:
        """Create a parent directory the tar did not list.

        If the lower layers have it, copy its owner, mode and mtime (as overlayfs
        copy-up does), else make it 0755 root:root as Docker does for implied parents.
        """
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = self._open_dir(parent_fd, parent, name)
        if below is not None and stat.S_ISDIR(below.st.st_mode):
            self._chown(fd, below.st.st_uid, below.st.st_gid)
            os.fchmod(fd, stat.S_IMODE(below.st.st_mode))
            self.dir_mtimes[parent + (name,)] = below.st.st_mtime_ns
        else:
            os.fchmod(fd, 0o755)
        return fd

    # ------------------------------------------------------------ whiteouts

    def _whiteout(self, parent: Path_, name: str, member: tarfile.TarInfo) -> None:
        if name in ("", ".", ".."):
            raise ImageError(f"invalid whiteout {member.name!r}")
        dirfd, where = self._resolve_dir(parent)
        existing = _lstat(dirfd, name)
        if existing is None:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dirfd)
        elif stat.S_ISDIR(existing.st_mode):
            # This layer has its own NAME: it survives, but the lower NAME must not
            # show through it, so it becomes opaque.
            self._mark_opaque(self._open_dir(dirfd, where, name), where + (name,))

    def _make_opaque(self, parent: Path_) -> None:
        dirfd, where = self._resolve_dir(parent)
        self._mark_opaque(dirfd, where)

    def _mark_opaque(self, fd: int, path: Path_) -> None:
        os.setxattr(fd, OPAQUE_XATTR, b"y")
        self.opaque.add(path)

    # ------------------------------------------------------------ creating entries

    def _replace(self, dirfd: int, where: Path_, name: str, member: tarfile.TarInfo) -> None:
        """Remove what this layer already has at `name` (tar semantics: the last entry wins)."""
        existing = _lstat(dirfd, name)
        if existing is None:
            return
        if stat.S_ISDIR(existing.st_mode):
            self._forget_dirs(where + (name,))
            shutil.rmtree(name, dir_fd=dirfd)
        else:
            os.unlink(name, dir_fd=dirfd)

    def _forget_dirs(self, path: Path_) -> None:
        n = len(path)
        for cached in [p for p in self.fds if p[:n] == path]:
            os.close(self.fds.pop(cached))
        for p in [p for p in self.dir_mtimes if p[:n] == path]:
            del self.dir_mtimes[p]
        self.opaque = {p for p in self.opaque if p[:n] != path}

    def _make_dir(self, dirfd: int, where: Path_, name: str, member: tarfile.TarInfo) -> None:
        path = where + (name,)
        existing = _lstat(dirfd, name)
        whited_out = existing is not None and _is_whiteout(existing)
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            os.unlink(name, dir_fd=dirfd)
            existing = None
        if existing is None:
            os.mkdir(name, 0o700, dir_fd=dirfd)
        fd = self._open_dir(dirfd, where, name)
        if whited_out:
            self._mark_opaque(fd, path)
        self._set_metadata(fd, member, path)

    def _write_file(self, dirfd: int, name: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dirfd)
        try:
            source = tar.extractfile(member)
            remaining = member.size
            while remaining > 0 and source is not None:
                chunk = source.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    raise ImageError(f"{member.name!r}: truncated file data")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                remaining -= len(chunk)
            self.stats.size += member.size
            self._set_metadata(fd, member, None)
        finally:
            os.close(fd)

    def _hardlink(self, parent: Path_, base: str, member: tarfile.TarInfo) -> None:
        """A hard link to a file of this layer, or of a lower one (copied up first).

        overlayfs cannot link across layers, so a link to a lower file first copies
        that file into this layer, as containerd's `WithParents` option does.
        """
        target = clean_name(member.linkname)
        if not target:
            raise ImageError(f"hard link {member.name!r} points at the root directory")
        tdirfd, twhere = self._resolve_dir(target[:-1])
        tname = target[-1]
        dirfd, where = self._resolve_dir(parent)
        if twhere + (tname,) == where + (base,):
            return  # a link to itself: nothing to do
        existing = _lstat(tdirfd, tname)
        if existing is None:
            below = self.lower.lookup(twhere, tname) if self._lower_visible(list(twhere)) else None
            if below is None:
                raise ImageError(f"hard link {member.name!r}: target {member.linkname!r} does not exist")
            self._copy_up(below, tdirfd, tname)
            existing = _lstat(tdirfd, tname)
        assert existing is not None
        if stat.S_ISDIR(existing.st_mode) or _is_whiteout(existing):
            raise ImageError(f"hard link {member.name!r}: target {member.linkname!r} is not a file")
        self._replace(dirfd, where, base, member)
        os.link(tname, base, src_dir_fd=tdirfd, dst_dir_fd=dirfd, follow_symlinks=False)
        if not stat.S_ISLNK(existing.st_mode):
            # Like moby/containers-storage: the link's header metadata applies to the
            # shared inode (tools write the target's own owner and mode there anyway).
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                self._set_metadata(fd, member, None)
            finally:
                os.close(fd)

    def _copy_up(self, below: _Lower, dirfd: int, name: str) -> None:
        st = below.st
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(below.name, dir_fd=below.dirfd), name, dir_fd=dirfd)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(name, 0o600, dir_fd=dirfd)
        elif stat.S_ISREG(st.st_mode):
            src = os.open(below.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=below.dirfd)
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=dirfd)
            try:
                while os.sendfile(dst, src, None, COPY_CHUNK):
                    pass
                self._chown(dst, st.st_uid, st.st_gid)
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                for key in os.listxattr(src):
                    if not key.startswith("trusted.overlay."):
                        os.setxattr(dst, key, os.getxattr(src, key))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
                self.stats.size += st.st_size
            finally:
                os.close(src)
                os.close(dst)
            return
        else:
            raise ImageError(f"cannot hard link to {name!r}: not a file")
        self._chown_at(dirfd, name, st.st_uid, st.st_gid)
        os.utime(name, dir_fd=dirfd, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    # ------------------------------------------------------------ metadata

    def _set_metadata(self, fd: int, member: tarfile.TarInfo, dir_path: Path_ | None) -> None:
        """Owner, mode, xattrs and mtime of a file or directory we hold open.

        Order matters: chown(2) clears setuid/setgid bits and security.capability,
        so the owner comes first, then the mode, then the xattrs.
        """
        self._chown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        self._set_xattrs(fd, member)
        mtime = int(member.mtime * 10**9)
        if dir_path is None:
            os.utime(fd, ns=(mtime, mtime))
        else:
            self.dir_mtimes[dir_path] = mtime

    def _set_metadata_at(self, dirfd: int, name: str, member: tarfile.TarInfo) -> None:
        """The same for a symlink or FIFO, which cannot be opened for writing."""
        self._chown_at(dirfd, name, member.uid, member.gid)
        if not member.issym():  # a FIFO we just made: chmod cannot be redirected
            os.chmod(name, member.mode & 0o7777, dir_fd=dirfd)
        if member.pax_headers:
            # lsetxattr on the entry through the directory descriptor: never follows
            # the symlink, because follow_symlinks=False is lsetxattr(2).
            self._set_xattrs(f"/proc/self/fd/{dirfd}/{name}", member)
        mtime = int(member.mtime * 10**9)
        os.utime(name, dir_fd=dirfd, ns=(mtime, mtime), follow_symlinks=False)

    def _chown(self, fd: int, uid: int, gid: int) -> None:
        try:
            os.fchown(fd, uid, gid)  # numeric ids: never looked up through the host's NSS
        except PermissionError:
            if self.is_root:
                raise

    def _chown_at(self, dirfd: int, name: str, uid: int, gid: int) -> None:
        try:
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        except PermissionError:
            if self.is_root:
                raise

    def _set_xattrs(self, target: int | str, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr."):]
            if attr.startswith("trusted.overlay."):
                # Would let a layer forge overlayfs metadata (opaque dirs, redirects).
                self.warn(f"{member.name!r}: ignored xattr {attr}")
                continue
            data = value.encode("utf-8", "surrogateescape")
            try:
                if isinstance(target, int):
                    os.setxattr(target, attr, data)
                else:
                    os.setxattr(target, attr, data, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) or \
                        (self.is_root and attr.startswith("security.capability")):
                    raise ImageError(f"{member.name!r}: cannot set xattr {attr}: {e.strerror}") from None
                self.warn(f"{member.name!r}: xattr {attr} not kept ({e.strerror})")

    # ------------------------------------------------------------ descriptor budget

    def _trim_caches(self) -> None:
        self.lower.trim()
        if len(self.fds) > MAX_CACHED_FDS:
            for path, fd in list(self.fds.items()):
                if path:
                    os.close(fd)
                    del self.fds[path]
