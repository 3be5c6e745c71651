"""A ~250 MB Debian-based image built from Debian's own packages, no registry needed.

Real images are mostly a distribution's files split into a few layers. This
builds one the same way a Dockerfile would (a base layer, then a layer per
`apt-get install`), but from `.deb` files fetched with `apt-get download` and
unpacked with `dpkg-deb -x`, so the only network it needs is Debian's archive.
The archive and the downloaded packages are cached under build/bench/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from images import BuiltImage, image_id_of, write_docker_archive, write_layer

# One entry per layer: what a Dockerfile line would have installed.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["base-files", "libc6", "libgcc-s1", "libstdc++6", "zlib1g", "coreutils", "bash",
              "dash", "tar", "gzip", "sed", "grep", "findutils", "util-linux", "libssl3",
              "openssl", "ca-certificates", "libgnutls30", "libxml2", "libicu72",
              "libsqlite3-0", "libdb5.3", "libtinfo6", "libacl1", "libattr1", "libselinux1",
              "libpcre2-8-0", "libgmp10", "libcrypt1", "libexpat1", "libffi8", "libbz2-1.0",
              "liblzma5", "libzstd1", "libreadline8", "libncursesw6", "readline-common",
              "libuuid1", "libblkid1", "libmount1", "libsmartcols1", "libcap-ng0", "libaudit1",
              "libpam0g", "libsystemd0", "libmd0", "libnettle8", "libhogweed6", "libp11-kit0",
              "libtasn1-6", "libunistring2", "libidn2-0", "libgdbm6", "libgdbm-compat4"]),
    ("perl", ["perl-base", "perl-modules-5.36", "libperl5.36", "perl"]),
    ("python", ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                "python3.11"]),
    ("tools", ["cpp-12", "binutils", "libbinutils", "libmpfr6", "libmpc3", "libisl23",
               "libjansson4", "libctf0", "libctf-nobfd0", "binutils-common", "gcc-12-base",
               "binutils-x86-64-linux-gnu"]),
]

TAG = "bench/debian:latest"


def download(packages: list[str], cache: Path) -> list[Path]:
    """`apt-get download` the packages not yet in `cache` (one call, Debian's archive only)."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(cache.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", "-q", *missing], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
    return [sorted(cache.glob(f"{p}_*.deb"))[-1] for p in packages]


def unpack_debs(debs: list[Path], into: Path) -> None:
    """`dpkg-deb -x`: a package's files without running its maintainer scripts."""
    into.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)


def accounts_layer(into: Path) -> None:
    """What base-passwd's postinst and a Dockerfile's last lines would leave: users, a workdir."""
    (into / "etc").mkdir(parents=True)
    (into / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (into / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for d in ("root", "tmp", "proc", "sys", "dev", "run"):
        (into / d).mkdir()
    (into / "tmp").chmod(0o1777)


def build(cache_dir: Path) -> tuple[BuiltImage, list[Path]]:
    """The cached Debian archive and its gzipped layer files, built on first use."""
    archive = cache_dir / "debian.tar"
    layer_dir = cache_dir / "debian-layers"
    stamp = layer_dir / "order"
    if archive.exists() and stamp.exists():
        layers = [layer_dir / name for name in stamp.read_text().split()]
        return BuiltImage(archive, image_id_of(archive)), layers

    work = cache_dir / "debian-work"
    if work.exists():
        shutil.rmtree(work)
    if layer_dir.exists():
        shutil.rmtree(layer_dir)
    blobs = []
    for i, (name, packages) in enumerate(LAYERS):
        print(f"debian image: layer {name} ({len(packages)} packages)", file=sys.stderr)
        tree = work / name
        unpack_debs(download(packages, cache_dir / "debs"), tree)
        blobs.append(write_layer(tree, layer_dir / f"{i}-{name}.tar.gz",
                                 f"RUN apt-get install -y {' '.join(packages)}"))
        shutil.rmtree(tree)
    accounts_layer(work / "accounts")
    blobs.append(write_layer(work / "accounts", layer_dir / f"{len(LAYERS)}-accounts.tar.gz",
                             "COPY passwd group /etc/"))
    shutil.rmtree(work)
    image = write_docker_archive(archive, blobs, TAG, ["/bin/bash"])
    stamp.write_text("\n".join(b.path.name for b in blobs) + "\n")
    return image, [b.path for b in blobs]


if __name__ == "__main__":
    built, _ = build(Path(sys.argv[1] if len(sys.argv) > 1 else "build/bench"))
    print(built.archive, built.image_id)
