"""`anatomy` shows live values: the real layers, pids, namespace inodes, cgroup limits and use."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import MC
from minicontainer import image as images
from minicontainer.store import Store


@pytest.fixture
def running(mc: MC, demo_tar: Path):
    mc("load", str(demo_tar), check=True)
    mc("run", "-d", "--name", "subject", "--memory", "64m", "--pids-limit", "50", "--ipc", "host",
       "minicontainer-demo", "sh", "-c", "echo hi > /written; sleep 600", check=True)
    mc("exec", "subject", "cat", "/written", check=True)  # the write has happened
    yield json.loads(mc("container", "inspect", "subject", check=True).stdout)[0]
    mc("rm", "-f", "subject")


def test_anatomy_of_a_running_container(mc: MC, running) -> None:
    pid = running["State"]["Pid"]
    out = mc("anatomy", "subject", check=True).stdout
    assert f"container subject ({running['Id'][:12]}), running" in out

    store = Store.open(mc.root)
    img = images.find(store, "minicontainer-demo")
    for number, diff_id in enumerate(img.layers, start=1):
        assert f"layer {number}  {diff_id[7:19]}" in out
    assert "ADD busybox and rootfs/base /" in out
    assert "A /written" in out and "1 added" in out

    assert f"PID {pid} on the host  =  PID 1 inside  (NSpid: {pid} 1)" in out

    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines()
            if len(line.split()) > 3 and line.split()[1] in ("pid", "net", "mnt", "uts", "ipc", "user")}
    for name in ("pid", "net", "mnt", "uts"):
        mine, host = os.stat(f"/proc/{pid}/ns/{name}").st_ino, os.stat(f"/proc/self/ns/{name}").st_ino
        assert rows[name][:3] == [str(mine), str(host), "isolated"]
    ipc = os.stat("/proc/self/ns/ipc").st_ino
    assert rows["ipc"][:2] == [str(ipc), str(ipc)] and "shared" in rows["ipc"]  # --ipc host

    assert f"/minicontainer/{running['Id'][:12]}…" in out
    memory = next(line for line in out.splitlines() if "memory  limit" in line)
    assert "64MiB" in memory and "using" in memory and "using -" not in memory
    pids = next(line for line in out.splitlines() if "pids    limit" in line)
    assert "limit 50" in pids
    assert "none: its own network namespace with only lo" in out
    boxed = [line for line in out.splitlines() if line[:1] in "┌│├└"]
    assert len(boxed) > 20 and {len(line) for line in boxed} == {78}  # square boxes on the projector


def test_anatomy_of_an_exited_container(mc: MC, running) -> None:
    mc("stop", "-t", "1", "subject", check=True)
    out = mc("anatomy", "subject", check=True).stdout
    assert "subject" in out and "exited (" in out
    assert "no process: it has exited" in out
    assert "gone with the process" in out
    assert "(the cgroup was removed when the container exited)" in out
    assert "A /written" in out  # the files outlive the process
    assert "limit 64MiB" in out


def test_anatomy_of_a_missing_container(mc: MC) -> None:
    result = mc("anatomy", "nobody-here")
    assert result.returncode == 125
    assert "No such container: nobody-here" in result.stderr


def test_anatomy_shows_the_veth_and_bridge(mc: MC, demo_tar: Path) -> None:
    mc("load", str(demo_tar), check=True)
    mc("network", "create", "anatnet", "--subnet", "10.231.77.0/24", check=True)
    try:
        mc("run", "-d", "--network", "anatnet", "--name", "wired", "minicontainer-demo", "sleep", "600",
           check=True)
        try:
            endpoint = json.loads(mc("network", "inspect", "anatnet", check=True).stdout)[0]
            out = mc("anatomy", "wired", check=True).stdout
            veth = re.search(r"veth pair ══ (\S+) on the host", out).group(1)
            assert Path(f"/sys/class/net/{veth}").exists()  # the real host-side interface
            assert "eth0 10.231.77.2/24 inside" in out
            assert f"plugged into bridge {endpoint['bridge']} of network anatnet" in out
        finally:
            mc("rm", "-f", "wired")
    finally:
        mc("network", "rm", "anatnet")
