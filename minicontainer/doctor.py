"""`minicontainer doctor`: what this host can do, tried for real, and what to do about the rest.

A container runtime is a user of a few kernel features; when one is missing,
its error arrives late and cryptic ("Operation not permitted" from some
mount). Each check here *tries* the feature the way the runtime will use it,
in a short-lived child process so nothing stays behind: unshare(2) each
namespace type, mount(2) an overlay, pivot_root(2) on the store's filesystem,
read the cgroup mounts, look for nftables and a static busybox.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minicontainer.errors import MiniContainerError
from minicontainer.store import Store, remove_tree

OK, MISSING, NOTE = "ok", "missing", "note"


@dataclass
class Check:
    """One line of the report: what was tried, how it went, and what to do if it failed."""

    name: str
    status: str            # ok, missing, or note (missing but minicontainer copes)
    detail: str
    fix: str = ""


def _try(work: Callable[[], object], unshare_flags: int | None = None) -> str | None:
    """Run `work` in a throwaway child (commit.in_child); None if it worked, else the error."""
    from minicontainer.commit import in_child

    try:
        in_child(work, unshare_flags)
        return None
    except MiniContainerError as e:
        return str(e)


def check_root() -> Check:
    """Namespaces, mounts and cgroups need CAP_SYS_ADMIN: this runtime runs as root."""
    uid = os.geteuid()
    if uid == 0:
        return Check("root", OK, "running as uid 0")
    return Check("root", MISSING, f"running as uid {uid}",
                 "run minicontainer as root (sudo); it does not do rootless containers")


def check_namespaces() -> list[Check]:
    """unshare(2) each namespace type in a child: the first thing every `run` does."""
    from minicontainer import linux

    hints = {"user": "sysctl user.max_user_namespaces=15000 (not needed as root: minicontainer "
                     "uses no user namespace)",
             "cgroup": "a kernel of 4.6 or newer; without it the container sees the host's cgroup paths"}
    checks = []
    for kind, (_, flag) in linux.NAMESPACES.items():
        error = _try(lambda: True, flag)
        if error is None:
            flag_name = next(n for n in dir(linux) if n.startswith("CLONE_NEW") and getattr(linux, n) == flag)
            checks.append(Check(f"{kind} namespace", OK, f"unshare({flag_name}) works"))
        else:
            optional = kind in ("user", "cgroup")
            checks.append(Check(f"{kind} namespace", NOTE if optional else MISSING, error,
                                hints.get(kind, f"a kernel built with the {kind} namespace "
                                                "(CONFIG_*_NS), and root")))
    return checks


def check_overlayfs(store: Store) -> Check:
    """mount(2) a tiny overlay in a private mount namespace: what every container's root is."""
    from minicontainer import linux

    if "\toverlay\n" not in Path("/proc/filesystems").read_text():
        return Check("overlayfs", NOTE, "the kernel does not list overlay in /proc/filesystems",
                     "modprobe overlay; until then each container gets a copy of its layers (slow)")
    work = store.mkdtemp("doctor-")
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (work / sub).mkdir()
        (work / "lower" / "file").write_text("from the lower layer\n")
        data = f"lowerdir={work}/lower,upperdir={work}/upper,workdir={work}/work"

        def mount_and_write() -> bool:
            linux.mount("overlay", str(work / "merged"), "overlay", 0, data)
            (work / "merged" / "file").write_text("written through the overlay\n")
            return True

        error = _try(mount_and_write)
        copied_up = (work / "upper" / "file").exists()
        untouched = (work / "lower" / "file").read_text() == "from the lower layer\n"
    finally:
        remove_tree(work)
    if error is None and copied_up and untouched:
        return Check("overlayfs", OK, "mounted on the store's filesystem; a write was copied up")
    return Check("overlayfs", NOTE, error or "the overlay did not copy the write up",
                 "put the store (--root) on ext4 or xfs; else each container copies its layers")


def check_pivot_root(store: Store) -> Check:
    """pivot_root(2) into a directory of the store, in a private mount namespace.

    pivot_root refuses when the current root is the initial ramfs (some
    minimal VMs and containers): runtimes then need MS_MOVE + chroot.
    """
    from minicontainer import linux

    new_root = store.mkdtemp("doctor-root-")

    def pivot() -> bool:
        linux.mount(str(new_root), str(new_root), None, linux.MS_BIND)
        (new_root / "old").mkdir()
        linux.pivot_root(str(new_root), str(new_root / "old"))
        linux.umount2("/old", linux.MNT_DETACH)
        return True

    try:
        error = _try(pivot)
    finally:
        remove_tree(new_root)
    if error is None:
        return Check("pivot_root", OK, f"works on the store's filesystem ({_fstype(store.root)})")
    return Check("pivot_root", NOTE, error,
                 "the root is probably an initramfs: the runtime falls back to MS_MOVE and chroot")


def _fstype(path: Path) -> str:
    from minicontainer.container import _filesystem_type

    return _filesystem_type(path)


def check_cgroups() -> list[Check]:
    """Which cgroup interface is mounted (v1, v2, hybrid), and the controllers limits need."""
    from minicontainer import cgroups

    try:
        layout = cgroups.detect()
        mode = layout.mode.value
    except MiniContainerError as e:
        return [Check("cgroups", MISSING, str(e), "mount cgroup2 on /sys/fs/cgroup")]
    checks = [Check("cgroups", OK, f"{mode}: v1 controllers {', '.join(sorted(layout.v1)) or 'none'}; "
                                   f"v2 at {layout.v2 or '-'} offering "
                                   f"{', '.join(sorted(layout.v2_controllers)) or 'nothing'}")]
    for controller, flag in (("memory", "--memory"), ("pids", "--pids-limit"), ("cpu", "--cpus")):
        where = layout.where(controller)
        if where:
            checks.append(Check(f"{controller} controller", OK, f"in {where}: {flag} works"))
        else:
            checks.append(Check(f"{controller} controller", MISSING, f"{flag} cannot be enforced",
                                f"enable the {controller} controller (cgroup_enable={controller} on "
                                "the kernel command line, or +{0} in cgroup.subtree_control)".format(controller)))
    return checks


NAT_TRIAL = """
table ip doctor {
    chain postrouting { type nat hook postrouting priority srcnat; masquerade; }
    chain prerouting { type nat hook prerouting priority dstnat; tcp dport 8080 dnat to 10.0.0.2:80; }
}
"""


def check_nat() -> Check:
    """Published ports (-p) and outgoing traffic from a bridge need nftables NAT.

    Tried for real: `nft` loads a masquerade and a DNAT rule inside a
    throwaway network namespace, so the host's own rules are never touched.
    """
    import subprocess

    from minicontainer import linux

    nft = shutil.which("nft")
    if nft is None:
        return Check("NAT (nftables)", NOTE, "no nft tool",
                     "apt-get install nftables; --network none and host work without it")

    def load_rules() -> bool:
        done = subprocess.run([nft, "-f", "-"], input=NAT_TRIAL, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise OSError(done.stderr.strip().splitlines()[0] if done.stderr.strip() else "nft failed")
        return True

    error = _try(load_rules, linux.CLONE_NEWNET)
    if error is None:
        return Check("NAT (nftables)", OK, f"{nft} loaded masquerade and DNAT rules: -p works")
    return Check("NAT (nftables)", NOTE, error,
                 "a kernel with nf_tables and nft_nat (CONFIG_NFT_NAT); --network none and host work without it")


def check_busybox() -> Check:
    """The demo image is made of a static busybox (make image)."""
    from minicontainer.demo import is_static_elf

    candidates = [os.environ.get("BUSYBOX"), shutil.which("busybox")]
    for candidate in filter(None, candidates):
        if is_static_elf(Path(candidate)):
            return Check("busybox", OK, f"{Path(candidate).resolve()} is statically linked: "
                                        "`make image` can build the demo image")
    return Check("busybox", NOTE, "no statically linked busybox on PATH",
                 "apt-get install busybox-static (`make image` can also fetch it with apt-get download)")


def run_checks(store: Store) -> list[Check]:
    """Every check, in the order a container needs them."""
    checks = [check_root()]
    if checks[0].status != OK:
        return checks  # without root every other trial fails for the same reason
    checks += check_namespaces()
    checks += [check_overlayfs(store), check_pivot_root(store)]
    checks += check_cgroups()
    checks += [check_nat(), check_busybox()]
    return checks


def report(checks: list[Check]) -> str:
    """The checks as aligned lines, a fix under each line that is not ok."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:8} {c.name:{width}}  {c.detail}")
        if c.status != OK and c.fix:
            lines.append(f"{'':8} {'':{width}}  → {c.fix}")
    return "\n".join(lines)
