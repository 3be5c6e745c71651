"""`minicontainer run`: exit statuses, bad input, and the isolation a container must show."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

HOST_PYTHON = Path("/usr/bin/python3")
NONE = ("--network", "none")  # these tests are about the other namespaces: no bridge needed


def image(demo_tar: Path) -> str:
    return str(demo_tar)


def containers_on_disk(store_root: Path) -> list[str]:
    d = store_root / "containers"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- exit statuses

def test_exit_status_is_the_commands(mc, demo_tar: Path) -> None:
    assert mc("run", *NONE, "--rm", image(demo_tar), "true").returncode == 0
    assert mc("run", *NONE, "--rm", image(demo_tar), "sh", "-c", "exit 3").returncode == 3


def test_stdio_passes_through(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "-i", image(demo_tar), "sh", "-c", "read x; echo got:$x; echo err >&2",
             input="hello\n")
    assert out.returncode == 0
    assert out.stdout == "got:hello\n"
    assert out.stderr == "err\n"


def test_without_i_stdin_is_empty(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", image(demo_tar), "cat", input="secret\n")
    assert out.returncode == 0 and out.stdout == ""


def test_killed_by_signal_gives_128_plus_n(mc, demo_tar: Path) -> None:
    # PID 1 of a namespace ignores signals it has no handler for, even SIGKILL from
    # inside; with the host's PID namespace the shell can kill itself.
    out = mc("run", *NONE, "--rm", "--pid", "host", image(demo_tar), "sh", "-c", "kill -9 $$")
    assert out.returncode == 137
    out = mc("run", *NONE, "--rm", "--pid", "host", image(demo_tar), "sh", "-c", "kill -TERM $$")
    assert out.returncode == 143


def test_signals_are_forwarded_to_pid_1(mc, demo_tar: Path) -> None:
    import signal
    import subprocess
    import sys

    env = {**os.environ, "MINICONTAINER_ROOT": str(mc.root)}
    script = "trap 'echo got USR1; exit 42' USR1; echo ready; while :; do sleep 0.05; done"
    proc = subprocess.Popen([sys.executable, "-m", "minicontainer", "run", *NONE, "--rm", image(demo_tar),
                             "sh", "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=30) == 42
        assert proc.stdout.read() == "got USR1\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_not_found_is_127(mc, demo_tar: Path, store_root: Path) -> None:
    out = mc("run", *NONE, "--rm", image(demo_tar), "no-such-command")
    assert out.returncode == 127
    assert out.stderr.strip().splitlines() == [
        'minicontainer: exec: "no-such-command": executable file not found in $PATH']
    assert containers_on_disk(store_root) == []


def test_absolute_path_not_found_is_127(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, image(demo_tar), "/nope")
    assert out.returncode == 127
    assert "no such file or directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_command_not_executable_is_126(mc, demo_tar: Path, store_root: Path) -> None:
    out = mc("run", *NONE, image(demo_tar), "/etc/passwd")
    assert out.returncode == 126
    assert out.stderr.strip() == 'minicontainer: exec: "/etc/passwd": permission denied'
    assert containers_on_disk(store_root) == []


@pytest.mark.parametrize("args, message", [
    (["no-such-image:latest", "true"], "no such image"),
    (["-u", "ghost", "IMAGE", "id"], "unable to find user ghost: no matching entries in passwd file"),
    (["-u", "root:ghosts", "IMAGE", "id"], "unable to find group ghosts"),
    (["-w", "/etc/passwd", "IMAGE", "pwd"], "not a directory"),
    (["-v", "/no/such/dir:/data", "IMAGE", "true"], "bind source path does not exist: /no/such/dir"),
    (["--entrypoint", "", "IMAGE"], "no command specified"),
    (["-v", "relative:/data", "IMAGE", "true"], "invalid volume specification"),
])
def test_bad_input_is_125_one_line_nothing_left(mc, demo_tar: Path, store_root: Path,
                                                 args: list[str], message: str) -> None:
    args = [image(demo_tar) if a == "IMAGE" else a for a in args]
    out = mc("run", *NONE, *args)
    assert out.returncode == 125, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert containers_on_disk(store_root) == []


# ---------------------------------------------------------------- the process

def test_pid_1_is_the_command_and_host_processes_are_invisible(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", image(demo_tar), "sh", "-c",
             "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls -d /proc/[0-9]* | wc -l", check=True)
    cmdline, count = out.stdout.splitlines()
    assert cmdline.startswith("sh -c cat /proc/1/cmdline")
    assert int(count) <= 3  # sh, and the pipeline's children: nothing of the host
    assert str(os.getpid()) not in out.stdout


def test_pid_host_shares_the_process_table(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--pid", "host", image(demo_tar), "sh", "-c", "test -d /proc/%d && echo seen"
             % os.getpid(), check=True)
    assert out.stdout == "seen\n"


def test_no_python_and_no_runtime_fd_inside(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", image(demo_tar), "sh", "-c", "ls /proc/self/fd; readlink /proc/1/exe",
             check=True)
    lines = out.stdout.split()
    assert sorted(lines[:-1], key=int) == ["0", "1", "2", "3"]  # 3: ls's own directory handle
    assert lines[-1] == "/bin/busybox"


def test_environment_as_docker(mc, demo_tar: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nFROM_FILE=1\nOVERRIDE=file\n")
    out = mc("run", *NONE, "--rm", "--hostname", "box", "--env-file", str(env_file), "-e", "OVERRIDE=flag",
             "-e", "PASSED", image(demo_tar), "env", env={"PASSED": "from-host"}, check=True)
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert env["HOSTNAME"] == "box"
    assert env["HOME"] == "/root"
    assert env["FROM_FILE"] == "1" and env["OVERRIDE"] == "flag" and env["PASSED"] == "from-host"
    assert "/bin" in env["PATH"].split(":")


def test_user_and_groups_come_from_the_image(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "-u", "student", image(demo_tar), "sh", "-c", "id; echo $HOME", check=True)
    assert out.stdout == "uid=1000(student) gid=1000(student) groups=1000(student)\n/home/student\n"
    out = mc("run", *NONE, "--rm", "-u", "1000:65534", image(demo_tar), "id", check=True)
    assert out.stdout.startswith("uid=1000(student) gid=65534(nogroup)")
    out = mc("run", *NONE, "--rm", "-u", "4242", image(demo_tar), "sh", "-c", "id -u; id -g; echo $HOME",
             check=True)
    assert out.stdout.split() == ["4242", "0", "/"]


def test_workdir_is_created_inside_the_root(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "-w", "/made/for/you", image(demo_tar), "pwd", check=True)
    assert out.stdout == "/made/for/you\n"


def test_entrypoint_and_cmd_combine_as_docker(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--entrypoint", "echo", image(demo_tar), "a", "b", check=True)
    assert out.stdout == "a b\n"
    out = mc("run", *NONE, "--rm", "--entrypoint", "pwd", image(demo_tar), check=True)  # image Cmd dropped
    assert out.stdout == "/home/student\n"  # the image's WorkingDir
    out = mc("run", *NONE, "--rm", image(demo_tar), check=True)  # the image's Cmd
    assert out.stdout.startswith("hello from the minicontainer demo image")


# ---------------------------------------------------------------- isolation

def test_hostname_is_the_short_id_and_changes_stay_inside(mc, demo_tar: Path) -> None:
    host_name = socket.gethostname()
    # sethostname(2) needs CAP_SYS_ADMIN, which containers lack by default (as in Docker)
    out = mc("run", *NONE, "--name", "named", "--cap-add", "SYS_ADMIN", image(demo_tar),
             "sh", "-c", "hostname; hostname changed; hostname",
             check=True)
    first, second = out.stdout.split()
    inspect = json.loads(mc("container", "inspect", "named", check=True).stdout)[0]
    assert first == inspect["Id"][:12]
    assert second == "changed"
    assert socket.gethostname() == host_name
    mc("rm", "named", check=True)


def test_uts_host_and_network_host(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--uts", "host", image(demo_tar), "hostname", check=True)
    assert out.stdout.strip() == socket.gethostname()
    host_links = sorted(os.listdir("/sys/class/net"))
    out = mc("run", *NONE, "--rm", "--network", "host", image(demo_tar), "ls", "/sys/class/net", check=True)
    assert sorted(out.stdout.split()) == host_links


def test_network_none_has_only_lo_up(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--network", "none", image(demo_tar), "sh", "-c",
             "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags", check=True)
    lines = out.stdout.split()
    assert lines[0] == "lo" and len(lines) == 3
    assert int(lines[2], 16) & 0x1  # IFF_UP


def test_ipc_namespace_is_private_unless_host(mc, demo_tar: Path) -> None:
    own = os.readlink("/proc/self/ns/ipc")
    out = mc("run", *NONE, "--rm", image(demo_tar), "readlink", "/proc/self/ns/ipc", check=True)
    assert out.stdout.strip() != own
    out = mc("run", *NONE, "--rm", "--ipc", "host", image(demo_tar), "readlink", "/proc/self/ns/ipc", check=True)
    assert out.stdout.strip() == own


def test_mounts_inside_do_not_reach_the_host(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--cap-add", "SYS_ADMIN", image(demo_tar), "sh", "-c",
             "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x && grep -c ' /mnt/x ' /proc/mounts", check=True)
    assert out.stdout.strip() == "1"
    after = Path("/proc/self/mountinfo").read_text()
    assert "/mnt/x" not in after
    assert str(mc.root) not in after  # nor the container's overlay root, nor any of its mounts
    # even while a container runs, its overlay and mounts exist only in its own namespace
    cid = mc("run", *NONE, "-d", image(demo_tar), "sleep", "1000", check=True).stdout.strip()
    try:
        assert str(mc.root) not in Path("/proc/self/mountinfo").read_text()
    finally:
        mc("rm", "-f", cid, check=True)


def test_root_is_an_overlay_and_dev_is_minimal(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", image(demo_tar), "sh", "-c",
             "grep ' / ' /proc/mounts; ls /dev; ls -l /dev/ptmx; grep ' /sys ' /proc/mounts", check=True)
    lines = out.stdout.splitlines()
    root = lines[0].split()
    assert root[2] == "overlay" and "nodev" in root[3]
    devs = set(" ".join(lines[1:-2]).split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
            "fd", "stdin", "stdout", "stderr", "ptmx"} <= devs
    assert not any(d.startswith(("sda", "vda", "nvme", "mem")) for d in devs)
    assert lines[-2].endswith("/dev/ptmx -> pts/ptmx")
    assert lines[-1].split()[3].startswith("ro")


def test_masked_and_readonly_paths(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", image(demo_tar), "sh", "-c",
             "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
             "echo 1 > /proc/sys/kernel/domainname && echo wrote")
    lines = out.stdout.split()
    assert Path("/proc/timer_list").stat().st_size == 0 or Path("/proc/timer_list").read_text()
    assert lines[:2] == ["0", "0"]  # an empty file, an empty directory
    assert "wrote" not in lines
    assert "Read-only file system" in out.stderr


def test_writes_land_only_in_the_upperdir(mc, demo_tar: Path, store_root: Path) -> None:
    mc("load", image(demo_tar), check=True)
    layers_before = _tree_digest(store_root / "layers")
    mc("run", *NONE, "--name", "writer", image(demo_tar), "sh", "-c",
       "echo new > /etc/new-file; echo changed >> /etc/motd; rm /etc/hosts.allow 2>/dev/null; true",
       check=True)
    upper = Path(json.loads(mc("container", "inspect", "writer", check=True).stdout)[0]["UpperDir"])
    assert (upper / "etc/new-file").read_text() == "new\n"
    assert (upper / "etc/motd").read_text().endswith("changed\n")
    assert _tree_digest(store_root / "layers") == layers_before
    assert not Path("/etc/new-file").exists()
    mc("rm", "writer", check=True)
    assert not upper.exists()


def _tree_digest(top: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(top)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.skipif(not HOST_PYTHON.exists(), reason="needs the host's /usr/bin/python3")
def test_chroot_escape_and_proc_1_root_lead_nowhere(mc, demo_tar: Path, store_root: Path) -> None:
    """The classic escape (mkdir; chroot; cd .. many times; chroot .) ends in the container's root.

    Python comes from the host through read-only binds (so the test has raw
    chroot(2) at hand); the store's path exists only on the host.
    """
    script = (
        "import os\n"
        "os.makedirs('/escape', exist_ok=True)\n"
        "os.chroot('/escape')\n"
        "for _ in range(64):\n"
        "    os.chdir('..')\n"
        "os.chroot('.')\n"
        f"print(os.path.exists({str(store_root)!r}), os.path.exists('/etc/motd'))\n"
        f"print(os.path.exists('/proc/1/root' + {str(store_root)!r}))\n"
    )
    out = mc("run", *NONE, "--rm", "-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
             image(demo_tar), "/usr/bin/python3", "-I", "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "False"]


# ---------------------------------------------------------------- mounts from flags

def test_bind_mounts_rw_and_ro(mc, demo_tar: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    out = mc("run", *NONE, "--rm", "-v", f"{tmp_path}:/data", "-v", f"{tmp_path}:/ro:ro", image(demo_tar),
             "sh", "-c", "cat /data/in.txt; echo back > /data/out.txt; echo x > /ro/y || echo refused",
             check=True)
    assert out.stdout == "from host\nrefused\n"
    assert (tmp_path / "out.txt").read_text() == "back\n"
    assert not (tmp_path / "y").exists()


def custom_image(out: Path, busybox: Path, extra: list, config: dict | None = None) -> str:
    """A one-layer busybox image with `extra` demo.Entry items, as a docker-save archive."""
    from minicontainer import demo

    layers = [demo.layer_tar(demo.busybox_entries(busybox) + extra)]
    demo.write_docker_save(out, layers, demo.image_config(layers, config or {}), ["custom:latest"])
    return str(out)


def test_bind_target_through_an_image_symlink_stays_inside(mc, busybox: Path, tmp_path: Path) -> None:
    """An image symlink pointing at a host path is followed *inside* the root, never on the host."""
    from minicontainer.demo import Entry

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "marker").write_text("bound\n")
    outside = tmp_path / "outside"
    img = custom_image(tmp_path / "trap.tar", busybox, [Entry("trap", "symlink", linkname=str(outside))])
    out = mc("run", *NONE, "--rm", "-v", f"{tmp_path / 'src'}:/trap/inner", img,
             "sh", "-c", f"cat {outside}/inner/marker", check=True)
    assert out.stdout == "bound\n"
    assert not outside.exists()  # the mount point was made inside the container's root


def test_read_only_root_and_tmpfs(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--read-only", "--tmpfs", "/scratch", image(demo_tar), "sh", "-c",
             "touch /file || echo root-ro; touch /scratch/ok && echo tmpfs-rw; "
             "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; touch /dev/shm/x && echo shm-rw")
    assert out.stdout.split() == ["root-ro", "tmpfs-rw", "tmpfs", "shm-rw"]


def test_etc_files_are_generated(mc, demo_tar: Path) -> None:
    out = mc("run", *NONE, "--rm", "--hostname", "gen", image(demo_tar), "sh", "-c",
             "cat /etc/hostname; grep -c gen /etc/hosts; grep -c nameserver /etc/resolv.conf", check=True)
    hostname, in_hosts, servers = out.stdout.split()
    assert hostname == "gen" and in_hosts == "1" and int(servers) >= 1


def test_copy_fallback_when_overlay_is_unusable(mc, demo_tar: Path, store_root: Path) -> None:
    out = mc("run", *NONE, "--name", "copied", image(demo_tar), "sh", "-c",
             "grep ' / ' /proc/mounts | cut -d' ' -f3; cat /etc/motd; test -e /etc/draft.txt || echo gone",
             env={"MINICONTAINER_ROOTFS": "copy"}, check=True)
    fstype, *rest = out.stdout.splitlines()
    assert fstype != "overlay"
    assert rest[-1] == "gone"  # the upper layer's whiteout was applied by the copy
    ref = mc("run", *NONE, "--rm", image(demo_tar), "cat", "/etc/motd", check=True)
    assert rest[:-1] == ref.stdout.splitlines()
    mc("rm", "copied", check=True)
