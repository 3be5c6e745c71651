"""Containers: a running instance of an image, and the record of it kept on disk.

Where runtime.py makes *one* process, this module gives it a life: an id and a
name, a directory in the store (the OCI bundle, the writable upper layer, the
log, state.json), and the lifecycle commands - create, start in the
foreground or detached under a small monitor, exec, stop, kill, rm, prune.

state.json is the only truth about a container, and it is written atomically.
A container's exit is recorded by its *monitor*: the foreground CLI itself, or,
with `-d`, a small double-forked process that is the container's parent. The
container gets SIGKILL if its monitor dies (runtime.set_parent_death_signal),
so "the monitor is gone" always means "the container is gone" too.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import stat
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from minicontainer.bundle import (A_NAME, A_STORE, RootfsPlan, RunOptions, build_config, describe_command,
                                  write_bundle)
from minicontainer.errors import ContainerError, MiniContainerError
from minicontainer.explain import SILENT, Narration, call
from minicontainer.store import Store, read_json, remove_tree

# Docker-style generated names: adjective_scientist.
_ADJECTIVES = ("brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid",
               "merry", "nifty", "quirky", "serene", "tender", "vibrant", "witty", "zealous")
_SURNAMES = ("babbage", "curie", "dijkstra", "euler", "hopper", "kernighan", "lamport", "lovelace",
             "noether", "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class ContainerState:
    """What state.json holds about one container."""

    id: str
    name: str
    image: str                          # the image id, "sha256:…" (rmi checks this key)
    image_ref: str                      # what the user typed
    command: list[str]
    created: str
    status: str = "created"             # created → running → exited
    pid: int | None = None
    pid_start: int | None = None        # start time of pid, to tell it from a recycled pid
    monitor_pid: int | None = None
    monitor_start: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False            # the memory limit's OOM killer struck (exit 137)
    started_at: str | None = None
    finished_at: str | None = None
    auto_remove: bool = False
    detached: bool = False
    interactive: bool = False
    tty: bool = False
    rootfs_mode: str = "overlay"
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerState:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def process_start_time(pid: int | None) -> int | None:
    """Field 22 of /proc/PID/stat (proc(5)): with the pid, names one process for good."""
    if not pid:
        return None
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data.rsplit(b")", 1)[1].split()[19])


def _alive(pid: int | None, start: int | None) -> bool:
    """Is this exact process (pid + start time) still running? A zombie is not: it has exited,
    only nobody has reaped it yet (its /proc/PID/stat state is Z, or X while being reaped)."""
    if pid is None or start is None or process_start_time(pid) != start:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


@dataclass
class Container:
    """One container in the store."""

    store: Store
    state: ContainerState

    # ------------------------------------------------------------ finding

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def dir(self) -> Path:
        return self.store.container_dir(self.id)

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "log"

    @classmethod
    def load_dir(cls, store: Store, directory: Path) -> Container:
        return cls(store, ContainerState.from_dict(read_json(directory / "state.json")))

    @classmethod
    def all(cls, store: Store) -> list[Container]:
        """Every container in the store, oldest first."""
        found = []
        for d in store.containers.iterdir():
            try:
                found.append(cls.load_dir(store, d))
            except (OSError, ValueError):
                continue  # being created or removed right now
        return sorted(found, key=lambda c: c.state.created)

    @classmethod
    def find(cls, store: Store, ref: str) -> Container:
        """By name, full id, or unique id prefix; Docker's message when there is none."""
        if ref and (store.containers / ref / "state.json").exists():
            return cls.load_dir(store, store.containers / ref)
        everyone = cls.all(store)
        by_name = [c for c in everyone if c.state.name == ref]
        if by_name:
            return by_name[0]
        by_prefix = [c for c in everyone if ref and c.id.startswith(ref)]
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            raise ContainerError(f"multiple containers found with provided prefix: {ref}")
        raise ContainerError(f"No such container: {ref}")

    def save(self) -> None:
        write_state(self.state_file, self.state)

    def reload(self) -> None:
        self.state = ContainerState.from_dict(read_json(self.state_file))

    # ------------------------------------------------------------ status

    def refresh(self) -> ContainerState:
        """Re-read state.json; a running container whose monitor is gone is exited.

        The monitor may have been killed (kill -9 of the CLI). The container,
        which dies with it (parent-death signal), then really ended by SIGKILL: 137.
        """
        try:
            self.reload()
        except FileNotFoundError:
            raise ContainerError(f"No such container: {self.id}") from None
        s = self.state
        if s.status == "running" and not _alive(s.monitor_pid, s.monitor_start):
            s.status, s.exit_code = "exited", 128 + signal.SIGKILL
            s.finished_at = s.finished_at or now()
            self._save_quietly()
        return s

    @property
    def running(self) -> bool:
        return self.refresh().status == "running"

    @property
    def being_started(self) -> bool:
        """Created, and the `run` that created it is still alive (so it may start any moment)."""
        return self.state.status == "created" and _alive(self.state.monitor_pid, self.state.monitor_start)

    def _save_quietly(self) -> None:
        try:
            self.save()
        except OSError:
            pass  # removed meanwhile

    # ------------------------------------------------------------ creating

    @classmethod
    def create(cls, store: Store, image_ref: str, opts: RunOptions, *, name: str | None = None,
               auto_remove: bool = False, detached: bool = False,
               narrator: Narration = SILENT) -> Container:
        """Make the container's directory: bundle, upper/work dirs, state "created".

        Built under tmp/ and renamed into containers/ (store.py's rule), so a
        failure at any point leaves nothing behind.
        """
        from minicontainer.image import resolve

        image = resolve(store, image_ref, narrator=narrator)
        opts = _resolve_network_container(store, opts)
        container_id = os.urandom(32).hex()
        staging = store.mkdtemp("container-")
        final = store.container_dir(container_id)
        try:
            plan = _prepare_rootfs(store, image.layer_dirs(store), staging, final)
            config = build_config(container_id, image.id, image.config, opts, plan, staging)
            # build_config wrote the /etc files in staging: point their mounts at the final place
            for m in config["mounts"]:
                if m.get("source", "").startswith(str(staging)):
                    m["source"] = str(final) + m["source"][len(str(staging)):]
            with store.lock("container-names"):
                chosen = _unique_name(store, name)
                # the network step names the container in /etc/hosts and finds the store's IPAM
                config["annotations"].update({A_NAME: chosen, A_STORE: str(store.root)})
                write_bundle(staging, config)
                state = ContainerState(
                    id=container_id, name=chosen, image=image.id, image_ref=image_ref,
                    command=config["process"]["args"], created=now(), auto_remove=auto_remove,
                    detached=detached, interactive=opts.interactive, tty=opts.tty,
                    rootfs_mode=plan.mode,
                    # until it starts, the creating CLI answers for it (see being_started)
                    monitor_pid=os.getpid(), monitor_start=process_start_time(os.getpid()))
                write_state(staging / "state.json", state)
                narrator.step(lambda: call("rename", staging, final),
                              "the container's bundle (config.json + rootfs/), upper/ and work/ appear whole")
                os.rename(staging, final)
        except BaseException:
            remove_tree(staging)
            raise
        return cls(store, state)

    # ------------------------------------------------------------ running

    def bundle(self):  # -> runtime.Bundle
        from minicontainer.runtime import Bundle

        return Bundle.load(self.dir)

    def run_foreground(self, narrator: Narration = SILENT) -> int:
        """Run in this process's terminal; return Docker's exit status for the command."""
        from minicontainer import runtime

        bundle = self.bundle()
        stdin = 0 if self.state.interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if self.state.tty and self.state.interactive and not os.isatty(0):
            self._discard()
            raise ContainerError("the input device is not a TTY")
        runtime.block_forwarded_signals()
        try:
            started = self._start(bundle, runtime.Stdio(stdin, 1, 2), narrator)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, runtime.FORWARDED_SIGNALS)
            raise
        finally:
            if stdin != 0:
                os.close(stdin)
        try:
            if started.pty_master is not None:
                runtime.proxy_terminal(started.pty_master, started.pid, stdin=self.state.interactive)
        except BaseException:  # the CLI itself failed: the container must not outlive it
            os.kill(started.pid, signal.SIGKILL)
            self._finish(bundle, runtime.wait(started.pid, forward_signals=False))
            raise
        code = runtime.wait(started.pid)
        self._finish(bundle, code, narrator)
        return code

    def run_detached(self, narrator: Narration = SILENT) -> None:
        """Start under a monitor process that outlives this CLI; return once the command runs.

        Double fork + setsid(2): the monitor is nobody's child but init's and
        has no terminal, so closing the shell does not touch it. The result of
        the start (ok, or the error to raise here) comes back over a pipe.
        """
        read_end, write_end = os.pipe()
        first = os.fork()
        if first == 0:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                self._monitor(write_end, narrator)  # never returns
            os._exit(0)
        os.close(write_end)
        os.waitpid(first, 0)
        with os.fdopen(read_end, "rb") as f:
            answer = f.read().decode()
        if answer != "ok":
            kind, _, message = answer.partition(":")
            error = {"127": "CommandNotFound", "126": "CommandNotExecutable"}.get(kind)
            from minicontainer import errors

            raise getattr(errors, error, ContainerError)(message or "the monitor died")

    def _monitor(self, report_fd: int, narrator: Narration = SILENT) -> None:
        """The detached container's parent: start it, report, wait, record its exit."""
        from minicontainer import runtime

        code = 0
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # let go of the CLI's terminal or pipes
                os.dup2(null, fd)
            os.close(null)
            bundle = self.bundle()
            log = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            try:
                started = self._start(bundle, runtime.Stdio(0, log, log), narrator)
            except MiniContainerError as e:
                os.write(report_fd, f"{e.exit_code}:{e}".encode())
                os._exit(0)
            os.write(report_fd, b"ok")
            os.close(report_fd)
            narrator.close()  # the CLI is done: let go of its stderr
            if started.pty_master is None:
                self._become_small_waiter(started.pid)  # never returns
            # With -t the monitor also copies the terminal's output into the log.
            runtime.proxy_terminal(started.pty_master, started.pid, stdin=False, out=log)
            status = runtime.wait(started.pid, forward_signals=False)
            self._finish(bundle, status)
        except BaseException as e:  # noqa: BLE001 - a monitor must always exit
            try:
                os.write(report_fd, f"125:{e}".encode())
            except OSError:
                pass
            code = 1
        os._exit(code)

    def _become_small_waiter(self, pid: int) -> None:
        """execve(2) a bare interpreter that only waits for `pid`, then runs `finish` (container.py).

        The monitor lives as long as the container, so it must be small: this
        forked CLI holds click, the image code and more (~20 MB). A process
        keeps its children across execve, so a fresh `python -I -S` (a few MB)
        can still waitpid(2) for the container; once it has the status it
        execs the full interpreter again for the bookkeeping.
        """
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _WAITER, str(pid), sys.executable,
                                  str(self.store.root), self.id])

    def _start(self, bundle, stdio, narrator: Narration = SILENT):  # -> runtime.Started
        """Start the process; on failure remove the container (Docker's `run` leaves none then)."""
        from minicontainer import runtime

        try:
            started = runtime.start(bundle, stdio, narrator)
        except BaseException:
            runtime.release(bundle)
            self._discard()
            raise
        s = self.state
        s.status, s.pid, s.started_at = "running", started.pid, now()
        s.pid_start = process_start_time(started.pid)
        s.monitor_pid = os.getpid()
        s.monitor_start = process_start_time(os.getpid())
        self.save()
        return started

    def _finish(self, bundle, code: int, narrator: Narration = SILENT) -> None:
        """Record the exit (atomically), release host resources, and honour --rm."""
        from minicontainer import runtime

        oom = runtime.oom_killed(bundle)  # the cgroup that counted it goes with release
        # The exit is recorded first: whatever release meets, the status is not lost.
        with self.store.lock(f"container-{self.id}"):
            if not self.state_file.exists():
                return  # removed meanwhile (rm -f)
            self.state.status, self.state.exit_code, self.state.finished_at = "exited", code, now()
            self.state.oom_killed = oom
            self.save()
        try:
            runtime.release(bundle, narrator)
        except (OSError, MiniContainerError) as e:  # the command's status still stands; rm retries
            print(f"minicontainer: cleaning up container {self.id[:12]}: {e}", file=sys.stderr)
            return
        if self.state.auto_remove:
            self._discard(narrator)

    def _discard(self, narrator: Narration = SILENT) -> None:
        with self.store.lock(f"container-{self.id}"):
            narrator.step(lambda: f"rm -r {self.dir}  "
                                  f"({', '.join(sorted(os.listdir(self.dir)) if self.dir.is_dir() else [])})",
                          "the container's writable layer, bundle, log and state: the image is untouched")
            remove_tree(self.dir)

    # ------------------------------------------------------------ lifecycle

    def exec(self, args: list[str], *, interactive: bool = False, tty: bool = False,
             user: str | None = None, workdir: str | None = None, env: list[str] | None = None,
             narrator: Narration = SILENT) -> int:
        """Run one more command inside the running container; return its exit status."""
        from minicontainer import runtime
        from minicontainer.bundle import A_USER

        if not self.running:
            raise ContainerError(f"container {self.id[:12]} is not running")
        if tty and interactive and not os.isatty(0):
            raise ContainerError("the input device is not a TTY")
        bundle = self.bundle()
        process = dict(bundle.config["process"])
        process.update(args=list(args), terminal=tty, cwd=workdir or process.get("cwd", "/"))
        merged = dict(e.partition("=")[::2] for e in process.get("env", []))
        for item in env or []:
            key, eq, value = item.partition("=")
            if eq:
                merged[key] = value
            elif key in os.environ:
                merged[key] = os.environ[key]
        process["env"] = [f"{k}={v}" for k, v in merged.items()]
        user_spec = user if user is not None else bundle.annotation(A_USER)
        stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            started = runtime.exec_process(self.state.pid, process, user_spec,
                                           runtime.Stdio(stdin, 1, 2), narrator=narrator,
                                           seccomp=bundle.config.get("linux", {}).get("seccomp"))
        finally:
            if stdin != 0:
                os.close(stdin)
        if started.pty_master is not None:
            runtime.proxy_terminal(started.pty_master, started.pid, stdin=interactive)
        return runtime.wait(started.pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """kill(2) the container's PID 1 with `sig` (checked against pid reuse first)."""
        if not self.running or not _alive(self.state.pid, self.state.pid_start):
            raise ContainerError(f"cannot kill container {self.id[:12]}: container is not running")
        os.kill(self.state.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; return when the exit is recorded."""
        if not self.running:
            return
        try:
            os.kill(self.state.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not self._wait_monitor(timeout):
            try:
                os.kill(self.state.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_monitor(None)
        if self.state_file.exists():  # with --rm the monitor has removed it
            self.refresh()

    def _wait_monitor(self, timeout: float | None) -> bool:
        """Wait until the monitor has exited (after recording the exit); False on timeout.

        pidfd_open(2) + poll(2): woken exactly when it exits, no sleeping loop.
        """
        import select

        s = self.state
        try:
            fd = os.pidfd_open(s.monitor_pid)
        except (ProcessLookupError, TypeError):
            return True
        try:
            if not _alive(s.monitor_pid, s.monitor_start):
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
        finally:
            os.close(fd)

    def remove(self, force: bool = False, narrator: Narration = SILENT) -> None:
        """Delete the container: its bundle, upper layer, log and state (Docker's `rm`)."""
        from minicontainer import runtime

        if self.running:
            if not force:
                raise ContainerError(f"cannot remove container {self.state.name}: container is running:"
                                     " stop the container before removing or force remove")
            narrator.step(lambda: f"kill({self.state.pid}, SIGKILL)",
                          "rm -f: PID 1 of the container dies, and with it its PID namespace")
            try:
                os.kill(self.state.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_monitor(None)
        try:
            bundle = self.bundle()
        except (OSError, ValueError):
            bundle = None  # removed meanwhile by its --rm monitor, or never written whole
        if bundle is not None:
            runtime.release(bundle, narrator)
        self._discard(narrator)

    def logs(self, follow: bool = False, out: Any = None) -> None:
        """Copy the log to `out`; with follow, keep copying until the container exits."""
        import select

        out = out or sys.stdout.buffer
        try:
            f = open(self.log_file, "rb")
        except FileNotFoundError:
            return
        with f:
            pidfd = None
            if follow and self.running:
                try:
                    pidfd = os.pidfd_open(self.state.monitor_pid)
                except ProcessLookupError:
                    pass
            while True:
                chunk = f.read(65536)
                if chunk:
                    out.write(chunk)
                    out.flush()
                    continue
                if pidfd is None:
                    break
                # Nothing new: sleep until the monitor exits or 100 ms pass, then look again.
                if select.select([pidfd], [], [], 0.1)[0]:
                    os.close(pidfd)
                    pidfd = None

    def namespaces(self) -> dict[str, int]:
        """The inode number of each namespace of the running container (same inode = same namespace)."""
        if not self.running:
            return {}
        out = {}
        for name in ("pid", "net", "mnt", "uts", "ipc", "cgroup", "user"):
            try:
                out[name] = os.stat(f"/proc/{self.state.pid}/ns/{name}").st_ino
            except OSError:
                pass
        return out

    def inspect(self) -> dict[str, Any]:
        """Everything about the container, as `inspect` prints it."""
        s = self.refresh()
        try:
            config = read_json(self.dir / "config.json")
        except OSError:
            config = {}
        ann = config.get("annotations", {})
        return {
            "Id": s.id, "Name": s.name, "Created": s.created, "Image": s.image, "ImageRef": s.image_ref,
            "Command": s.command,
            "State": {"Status": s.status, "Running": s.status == "running",
                      "Pid": s.pid if s.status == "running" else 0, "ExitCode": s.exit_code,
                      "OOMKilled": s.oom_killed,
                      "StartedAt": s.started_at, "FinishedAt": s.finished_at,
                      "MonitorPid": s.monitor_pid if s.status == "running" else 0},
            "Namespaces": self.namespaces(),
            "BundlePath": str(self.dir),
            "Rootfs": str(self.dir / config.get("root", {}).get("path", "rootfs")),
            "RootfsMode": s.rootfs_mode,
            "UpperDir": ann.get("org.minicontainer.rootfs.upperdir"),
            "LogPath": str(self.log_file),
            "AutoRemove": s.auto_remove,
            "NetworkSettings": self.network_settings(config),
            "Config": config,
        }

    def network_settings(self, config: dict[str, Any]) -> dict[str, Any]:
        """Network, IP, MAC and host-side veth, as IPAM recorded them (Docker's NetworkSettings)."""
        from minicontainer.network import endpoint_of

        joined = [ns.get("path") for ns in config.get("linux", {}).get("namespaces", [])
                  if ns.get("type") == "network"]
        mode = "host" if not joined else ("container" if joined[0] else "none")
        endpoint = endpoint_of(self.store, self.id)
        if endpoint is None:
            return {"Mode": mode}
        return {"Mode": "bridge", "Network": endpoint.network, "Bridge": endpoint.bridge,
                "IPAddress": endpoint.ip, "IPPrefixLen": endpoint.prefixlen, "Gateway": endpoint.gateway,
                "MacAddress": endpoint.mac, "HostVeth": endpoint.host_veth, "Ports": endpoint.ports}

    def status_text(self) -> str:
        """Docker's STATUS column: "Up 3 seconds", "Exited (0) 2 minutes ago", "Created"."""
        s = self.state
        if s.status == "running":
            return f"Up {age(s.started_at)}"
        if s.status == "exited":
            return f"Exited ({s.exit_code}) {age(s.finished_at)} ago"
        return "Created"

    def command_text(self) -> str:
        return describe_command(self.state.command)


def _resolve_network_container(store: Store, opts: RunOptions) -> RunOptions:
    """--network container:NAME → the network namespace of that running container (/proc/PID/ns/net)."""
    if not opts.network.startswith("container:"):
        return opts
    target = Container.find(store, opts.network.partition(":")[2])
    if not target.running:
        raise ContainerError(f"cannot join the network of container {target.state.name}: it is not running")
    return replace(opts, network_namespace=f"/proc/{target.state.pid}/ns/net")


# The small waiter (see Container._become_small_waiter): argv = pid, python, store root, id.
_WAITER = """import os, sys
pid, python, root, cid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
code = 128 - code if code < 0 else code
os.execv(python, [python, "-m", "minicontainer.container", "finish", root, cid, str(code)])
"""


def finish(store: Store, container_id: str, code: int) -> None:
    """Record a detached container's exit (run by the small waiter once its container is gone)."""
    container = Container.find(store, container_id)
    container._finish(container.bundle(), code)


def prune(store: Store) -> list[str]:
    """Remove every container that is not running (nor being started); return their ids."""
    removed = []
    for c in Container.all(store):
        try:
            if not c.running and not c.being_started:
                c.remove()
                removed.append(c.id)
        except ContainerError:
            continue  # vanished meanwhile
    return removed


def listing(store: Store, show_all: bool) -> list[Container]:
    """The containers `ps` shows, each freshly refreshed; one removed meanwhile is left out."""
    shown = []
    for c in Container.all(store):
        try:
            c.refresh()
        except ContainerError:
            continue  # a concurrent rm took it between the listing and now
        if show_all or c.state.status == "running":
            shown.append(c)
    return shown


def age(when: str | None) -> str:
    """"3 seconds", "5 minutes", "2 hours" since an ISO time."""
    if not when:
        return "?"
    seconds = int((_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(when)).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "Less than a second" if seconds < 1 else f"{seconds} second{'s' if seconds != 1 else ''}"


def _unique_name(store: Store, wanted: str | None) -> str:
    """The wanted name if free (else Docker's conflict error), or a fresh adjective_surname."""
    import re

    taken = {c.state.name for c in Container.all(store)}
    if wanted:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", wanted):
            raise ContainerError(f'invalid container name "{wanted}": only [a-zA-Z0-9][a-zA-Z0-9_.-] '
                                 "are allowed")
        if wanted in taken:
            raise ContainerError(f'the container name "{wanted}" is already in use')
        return wanted
    while True:
        candidate = f"{_pick(_ADJECTIVES)}_{_pick(_SURNAMES)}"
        if candidate in taken:
            candidate += f"_{_pick(range(10000))}"
        if candidate not in taken:
            return candidate


def _pick(choices):  # random.choice without importing random (and hashlib) on the `run` path
    return choices[int.from_bytes(os.urandom(4), "little") % len(choices)]


def write_state(path: Path, state: ContainerState) -> None:
    """Replace state.json atomically: a temporary file beside it, then rename(2).

    Unlike store.atomic_write_json there is no fsync(2): a state describes
    processes, which do not survive a crash of the machine anyway, and the
    fsyncs were a measurable part of `run`'s start-up time.
    """
    import json

    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- the root filesystem

def rootfs_mode(store: Store) -> str:
    """"overlay", or "copy" where overlayfs cannot work (said once, on stderr).

    overlayfs must be known to the kernel, and the store's filesystem must be
    able to hold an upper layer: an overlay or NFS store cannot. Docker
    calls the fallback the "vfs" storage driver. MINICONTAINER_ROOTFS=copy forces it.
    """
    forced = os.environ.get("MINICONTAINER_ROOTFS")
    if forced in ("overlay", "copy"):
        return forced
    try:
        kernel_has_overlay = "\toverlay\n" in Path("/proc/filesystems").read_text()
    except OSError:
        kernel_has_overlay = False
    fstype = _filesystem_type(store.root)
    if kernel_has_overlay and fstype not in ("overlay", "nfs", "nfs4", "cifs", "smb3", "aufs"):
        return "overlay"
    print(f"minicontainer: overlayfs is not usable here (store on {fstype}); "
          "copying the image's layers for each container instead (slower)", file=sys.stderr)
    return "copy"


def _filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path`: the longest mount point above it (proc(5) mountinfo)."""
    best, fstype = "", "?"
    target = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4]
        fs = fields[fields.index("-") + 1]
        if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) \
                and len(mount_point) >= len(best):
            best, fstype = mount_point, fs
    return fstype


def _prepare_rootfs(store: Store, layer_dirs: list[Path], staging: Path, final: Path) -> RootfsPlan:
    """Make rootfs/, upper/, work/ and say how the runtime will assemble the root filesystem."""
    mode = rootfs_mode(store)
    for sub in ("rootfs", "upper", "work"):
        (staging / sub).mkdir(mode=0o755)
    if not layer_dirs:  # an image of no layers: overlayfs still wants one lowerdir
        (staging / "empty").mkdir()
        layer_dirs = [final / "empty"]
    if mode == "copy":
        for layer in layer_dirs:
            copy_layer(layer if layer.exists() else staging / "empty", staging / "rootfs")
    names = [p.name if p.parent == store.layers else str(p) for p in layer_dirs]
    return RootfsPlan(mode, store.layers, names, final / "upper", final / "work")


def copy_layer(src: Path, dst: Path) -> None:
    """Apply one layer (overlay format) onto a plain directory: the `copy` fallback.

    What overlayfs does at lookup time, done once by copying: a character
    device 0/0 is a whiteout (delete that path), a directory with the xattr
    trusted.overlay.opaque=y hides everything below it in lower layers.
    """
    for entry in os.scandir(src):
        s, d = Path(entry.path), dst / entry.name
        st = os.lstat(s)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            remove_tree(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            if d.is_symlink() or (d.exists() and not d.is_dir()) or _opaque(s):
                remove_tree(d)
            d.mkdir(exist_ok=True)
            copy_layer(s, d)
        else:
            remove_tree(d)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(s, d)
            else:
                os.mknod(d, st.st_mode, st.st_rdev)
        os.lchown(d, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(d, stat.S_IMODE(st.st_mode))
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


if __name__ == "__main__":  # `python -m minicontainer.container finish ROOT ID CODE`: see _WAITER
    if sys.argv[1:2] == ["finish"] and len(sys.argv) == 5:
        finish(Store.open(sys.argv[2]), sys.argv[3], int(sys.argv[4]))


def _copy_file(source: Path, target: Path) -> None:
    """Copy one regular file's bytes (shutil is imported only here: `run` rarely copies)."""
    import shutil

    shutil.copyfile(source, target, follow_symlinks=False)
