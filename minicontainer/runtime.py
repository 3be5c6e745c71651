"""The runtime: how a bundle (config.json + rootfs) becomes a running process.

This is what runc does, in readable Python. The parent (the `minicontainer`
process) forks a child; the child walks through a list of small steps - new
namespaces, a private mount table, the image's layers as its root, /proc,
/dev, /sys, pivot_root, hostname, user, working directory - and finally
execve(2)s the user's command. From then on PID 1 of the container *is* that
command: no Python stays inside.

Parent and child talk over a socketpair (SOCK_SEQPACKET keeps messages whole
and can carry file descriptors):

    child                                   parent
    unshare(mnt, uts, ipc, net)  ── ready ──►  host-side steps (cgroup, network)
                                 ◄── go ────
    mounts, pivot_root, user, …
    execve  (the socket is O_CLOEXEC: the parent sees end-of-file = success)
            or ── error ──► (parent raises CommandNotFound, CommandNotExecutable, …)

The steps are kept in tuples (CHILD_STEPS, EXEC_STEPS, HOST_STEPS) so that a new
one - capabilities, seccomp, joining a cgroup - is a one-line change. This module
reads only the bundle, never the image: a runc-compatible CLI could drive it.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicontainer import cgroups, linux, security
from minicontainer.bundle import (A_LAYERS_DIR, A_LOWERDIR, A_NAME, A_NETWORK, A_NETWORK_IP,
                                  A_NETWORK_PORTS, A_ROOTFS_MODE, A_STORE, A_UPPERDIR, A_USER,
                                  A_WORKDIR, DEFAULT_PATH)
from minicontainer.errors import CommandNotExecutable, CommandNotFound, ContainerError
from minicontainer.explain import SILENT, Narration, Symbol, call, flag_names
from minicontainer.store import read_json

# Signals the foreground CLI passes on to the container's PID 1, as `docker run` does.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)

# The device nodes every container gets, bind-mounted from the host's /dev
# (runc's default device list; bind mounts work even where mknod is not allowed).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}

# mount(8) option words → mount(2) flags (runc's parseMountOptions). A word not
# listed here is passed on to the filesystem as data (e.g. "mode=755").
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {  # word: (clear instead of set?, flag)
    "ro": (False, linux.MS_RDONLY), "rw": (True, linux.MS_RDONLY),
    "nosuid": (False, linux.MS_NOSUID), "suid": (True, linux.MS_NOSUID),
    "nodev": (False, linux.MS_NODEV), "dev": (True, linux.MS_NODEV),
    "noexec": (False, linux.MS_NOEXEC), "exec": (True, linux.MS_NOEXEC),
    "bind": (False, linux.MS_BIND), "rbind": (False, linux.MS_BIND | linux.MS_REC),
    "strictatime": (False, linux.MS_STRICTATIME), "relatime": (False, linux.MS_RELATIME),
    "noatime": (False, linux.MS_NOATIME), "nodiratime": (False, linux.MS_NODIRATIME),
    "sync": (False, linux.MS_SYNCHRONOUS), "dirsync": (False, linux.MS_DIRSYNC),
}


# ---------------------------------------------------------------- records

@dataclass
class Bundle:
    """An OCI bundle on disk: `config.json` beside the root filesystem."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Bundle:
        return cls(path, read_json(path / "config.json"))

    @property
    def rootfs(self) -> Path:
        return self.path / self.config["root"]["path"]

    def annotation(self, key: str, default: str = "") -> str:
        return self.config.get("annotations", {}).get(key, default)

    def namespace_types(self) -> list[str]:
        return [ns["type"] for ns in self.config.get("linux", {}).get("namespaces", [])]


@dataclass
class Stdio:
    """The three descriptors (in the parent) that become the container's 0, 1 and 2."""

    stdin: int = 0
    stdout: int = 1
    stderr: int = 2


@dataclass
class Started:
    """A container process that has reached execve: its host pid, and its terminal if any."""

    pid: int
    pty_master: int | None = None


@dataclass
class User:
    """A user as the container's own /etc/passwd and /etc/group see it."""

    uid: int
    gid: int
    groups: list[int]
    home: str


@dataclass
class Child:
    """What the child's steps share while it turns into the container."""

    bundle: Bundle | None
    process: dict[str, Any]
    sock: socket.socket
    stdio: Stdio
    user_spec: str = ""
    target_pid: int = 0                 # exec only: the container process to join
    join_fds: list[tuple[int, int]] = field(default_factory=list)   # exec: (fd, CLONE_NEW*)
    root_fd: int = -1                   # exec: /proc/PID/root of the container
    pty_slave: int | None = None
    user: User | None = None
    env: dict[str, str] = field(default_factory=dict)
    narrator: Narration = SILENT        # --explain: each step says what it does
    seccomp: dict[str, Any] | None = None  # the container's linux.seccomp (exec gets it too)


# ---------------------------------------------------------------- the parent side

def start(bundle: Bundle, stdio: Stdio, narrator: Narration = SILENT) -> Started:
    """Create the container's process from the bundle and let it run up to execve.

    Returns once the command is running (or raises: CommandNotFound,
    CommandNotExecutable, ContainerError), so the caller can record a pid that
    is really the user's command.
    """
    parent_sock, child_sock = _socketpair()
    child = Child(bundle, bundle.config["process"], child_sock, stdio=stdio,
                  narrator=narrator, user_spec=bundle.annotation(A_USER),
                  seccomp=bundle.config.get("linux", {}).get("seccomp"))
    pid = _fork_into_pid_namespace("pid" in bundle.namespace_types(), None,
                                   lambda: _child_main(child, CHILD_STEPS, parent_sock), narrator)
    child.sock.close()

    def from_the_host() -> None:
        for step in HOST_STEPS:
            step(pid, bundle, narrator)

    return _serve(parent_sock, pid, from_the_host)


def exec_process(target_pid: int, process: dict[str, Any], user_spec: str, stdio: Stdio, *,
                 narrator: Narration = SILENT,
                 seccomp: dict[str, Any] | None = None) -> Started:
    """Start one more process inside a running container (like `runc exec`).

    It joins every namespace of the container's PID 1, its root directory and
    its cgroups, then runs the same user/cwd/exec steps as the container's own
    command.
    """
    proc = Path(f"/proc/{target_pid}")
    own = Path("/proc/self/ns")
    join_fds = []
    # mnt last: once in the container's mount namespace the host's /proc is gone.
    for name, flag in (("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS),
                       ("net", linux.CLONE_NEWNET), ("cgroup", linux.CLONE_NEWCGROUP),
                       ("mnt", linux.CLONE_NEWNS)):
        if os.stat(proc / "ns" / name).st_ino != os.stat(own / name).st_ino:
            join_fds.append((os.open(proc / "ns" / name, os.O_RDONLY | os.O_CLOEXEC), flag))
    root_fd = os.open(proc / "root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    pid_ns = None
    if os.stat(proc / "ns/pid").st_ino != os.stat(own / "pid").st_ino:
        pid_ns = os.open(proc / "ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    parent_sock, child_sock = _socketpair()
    child = Child(None, process, child_sock, stdio=stdio, user_spec=user_spec, narrator=narrator,
                  target_pid=target_pid, join_fds=join_fds, root_fd=root_fd, seccomp=seccomp)
    try:
        pid = _fork_into_pid_namespace(pid_ns is not None, pid_ns,
                                       lambda: _child_main(child, EXEC_STEPS, parent_sock), narrator)
    finally:
        for fd in [f for f, _ in join_fds] + [root_fd] + ([pid_ns] if pid_ns is not None else []):
            os.close(fd)
    child.sock.close()
    return _serve(parent_sock, pid, None)


def _serve(parent_sock: socket.socket, pid: int, from_the_host: Callable[[], None] | None) -> Started:
    """Talk the child through its sequence until its execve; with `from_the_host`, run it between
    the child's "ready" and our "go". On any failure the child is killed and reaped, so no
    half-made container survives."""
    try:
        if from_the_host is not None:
            _expect(parent_sock, pid, "ready")
            from_the_host()
            _send(parent_sock, {"type": "go"})
        return Started(pid, _until_exec(parent_sock, pid))
    except BaseException:
        _kill_and_reap(pid)
        raise
    finally:
        parent_sock.close()


def _socketpair() -> tuple[socket.socket, socket.socket]:
    """The parent's and the child's ends of a new socketpair(2).

    Python creates sockets with O_CLOEXEC, which is the whole trick: a
    successful execve closes the child's end, and the parent reads end-of-file.
    """
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def _fork_into_pid_namespace(new_pid_ns: bool, join_fd: int | None,
                             child_body: Callable[[], None], narrator: Narration = SILENT) -> int:
    """fork(2) a child that is PID 1 of a new PID namespace (or a member of `join_fd`'s).

    unshare(CLONE_NEWPID) and setns(CLONE_NEWPID) do not move the caller: they
    choose the namespace of its *next children*. So the parent switches, forks,
    and switches straight back to its own namespace (saved as an fd first), and
    the container's first process is the user's command itself, with no extra
    "init" process between. See pid_namespaces(7).
    """
    own_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if new_pid_ns else -1
    try:
        if new_pid_ns:
            if join_fd is None:
                linux.unshare(linux.CLONE_NEWPID)
            else:
                linux.setns(join_fd, linux.CLONE_NEWPID)
            narrator.step(lambda: call("unshare" if join_fd is None else "setns", Symbol("CLONE_NEWPID")),
                          "PID namespaces apply to the children we fork next, not to us")
        pid = os.fork()
        if pid == 0:
            narrator.step(lambda: f"fork() = {os.readlink('/proc/self')} on the host, {os.getpid()} inside",
                          "one process, two pids: the host's /proc still shows the host's number")
            child_body()  # never returns
        return pid
    finally:
        if new_pid_ns:
            linux.setns(own_fd, linux.CLONE_NEWPID)
            os.close(own_fd)


def _expect(sock: socket.socket, pid: int, what: str) -> None:
    """Read the child's next message; it must be `what`, else raise the child's error."""
    message, _ = _receive(sock)
    if message is None:
        raise ContainerError(f"container process exited while {what}: {_reap_status(pid)}")
    if message.get("type") != what:
        _raise_child_error(message, pid)


def _until_exec(sock: socket.socket, pid: int) -> int | None:
    """Serve the child until its execve (end-of-file); return its terminal's master fd, if any."""
    master = None
    while True:
        message, fds = _receive(sock)
        if message is None:
            return master
        if message.get("type") == "pty" and fds:
            master = fds[0]
        else:
            _raise_child_error(message, pid)


def _raise_child_error(message: dict[str, Any], pid: int) -> None:
    _reap_status(pid)
    kind = {"notfound": CommandNotFound, "noexec": CommandNotExecutable}.get(message.get("kind", ""),
                                                                           ContainerError)
    raise kind(message.get("message", "container process failed"))


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 65536, 1)
    return (json.loads(data) if data else None), list(fds)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap_status(pid)


def _reap_status(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "already reaped"
    return f"status {os.waitstatus_to_exitcode(status)}"


def wait(pid: int, *, forward_signals: bool = True) -> int:
    """Wait for the container's PID 1 and return Docker's status: its code, or 128+N on signal N.

    While waiting, the signals a user sends to the CLI are passed on to the
    container (waitpid(2) restarts after each handler, PEP 475).
    """
    with _forwarding(pid, forward_signals):
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except ChildProcessError:
                return 255
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class _forwarding:
    """Install handlers that kill(2) the container with each forwarded signal; restore after."""

    def __init__(self, pid: int, enabled: bool) -> None:
        self.pid, self.enabled, self.saved = pid, enabled, {}

    def _forward(self, signum: int, _frame: object) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def __enter__(self) -> None:
        if self.enabled:
            self.saved = {s: signal.signal(s, self._forward) for s in FORWARDED_SIGNALS}
        # The caller blocked them before starting the container (block_forwarded_signals):
        # one that came meanwhile is delivered now, to the handler, and so forwarded.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    def __exit__(self, *_: object) -> None:
        for s, handler in self.saved.items():
            signal.signal(s, handler)


def proxy_terminal(master: int, pid: int, *, stdin: bool, out: int = 1) -> None:
    """Copy between our terminal and the container's pseudo-terminal until it closes.

    Our terminal goes into raw mode so that every key (Ctrl-C included) reaches
    the container's terminal, whose line discipline then does what a terminal
    does (e.g. sends SIGINT to the foreground process group *inside*). The
    window size follows ours, on start and on every SIGWINCH. See pty(7).
    """
    import termios
    import tty

    local_tty = stdin and os.isatty(0)
    saved = termios.tcgetattr(0) if local_tty else None
    old_winch = None
    if local_tty:
        tty.setraw(0)
        _copy_window_size(0, master)
        old_winch = signal.signal(signal.SIGWINCH, lambda *_: _copy_window_size(0, master))
    sources = [master] + ([0] if stdin else [])
    terminal_gone = False
    try:
        # Keys such as Ctrl-C travel as bytes in raw mode; signals sent to the CLI
        # itself (kill, a closed terminal's SIGHUP) are still passed on.
        with _forwarding(pid, True):
            while True:
                ready, _, _ = select.select(sources, [], [])
                if master in ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: the last holder of the terminal's other end is gone
                        break
                    if not data:
                        break
                    if not terminal_gone:
                        try:
                            _write_all(out, data)
                        except OSError:  # EIO: our own terminal was closed under us
                            terminal_gone = _hang_up(pid)
                if 0 in ready:
                    try:
                        data = os.read(0, 65536)
                    except OSError:  # EIO: our own terminal was closed under us
                        sources.remove(0)
                        terminal_gone = _hang_up(pid)
                        continue
                    if data:
                        _write_all(master, data)
                    else:  # our input ended: type the terminal's EOF key (^D), as a user
                        _write_all(master, b"\x04")  # would, or a shell inside waits forever
                        sources.remove(0)
    finally:
        if saved is not None:
            signal.signal(signal.SIGWINCH, old_winch)
            if not terminal_gone:  # a closed terminal has no mode left to restore
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)


def _hang_up(pid: int) -> bool:
    """kill(2) SIGHUP to PID 1: what the kernel sends a terminal's session when it is hung up.

    Our terminal is gone (its window closed), so nobody will type or read any
    more; a shell inside ends as it would on a real hang-up, and the container
    is then cleaned up as usual instead of waiting forever. Returns True.
    """
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        pass
    return True


def _copy_window_size(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def block_forwarded_signals() -> None:
    """sigprocmask(2): hold the forwarded signals until the container's pid is known.

    Otherwise a Ctrl-C that arrives between fork and `wait` would kill the CLI
    (and with it the container) instead of reaching PID 1. `wait` and
    `proxy_terminal` unblock them once their handlers are in place; the child
    clears its mask in reset_signals.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)


# Host-side steps run by the parent between the child's "ready" and "go": the
# child is in its new namespaces but has not mounted or executed anything yet.
# Each takes (child pid, bundle, narrator). Placing the child in its cgroup and plugging
# a network interface into its network namespace belong here.
def place_in_cgroup(pid: int, bundle: Bundle, narrator: Narration = SILENT) -> None:
    """mkdir(2) the container's cgroup, write its limits, write the child's pid in (cgroups(7)).

    Before "go": the command must never run a moment unlimited, and the child
    unshares its cgroup namespace only once it is inside (so it sees its own
    cgroup as "/").
    """
    cgroup = container_cgroup(bundle, narrator)
    narrator.step(lambda: "mkdir(2) " + " ".join(str(d) for d in cgroup.directories()),
                  "a cgroup for the container, its limits written before its command runs")
    cgroup.create(bundle.config.get("linux", {}).get("resources"))
    narrator.step(lambda: f"write {pid} to cgroup.procs", "the child and all it forks are now limited")
    cgroup.add(pid)


def container_cgroup(bundle: Bundle, narrator: Narration = SILENT) -> cgroups.Cgroup:
    """The container's cgroup, from linux.cgroupsPath (`minicontainer/<id>`)."""
    path = bundle.config.get("linux", {}).get("cgroupsPath") or f"{cgroups.PARENT}/{bundle.path.name}"
    return cgroups.Cgroup(path, cgroups.detect(), narrator)


def oom_killed(bundle: Bundle) -> bool:
    """Whether the kernel's OOM killer struck inside the container (read before release)."""
    cgroup = container_cgroup(bundle)
    return cgroup.exists() and cgroup.oom_killed()


def attach_network(pid: int, bundle: Bundle, narrator: Narration = SILENT) -> None:
    """Wire the child's new network namespace to its bridge network (network.py, netlink(7)).

    From the host, because creating a veth pair with one end on the host's
    bridge needs the host's network namespace; before "go", so the command
    starts with eth0 up, its address, its route and its published ports.
    """
    name = bundle.annotation(A_NETWORK)
    if not name:
        return  # none, host or container:NAME: nothing to plug in
    from minicontainer import network
    from minicontainer.ports import parse_ports
    from minicontainer.store import Store

    ports = bundle.annotation(A_NETWORK_PORTS)
    end = network.attach_in_helper(
        Store(Path(bundle.annotation(A_STORE))), name, bundle.path.name, pid,
        name=bundle.annotation(A_NAME), hostname=bundle.config.get("hostname", ""),
        requested_ip=bundle.annotation(A_NETWORK_IP) or None,
        publish=parse_ports(ports.split(",") if ports else []),
        hosts_file=_bind_source(bundle, "/etc/hosts"))
    narrator.step(lambda: f"ip link add {end.host_veth} type veth peer name eth0 address {end.mac} "
                          f"netns {pid}; ip link set {end.host_veth} master {end.bridge} up; in netns {pid}: "
                          f"ip addr add {end.ip}/{end.prefixlen} dev eth0, ip route add default via {end.gateway}"
                          + (f"; nft DNAT {', '.join(end.ports)}" if end.ports else ""),
                  f"a virtual cable from the host's bridge into the container's network namespace ({name})")


def _bind_source(bundle: Bundle, destination: str) -> Path | None:
    for mount in bundle.config.get("mounts", []):
        if mount.get("destination") == destination and mount.get("type") == "bind":
            return Path(mount["source"])
    return None


HOST_STEPS: tuple[Callable[[int, Bundle, Narration], None], ...] = (place_in_cgroup, attach_network)


def release(bundle: Bundle, narrator: Narration = SILENT) -> None:
    """Undo what HOST_STEPS made on the host, once the container has exited (idempotent)."""
    cgroup = container_cgroup(bundle)
    narrator.step(lambda: "rmdir(2) " + (" ".join(str(d) for d in cgroup.directories() if d.is_dir())
                                         or f"nothing: cgroup {cgroup.name} went when its PID 1 exited"),
                  "the container's cgroup goes once its last process is gone (any left are killed)")
    cgroup.destroy()  # kills any process left, then rmdir
    if bundle.annotation(A_NETWORK):
        from minicontainer import network
        from minicontainer.store import Store

        released = network.detach(Store(Path(bundle.annotation(A_STORE))), bundle.path.name)
        narrator.step(lambda: "; ".join(f"ip link del {e.get('veth')}; "
                                        f"release {e.get('ip')} on {e.get('network')}"
                                        + ("; nft delete its DNAT chains" if e.get("ports") else "")
                                        for e in released) or "no veth or address left to release",
                      "the container's veth, published ports and address go with it")


# ---------------------------------------------------------------- the child side

def _child_main(child: Child, steps: tuple[Callable[[Child], None], ...],
                parent_end: socket.socket) -> None:
    """Run the steps; report any failure to the parent; never return into the CLI's code."""
    code = 125
    try:
        parent_end.close()  # else we would never see end-of-file if the parent died
        for step in steps:
            step(child)
    except _ExecFailed as e:
        code = 127 if e.kind == "notfound" else 126
        _report(child, e.kind, str(e))
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        _report(child, "error", _describe(e))
    os._exit(code)


class _ExecFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _report(child: Child, kind: str, message: str) -> None:
    try:
        _send(child.sock, {"type": "error", "kind": kind, "message": message})
    except OSError:
        pass


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f" {e.filename}" if e.filename and str(e.filename) not in e.strerror else ""
        return f"{e.strerror}{where}"
    return str(e) or type(e).__name__


def reset_signals(child: Child) -> None:
    """Give the command default signal handling: signal(7), sigprocmask(2).

    Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive execve:
    without this, `yes | head` inside the container would never stop.
    """
    child.narrator.step(lambda: "signal(SIGPIPE, SIG_DFL), … ; sigprocmask(SIG_SETMASK, {})",
                        "the command must start with default signal handling, not Python's")
    for s in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS, signal.SIGWINCH):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def become_session_leader(child: Child) -> None:
    """setsid(2): a session of its own, so the host terminal's job control cannot reach it.

    Ctrl-C on the host terminal goes to the CLI, which forwards it; and with
    `-t` the container's own pseudo-terminal can become its controlling terminal.
    """
    child.narrator.step(lambda: "setsid()", "a session of its own: the host terminal's Ctrl-C stays out")
    os.setsid()


def set_parent_death_signal(child: Child) -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): the container dies if its parent (CLI or monitor) dies.

    Then nobody is left to record its exit, so it must not outlive the
    parent: state.json would lie. The kernel clears this on a change of
    credentials, so switch_user sets it again.
    """
    parent = os.getppid()
    child.narrator.step(lambda: "prctl(PR_SET_PDEATHSIG, SIGKILL)",
                        "die with our parent (CLI or monitor): it alone can record the exit")
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(137)


def unshare_namespaces(child: Child) -> None:
    """unshare(2) into new mount, UTS, IPC and network namespaces (namespaces(7)).

    The PID namespace was chosen by the parent before fork; the cgroup
    namespace waits until the parent has put us in our cgroup (see
    unshare_cgroup_namespace).
    """
    joined = _joined_namespaces(child.bundle)
    for ns_type, path in joined.items():
        child.narrator.step(lambda: f"setns(open({path!r}), CLONE_NEW{linux.NAMESPACES[ns_type][0].upper()})",
                            "share another container's namespace instead of making one (as a pod does)")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, linux.NAMESPACES[ns_type][1])
        finally:
            os.close(fd)
    types = [t for t in child.bundle.namespace_types() if t not in ("pid", "cgroup") and t not in joined]
    child.narrator.step(lambda: call("unshare", flag_names(linux.namespace_flags(types), vars(linux),
                                                           "CLONE_NEW")),
                        "new, empty namespaces: " + ", ".join(types) + " (the host's stay untouched)")
    linux.unshare(linux.namespace_flags(types))


def _joined_namespaces(bundle: Bundle) -> dict[str, str]:
    """Namespaces given with a `path` in config.json: joined with setns(2), not created (runtime-spec)."""
    return {ns["type"]: ns["path"] for ns in bundle.config.get("linux", {}).get("namespaces", [])
            if ns.get("path") and ns["type"] != "pid"}


def wait_for_parent(child: Child) -> None:
    """Tell the parent our namespaces exist; wait while it works on them from the host."""
    child.narrator.step(lambda: 'send(sock, "ready"); recv(sock) … "go"',
                        "wait while the parent sets up, from the host, what we cannot do from inside")
    _send(child.sock, {"type": "ready"})
    message, _ = _receive(child.sock)
    if not message or message.get("type") != "go":
        raise ContainerError("the parent gave up before the container started")


def unshare_cgroup_namespace(child: Child) -> None:
    """unshare(CLONE_NEWCGROUP): our cgroup becomes the root of /proc/self/cgroup (cgroup_namespaces(7)).

    Done after the parent placed us in our cgroup, so the container sees its
    own cgroup as "/" and nothing of the host's tree above it.
    """
    if "cgroup" in child.bundle.namespace_types():
        child.narrator.step(lambda: "unshare(CLONE_NEWCGROUP)",
                            "now inside our cgroup: /proc/self/cgroup will show it as \"/\"")
        linux.unshare(linux.CLONE_NEWCGROUP)


def bring_loopback_up(child: Child) -> None:
    """ioctl(SIOCSIFFLAGS) on lo: a new network namespace starts with lo down (netdevice(7))."""
    if "network" not in child.bundle.namespace_types() or "network" in _joined_namespaces(child.bundle):
        return
    import fcntl
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    child.narrator.step(lambda: 'ioctl(sock, SIOCSIFFLAGS, {"lo", IFF_UP})',
                        "a new network namespace has only lo, and it starts down")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifreq)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def make_mounts_private(child: Child) -> None:
    """mount(MS_REC|MS_PRIVATE) on /: nothing we mount from now on propagates to the host.

    A new mount namespace starts as a copy of the host's, with the host's
    propagation: on a systemd host "/" is shared, so without this step every
    mount below would appear on the host too. See mount_namespaces(7).
    """
    child.narrator.step(lambda: call("mount", None, "/", None, Symbol("MS_REC|MS_PRIVATE"), None),
                        "nothing we mount from now on may propagate back to the host")
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)


def mount_rootfs(child: Child) -> None:
    """mount(2) the overlay of the image's layers on the bundle's rootfs directory, nodev.

    The layers are the read-only lowerdirs (shared by every container of the
    image); writes go to this container's upperdir; see the kernel's
    filesystems/overlayfs.rst. The mount happens in our own mount namespace,
    so the host's mount table never shows it and it vanishes with the
    container, however the container ends. The lowerdirs are given relative to
    the layers directory (we chdir there first, as containerd does) so that
    many layers still fit in the one page mount(2) accepts for options.
    """
    bundle = child.bundle
    rootfs = str(bundle.rootfs)
    if bundle.annotation(A_ROOTFS_MODE, "overlay") != "overlay":
        # copy mode: the rootfs is a plain directory; bind it onto itself so it
        # is a mount point (pivot_root needs one), then make it nodev.
        child.narrator.step(lambda: call("mount", rootfs, rootfs, None, Symbol("MS_BIND|MS_REC"), None),
                            "the copied layers become a mount point, which pivot_root needs")
        linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, rootfs, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NODEV)
        return
    os.chdir(bundle.annotation(A_LAYERS_DIR))
    data = (f"lowerdir={bundle.annotation(A_LOWERDIR)},upperdir={bundle.annotation(A_UPPERDIR)},"
            f"workdir={bundle.annotation(A_WORKDIR)}")
    if len(data) >= os.sysconf("SC_PAGE_SIZE"):
        raise ContainerError(f"too many layers for one overlay mount ({len(data)} bytes of options)")
    child.narrator.step(lambda: call("chdir", os.getcwd()) + "; "
                        + call("mount", "overlay", rootfs, "overlay", Symbol("MS_NODEV"), data),
                        "the image's layers, read-only and shared, under this container's writable upperdir")
    try:
        linux.mount("overlay", rootfs, "overlay", linux.MS_NODEV, data)
    except OSError as e:
        raise ContainerError(f"cannot mount the overlay root filesystem: {e.strerror} "
                             "(MINICONTAINER_ROOTFS=copy copies the layers instead)") from None


def mount_filesystems(child: Child) -> None:
    """mount(2) each entry of config.json's `mounts`, in order, under the rootfs.

    /proc, the /dev tmpfs, devpts, /dev/shm, /dev/mqueue, /sys, the generated
    /etc files and the user's -v/--tmpfs mounts. Targets are resolved *inside*
    the rootfs, so an image whose /etc is a symlink to /host/etc cannot make us
    create or mount anything on the host.
    """
    rootfs = str(child.bundle.rootfs)
    for m in child.bundle.config.get("mounts", []):
        target = resolve_in_root(rootfs, m["destination"])
        flags, data = mount_options(m.get("options", []))
        if m.get("type") == "bind" or flags & linux.MS_BIND:
            _make_target(target, is_dir=os.path.isdir(m["source"]))
            extra = flags & ~(linux.MS_BIND | linux.MS_REC)
            child.narrator.step(lambda: call("mount", m["source"], target, None, flag_names(
                flags & (linux.MS_BIND | linux.MS_REC), vars(linux), "MS_"), None) + ("; " + call(
                    "mount", None, target, None,
                    flag_names(linux.MS_BIND | linux.MS_REMOUNT | extra, vars(linux), "MS_"), None)
                    if extra else ""),
                f"{m['destination']} in the container shows the host's {m['source']}")
            linux.mount(m["source"], target, None, flags & (linux.MS_BIND | linux.MS_REC))
            if extra:  # bind mounts ignore flags at creation: a remount applies them
                linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | extra)
        else:
            _make_target(target, is_dir=True)
            child.narrator.step(lambda: call("mount", m.get("source", m["type"]), target, m["type"],
                                             flag_names(flags, vars(linux), "MS_"), data or None),
                                f"the container's own {m['destination']} ({m['type']})")
            linux.mount(m.get("source", m["type"]), target, m["type"], flags, data or None)


def mount_options(options: list[str]) -> tuple[int, str]:
    """["nosuid", "mode=755", …] → (MS_* flags, "mode=755,…" data for the filesystem)."""
    flags, data = 0, []
    for word in options:
        if word in MOUNT_FLAGS:
            clear, flag = MOUNT_FLAGS[word]
            flags = flags & ~flag if clear else flags | flag
        elif word not in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
            data.append(word)
    return flags, ",".join(data)


def resolve_in_root(root: str, path: str, max_links: int = 40) -> str:
    """The host path of `path` as seen from inside `root`, following symlinks as the container would.

    An absolute symlink (or enough `..`) inside the image points at the
    container's root, never above it: the same rule as runc's securejoin.
    """
    todo = [p for p in path.split("/") if p not in ("", ".")]
    current = ""
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        full = os.path.join(root, candidate)
        if os.path.islink(full):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(full)
            if target.startswith("/"):
                current = ""
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        current = candidate
    return os.path.join(root, current)


def _make_target(path: str, *, is_dir: bool) -> None:
    """Create a mount point (a directory, or an empty file for a file bind mount)."""
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def create_devices(child: Child) -> None:
    """Bind-mount the host's /dev/null, zero, full, random, urandom, tty into the container's /dev.

    The container's /dev is an empty tmpfs: it must not see the host's disks.
    Bind mounts rather than mknod(2), as runc does in user namespaces: they
    work everywhere and give exactly the host's device.
    """
    dev = resolve_in_root(str(child.bundle.rootfs), "/dev")  # an image's /dev may be a symlink
    for name in DEVICES:
        target = os.path.join(dev, name)
        _make_target(target, is_dir=False)
        child.narrator.step(lambda: call("mount", f"/dev/{name}", target, None, Symbol("MS_BIND"), None),
                            f"/dev/{name} is the host's own device; no other host device is visible")
        linux.mount(f"/dev/{name}", target, None, linux.MS_BIND)


def create_dev_links(child: Child) -> None:
    """symlink(2) /dev/fd, stdin, stdout, stderr to /proc/self/fd, and ptmx to pts/ptmx."""
    dev = resolve_in_root(str(child.bundle.rootfs), "/dev")  # an image's /dev may be a symlink
    child.narrator.step(lambda: "; ".join(call("symlink", target, os.path.join(dev, name))
                                          for name, target in DEV_LINKS.items()),
                        "the /dev links programs expect (/dev/stdin, /dev/fd, …)")
    for name, target in DEV_LINKS.items():
        if not os.path.lexists(os.path.join(dev, name)):
            os.symlink(target, os.path.join(dev, name))


def setup_console(child: Child) -> None:
    """With process.terminal: a pseudo-terminal from the container's own devpts, bound on /dev/console.

    The terminal is opened from the container's devpts instance (not the
    host's), so that inside `tty` says /dev/pts/0, a path that exists there.
    The master end goes to the parent over the socket (SCM_RIGHTS, unix(7));
    the child keeps the slave for its stdio. See pty(7), ioctl_tty(2).
    """
    if not child.process.get("terminal"):
        return
    root = str(child.bundle.rootfs) if child.bundle else "/"
    child.pty_slave, slave_path = _open_pty_and_send_master(child, os.path.join(root, "dev/pts"))
    child.narrator.step(lambda: call("open", os.path.join(root, "dev/pts/ptmx")) + f" → {slave_path}",
                        "a terminal from the container's own devpts; the parent gets its master (SCM_RIGHTS)")
    if child.bundle:
        console = os.path.join(root, "dev/console")
        _make_target(console, is_dir=False)
        linux.mount(slave_path, console, None, linux.MS_BIND)


def _open_pty_and_send_master(child: Child, pts_dir: str) -> tuple[int, str]:
    import fcntl
    import struct

    master = os.open(os.path.join(pts_dir, "ptmx"), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, linux.TIOCSPTLCK, struct.pack("i", 0))  # unlockpt(3)
    number = struct.unpack("I", fcntl.ioctl(master, linux.TIOCGPTN, struct.pack("I", 0)))[0]
    slave_path = os.path.join(pts_dir, str(number))
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    _send(child.sock, {"type": "pty"}, [master])
    os.close(master)
    return slave, slave_path


def pivot_into_rootfs(child: Child) -> None:
    """pivot_root(2) into the rootfs, then detach the old root (runc's pivotRoot).

    Why not chroot(2): chroot only changes where *this process* starts path
    lookups. The host's root stays mounted in the namespace, so a process
    with CAP_SYS_CHROOT escapes with the classic trick (mkdir x; chroot x;
    cd .. repeatedly; chroot .). pivot_root changes the root *mount* of the
    whole mount namespace; once the old root is unmounted there is no host
    filesystem left above us to climb to.

    pivot_root(".", ".") stacks the old root on top of the new one, so no
    temporary put_old directory is needed (nothing to remove afterwards, and
    it works on a read-only rootfs); unmounting "." then drops the old root.
    """
    rootfs = str(child.bundle.rootfs)
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        child.narrator.step(lambda: call("chdir", rootfs) + "; " + call("pivot_root", ".", ".") + "; "
                            + call("umount2", ".", Symbol("MNT_DETACH")),
                            "the rootfs becomes /, and the host's root, stacked on it, is detached")
        try:
            linux.pivot_root(".", ".")
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            child.narrator.step(lambda: call("mount", rootfs, "/", None, Symbol("MS_MOVE"), None)
                                + '; chroot(".")',
                                "pivot_root refused (EINVAL: the host's root is an initramfs): move + chroot")
            _move_root_and_chroot(rootfs)
            return
        os.fchdir(old_root)  # "." is now the old root, stacked over the new one
        linux.mount(None, ".", None, linux.MS_SLAVE | linux.MS_REC)  # no unmount event reaches the host
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def _move_root_and_chroot(rootfs: str) -> None:
    """The fallback when pivot_root(2) refuses (EINVAL): the host root is ramfs/initramfs.

    The initial ramfs can never be unmounted, so it cannot be pivoted away;
    runc's --no-pivot does this instead: move the rootfs mount over "/" and
    chroot(2) into it. Weaker (see pivot_into_rootfs), hence only a fallback.
    """
    os.chdir(rootfs)
    linux.mount(rootfs, "/", None, linux.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def mask_paths(child: Child) -> None:
    """Hide linux.maskedPaths (/proc/kcore, …) and make linux.readonlyPaths (/proc/sys, …) read-only.

    A directory is masked with an empty read-only tmpfs, a file with a bind
    of /dev/null; a read-only path is bound onto itself and remounted ro.
    See mount(2) for MS_BIND|MS_REMOUNT.
    """
    linux_cfg = child.bundle.config.get("linux", {})
    child.narrator.step(lambda: f"mount(P, P, NULL, MS_BIND|MS_REC) + remount MS_RDONLY for P in "
                        f"{linux_cfg.get('readonlyPaths', [])}; mount(tmpfs or /dev/null, P, …, MS_RDONLY) "
                        f"for P in {linux_cfg.get('maskedPaths', [])}",
                        "kernel knobs become read-only, kernel secrets (/proc/kcore, …) invisible")
    for path in linux_cfg.get("readonlyPaths", []):
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY
                        | linux.MS_REC | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    for path in linux_cfg.get("maskedPaths", []):
        if os.path.isdir(path) and not os.path.islink(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY)
        elif os.path.exists(path):
            linux.mount("/dev/null", path, None, linux.MS_BIND)


def make_root_readonly(child: Child) -> None:
    """With root.readonly (`--read-only`): remount "/" read-only (mount(2) MS_REMOUNT|MS_BIND).

    Only the root mount: /dev, /proc, --tmpfs and -v mounts keep their own modes.
    """
    if child.bundle.config["root"].get("readonly"):
        child.narrator.step(lambda: call("mount", None, "/", None,
                                         Symbol("MS_BIND|MS_REMOUNT|MS_RDONLY|MS_NODEV"), None),
                            "--read-only: the root filesystem refuses writes")
        linux.mount(None, "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NODEV)


def set_hostname(child: Child) -> None:
    """sethostname(2) in our UTS namespace (uts_namespaces(7)); the host's name is untouched."""
    hostname = child.bundle.config.get("hostname")
    if hostname and "uts" in child.bundle.namespace_types():
        child.narrator.step(lambda: call("sethostname", hostname),
                            "in our UTS namespace: the host keeps its name")
        linux.sethostname(hostname)


def resolve_user(child: Child) -> None:
    """Find uid, gid, groups and HOME in the container's own /etc/passwd and /etc/group.

    Never the host's NSS: the name "www-data" may be a different uid in the
    image, or not exist on the host at all. Same rules as runc's GetExecUser.
    """
    spec = child.user_spec
    given = child.process.get("user", {})
    child.user = lookup_user(spec, "/etc/passwd", "/etc/group") if spec else \
        User(given.get("uid", 0), given.get("gid", 0), list(given.get("additionalGids", [])),
             _home_of(given.get("uid", 0), "/etc/passwd"))
    child.env = dict(e.partition("=")[::2] for e in child.process.get("env", []))
    child.env.setdefault("HOME", child.user.home)
    child.narrator.step(lambda: f"read the image's /etc/passwd, /etc/group: {spec or given.get('uid', 0)!r}: "
                        f"uid={child.user.uid} gid={child.user.gid} groups={child.user.groups} "
                        f"HOME={child.env['HOME']}",
                        "names mean what the image's files say, never what the host's say")


def lookup_user(spec: str, passwd: str, group: str) -> User:
    """`name`, `uid`, `name:group`, `uid:gid` → User, from the given passwd and group files."""
    user_part, has_group, group_part = spec.partition(":")
    users = _read_db(passwd)
    entry = next((u for u in users if (u[2] == user_part if user_part.isdigit() else u[0] == user_part)),
                 None)
    if entry is None and not user_part.isdigit():
        raise ContainerError(f"unable to find user {user_part}: no matching entries in passwd file")
    uid = int(user_part) if user_part.isdigit() else int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    groups_db = _read_db(group)
    if has_group and group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            found = next((g for g in groups_db if g[0] == group_part), None)
            if found is None:
                raise ContainerError(f"unable to find group {group_part}: no matching entries in group file")
            gid = int(found[2])
        groups = [gid]
    else:
        name = entry[0] if entry else None
        members = [int(g[2]) for g in groups_db if name and len(g) > 3 and name in g[3].split(",")]
        # The primary group is listed too, as runc and podman do (`id` shows groups=GID(name)).
        groups = [gid] + [g for g in members if g != gid]
    return User(uid, gid, groups, home)


def _read_db(path: str) -> list[list[str]]:
    """The colon-separated records of /etc/passwd or /etc/group (missing file: none)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [ln.split(":") for ln in lines if ln and not ln.startswith("#") and ln.count(":") >= 2
            and ln.split(":")[2].isdigit()]


def _home_of(uid: int, passwd: str) -> str:
    entry = next((u for u in _read_db(passwd) if u[2] == str(uid)), None)
    return entry[5] if entry and len(entry) > 5 and entry[5] else "/"


def create_working_directory(child: Child) -> None:
    """mkdir(2) the working directory if missing (as Docker does), inside the new root."""
    cwd = child.process.get("cwd", "/")
    if os.path.exists(cwd) and not os.path.isdir(cwd):
        raise ContainerError(f"the working directory {cwd} is not a directory")
    child.narrator.step(lambda: f"mkdir -p {cwd}", "the working directory must exist, as Docker makes it")
    os.makedirs(cwd, mode=0o755, exist_ok=True)


def setup_stdio(child: Child) -> None:
    """dup2(2) the given descriptors - or the terminal's slave, made controlling - onto 0, 1, 2."""
    if child.pty_slave is not None:
        import fcntl

        fcntl.ioctl(child.pty_slave, linux.TIOCSCTTY, 0)
        fds = (child.pty_slave,) * 3
    else:
        fds = (child.stdio.stdin, child.stdio.stdout, child.stdio.stderr)
    child.narrator.step(lambda: "; ".join(f"dup2({fd}, {target})" for target, fd in enumerate(fds)),
                        "the command's stdin, stdout and stderr")
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
        else:
            os.set_inheritable(fd, True)


def restrict_privileges(child: Child) -> None:
    """Before the user switch: no_new_privs, seccomp, bounding set, KEEPCAPS — prctl(2), seccomp(2).

    Details, and the attack each one stops, in security.py.
    """
    caps, seccomp = child.process.get("capabilities") or {}, child.seccomp
    nnp = child.process.get("noNewPrivileges")
    child.narrator.step(lambda: f"prctl(PR_SET_NO_NEW_PRIVS, {int(bool(nnp))}); "
                        f"prctl(PR_CAPBSET_DROP, …) keeping {caps.get('bounding', [])}; "
                        + (f"seccomp(SECCOMP_SET_MODE_FILTER): default {seccomp.get('defaultAction')}, "
                           f"{len(seccomp.get('syscalls', []))} rules" if seccomp else "no seccomp"),
                        "while still root: what the command may never regain, and the syscalls it may make")
    security.before_user_switch(child.process, child.seccomp)


def drop_privileges(child: Child) -> None:
    """After the user switch: capset(2) to the config's capability sets (then seccomp, with no_new_privs)."""
    caps = child.process.get("capabilities") or {}
    child.narrator.step(lambda: f"capset(effective={caps.get('effective', [])}, …)",
                        "root in a container is root with only these capabilities")
    security.after_user_switch(child.process, child.seccomp)


def switch_user(child: Child) -> None:
    """setgroups(2), setresgid(2), setresuid(2): become the container's user (groups first,
    while we still may change them)."""
    user = child.user
    child.narrator.step(lambda: f"setgroups({user.groups}); setresgid({user.gid}, {user.gid}, {user.gid}); "
                        f"setresuid({user.uid}, {user.uid}, {user.uid})",
                        "become the container's user; from here on the kernel checks its permissions")
    os.setgroups(user.groups)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the credential change


def enter_working_directory(child: Child) -> None:
    """chdir(2) to process.cwd, as the container's user (so permissions are checked as that user)."""
    cwd = child.process.get("cwd", "/")
    child.narrator.step(lambda: call("chdir", cwd), "as the container's user, so its permissions apply")
    try:
        os.chdir(cwd)
    except OSError as e:
        raise ContainerError(f'chdir to cwd ("{cwd}") set in config.json failed: {e.strerror}') from None


def close_other_fds(child: Child) -> None:
    """close_range(2) every descriptor but 0, 1, 2 (and our O_CLOEXEC socket to the parent).

    A descriptor of the runtime that survives execve is a door to the host:
    runc's CVE-2024-21626 leaked an fd of the host's /sys/fs/cgroup, and a
    container could chdir through it to the host's root.
    """
    child.narrator.step(lambda: "close_range(3, ~0U) except the parent's socket (O_CLOEXEC)",
                        "no descriptor of the runtime may leak into the container")
    low = 3
    for keep in sorted({child.sock.fileno(), *child.narrator.fds()}):  # both O_CLOEXEC: execve closes them
        os.closerange(low, keep)
        low = keep + 1
    os.closerange(low, 1 << 20)


def exec_command(child: Child) -> None:
    """execve(2) the command: from now on this process *is* the container's command.

    Like runc, a name without "/" is looked up in the container's PATH; the
    failures become Docker's statuses (127 not found, 126 cannot execute).
    """
    args = child.process["args"]
    program = args[0]
    path = program if "/" in program else _look_path(program, child.env.get("PATH", DEFAULT_PATH))
    child.narrator.step(lambda: call("execve", path, args, [f"{k}={v}" for k, v in child.env.items()])
                        + f" as uid {os.getuid()} gid {os.getgid()}",
                        "this process becomes the command: nothing of the runtime stays inside")
    try:
        os.execve(path, args, child.env)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _ExecFailed("notfound", f'exec: "{program}": stat {program}: no such file or directory') \
                from None
        raise _ExecFailed("noexec", f'exec: "{program}": {e.strerror.lower()}') from None


def _look_path(name: str, path: str) -> str:
    """The first executable regular file called `name` in PATH (Go's exec.LookPath rules)."""
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise _ExecFailed("notfound", f'exec: "{name}": executable file not found in $PATH')


# ---------------------------------------------------------------- exec's own steps

def make_non_dumpable(child: Child) -> None:
    """prctl(PR_SET_DUMPABLE, 0) before entering the container (runc's CVE-2019-5736 lesson).

    A container process could otherwise open /proc/<our pid>/exe - the host's
    runtime binary - or ptrace us while we still hold host descriptors.
    execve of the command makes the process dumpable again.
    """
    child.narrator.step(lambda: "prctl(PR_SET_DUMPABLE, 0)",
                        "nobody in the container may ptrace us or open our /proc/PID/exe")
    linux.prctl(linux.PR_SET_DUMPABLE, 0)


def join_cgroups(child: Child) -> None:
    """Write our pid into every cgroup of the container's PID 1 (from /proc/PID/cgroup).

    So limits and accounting apply to exec'd processes too. See cgroups(7).
    """
    layout = cgroups.detect()  # v1, v2 or hybrid: where each hierarchy is mounted
    own = cgroups.cgroup_dirs_of(int(os.readlink("/proc/self")), layout)  # getpid() is the container's pid
    for directory in cgroups.cgroup_dirs_of(child.target_pid, layout):
        procs = directory / "cgroup.procs"
        if directory not in own and procs.exists():
            child.narrator.step(lambda: f"write {procs} ← {os.getpid()}",
                                f"join PID {child.target_pid}'s cgroup: its limits apply to us too")
            procs.write_text(str(os.getpid()))


def join_namespaces(child: Child) -> None:
    """setns(2) into each of the container's namespaces, the mount namespace last."""
    for fd, flag in child.join_fds:
        child.narrator.step(lambda: f"setns(open(\"/proc/{child.target_pid}/ns/…\") = {fd}, "
                            f"{flag_names(flag, vars(linux), 'CLONE_NEW')})",
                            f"enter the namespace of the container's PID 1 (host pid {child.target_pid})")
        linux.setns(fd, flag)


def enter_container_root(child: Child) -> None:
    """fchdir(2) + chroot(2) to /proc/PID/root of the container (opened before setns).

    Joining a mount namespace does not by itself put us at the container's
    root; its PID 1's root directory is exactly where it lives.
    """
    child.narrator.step(lambda: f"fchdir(open(\"/proc/{child.target_pid}/root\")); chroot(\".\")",
                        "the container's root directory, where its PID 1 lives")
    os.fchdir(child.root_fd)
    os.chroot(".")
    os.chdir("/")


# The last steps of both `run` and `exec`: from root in the container to the user's command.
BECOME_THE_COMMAND: tuple[Callable[[Child], None], ...] = (
    setup_stdio,
    restrict_privileges,
    switch_user,
    drop_privileges,
    enter_working_directory,
    close_other_fds,
    exec_command,
)

# The child's sequence for `run`, in runc's order (libcontainer/rootfs_linux.go,
# standard_init_linux.go).
CHILD_STEPS: tuple[Callable[[Child], None], ...] = (
    reset_signals,
    become_session_leader,
    set_parent_death_signal,
    unshare_namespaces,
    wait_for_parent,
    unshare_cgroup_namespace,
    bring_loopback_up,
    make_mounts_private,
    mount_rootfs,
    mount_filesystems,
    create_devices,
    create_dev_links,
    setup_console,
    pivot_into_rootfs,
    mask_paths,
    make_root_readonly,
    set_hostname,
    resolve_user,
    create_working_directory,
    *BECOME_THE_COMMAND,
)

# The sequence for `exec`: join instead of create, then the same last steps.
EXEC_STEPS: tuple[Callable[[Child], None], ...] = (
    reset_signals,
    become_session_leader,
    set_parent_death_signal,
    make_non_dumpable,
    join_cgroups,
    join_namespaces,
    enter_container_root,
    setup_console,
    resolve_user,
    *BECOME_THE_COMMAND,
)
