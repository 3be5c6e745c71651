"""The demo image: how an image archive is made, byte by byte, from plain files.

`python -m minicontainer.demo build OUT` writes a `docker save` archive from the
files under `rootfs/` and a static busybox; `tour ARCHIVE` loads it and shows
what is inside. Reading `write_docker_save` is the quickest way to see that an
image is nothing but tar files and a little JSON: layer tars, a config that
lists their sha256 digests, and a `manifest.json` that ties it together.

Every tar entry gets a fixed mtime and owner, so the same inputs always give
the same bytes, hence the same digests, hence the same image id.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicontainer.errors import ImageError

FIXED_MTIME = 1700000000  # 2023-11-14: any fixed date makes builds reproducible
FIXED_CREATED = "2023-11-14T22:13:20Z"
DEMO_TAG = "minicontainer-demo:latest"
ROOTFS = Path(__file__).resolve().parent.parent / "rootfs"
PT_INTERP = 3  # ELF program header type naming the dynamic loader

# Used when `busybox --list-full` cannot run (say, a busybox for another CPU).
FALLBACK_APPLETS = """
bin/sh bin/ash bin/ls bin/cat bin/echo bin/ps bin/hostname bin/mkdir bin/touch bin/rm
bin/sleep bin/ping bin/mount bin/pwd bin/dd bin/grep bin/sed bin/true bin/false bin/kill
bin/stat bin/mknod bin/uname bin/df bin/printf bin/sync bin/usleep bin/vi bin/cp bin/mv
bin/chmod bin/ln bin/date bin/more bin/netstat bin/su bin/tar bin/gzip bin/pidof
bin/rmdir bin/id bin/ip bin/ifconfig bin/route bin/nslookup bin/umount bin/chown
usr/bin/env usr/bin/whoami usr/bin/head usr/bin/find usr/bin/yes usr/bin/wc usr/bin/seq
usr/bin/tee usr/bin/cut usr/bin/test usr/bin/[ usr/bin/du usr/bin/xargs usr/bin/tr
usr/bin/sort usr/bin/readlink usr/bin/basename usr/bin/dirname usr/bin/cmp usr/bin/diff
usr/bin/tail usr/bin/less usr/bin/awk usr/bin/od usr/bin/hexdump usr/bin/which
usr/bin/timeout usr/bin/md5sum usr/bin/sha256sum usr/bin/free usr/bin/mkfifo
usr/bin/unshare usr/bin/nsenter usr/bin/setsid usr/bin/wget usr/bin/nc usr/bin/top
usr/sbin/chroot usr/sbin/httpd
""".split()


@dataclass
class Entry:
    """One tar entry of a layer, described by value (what `tarfile.TarInfo` needs)."""

    name: str
    kind: str = "file"          # file, dir, symlink, hardlink, fifo, char, block
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: float = FIXED_MTIME
    xattrs: dict[str, bytes] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE,
          "block": tarfile.BLKTYPE}


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """A layer as an uncompressed tar (PAX format: long names and xattrs fit)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.uname = info.gname = ""  # numeric ids only: names mean nothing in an image
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                    for k, v in e.xattrs.items()}
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_config(layers: list[bytes], config: dict[str, Any] | None = None,
                 history: list[dict[str, Any]] | None = None) -> bytes:
    """The image config JSON: runtime defaults (`config`), diff_ids, history, platform."""
    from minicontainer.archive import host_platform

    _, arch, _ = host_platform()
    doc = {
        "architecture": arch, "os": "linux", "created": FIXED_CREATED,
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
        "history": history or [{"created": FIXED_CREATED, "created_by": f"layer {i + 1}"}
                               for i in range(len(layers))],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _tar_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_docker_save(out: Path, layers: list[bytes], config_bytes: bytes,
                      tags: list[str]) -> str:
    """Write the classic `docker save` layout; returns the image id.

        <hex of layer>/layer.tar   each layer, uncompressed
        <hex of config>.json       the config (its sha256 is the image id)
        manifest.json              [{"Config": …, "RepoTags": […], "Layers": […]}]
    """
    config_hex = sha256(config_bytes).split(":")[1]
    layer_names = [f"{sha256(layer).split(':')[1]}/layer.tar" for layer in layers]
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": tags, "Layers": layer_names}]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, layer in zip(layer_names, layers):
            _tar_file(tar, name, layer)
        _tar_file(tar, f"{config_hex}.json", config_bytes)
        _tar_file(tar, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, out)
    return "sha256:" + config_hex


# ---------------------------------------------------------------- busybox


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP header (no dynamic loader needed).

    Read the ELF header (elf(5)) ourselves rather than run `file`: the program
    header table lists segments, and PT_INTERP names the loader a dynamic
    binary needs, which a container's root would lack.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF":
                return False
            is64, little = head[4] == 2, head[5] == 1
            end = "<" if little else ">"
            if is64:
                phoff, = struct.unpack(end + "Q", head[32:40])
                phentsize, phnum = struct.unpack(end + "HH", head[54:58])
            else:
                phoff, = struct.unpack(end + "I", head[28:32])
                phentsize, phnum = struct.unpack(end + "HH", head[42:46])
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, struct.error):
        return False
    for i in range(phnum):
        p_type, = struct.unpack(end + "I", table[i * phentsize:i * phentsize + 4])
        if p_type == PT_INTERP:
            return False
    return True


def find_busybox(build_dir: Path) -> Path:
    """A statically linked busybox: $BUSYBOX, else on PATH, else fetched with apt-get."""
    if os.environ.get("BUSYBOX"):
        chosen = Path(os.environ["BUSYBOX"])
        if not is_static_elf(chosen):
            raise ImageError(f"$BUSYBOX={chosen} is not a statically linked executable")
        return chosen
    on_path = shutil.which("busybox")
    if on_path and is_static_elf(Path(on_path)):
        return Path(on_path).resolve()
    unpacked = build_dir / "busybox-static" / "bin" / "busybox"
    if is_static_elf(unpacked):
        return unpacked
    return _download_busybox(build_dir, unpacked)


def _download_busybox(build_dir: Path, unpacked: Path) -> Path:
    """`apt-get download` fetches a .deb without installing it (no root needed)."""
    how = ("install the busybox-static package (apt-get install busybox-static), "
           "or set BUSYBOX to a statically linked busybox")
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise ImageError(f"no static busybox found: {how}")
    work = build_dir / "busybox-deb"
    work.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", "-q", "busybox-static"], cwd=work,
                       check=True, capture_output=True)
        deb = sorted(work.glob("busybox-static_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked.parent.parent)],
                       check=True, capture_output=True)
    except (subprocess.CalledProcessError, IndexError, OSError) as e:
        raise ImageError(f"no static busybox found and apt-get download failed ({e}): {how}") from None
    if not is_static_elf(unpacked):
        raise ImageError(f"the busybox-static package held no static busybox: {how}")
    return unpacked


def busybox_applets(busybox: Path) -> list[str]:
    """Every applet path busybox knows (`bin/sh`, `usr/bin/wget`, …)."""
    try:
        listed = subprocess.run([str(busybox), "--list-full"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    return sorted(set(listed or FALLBACK_APPLETS) - {"bin/busybox"})


def busybox_entries(busybox: Path) -> list[Entry]:
    """A minimal root: the usual directories, /bin/busybox and a symlink per applet."""
    entries = [Entry(d, "dir", mode=0o755) for d in (
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin",
        "etc", "dev", "proc", "sys", "run", "var", "home")]
    entries += [Entry("tmp", "dir", mode=0o1777), Entry("root", "dir", mode=0o700),
                Entry("var/run", "symlink", linkname="/run"),
                Entry("bin/busybox", data=busybox.read_bytes(), mode=0o755)]
    entries += [Entry(applet, "symlink", linkname="/bin/busybox") for applet in busybox_applets(busybox)]
    return entries


def tree_entries(top: Path) -> list[Entry]:
    """Plain files under `top` as entries (parents first); executables keep 0755."""
    entries = []
    for path in sorted(top.rglob("*")):
        name = path.relative_to(top).as_posix()
        if path.is_dir():
            entries.append(Entry(name, "dir", mode=0o755))
        else:
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            entries.append(Entry(name, data=path.read_bytes(), mode=mode))
    return entries


def build_demo_image(out: Path, busybox: Path) -> None:
    """The demo archive: base layer (busybox + rootfs/base), second layer (rootfs/layer2)."""
    base = busybox_entries(busybox) + [Entry("home/student", "dir", mode=0o755, uid=1000, gid=1000)]
    base += [e for e in tree_entries(ROOTFS / "base") if e.kind != "dir"]
    layers = [layer_tar(base), layer_tar(tree_entries(ROOTFS / "layer2"))]
    config = image_config(layers, {
        "Cmd": ["/usr/local/bin/hello"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "DEMO=an environment variable from the image config"],
        "WorkingDir": "/home/student",
    }, [
        {"created": FIXED_CREATED, "created_by": "ADD busybox and rootfs/base /"},
        {"created": FIXED_CREATED, "created_by": "ADD rootfs/layer2 / (changes etc/motd, deletes etc/draft.txt)"},
        {"created": FIXED_CREATED, "created_by": 'CMD ["/usr/local/bin/hello"]', "empty_layer": True},
    ])
    write_docker_save(out, layers, config, [DEMO_TAG])


# ---------------------------------------------------------------- the tour


def tour(archive: Path) -> None:
    """Load the demo archive and show what an image is made of."""
    from minicontainer import image as images
    from minicontainer.store import Store

    store = Store.open()
    img = images.load(store, archive, progress=True)
    print(f"Loaded {archive} into {store.root}")
    print(f"  image id (sha256 of its config): {img.id}")
    print(f"  tags: {', '.join(img.tags) or '<none>'}")
    runtime = img.config.get("config", {})
    for key in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User"):
        if runtime.get(key):
            print(f"  {key}: {json.dumps(runtime[key])}")
    print("\nLayers, lowest first (each one a read-only overlayfs lowerdir):")
    for diff_id, folder in zip(img.layers, img.layer_dirs(store)):
        files = sum(1 for _ in folder.rglob("*"))
        print(f"  {diff_id[:19]}…  {files:4d} entries  {folder}")
        for path in sorted(folder.rglob("*")):
            if path.is_char_device() and os.stat(path, follow_symlinks=False).st_rdev == 0:
                print(f"      whiteout: /{path.relative_to(folder)} (a 0/0 character device)")
    print("\nHistory, newest first:")
    for row in images.history(img):
        layer = row["layer"][7:19] if row["layer"] else "<no layer>"
        print(f"  {layer:12}  {row['created_by']}")

    # Then the README's lesson, played for real in a throwaway store (lesson.py).
    from minicontainer import lesson

    print("\nThe lesson, step by step" + ("" if os.environ.get("PAUSE") == "1" else
                                          " (PAUSE=1 make demo waits for Enter between steps)"))
    lesson.play(archive, pause=os.environ.get("PAUSE") == "1")


def main(argv: list[str]) -> int:
    """`build OUT` or `tour ARCHIVE`."""
    from minicontainer.errors import MiniContainerError

    if len(argv) != 2 or argv[0] not in ("build", "tour"):
        print("usage: python -m minicontainer.demo build OUT | tour ARCHIVE", file=sys.stderr)
        return 2
    try:
        if argv[0] == "build":
            out = Path(argv[1])
            busybox = find_busybox(out.parent)
            build_demo_image(out, busybox)
            print(f"built {out} from {ROOTFS} and {busybox}")
        else:
            tour(Path(argv[1]))
    except MiniContainerError as e:
        print(f"minicontainer: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
