"""Confinement with real effects: what root in a default container cannot do, and --privileged can."""

from __future__ import annotations

from pathlib import Path

import pytest

from minicontainer import security

DEFAULT_CAPS = f"{0xA80425FB:016x}"  # Docker's 14, as /proc/self/status prints them


def status_field(mc, image: Path, name: str, *flags: str) -> str:
    out = mc("run", "--network", "none", "--rm", *flags, str(image), "grep", f"^{name}:", "/proc/self/status", check=True)
    return out.stdout.split()[1]


# /dev/loop-control (c 10:237): a host device outside the allow-list that is
# harmless to open (it acts only on ioctl). The shell's `exec 3<` only opens it.
LOOP_CONTROL = (10, 237)


def test_default_capabilities_are_dockers(mc, demo_tar: Path) -> None:
    out = mc("run", "--network", "none", "--rm", str(demo_tar), "grep", "^Cap", "/proc/self/status", check=True).stdout
    caps = dict(line.split(":\t") for line in out.splitlines())
    assert caps["CapBnd"] == caps["CapEff"] == caps["CapPrm"] == DEFAULT_CAPS
    assert caps["CapInh"] == caps["CapAmb"] == "0" * 16


def test_non_root_user_has_no_effective_capabilities(mc, demo_tar: Path) -> None:
    assert status_field(mc, demo_tar, "CapEff", "-u", "1000") == "0" * 16
    assert status_field(mc, demo_tar, "CapPrm", "-u", "1000") == "0" * 16
    assert status_field(mc, demo_tar, "CapBnd", "-u", "1000") == DEFAULT_CAPS


def test_cap_add_and_drop(mc, demo_tar: Path) -> None:
    added = int(status_field(mc, demo_tar, "CapEff", "--cap-add", "sys_admin", "--cap-drop", "CHOWN"), 16)
    assert added & (1 << security.CAPABILITIES["CAP_SYS_ADMIN"])
    assert not added & (1 << security.CAPABILITIES["CAP_CHOWN"])
    assert status_field(mc, demo_tar, "CapBnd", "--cap-drop", "ALL") == "0" * 16
    full = Path("/proc/self/status").read_text().split("CapBnd:")[1].split()[0]
    assert status_field(mc, demo_tar, "CapEff", "--privileged") == full


def test_seccomp_and_no_new_privileges(mc, demo_tar: Path) -> None:
    assert status_field(mc, demo_tar, "Seccomp") == "2"  # a filter is installed
    assert status_field(mc, demo_tar, "Seccomp", "--security-opt", "seccomp=unconfined") == "0"
    assert status_field(mc, demo_tar, "Seccomp", "--privileged") == "0"
    assert status_field(mc, demo_tar, "NoNewPrivs") == "0"
    assert status_field(mc, demo_tar, "NoNewPrivs", "--security-opt", "no-new-privileges") == "1"


def test_seccomp_refuses_a_user_namespace(mc, demo_tar: Path) -> None:
    refused = mc("run", "--network", "none", "--rm", str(demo_tar), "unshare", "-U", "true")
    assert refused.returncode != 0 and "not permitted" in refused.stderr
    allowed = mc("run", "--network", "none", "--rm", "--security-opt", "seccomp=unconfined", str(demo_tar), "unshare", "-U", "true")
    assert allowed.returncode == 0, allowed.stderr


def test_mount_fails_by_default_and_works_privileged(mc, demo_tar: Path) -> None:
    cmd = ["sh", "-c", "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && grep -c /mnt/t /proc/mounts"]
    refused = mc("run", "--network", "none", "--rm", str(demo_tar), *cmd)
    assert refused.returncode != 0
    assert "denied" in refused.stderr or "not permitted" in refused.stderr
    allowed = mc("run", "--network", "none", "--rm", "--privileged", str(demo_tar), *cmd)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "1"


@pytest.mark.skipif(not Path("/dev/loop-control").exists(), reason="no loop driver on this host")
def test_a_host_device_node_cannot_be_opened(mc, demo_tar: Path) -> None:
    major, minor = LOOP_CONTROL
    open_it = "exec 3<{0} && echo opened"
    # a node made with mknod, in /dev or in the image's root: both are mounted nodev
    for where in ("/dev/lc", "/lc"):
        made = mc("run", "--network", "none", "--rm", str(demo_tar), "sh", "-c",
                  f"mknod {where} c {major} {minor} && " + open_it.format(where))
        assert "Permission denied" in made.stderr and "opened" not in made.stdout, made.stderr
    # a node that reaches the container another way (a volume keeps the host's flags):
    # the devices cgroup refuses it
    volume = ["-v", "/dev/loop-control:/mnt/lc"]
    refused = mc("run", "--network", "none", "--rm", *volume, str(demo_tar), "sh", "-c", open_it.format("/mnt/lc"))
    assert "Operation not permitted" in refused.stderr and "opened" not in refused.stdout, refused.stderr
    # --privileged: every device, and a /dev where a new node works; the image's root stays nodev
    allowed = mc("run", "--network", "none", "--rm", "--privileged", *volume, str(demo_tar), "sh", "-c", open_it.format("/mnt/lc"))
    assert allowed.stdout.strip() == "opened", allowed.stderr
    made = mc("run", "--network", "none", "--rm", "--privileged", str(demo_tar), "sh", "-c",
              f"mknod /dev/lc c {major} {minor} && " + open_it.format("/dev/lc"))
    assert made.stdout.strip() == "opened", made.stderr
    in_root = mc("run", "--network", "none", "--rm", "--privileged", str(demo_tar), "sh", "-c",
                 f"mknod /lc c {major} {minor} && " + open_it.format("/lc"))
    assert "Permission denied" in in_root.stderr, in_root.stderr


def test_dev_is_nodev_but_its_devices_work(mc, demo_tar: Path) -> None:
    out = mc("run", "--network", "none", "--rm", str(demo_tar), "grep", " /dev tmpfs ", "/proc/mounts", check=True)
    assert "nodev" in out.stdout.split()[3].split(",")


def test_harmless_devices_work(mc, demo_tar: Path) -> None:
    out = mc("run", "--network", "none", "--rm", str(demo_tar), "sh", "-c",
             "head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo ok",
             check=True)
    assert out.stdout.split() == ["4", "4", "ok"]


@pytest.mark.skipif(not Path("/proc/sysrq-trigger").exists(), reason="kernel without CONFIG_MAGIC_SYSRQ")
def test_sysrq_trigger_is_read_only(mc, demo_tar: Path) -> None:
    # "h" only prints the SysRq help to the kernel log: harmless on the host
    refused = mc("run", "--network", "none", "--rm", str(demo_tar), "sh", "-c", "echo h > /proc/sysrq-trigger")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    allowed = mc("run", "--network", "none", "--rm", "--privileged", str(demo_tar), "sh", "-c", "echo h > /proc/sysrq-trigger")
    assert allowed.returncode == 0, allowed.stderr


def test_proc_sys_is_read_only(mc, demo_tar: Path) -> None:
    out = mc("run", "--network", "none", "--rm", str(demo_tar), "sh", "-c", "echo 1 > /proc/sys/vm/drop_caches")
    assert out.returncode != 0 and "Read-only file system" in out.stderr


@pytest.mark.parametrize("path", ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"])
def test_host_secrets_in_proc_are_masked(mc, demo_tar: Path, path: str) -> None:
    if not Path(path).exists():
        pytest.skip(f"this kernel has no {path}")
    out = mc("run", "--network", "none", "--rm", str(demo_tar), "sh", "-c", f"head -c 16 {path} | wc -c", check=True)
    assert out.stdout.strip() == "0"  # /dev/null is bound over it
    privileged = mc("run", "--network", "none", "--rm", "--privileged", str(demo_tar), "sh", "-c", f"head -c 16 {path} | wc -c")
    assert privileged.stdout.strip() == "16", privileged.stderr


def test_sys_firmware_is_masked(mc, demo_tar: Path) -> None:
    if not any(Path("/sys/firmware").glob("*")):
        pytest.skip("this host's /sys/firmware is empty")
    out = mc("run", "--network", "none", "--rm", str(demo_tar), "sh", "-c", "ls /sys/firmware | wc -l", check=True)
    assert out.stdout.strip() == "0"  # an empty read-only tmpfs is mounted over it


def test_exec_gets_the_same_confinement(mc, demo_tar: Path) -> None:
    cid = mc("run", "--network", "none", "-d", str(demo_tar), "sleep", "300", check=True).stdout.strip().splitlines()[-1]
    try:
        out = mc("exec", cid, "grep", "-E", "^(CapEff|CapBnd|Seccomp):", "/proc/self/status", check=True).stdout
        fields = dict(line.split(":\t") for line in out.splitlines())
        assert fields == {"CapEff": DEFAULT_CAPS, "CapBnd": DEFAULT_CAPS, "Seccomp": "2"}
    finally:
        mc("rm", "-f", cid, check=True)
