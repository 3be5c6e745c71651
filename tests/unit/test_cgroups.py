"""cgroups.py without root: detection and file layout on fake v1, v2 and hybrid trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from minicontainer import cgroups
from minicontainer.cgroups import Cgroup, CgroupMode
from minicontainer.errors import MiniContainerError

# Real mountinfo lines, as on a Debian 12 / Fedora host (v2), an old CentOS 7 (v1)
# and these hybrid machines (v1 controllers plus an empty unified tree).
V2_MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
V1_MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
HYBRID_MOUNTINFO = V1_MOUNTINFO + (
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")


def fake_host(tmp_path: Path, mountinfo: str, v2_controllers: str = "") -> cgroups.Layout:
    """Write `mountinfo` and the cgroup roots it names below tmp_path; detect from them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "mountinfo").write_text(mountinfo)
    for line in mountinfo.splitlines():
        point = tmp_path / line.split()[4].lstrip("/")
        point.mkdir(parents=True, exist_ok=True)
        if " - cgroup2 " in line:
            (point / "cgroup.controllers").write_text(v2_controllers + "\n")
            if "memory" in v2_controllers:
                (point / "memory.swap.current").write_text("0\n")
        if " - cgroup " in line and ",memory" in line:
            (point / "memory.memsw.limit_in_bytes").write_text(f"{cgroups.V1_UNLIMITED}\n")
    return cgroups.detect(tmp_path / "mountinfo", prefix=tmp_path)


def write_files(root: Path, files: dict[str, str]) -> None:
    """What the kernel would show in a cgroup's files, one line per value."""
    for name, text in files.items():
        (root / name).write_text(text + "\n")


def test_detects_v2_only(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V2_MOUNTINFO, "cpuset cpu io memory hugetlb pids rdma misc")
    assert layout.mode is CgroupMode.V2
    assert layout.v2 == tmp_path / "sys/fs/cgroup"
    assert layout.where("memory") == "v2" and layout.where("pids") == "v2"
    assert layout.where("cpuacct") == "v2"  # cpu.stat exists in every v2 cgroup
    assert layout.where("devices") is None  # v2 has no devices files
    assert layout.can_limit_swap()


def test_detects_v1_only_with_comounted_controllers(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V1_MOUNTINFO)
    assert layout.mode is CgroupMode.V1
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == tmp_path / "sys/fs/cgroup/cpu,cpuacct"
    assert "name=systemd" not in layout.v1 and "systemd" not in layout.v1
    assert layout.where("memory") == "v1"


def test_detects_hybrid_and_prefers_v1_controllers(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, HYBRID_MOUNTINFO)
    assert layout.mode is CgroupMode.HYBRID
    assert layout.v2 == tmp_path / "sys/fs/cgroup/unified"
    assert layout.where("memory") == "v1"
    assert layout.where("cpuacct") == "v1"


def test_mountinfo_escapes_are_decoded(tmp_path: Path) -> None:
    line = r"35 31 0:32 / /sys/fs/cgroup/my\040memory rw - cgroup cgroup rw,memory" + "\n"
    layout = fake_host(tmp_path, line)
    assert layout.v1["memory"] == tmp_path / "sys/fs/cgroup/my memory"


def test_no_cgroup_filesystem_is_an_error(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, "22 1 252:1 / / rw - ext4 /dev/vda1 rw\n")
    with pytest.raises(MiniContainerError, match="no cgroup"):
        layout.mode  # noqa: B018


def test_paths_in_each_mode(tmp_path: Path) -> None:
    v1 = Cgroup.for_container("abc", fake_host(tmp_path / "a", V1_MOUNTINFO))
    root = tmp_path / "a/sys/fs/cgroup"
    assert v1.directories() == [root / "memory/minicontainer/abc", root / "cpu,cpuacct/minicontainer/abc",
                                root / "pids/minicontainer/abc", root / "devices/minicontainer/abc",
                                root / "freezer/minicontainer/abc"]
    hybrid = Cgroup.for_container("abc", fake_host(tmp_path / "b", HYBRID_MOUNTINFO))
    assert hybrid.directories()[-1] == tmp_path / "b/sys/fs/cgroup/unified/minicontainer/abc"
    v2 = Cgroup.for_container("abc", fake_host(tmp_path / "c", V2_MOUNTINFO, "cpu memory pids"))
    assert v2.directories() == [tmp_path / "c/sys/fs/cgroup/minicontainer/abc"]


def test_v2_limits_and_delegation(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V2_MOUNTINFO, "cpuset cpu io memory pids")
    cg = Cgroup.for_container("c1", layout)
    cg.create(cgroups.resources_from_flags(memory="64m", cpus="0.5", cpu_shares=512, pids_limit=20))
    root = tmp_path / "sys/fs/cgroup"
    leaf = root / "minicontainer/c1"
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (root / "minicontainer/cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (leaf / "memory.max").read_text() == str(64 << 20)
    assert (leaf / "memory.swap.max").read_text() == str(64 << 20)  # Docker: swap = memory by default
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "cpu.weight").read_text() == str(cgroups.cpu_weight(512))
    assert (leaf / "pids.max").read_text() == "20"


def test_v1_limits_and_devices(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V1_MOUNTINFO)
    cg = Cgroup.for_container("c1", layout)
    resources = cgroups.resources_from_flags(memory="100m", memory_swap="300m", cpus="1.5", pids_limit=5)
    resources["devices"] = cgroups.default_devices()
    cg.create(resources)
    root = tmp_path / "sys/fs/cgroup"
    assert (root / "memory/minicontainer/c1/memory.limit_in_bytes").read_text() == str(100 << 20)
    assert (root / "memory/minicontainer/c1/memory.memsw.limit_in_bytes").read_text() == str(300 << 20)
    assert (root / "cpu,cpuacct/minicontainer/c1/cpu.cfs_quota_us").read_text() == "150000"
    assert (root / "cpu,cpuacct/minicontainer/c1/cpu.cfs_period_us").read_text() == "100000"
    assert (root / "pids/minicontainer/c1/pids.max").read_text() == "5"
    # a fake file keeps only the last write; the real one accumulates rules
    assert (root / "devices/minicontainer/c1/devices.deny").read_text() == "a *:* rwm"
    assert (root / "devices/minicontainer/c1/devices.allow").read_text() == "c 136:* rwm"


def test_missing_controller_is_named(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V2_MOUNTINFO, "cpu memory")
    cg = Cgroup.for_container("c1", layout)
    with pytest.raises(MiniContainerError, match="pids cgroup controller"):
        cg.create({"pids": {"limit": 10}})
    assert not (tmp_path / "sys/fs/cgroup/minicontainer").exists()  # refused before any mkdir


def test_hybrid_without_pids_controller_names_it(tmp_path: Path) -> None:
    mountinfo = "\n".join(l for l in HYBRID_MOUNTINFO.splitlines() if ",pids" not in l) + "\n"
    cg = Cgroup.for_container("c1", fake_host(tmp_path, mountinfo))
    with pytest.raises(MiniContainerError, match="pids"):
        cg.create({"pids": {"limit": 10}})


def test_swap_limit_without_swap_accounting(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V1_MOUNTINFO)
    (layout.v1["memory"] / "memory.memsw.limit_in_bytes").unlink()
    assert not layout.can_limit_swap()
    with pytest.raises(MiniContainerError, match="swap"):
        Cgroup.for_container("c1", layout).create({"memory": {"limit": 1 << 30, "swap": 2 << 30}})
    # the default swap (twice the memory) is only asked for where it can be enforced
    assert "swap" not in cgroups.resources_from_flags(memory="1g", swap_accounting=False)["memory"]


def test_stats_and_oom_from_v1_files(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V1_MOUNTINFO)
    cg = Cgroup.for_container("c1", layout)
    cg.create({})
    root = tmp_path / "sys/fs/cgroup"
    write_files(root, {
        "memory/minicontainer/c1/memory.usage_in_bytes": "10000000",
        "memory/minicontainer/c1/memory.stat": "cache 5\ntotal_inactive_file 2000000",
        "memory/minicontainer/c1/memory.limit_in_bytes": "67108864",
        "memory/minicontainer/c1/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1",
        "cpu,cpuacct/minicontainer/c1/cpuacct.usage": "123456789",
        "pids/minicontainer/c1/pids.current": "3"})
    assert cg.stats() == cgroups.Stats(cpu_usage_ns=123456789, memory_usage=8000000,
                                       memory_limit=64 << 20, pids=3, oom_kills=1)
    assert cg.oom_killed()


def test_stats_and_oom_from_v2_files(tmp_path: Path) -> None:
    layout = fake_host(tmp_path, V2_MOUNTINFO, "cpu memory pids")
    cg = Cgroup.for_container("c1", layout)
    cg.create({})
    write_files(tmp_path / "sys/fs/cgroup/minicontainer/c1", {
        "memory.current": "4096", "memory.max": "max",
        "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0",
        "cpu.stat": "usage_usec 2500\nuser_usec 2000", "pids.current": "1"})
    stats = cg.stats()
    assert (stats.cpu_usage_ns, stats.memory_usage, stats.memory_limit, stats.pids) == (2_500_000, 4096, None, 1)
    assert not cg.oom_killed()


def test_cpu_weight_matches_runc() -> None:
    assert cgroups.cpu_weight(2) == 1
    assert cgroups.cpu_weight(1024) == 39
    assert cgroups.cpu_weight(262144) == 10000


@pytest.mark.parametrize("text,expected", [
    ("512m", 512 << 20), ("1g", 1 << 30), ("1G", 1 << 30), ("100", 100), ("1.5g", 3 << 29),
    ("64MB", 64 << 20), ("64MiB", 64 << 20), ("10k", 10240)])
def test_parse_size(text: str, expected: int) -> None:
    assert cgroups.parse_size(text, "--memory") == expected


@pytest.mark.parametrize("text", ["12q", "", "-5m", "m", "1.2.3g"])
def test_bad_size_names_the_flag(text: str) -> None:
    with pytest.raises(MiniContainerError, match="--memory"):
        cgroups.parse_size(text, "--memory")


def test_parse_cpus() -> None:
    assert cgroups.parse_cpus("0.5") == (50000, 100000)
    assert cgroups.parse_cpus("0") == (0, 0)
    for bad in ("-1", "abc", "0.001", "100000"):
        with pytest.raises(MiniContainerError, match="--cpus"):
            cgroups.parse_cpus(bad)


def test_resources_follow_docker_rules() -> None:
    assert cgroups.resources_from_flags() == {}
    assert cgroups.resources_from_flags(memory="64m", memory_swap="-1") == {"memory": {"limit": 64 << 20, "swap": -1}}
    assert cgroups.resources_from_flags(pids_limit=-1) == {}
    assert cgroups.resources_from_flags(cpu_shares=1) == {"cpu": {"shares": 2}}
    with pytest.raises(MiniContainerError, match="--memory-swap"):
        cgroups.resources_from_flags(memory_swap="1g")
    with pytest.raises(MiniContainerError, match="--memory-swap"):
        cgroups.resources_from_flags(memory="1g", memory_swap="512m")
    with pytest.raises(MiniContainerError, match="--memory"):
        cgroups.resources_from_flags(memory="1m")
    with pytest.raises(MiniContainerError, match="--cpu-shares"):
        cgroups.resources_from_flags(cpu_shares=-3)


def test_device_rules_allow_only_harmless_devices() -> None:
    lines = [cgroups._device_rule_v1(r) for r in cgroups.default_devices()]
    assert lines[0] == "a *:* rwm"
    assert "c 1:1 rwm" not in lines  # /dev/mem
    assert {"c 1:3 rwm", "c 1:9 rwm", "c 5:2 rwm", "c 136:* rwm"} <= set(lines)
    assert cgroups.default_devices(privileged=True) == [{"allow": True, "access": "rwm"}]


def test_cgroup_dirs_of_a_process_in_each_mode(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42/cgroup").write_text("9:name=systemd:/\n8:pids:/minicontainer/c1\n"
                                    "3:cpu,cpuacct:/minicontainer/c1\n0::/minicontainer/c1\n")
    hybrid = fake_host(tmp_path / "h", HYBRID_MOUNTINFO)
    root = tmp_path / "h/sys/fs/cgroup"
    assert cgroups.cgroup_dirs_of(42, hybrid, proc) == [
        root / "pids/minicontainer/c1", root / "cpu,cpuacct/minicontainer/c1", root / "unified/minicontainer/c1"]
    (proc / "42/cgroup").write_text("0::/minicontainer/c1\n")
    v2 = fake_host(tmp_path / "v", V2_MOUNTINFO, "cpu memory pids")
    assert cgroups.cgroup_dirs_of(42, v2, proc) == [tmp_path / "v/sys/fs/cgroup/minicontainer/c1"]
