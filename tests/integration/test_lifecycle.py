"""Containers over time: -d and its monitor, ps, logs, exec, stop, kill, rm, prune, inspect, -t."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NONE = ("--network", "none")
SLEEP = ("sh", "-c", "echo started; exec sleep 1000")


def detach(mc, demo_tar: Path, *args: str, cmd: tuple[str, ...] = SLEEP) -> str:
    out = mc("run", *NONE, "-d", *args, str(demo_tar), *cmd, check=True)
    return out.stdout.strip()


def inspect(mc, ref: str) -> dict:
    return json.loads(mc("container", "inspect", ref, check=True).stdout)[0]


def wait_for(predicate, what: str, limit: float = 30) -> None:
    """Poll until `predicate()` is true; fail (not time) if it never becomes true."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def test_detach_prints_the_id_and_keeps_running(mc, demo_tar: Path, store_root: Path) -> None:
    cid = detach(mc, demo_tar, "--name", "web")
    try:
        assert len(cid) == 64 and int(cid, 16) >= 0
        state = inspect(mc, "web")
        assert state["State"]["Status"] == "running"
        pid = state["State"]["Pid"]
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
        assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        ps = mc("ps", check=True).stdout.splitlines()
        assert ps[0].split()[:2] == ["CONTAINER", "ID"]
        row = next(line for line in ps if line.startswith(cid[:12]))
        assert "Up " in row and row.split()[-1] == "web" and str(pid) in row.split()
        assert mc("container", "ls", "-q", check=True).stdout.split() == [cid[:12]]
        wait_for(lambda: mc("logs", "web").stdout == "started\n", "the log holds the output")
    finally:
        mc("rm", "-f", "web")
    assert not (store_root / "containers" / cid).exists()


def test_stop_sends_term_then_kill(mc, demo_tar: Path) -> None:
    # PID 1 without a TERM handler ignores SIGTERM: stop must fall back to SIGKILL
    detach(mc, demo_tar, "--name", "stubborn")
    mc("stop", "-t", "0.5", "stubborn", check=True)
    state = inspect(mc, "stubborn")
    assert state["State"]["Status"] == "exited" and state["State"]["ExitCode"] == 137
    assert "Exited (137)" in mc("ps", "-a", check=True).stdout
    assert "stubborn" not in mc("ps", check=True).stdout
    # with a handler, SIGTERM is enough
    detach(mc, demo_tar, "--name", "polite",
           cmd=("sh", "-c", "trap 'echo bye; exit 7' TERM; while :; do sleep 0.05; done"))
    mc("stop", "polite", check=True)
    assert inspect(mc, "polite")["State"]["ExitCode"] == 7
    assert mc("logs", "polite", check=True).stdout == "bye\n"
    mc("rm", "stubborn", "polite", check=True)


def test_kill_with_a_signal(mc, demo_tar: Path) -> None:
    detach(mc, demo_tar, "--name", "k",
           cmd=("sh", "-c", "trap 'echo usr1' USR1; echo ready; while :; do sleep 0.05; done"))
    try:
        wait_for(lambda: "ready" in mc("logs", "k").stdout, "the trap is set")
        mc("kill", "-s", "USR1", "k", check=True)
        wait_for(lambda: "usr1" in mc("logs", "k").stdout, "USR1 reached PID 1")
        assert inspect(mc, "k")["State"]["Running"]
        mc("kill", "k", check=True)  # default: SIGKILL
        wait_for(lambda: inspect(mc, "k")["State"]["Status"] == "exited", "the container exited")
        assert inspect(mc, "k")["State"]["ExitCode"] == 137
        out = mc("kill", "k")
        assert out.returncode == 125 and "is not running" in out.stderr
    finally:
        mc("rm", "-f", "k")


def test_rm_refuses_a_running_container_unless_forced(mc, demo_tar: Path, store_root: Path) -> None:
    cid = detach(mc, demo_tar, "--name", "busy")
    pid = inspect(mc, "busy")["State"]["Pid"]
    out = mc("rm", "busy")
    assert out.returncode == 125 and "container is running" in out.stderr
    assert Path(f"/proc/{pid}").exists()
    mc("rm", "-f", "busy", check=True)
    assert not Path(f"/proc/{pid}").exists() or b"sleep" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not (store_root / "containers" / cid).exists()
    out = mc("rm", "busy")
    assert out.returncode == 125 and out.stderr.strip() == "minicontainer: No such container: busy"


def test_detached_rm_removes_itself(mc, demo_tar: Path, store_root: Path) -> None:
    cid = detach(mc, demo_tar, "--rm", "--name", "gone",
                 cmd=("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"))
    mc("stop", "gone", check=True)  # returns once the monitor has finished
    assert not (store_root / "containers" / cid).exists()


def test_detached_start_failure_leaves_nothing(mc, demo_tar: Path, store_root: Path) -> None:
    out = mc("run", *NONE, "-d", str(demo_tar), "no-such-command")
    assert out.returncode == 127
    assert out.stderr.strip() == 'minicontainer: exec: "no-such-command": executable file not found in $PATH'
    assert list((store_root / "containers").iterdir()) == []


def test_names_and_ids_never_collide(mc, demo_tar: Path) -> None:
    ids = [detach(mc, demo_tar) for _ in range(4)]
    try:
        ids.append(detach(mc, demo_tar, "--name", "only"))
        out = mc("run", *NONE, "-d", "--name", "only", str(demo_tar), "true")
        assert out.returncode == 125 and 'the container name "only" is already in use' in out.stderr
        states = [inspect(mc, i) for i in ids]
        assert len({s["Id"] for s in states}) == 5 and len({s["Name"] for s in states}) == 5
        assert all(s["State"]["Running"] for s in states)
        assert len({s["Namespaces"]["mnt"] for s in states}) == 5
        # a unique prefix of the id works as a reference
        assert inspect(mc, ids[0][:10])["Id"] == ids[0]
    finally:
        mc("rm", "-f", *ids)
    assert mc("ps", "-aq", check=True).stdout == ""


def test_prune_removes_only_stopped_containers(mc, demo_tar: Path) -> None:
    mc("run", *NONE, "--name", "done", str(demo_tar), "true", check=True)
    running = detach(mc, demo_tar, "--name", "alive")
    try:
        out = mc("container", "prune", check=True)
        assert len(out.stdout.split()) == 1
        names = mc("ps", "-a", check=True).stdout
        assert "alive" in names and "done" not in names
    finally:
        mc("rm", "-f", running)


def test_exec_joins_every_namespace_root_and_cgroup(mc, demo_tar: Path) -> None:
    detach(mc, demo_tar, "--name", "target", "--hostname", "inside")
    try:
        state = inspect(mc, "target")
        out = mc("exec", "target", "sh", "-c",
                 "for n in pid net mnt uts ipc cgroup; do stat -L -c %i /proc/self/ns/$n; done; "
                 "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                 "test \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" && echo same-cgroup",
                 check=True)
        lines = out.stdout.splitlines()
        expected = [str(state["Namespaces"][n]) for n in ("pid", "net", "mnt", "uts", "ipc", "cgroup")]
        assert lines[:6] == expected
        assert lines[6] == "inside"
        assert lines[7].startswith("sleep 1000")
        assert lines[8] == "same-cgroup"
    finally:
        mc("rm", "-f", "target")


def test_exec_options_and_statuses(mc, demo_tar: Path) -> None:
    detach(mc, demo_tar, "--name", "x", "-e", "FROM_RUN=1")
    try:
        out = mc("exec", "-u", "student", "-w", "/tmp", "-e", "EXTRA=2", "x", "sh", "-c",
                 "id -un; pwd; echo $FROM_RUN$EXTRA", check=True)
        assert out.stdout == "student\n/tmp\n12\n"
        assert mc("exec", "x", "sh", "-c", "exit 5").returncode == 5
        out = mc("exec", "x", "nope")
        assert out.returncode == 127 and "executable file not found" in out.stderr
        out = mc("exec", "-i", "x", "cat", input="piped\n")
        assert out.stdout == "piped\n"
        # what exec writes lands in the same container
        mc("exec", "x", "sh", "-c", "echo note > /tmp/note", check=True)
        assert mc("exec", "x", "cat", "/tmp/note", check=True).stdout == "note\n"
        mc("stop", "-t", "0", "x", check=True)
        out = mc("exec", "x", "true")
        assert out.returncode == 125 and "is not running" in out.stderr
    finally:
        mc("rm", "-f", "x")


def test_logs_follow_until_exit(mc, demo_tar: Path) -> None:
    detach(mc, demo_tar, "--name", "talker",
           cmd=("sh", "-c", "echo one; sleep 0.3; echo two; sleep 0.3; echo three"))
    out = mc("logs", "-f", "talker", check=True)
    assert out.stdout == "one\ntwo\nthree\n"
    assert inspect(mc, "talker")["State"]["ExitCode"] == 0
    mc("rm", "talker", check=True)


def test_inspect_shows_state_namespaces_and_paths(mc, demo_tar: Path, store_root: Path) -> None:
    cid = detach(mc, demo_tar, "--name", "seen")
    try:
        state = inspect(mc, "seen")
        pid = state["State"]["Pid"]
        for name, inode in state["Namespaces"].items():
            assert os.stat(f"/proc/{pid}/ns/{name}").st_ino == inode
        assert state["Namespaces"]["pid"] != os.stat("/proc/self/ns/pid").st_ino
        assert state["BundlePath"] == str(store_root / "containers" / cid)
        assert Path(state["BundlePath"], "config.json").is_file()
        assert Path(state["UpperDir"]).is_dir() and state["Rootfs"].endswith("/rootfs")
        assert state["Config"]["process"]["args"] == list(SLEEP)
        assert state["Image"].startswith("sha256:")
        # `inspect` tries containers first
        top = json.loads(mc("inspect", "seen", check=True).stdout)[0]
        assert top["Id"] == cid
    finally:
        mc("rm", "-f", "seen")


def _cli(store_root: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "MINICONTAINER_ROOT": str(store_root)}
    return subprocess.Popen([sys.executable, "-m", "minicontainer", *args], env=env, **kw)


def test_killing_the_foreground_cli_ends_the_container(mc, demo_tar: Path, store_root: Path) -> None:
    cli = _cli(store_root, "run", *NONE, "--name", "fg", str(demo_tar), *SLEEP,
               stdout=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline() == "started\n"
        pid = inspect(mc, "fg")["State"]["Pid"]
        cli.kill()
        cli.wait()
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the container died with its CLI")
        state = inspect(mc, "fg")
        assert state["State"]["Status"] == "exited" and state["State"]["ExitCode"] == 137
        assert "Exited (137)" in mc("ps", "-a", check=True).stdout
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        mc("rm", "-f", "fg", check=True)
    assert list((store_root / "containers").iterdir()) == []
    assert list((store_root / "tmp").iterdir()) == []  # no staging directory left either


def test_killing_the_monitor_ends_the_container(mc, demo_tar: Path, store_root: Path) -> None:
    detach(mc, demo_tar, "--name", "orphan")
    state = inspect(mc, "orphan")
    pid, monitor = state["State"]["Pid"], state["State"]["MonitorPid"]
    assert monitor and monitor != pid
    os.kill(monitor, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the container died with its monitor")
    assert inspect(mc, "orphan")["State"]["Status"] == "exited"
    mc("rm", "-f", "orphan", check=True)
    assert list((store_root / "containers").iterdir()) == []


def test_monitor_memory_is_small(mc, demo_tar: Path) -> None:
    detach(mc, demo_tar, "--name", "light")
    try:
        monitor = inspect(mc, "light")["State"]["MonitorPid"]
        status = Path(f"/proc/{monitor}/status").read_text()
        rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        assert rss_kb <= 15 * 1024, f"monitor RSS {rss_kb} kB"
    finally:
        mc("rm", "-f", "light")


# ---------------------------------------------------------------- terminals

def _run_on_a_terminal(store_root: Path, args: list[str], keys: bytes, rows: int = 33,
                       cols: int = 77) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdin/stdout; type `keys` at the shell's prompt."""
    import fcntl
    import select
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    cli = _cli(store_root, *args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    screen, typed = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the CLI and everything on the terminal are gone
                break
            if not data:
                break
            screen += data
            if not typed and b"# " in screen:  # keys typed before the shell reads are flushed
                os.write(master, keys)
                typed = True
        else:
            pytest.fail(f"the terminal session never ended: {screen!r}")
        return cli.wait(timeout=60), screen.decode(errors="replace")
    finally:
        os.close(master)
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_run_it_is_an_interactive_shell_on_a_terminal(mc, demo_tar: Path, store_root: Path) -> None:
    mc("load", str(demo_tar), check=True)
    code, screen = _run_on_a_terminal(
        store_root, ["run", *NONE, "--rm", "-it", "minicontainer-demo", "sh"],
        b"tty; stty size; echo $((6*7)); exit 3\r")
    assert code == 3, screen
    assert "/dev/pts/0" in screen
    assert "33 77" in screen
    assert "42" in screen


def test_closing_the_terminal_ends_an_interactive_shell(mc, demo_tar: Path, store_root: Path) -> None:
    """When the host terminal goes away, the shell inside ends instead of waiting forever."""
    import select

    mc("load", str(demo_tar), check=True)
    master, slave = os.openpty()
    cli = _cli(store_root, "run", *NONE, "--rm", "-it", "--name", "orphan", "minicontainer-demo", "sh",
               stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        screen = b""
        while b"# " not in screen and select.select([master], [], [], 30)[0]:
            screen += os.read(master, 4096)
        assert b"# " in screen, screen
    finally:
        os.close(master)  # the terminal window is closed
    try:
        # the shell ends: by the ^D typed when our input reads EOF (status 0), or by
        # the SIGHUP sent when it fails with EIO (128+1); which one the kernel gives varies
        assert cli.wait(timeout=30) in (0, 128 + 1)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert mc("ps", "-a", "-q").stdout.strip() == ""  # --rm still removed it


def test_run_t_without_i(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "-t", str(demo_tar), "sh", "-c", "tty; test -t 1 && echo term")
    assert out.returncode == 0
    assert out.stdout.replace("\r", "").splitlines() == ["/dev/pts/0", "term"]


def test_exec_it(mc, demo_tar: Path, store_root: Path) -> None:
    detach(mc, demo_tar, "--name", "shell")
    try:
        code, screen = _run_on_a_terminal(store_root, ["exec", "-it", "shell", "sh"],
                                          b"tty; echo $((7*6)); exit\r")
        assert code == 0, screen
        assert "/dev/pts/" in screen and "42" in screen
    finally:
        mc("rm", "-f", "shell")


def test_detached_with_a_terminal_logs_its_output(mc, demo_tar: Path) -> None:
    cid = detach(mc, demo_tar, "-t", cmd=("sh", "-c", "tty; echo hi"))
    out = mc("logs", "-f", cid, check=True)  # returns when the container has exited
    assert out.stdout.replace("\r", "").splitlines() == ["/dev/pts/0", "hi"]
    mc("rm", cid, check=True)
