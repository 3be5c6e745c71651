"""Resource limits with real effects: memory, pids, cpu, stats, and cleanup of the cgroups."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from minicontainer import cgroups


def run_detached(mc, image: Path, *args: str) -> str:
    """`run -d` and return the container id."""
    out = mc("run", "--network", "none", "-d", *args, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_memory_limit_kills_and_reports_oom(mc, demo_tar: Path) -> None:
    # busybox tail keeps the whole line in memory: 100 MB without a newline
    out = mc("run", "--network", "none", "--name", "hog", "--memory", "32m", str(demo_tar),
             "sh", "-c", "head -c 100m /dev/zero | tail > /dev/null")
    assert out.returncode == 137, out.stderr
    state = json.loads(mc("container", "inspect", "hog", check=True).stdout)
    state = state[0] if isinstance(state, list) else state
    assert state["State"]["OOMKilled"] is True
    mc("rm", "hog", check=True)


def test_memory_under_the_limit_is_not_oom(mc, demo_tar: Path) -> None:
    out = mc("run", "--network", "none", "--name", "fine", "--memory", "64m", str(demo_tar),
             "sh", "-c", "head -c 10m /dev/zero | tail | wc -c")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(10 << 20)
    state = json.loads(mc("container", "inspect", "fine", check=True).stdout)
    state = state[0] if isinstance(state, list) else state
    assert state["State"]["OOMKilled"] is False
    mc("rm", "fine", check=True)


def test_pids_limit_contains_a_fork_loop(mc, demo_tar: Path) -> None:
    # Bounded: 50 background sleeps at most; the subshell dies at its first failed fork.
    # Counting uses only shell builtins (a glob, kill): at the limit nothing can fork.
    script = ("(for i in $(seq 50); do sleep 30 & done) 2>/tmp/err; "
              "set -- /proc/[0-9]*; echo procs $#; kill -9 -1; grep -c fork /tmp/err")
    out = mc("run", "--network", "none", "--rm", "--pids-limit", "10", str(demo_tar), "sh", "-c", script)
    lines = out.stdout.split()
    assert lines[0] == "procs"
    assert int(lines[1]) <= 10  # sleeps + the shell + ls: never more than the limit
    assert int(lines[2]) >= 1, out.stdout + out.stderr  # "can't fork" reached the shell


def test_cpus_holds_a_busy_loop_near_half_a_cpu(mc, demo_tar: Path) -> None:
    cid = run_detached(mc, demo_tar, "--cpus", "0.5", str(demo_tar), "sh", "-c", "while :; do :; done")
    try:
        cg = cgroups.Cgroup.for_container(cid)
        time.sleep(0.3)  # let it start spinning
        t0, u0 = time.monotonic(), cg.stats().cpu_usage_ns
        time.sleep(2)
        t1, u1 = time.monotonic(), cg.stats().cpu_usage_ns
        share = (u1 - u0) / 1e9 / (t1 - t0)
        # loose: the quota caps it at half of one CPU, never a whole one; the lower
        # bound only shows it ran (a busy machine may give it less than its cap)
        assert 0.1 < share < 0.7, share
    finally:
        mc("rm", "-f", cid, check=True)


def test_stats_shows_usage_and_limit(mc, demo_tar: Path) -> None:
    cid = run_detached(mc, demo_tar, "--name", "watched", "--memory", "64m", "--pids-limit", "20",
                       str(demo_tar), "sh", "-c", "sleep 300 & wait")
    try:
        out = mc("stats", "--no-stream", "watched", check=True)
        header, row = out.stdout.splitlines()[:2]
        assert header.split()[:3] == ["CONTAINER", "ID", "NAME"]
        assert "MEM USAGE / LIMIT" in header and "PIDS" in header
        assert row.startswith(cid[:12]) and "watched" in row
        assert "/ 64MiB" in row
        assert row.split()[-1] == "2"  # sh and sleep
    finally:
        mc("rm", "-f", cid, check=True)


def test_cgroups_exist_while_running_and_vanish_after_rm(mc, demo_tar: Path) -> None:
    cid = run_detached(mc, demo_tar, "--memory", "64m", str(demo_tar), "sleep", "300")
    cg = cgroups.Cgroup.for_container(cid)
    dirs = cg.directories()
    assert dirs and all(d.is_dir() for d in dirs)
    pid = cg.pids()
    assert len(pid) == 1
    # inside, the container sees its own cgroup as the root (cgroup namespace)
    own = mc("exec", cid, "cat", "/proc/self/cgroup", check=True).stdout
    assert all(line.endswith(":/") for line in own.splitlines()), own
    mc("rm", "-f", cid, check=True)
    assert not any(d.exists() for d in dirs)
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{cgroups.PARENT}/{cid}"))


def test_exec_joins_the_container_cgroup(mc, demo_tar: Path) -> None:
    cid = run_detached(mc, demo_tar, "--pids-limit", "20", str(demo_tar), "sleep", "300")
    try:
        out = mc("exec", cid, "sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; "
                 "cat /proc/self/cgroup", check=True)
        cg = cgroups.Cgroup.for_container(cid)
        assert len(cg.pids()) == 1  # the exec'd process has gone; PID 1 remains
        assert all(line.endswith(":/") for line in out.stdout.splitlines() if ":" in line), out.stdout
    finally:
        mc("rm", "-f", cid, check=True)


@pytest.mark.parametrize("flag,value", [("--memory", "12q"), ("--memory-swap", "x1"), ("--cpus", "-1"),
                                        ("--cpus", "lots"), ("--cap-add", "NET_FOO"),
                                        ("--cap-drop", "bogus"), ("--security-opt", "seccomp=/x.json"),
                                        ("--cpu-shares", "-5")])
def test_bad_flags_exit_125_naming_the_flag(mc, demo_tar: Path, flag: str, value: str) -> None:
    extra = ["--memory", "64m"] if flag == "--memory-swap" else []
    out = mc("run", "--network", "none", "--rm", *extra, f"{flag}={value}", str(demo_tar), "true")
    assert out.returncode == 125
    assert flag in out.stderr, out.stderr
