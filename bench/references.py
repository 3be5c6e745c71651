"""The contenders: minicontainer, runc, podman, and the floors (unshare+chroot, GNU tar).

Each class here knows how to call one tool against state of its own (a
temporary store, a temporary podman storage, a runc state directory), and how
to leave nothing behind afterwards: no container, mount, cgroup or file.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# crun refuses this host's hybrid cgroups, and podman's default ulimits exceed the
# hard limits of such VMs; runc with cgroupfs and lower ulimits run everywhere.
PODMAN_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def ensure_references(log) -> list[str]:
    """Install runc and podman from Debian's packages when missing; notes say what failed."""
    notes = []
    missing = [tool for tool in ("runc", "podman") if shutil.which(tool) is None]
    if missing:
        log(f"installing {' '.join(missing)} (Debian packages)")
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
            if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                notes.append(f"could not install {' '.join(missing)}: their rows are skipped")
                break
    if shutil.which("podman") and not CONTAINERS_CONF.exists():
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(PODMAN_CONF)
        notes.append(f"wrote {CONTAINERS_CONF} (runc, cgroupfs, lower default ulimits)")
    return notes


def netavark_chains() -> set[tuple[str, str]]:
    """(table, chain) of podman's firewall chains: netavark keeps them after its last container."""
    chains = set()
    for table in ("filter", "nat"):
        done = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True)
        chains |= {(table, line[1:].split()[0]) for line in done.stdout.splitlines()
                   if line.startswith(":NETAVARK")}
    return chains


def remove_netavark_chains(new: set[tuple[str, str]]) -> None:
    """Delete the chains podman created during the benchmark, and the jumps into them.

    Only chains absent before the benchmark, and only when no podman container
    runs any more (no conmon), so nobody else's containers lose their rules.
    """
    if not new or any(process_named("conmon")):
        return
    for table in {t for t, _ in new}:
        rules = subprocess.run(["iptables-save", "-t", table], capture_output=True,
                               text=True).stdout.splitlines()
        names = {c for t, c in new if t == table}
        for rule in rules:
            words = rule.split()
            if rule.startswith("-A ") and words[1] not in names and "-j" in words \
                    and words[words.index("-j") + 1] in names:
                subprocess.run(["iptables", "-t", table, "-D", *shlex.split(rule)[1:]])
        for chain in names:
            subprocess.run(["iptables", "-t", table, "-F", chain])
        for chain in names:
            subprocess.run(["iptables", "-t", table, "-X", chain])


def process_named(program: str) -> list[int]:
    """Pids whose executable's base name is `program` (read-only: nothing is signalled)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if proc.name.isdigit() and argv0 and Path(argv0.decode(errors="replace")).name == program:
            found.append(int(proc.name))
    return found


def unmount_under(path: Path) -> None:
    """Detach every mount at or below `path`, deepest first, so the tree can be deleted."""
    prefix = str(path.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")},
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)


def remove_tree(path: Path) -> None:
    if path.exists():
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class MiniContainer:
    """The project's CLI against one store, called as a user would (the console script)."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        script = Path(sys.executable).parent / "minicontainer"
        exe = [str(script)] if script.exists() else [sys.executable, "-m", "minicontainer"]
        return [*exe, "--root", str(self.root), *args]

    def call(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=300)

    def reset(self) -> None:
        """Remove the store, after its containers and networks: a bridge, its veths and nft
        rules live outside the store and would outlive it (the default `bridge` is kept
        until `network rm`, as docker0 is)."""
        if self.root.exists():
            ids = self.call("ps", "-a", "-q").stdout.split()
            if ids:
                self.call("rm", "-f", *ids)
            for line in self.call("network", "ls").stdout.splitlines()[1:]:  # NAME BRIDGE SUBNET …
                self.call("network", "rm", line.split()[0])
        remove_tree(self.root)


@dataclass
class Podman:
    """podman with a storage root, run root and tmpdir of its own, so the host's is never touched."""

    base: Path

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "run"),
                "--tmpdir", str(self.base / "tmp"), "--runtime", "runc",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]

    def call(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=600)

    def reset(self) -> None:
        """Remove its containers and images, then the storage itself."""
        if (self.base / "root").exists():
            self.call("rm", "-af", "-t", "0")
            self.call("rmi", "-af")
        remove_tree(self.base)


@dataclass
class Runc:
    """runc on a bundle made by `runc spec`: the same work without a Python CLI above it."""

    bundle: Path
    state: Path
    ids: count = field(default_factory=count)

    def make_bundle(self, rootfs: Path) -> None:
        """`runc spec`, then: no terminal, `true` as the process, a fresh network namespace (only lo)."""
        self.bundle.mkdir(parents=True, exist_ok=True)
        config_path = self.bundle / "config.json"
        config_path.unlink(missing_ok=True)
        subprocess.run(["runc", "spec", "--bundle", str(self.bundle)], check=True)
        config = json.loads(config_path.read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/true"]
        config["root"] = {"path": str(rootfs.resolve()), "readonly": True}
        kinds = {ns["type"] for ns in config["linux"]["namespaces"]}
        assert {"pid", "mount", "network", "uts", "ipc"} <= kinds, kinds
        config_path.write_text(json.dumps(config, indent=2))

    def run_argv(self) -> list[str]:
        return ["runc", "--root", str(self.state), "run", "--bundle", str(self.bundle),
                f"bench-{next(self.ids)}"]

    def reset(self) -> None:
        remove_tree(self.state)
        remove_tree(self.bundle)


def unshare_floor(rootfs: Path) -> list[str]:
    """The least any runtime must do: new namespaces, a changed root, exec. No Python, no Go."""
    return ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
            "chroot", str(rootfs), "/bin/true"]


def tar_floor(layers: list[Path], into: Path) -> None:
    """GNU tar extracting each gzipped layer into its own directory, one after the other."""
    for i, layer in enumerate(layers):
        target = into / str(i)
        target.mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(layer), "--numeric-owner", "-C", str(target)],
                       check=True)
