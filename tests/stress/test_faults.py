"""Faults: kill -9 and Ctrl-C at random points, a full disk, the OOM killer, a dead monitor.

After each fault the store must be consistent - the next `load`/`run` of the
same archive works and never uses a half-written layer - and after `rm -f` or
`container prune` nothing of the container may remain on the host (the
autouse leak check of tests/conftest.py looks at mounts, cgroups, links, nft
rules, IPAM entries and processes once the test is over).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stresskit import (assert_one_line_error, cgroup_dirs, containers, layer_dirs, scale, spawn,
                      staging, tree_digest, wait_for)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def unpacking(store: Path, before: frozenset[str] = frozenset()) -> bool:
    """A new staging directory of a layer: some command is unpacking now (not a killed one's)."""
    return any(name.startswith("layer-") and name not in before for name in staging(store))


def assert_layers_complete(store: Path, big_digest: str) -> None:
    """Every layer in layers/ has its record, and the big one holds exactly what the archive says."""
    for name in layer_dirs(store):
        assert (store / "layers" / f"{name}.json").exists(), f"layer {name} has no record"
        if (store / "layers" / name / "big").exists():
            assert tree_digest(store / "layers" / name / "big") == big_digest, "a half-written layer"


def assert_gone(store: Path, container_id: str, pid: int | None = None) -> None:
    assert container_id not in containers(store)
    assert cgroup_dirs(container_id) == []
    if pid:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes()


def the_container(store: Path) -> str:
    return wait_for("the container's directory", lambda: (containers(store) or [None])[0])


def state_of(store: Path, container_id: str) -> dict:
    return json.loads((store / "containers" / container_id / "state.json").read_text())


# ---------------------------------------------------------------- load


def test_sigkill_during_unpacking(mc, store_root: Path, big_archive: Path, big_digest: str, rng) -> None:
    killed = 0
    for _ in range(scale(3, 12)):
        abandoned = frozenset(staging(store_root))
        proc = spawn(store_root, "load", str(big_archive))
        wait_for("unpacking to start", lambda: unpacking(store_root, abandoned) or proc.poll() is not None)
        wait_for("a random moment", lambda: rng.random() < 0.02 or proc.poll() is not None)
        proc.kill()
        killed += finish(proc)[0] == -9
        assert_layers_complete(store_root, big_digest)
        assert not (store_root / "images").exists() or len(os.listdir(store_root / "images")) <= 1
    print(f"loads killed mid-way: {killed} of {scale(3, 12)}")
    loaded = mc("load", str(big_archive))
    assert loaded.returncode == 0, loaded.stderr
    assert_layers_complete(store_root, big_digest)
    assert len(layer_dirs(store_root)) == 2
    run = mc("run", "--rm", "big:latest", "sh", "-c", "ls /big/29 | wc -l")
    assert (run.returncode, run.stdout.strip()) == (0, "100"), run.stderr


def test_sigkill_during_unpacking_leaves_no_staging_after_next_load(mc, store_root: Path,
                                                                   big_archive: Path) -> None:
    proc = spawn(store_root, "load", str(big_archive))
    wait_for("unpacking to start", lambda: unpacking(store_root))
    proc.kill()
    finish(proc)
    mc("load", str(big_archive), check=True)
    assert staging(store_root) == []


def test_sigint_during_unpacking(mc, store_root: Path, big_archive: Path, big_digest: str) -> None:
    proc = spawn(store_root, "load", str(big_archive))
    wait_for("unpacking to start", lambda: unpacking(store_root))
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130
    assert_one_line_error(err)
    assert staging(store_root) == []          # the interrupted layer was cleaned up
    assert_layers_complete(store_root, big_digest)
    mc("load", str(big_archive), check=True)
    assert_layers_complete(store_root, big_digest)


def test_full_disk_mid_unpack(mc, tmp_path: Path, big_archive: Path, bb_archive: Path, monkeypatch) -> None:
    """A store on an 8 MB tmpfs: the 48 MB layer cannot fit; exit 125, one line, nothing half-done."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        mc.root = small
        result = mc("load", str(big_archive))
        assert result.returncode == 125
        assert_one_line_error(result.stderr)
        assert "No space left" in result.stderr
        assert staging(small) == []
        assert not any((small / "images").iterdir())
        assert all((small / "layers" / f"{n}.json").exists() for n in layer_dirs(small))
        ok = mc("run", "--rm", str(bb_archive), "echo", "still works")  # the same store goes on
        assert (ok.returncode, ok.stdout) == (0, "still works\n"), ok.stderr
    finally:
        subprocess.run(["umount", str(small)], check=True)


# ---------------------------------------------------------------- run


@pytest.mark.parametrize("point", ["namespaces-made", "random"])
def test_sigkill_of_foreground_run(mc, store_root: Path, bb_archive: Path, rng, point: str) -> None:
    mc("load", str(bb_archive), check=True)
    for _ in range(scale(2, 10)):
        proc = spawn(store_root, "run", "stress", "sleep", "1000")
        if point == "namespaces-made":
            cid = the_container(store_root)
            # the cgroup is made once the child has unshared its namespaces, before its command runs
            wait_for("the container's cgroup", lambda: cgroup_dirs(cid) or proc.poll() is not None)
        else:
            wait_for("a random moment", lambda: rng.random() < 0.01 or proc.poll() is not None)
        proc.kill()
        finish(proc)
        pruned = mc("container", "prune")
        assert pruned.returncode == 0, pruned.stderr
        assert containers(store_root) == []
        assert [d for cid in pruned.stdout.split() for d in cgroup_dirs(cid)] == []
    again = mc("run", "--rm", "stress", "echo", "ok")
    assert (again.returncode, again.stdout) == (0, "ok\n"), again.stderr


def _own_network(mc) -> tuple[str, str]:
    from tests.integration.test_network_attach import free_test_subnet

    name, bridge = f"stress{secrets.token_hex(3)}", f"mcs{secrets.token_hex(4)}"
    mc("network", "create", name, "--subnet", str(free_test_subnet()), "--bridge", bridge, check=True)
    return name, bridge


@pytest.mark.parametrize("network", ["none", "bridge"])
def test_sigkill_after_the_command_started(mc, store_root: Path, bb_archive: Path, network: str) -> None:
    mc("load", str(bb_archive), check=True)
    net, bridge = _own_network(mc) if network == "bridge" else ("none", "")
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        # on a bridge: a veth, an address, and a published port (nft DNAT rules) to leave behind
        publish = ["-p", f"127.0.0.1:{20000 + secrets.randbelow(20000)}:80"] if network == "bridge" else []
        proc = spawn(store_root, "run", "--network", net, *publish, "stress", "sh", "-c",
                     "touch /started; sleep 1000")
        cid = the_container(store_root)
        wait_for("the command to start", lambda: (store_root / "containers" / cid / "upper" / "started").exists())
        pid = state_of(store_root, cid)["pid"]
        proc.kill()
        finish(proc)
        # the container dies with its foreground CLI (the parent-death signal)
        wait_for("the container to die", lambda: not Path(f"/proc/{pid}/cmdline").exists()
                 or not Path(f"/proc/{pid}/cmdline").read_bytes())
        ps = mc("ps", "-a")
        assert "Exited (137)" in ps.stdout, ps.stdout
        removed = mc("rm", "-f", cid)
        assert removed.returncode == 0, removed.stderr
        assert_gone(store_root, cid, pid)
        if network == "bridge":
            assert json.loads(mc("network", "inspect", net, check=True).stdout)[0].get("Containers") in ({}, [], None)
            assert cid[:12] not in subprocess.run(["nft", "list", "table", "ip", "minicontainer"],
                                                  capture_output=True, text=True).stdout
    finally:
        if network == "bridge":
            mc("network", "rm", net)
            Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)


def test_monitor_of_detached_container_killed(mc, store_root: Path, bb_archive: Path) -> None:
    mc("load", str(bb_archive), check=True)
    for _ in range(scale(1, 5)):
        cid = mc("run", "-d", "stress", "sleep", "1000", check=True).stdout.strip()
        state = state_of(store_root, cid)
        monitor, pid = state["monitor_pid"], state["pid"]
        stat = Path(f"/proc/{monitor}/stat").read_bytes()
        assert int(stat.rsplit(b")", 1)[1].split()[19]) == state["monitor_start"]  # really that process
        os.kill(monitor, signal.SIGKILL)
        wait_for("the monitor and the container to be gone (reaped by init)",
                 lambda: not Path(f"/proc/{monitor}").exists() and not Path(f"/proc/{pid}").exists())
        assert "Exited (137)" in mc("ps", "-a", check=True).stdout
        mc("rm", "-f", cid, check=True)
        assert_gone(store_root, cid, pid)


ADOPT_AND_HOLD = """
import ctypes, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us, unreaped
print(subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout.strip(), flush=True)
sys.stdin.read()
"""


def test_monitor_killed_but_not_yet_reaped_is_not_up(mc, store_root: Path, bb_archive: Path) -> None:
    mc("load", str(bb_archive), check=True)
    env = {**os.environ, "MINICONTAINER_ROOT": str(store_root)}
    holder = subprocess.Popen([sys.executable, "-c", ADOPT_AND_HOLD, sys.executable, "-m", "minicontainer",
                               "run", "-d", "stress", "sleep", "1000"],
                              env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        cid = holder.stdout.readline().strip()
        monitor = state_of(store_root, cid)["monitor_pid"]
        os.kill(monitor, signal.SIGKILL)
        wait_for("the monitor to be a zombie", lambda: b") Z " in Path(f"/proc/{monitor}/stat").read_bytes())
        assert "Exited (137)" in mc("ps", "-a", check=True).stdout
    finally:
        holder.communicate("")  # the holder exits; init reaps what it held
        for ref in mc("ps", "-aq").stdout.split():
            mc("rm", "-f", ref)


@pytest.mark.parametrize("command, status", [(["/etc/passwd"], 126), (["/no/such/thing"], 127),
                                             (["nosuchcommand"], 127), (["/etc"], 126)])
def test_command_that_cannot_be_executed(mc, store_root: Path, bb_archive: Path, command, status) -> None:
    mc("load", str(bb_archive), check=True)
    result = mc("run", "stress", *command)
    assert result.returncode == status
    assert_one_line_error(result.stderr)
    assert containers(store_root) == []       # Docker's `run` leaves no container behind then
    detached = mc("run", "-d", "stress", *command)
    assert detached.returncode == status
    assert containers(store_root) == []
    assert mc("run", "--rm", "stress", "true").returncode == 0


def test_oom_killed_container(mc, store_root: Path, bb_archive: Path) -> None:
    mc("load", str(bb_archive), check=True)
    # tail keeps a whole "line" in memory: endless zeros have no newline
    result = mc("run", "--name", "hog", "--memory", "32m", "--memory-swap", "32m", "stress",
                "sh", "-c", "tail /dev/zero")
    assert result.returncode == 137, result.stderr
    info = json.loads(mc("container", "inspect", "hog", check=True).stdout)[0]
    assert info["State"]["OOMKilled"] is True
    cid = info["Id"]
    mc("container", "prune", check=True)
    assert_gone(store_root, cid)
    assert mc("run", "--rm", "--memory", "32m", "stress", "echo", "fine").stdout == "fine\n"
