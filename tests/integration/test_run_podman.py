"""A Debian-based image made by podman runs as under podman: dynamic binaries, merged /usr, bash.

The image is the host's own bash and coreutils with their libraries (found
with ldd), in Debian's merged-/usr layout (/bin -> usr/bin), imported and
saved by podman: no network needed, and every file really is Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.podman

PROGRAMS = ("/usr/bin/bash", "/usr/bin/ls", "/usr/bin/cat", "/usr/bin/id", "/usr/bin/env",
            "/usr/bin/readlink")


def _libraries(program: str) -> set[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                found.add(word)
    return found


def _debian_rootfs(top: Path) -> None:
    for d in ("usr/bin", "usr/lib", "usr/lib64", "etc", "tmp", "root", "home/app"):
        (top / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, top / link)
    files = set(PROGRAMS)
    for program in PROGRAMS:
        files |= _libraries(program)
    for f in files:
        real = os.path.realpath(f)
        dest = top / real.lstrip("/").replace("lib/", "usr/lib/", 1) if real.startswith("/lib") \
            else top / real.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dest)
        if f != real:  # keep the name the loader asks for (e.g. /lib64/ld-linux-x86-64.so.2)
            alias = top / f.lstrip("/")
            alias.parent.mkdir(parents=True, exist_ok=True)
            if not alias.exists():
                os.symlink(real, alias)
    (top / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                    "app:x:1234:1234:app:/home/app:/bin/bash\n")
    (top / "etc/group").write_text("root:x:0:\napp:x:1234:\n")
    shutil.copy2("/etc/debian_version", top / "etc/debian_version")


@pytest.fixture
def debian_tar(tmp_path: Path) -> Path:
    if not shutil.which("podman") or not Path("/etc/debian_version").exists():
        pytest.skip("needs podman on a Debian host")
    rootfs = tmp_path / "rootfs"
    _debian_rootfs(rootfs)
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="mc-podman-"))  # podman wants a runroot under 50 characters
    storage = ["--root", str(short / "root"), "--runroot", str(short / "run"), "--storage-driver", "vfs"]
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    out = tmp_path / "debian-mini.tar"
    try:
        _podman(*storage, "import", "--change", 'CMD ["/bin/bash"]', "--change", "WORKDIR /home/app",
                "-", "localhost/debian-mini:test", input=tar)
        _podman(*storage, "save", "--format", "docker-archive", "-o", str(out), "localhost/debian-mini:test")
    finally:
        subprocess.run(["podman", *storage, "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)
    return out


def _podman(*args: str, input: bytes | None = None) -> None:
    result = subprocess.run(["podman", *args], input=input, capture_output=True)
    assert result.returncode == 0, f"podman {args}: {result.stderr.decode(errors='replace')}"


def test_podman_made_debian_image_runs(mc, debian_tar: Path) -> None:
    out = mc("run", "--network", "none", "--rm", "-u", "app", str(debian_tar), "bash", "-c",
             'echo "$BASH_VERSION"; id; pwd; cat /etc/debian_version; readlink /proc/1/exe; ls /')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("5.")
    assert lines[1] == "uid=1234(app) gid=1234(app) groups=1234(app)"
    assert lines[2] == "/home/app"
    assert lines[3] == Path("/etc/debian_version").read_text().strip()
    assert lines[4] == "/usr/bin/bash"
    assert {"bin", "usr", "etc", "proc", "dev", "sys"} <= set(" ".join(lines[5:]).split())
    # the image's default command, too
    out = mc("run", "--network", "none", "--rm", "-i", str(debian_tar), input="echo $0 $((2+3))\n")
    assert out.stdout == "/bin/bash 5\n", out.stderr
