"""Control groups: how a container is *limited* (memory, CPU, number of processes).

Namespaces decide what a process can see; cgroups decide how much it can use.
A cgroup is a directory in a special filesystem: create the directory, write
limits into its files, write a pid into `cgroup.procs`, and the kernel applies
the limits to that process and to every child it ever forks.

Linux has two generations of the interface, and a host can mix them:

    v2 (unified)  one tree at /sys/fs/cgroup; files memory.max, cpu.max, pids.max
    v1 (legacy)   one tree per controller: /sys/fs/cgroup/memory/…,
                  /sys/fs/cgroup/cpu/…; files memory.limit_in_bytes, cpu.cfs_quota_us
    hybrid        v1 trees for the controllers, plus a v2 tree (often at
                  /sys/fs/cgroup/unified) that holds no controllers

This module finds out which one the host has (from /proc/self/mountinfo),
then speaks the right dialect.  The limits come in as the OCI runtime-spec's
`linux.resources` object, the same JSON that runc reads, and each container
gets the cgroup `minicontainer/<container id>` in every hierarchy it uses.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from minicontainer.errors import MiniContainerError
from minicontainer.explain import SILENT, Narration

PARENT = "minicontainer"

# The v1 controllers a container joins.  Others (blkio, cpuset, the
# name=systemd tree) are left alone: minicontainer sets no limit there, and a
# fresh cpuset cgroup would first need cpus and mems copied from its parent.
V1_JOINED = ("memory", "cpu", "cpuacct", "pids", "devices", "freezer")

# cgroup v1 reports "no limit" as the largest page-aligned 64-bit number.
V1_UNLIMITED = 0x7FFFFFFFFFFFF000

# runc's CFS period when only a quota is given, and the kernel's minimum quota.
DEFAULT_CPU_PERIOD = 100_000
MIN_CPU_QUOTA = 1_000


class CgroupMode(Enum):
    """Which cgroup interface the host offers."""

    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Layout:
    """Where the cgroup hierarchies of this host are mounted, and what they control.

    `v1` maps each v1 controller to the mount point of the tree that carries it
    (co-mounted controllers such as `cpu,cpuacct` share one path); `v2` is the
    unified tree, and `v2_controllers` what its root offers to children.
    """

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None
    v2_controllers: frozenset[str] = frozenset()

    @property
    def mode(self) -> CgroupMode:
        if self.v1 and self.v2 is not None:
            return CgroupMode.HYBRID
        if self.v1:
            return CgroupMode.V1
        if self.v2 is not None:
            return CgroupMode.V2
        raise MiniContainerError("no cgroup filesystem is mounted (see /proc/self/mountinfo)")

    def where(self, controller: str) -> str | None:
        """'v1' or 'v2': the hierarchy that enforces `controller`, or None if neither does.

        A controller mounted as v1 belongs to v1: the kernel lets each controller
        live in one hierarchy only.  In v2, `cpu.stat` exists in every cgroup, so
        CPU accounting (cpuacct) works there without the cpu controller.
        """
        if controller in self.v1:
            return "v1"
        if self.v2 is not None and (controller in self.v2_controllers or controller == "cpuacct"):
            return "v2"
        return None

    def can_limit_swap(self) -> bool:
        """Whether the kernel accounts swap (boot option swapaccount, CONFIG_MEMCG_SWAP)."""
        if "memory" in self.v1:
            return (self.v1["memory"] / "memory.memsw.limit_in_bytes").exists()
        if self.where("memory") == "v2":
            # memory.swap.max appears only in children; the root shows swap.current
            assert self.v2 is not None
            return (self.v2 / "memory.swap.current").exists()
        return False


def _unescape(field_: str) -> str:
    """mountinfo writes a space in a path as \\040 (and tab, newline, backslash alike)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def detect(mountinfo: Path = Path("/proc/self/mountinfo"), prefix: Path = Path("/")) -> Layout:
    """Read the cgroup mounts of this host from `mountinfo` (see proc(5)).

    Each line reads `id parent major:minor root mountpoint options … - fstype source superoptions`.
    A v1 tree has fstype `cgroup` and names its controllers in the super
    options (`rw,memory`, `rw,cpu,cpuacct`); a v2 tree has fstype `cgroup2` and
    lists what it offers in its root's `cgroup.controllers`.  `prefix` lets the
    tests point at a fake tree.
    """
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in mountinfo.read_text().splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mountpoint = prefix / _unescape(fields[4]).lstrip("/")
        fstype, superopts = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = mountpoint
        elif fstype == "cgroup":
            for opt in superopts:
                if opt in ("rw", "ro") or "=" in opt:  # name=systemd carries no controller
                    continue
                v1.setdefault(opt, mountpoint)
    controllers: frozenset[str] = frozenset()
    if v2 is not None:
        try:
            controllers = frozenset((v2 / "cgroup.controllers").read_text().split())
        except OSError:
            pass
    return Layout(v1=v1, v2=v2, v2_controllers=controllers)


def cgroup_dirs_of(pid: int, layout: Layout | None = None, proc: Path = Path("/proc")) -> list[Path]:
    """The directories of the cgroups process `pid` is in, one per hierarchy mounted here.

    /proc/PID/cgroup has a line `id:controllers:path` per hierarchy (v2's
    names no controller); paths are as seen from our cgroup namespace. A
    hierarchy mounted nowhere here, or a named one (name=systemd), is left out.
    """
    layout = layout or detect()
    found = []
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root = layout.v2
        else:
            root = next((layout.v1[c] for c in controllers.split(",") if c in layout.v1), None)
        if root is not None:
            found.append(root / path.lstrip("/"))
    return found


# ---------------------------------------------------------------- from flags to OCI

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, flag: str) -> int:
    """`512m` → 536870912 (binary units, as `docker run --memory` reads them)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise MiniContainerError(f"invalid value {text!r} for {flag}: expected a size such as 512m or 1g")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower() if unit else None])


def parse_cpus(text: str, flag: str = "--cpus") -> tuple[int, int]:
    """`0.5` → (quota 50000, period 100000): half of one CPU in every 100 ms.

    The CFS scheduler lets the cgroup run `quota` microseconds per `period`,
    summed over all its threads, so 1.5 means one and a half CPUs.
    """
    try:
        cpus = float(text)
    except ValueError:
        raise MiniContainerError(f"invalid value {text!r} for {flag}: expected a number of CPUs such as 0.5")
    if cpus < 0 or cpus != cpus:  # NaN compares unequal to itself
        raise MiniContainerError(f"invalid value {text!r} for {flag}: the number of CPUs cannot be negative")
    available = os.cpu_count() or 1
    if cpus > available:
        raise MiniContainerError(f"invalid value {text!r} for {flag}: range of CPUs is from 0.01 to "
                                 f"{available}.00, as there are only {available} CPUs available")
    if cpus == 0:
        return 0, 0
    quota = round(cpus * DEFAULT_CPU_PERIOD)
    if quota < MIN_CPU_QUOTA:
        raise MiniContainerError(f"invalid value {text!r} for {flag}: the minimum is 0.01 CPUs")
    return quota, DEFAULT_CPU_PERIOD


def resources_from_flags(*, memory: str | None = None, memory_swap: str | None = None,
                         cpus: str | None = None, cpu_shares: int | None = None,
                         pids_limit: int | None = None, swap_accounting: bool = True) -> dict[str, Any]:
    """The `docker run` limit flags as an OCI `linux.resources` object.

    Docker's rules: `--memory-swap` is memory *plus* swap, -1 means unlimited,
    and without it a container may swap as much as its memory limit (so the sum
    is twice the limit) — where the kernel accounts swap at all.
    """
    resources: dict[str, Any] = {}
    mem: dict[str, int] = {}
    if memory is not None:
        mem["limit"] = parse_size(memory, "--memory")
        if mem["limit"] < 6 << 20:
            raise MiniContainerError(f"invalid value {memory!r} for --memory: the minimum is 6MB")
    if memory_swap is not None:
        if "limit" not in mem:
            raise MiniContainerError("--memory-swap needs --memory: the swap limit counts memory plus swap")
        swap = -1 if memory_swap.strip() == "-1" else parse_size(memory_swap, "--memory-swap")
        if swap != -1 and swap < mem["limit"]:
            raise MiniContainerError(f"invalid value {memory_swap!r} for --memory-swap: "
                                     "it must be at least --memory (it counts memory plus swap)")
        mem["swap"] = swap
    elif "limit" in mem and swap_accounting:
        mem["swap"] = 2 * mem["limit"]
    if mem:
        resources["memory"] = mem
    cpu: dict[str, int] = {}
    if cpus is not None:
        quota, period = parse_cpus(cpus)
        if quota:
            cpu["quota"], cpu["period"] = quota, period
    if cpu_shares is not None:
        if cpu_shares < 0:
            raise MiniContainerError(f"invalid value {cpu_shares} for --cpu-shares: it cannot be negative")
        if cpu_shares:  # 0 means "the default"; the kernel accepts 2…262144
            cpu["shares"] = min(max(cpu_shares, 2), 262144)
    if cpu:
        resources["cpu"] = cpu
    if pids_limit is not None and pids_limit > 0:  # 0 and -1 mean unlimited, as in Docker
        resources["pids"] = {"limit": pids_limit}
    return resources


def default_devices(privileged: bool = False) -> list[dict[str, Any]]:
    """runc's device allow-list, as OCI `linux.resources.devices` rules.

    Stops: a container that makes (mknod) or finds a node for the host's disk or
    /dev/mem and reads or rewrites it.  Everything is denied, then only the
    harmless character devices are allowed; mknod itself stays allowed, as in
    Docker, because a node that cannot be opened is inert.
    """
    if privileged:
        return [{"allow": True, "access": "rwm"}]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"},
                                   {"allow": True, "type": "c", "access": "m"},
                                   {"allow": True, "type": "b", "access": "m"}]
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None)):
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def cpu_weight(shares: int) -> int:
    """v1 cpu.shares (2…262144, default 1024) → v2 cpu.weight (1…10000, default 100), runc's formula."""
    return 1 + ((shares - 2) * 9999) // 262142


def _device_rule_v1(rule: dict[str, Any]) -> str:
    """An OCI device rule as a line for devices.allow / devices.deny: `c 1:3 rwm`."""
    kind = rule.get("type", "a")
    major = "*" if rule.get("major") is None else str(rule["major"])
    minor = "*" if rule.get("minor") is None else str(rule["minor"])
    return f"{kind} {major}:{minor} {rule.get('access', 'rwm')}"


# ---------------------------------------------------------------- one container's cgroup


@dataclass(frozen=True)
class Stats:
    """One sample of a container's use: what `minicontainer stats` prints."""

    cpu_usage_ns: int
    memory_usage: int
    memory_limit: int | None  # None: no limit
    pids: int
    oom_kills: int


@dataclass(frozen=True)
class Cgroup:
    """The cgroup of one container: `minicontainer/<id>` in every hierarchy it uses.

    `name` is the path below each hierarchy's root, as in the OCI config's
    `linux.cgroupsPath` (a leading slash is allowed and ignored).
    """

    name: str
    layout: Layout
    narrator: Narration = field(default=SILENT, compare=False, repr=False)  # --explain

    @classmethod
    def for_container(cls, container_id: str, layout: Layout | None = None) -> Cgroup:
        return cls(f"{PARENT}/{container_id}", layout or detect())

    # -- where it lives

    def _path(self, root: Path) -> Path:
        return root / self.name.strip("/")

    def _v2_path(self) -> Path | None:
        return None if self.layout.v2 is None else self._path(self.layout.v2)

    def directories(self) -> list[Path]:
        """Every directory of this cgroup: one per joined v1 tree, plus the v2 one.

        On a hybrid host the process joins the controller-less v2 tree too: it
        costs nothing and gives `cgroup.kill` and a single list of the
        container's processes.
        """
        seen: list[Path] = []
        for controller in V1_JOINED:
            root = self.layout.v1.get(controller)
            if root is not None and self._path(root) not in seen:
                seen.append(self._path(root))
        v2 = self._v2_path()
        if v2 is not None:
            seen.append(v2)
        return seen

    def _file(self, controller: str, name: str) -> Path:
        """The file `name` of `controller`, in whichever hierarchy enforces it."""
        where = self.layout.where(controller)
        if where == "v1":
            return self._path(self.layout.v1[controller]) / name
        if where == "v2":
            v2 = self._v2_path()
            assert v2 is not None
            return v2 / name
        raise MiniContainerError(f"the {controller} cgroup controller is not available on this host")

    # -- life cycle

    def _write(self, path: Path, value: str) -> None:
        """Write a limit or a setting into one of our files (said aloud with --explain)."""
        self.narrator.step(lambda: f"write {path} ← {value!r}",
                           "from now on the kernel enforces it on every process in the cgroup")
        _write(path, value)

    def create(self, resources: dict[str, Any] | None = None) -> None:
        """mkdir(2) the cgroup in every hierarchy, then write the limits (cgroups(7)).

        Runs before the container's command: a limit set after the process
        started could arrive too late (the fork bomb is already running).
        """
        resources = resources or {}
        self._check_enforceable(resources)
        try:
            for directory in self.directories():
                _mkdir_parents(directory)
                if directory == self._v2_path():
                    self._enable_v2_controllers()
            self._apply(resources)
        except BaseException:
            self.destroy()
            raise

    def _check_enforceable(self, resources: dict[str, Any]) -> None:
        """Refuse a limit no hierarchy can enforce, rather than run the container unlimited."""
        needs = {"memory": "memory", "cpu": "cpu", "pids": "pids"}
        for key, controller in needs.items():
            if resources.get(key) and self.layout.where(controller) is None:
                raise MiniContainerError(
                    f"cannot apply the {key} limit: the {controller} cgroup controller is not "
                    f"available on this host ({self.layout.mode.value} cgroups)")
        if resources.get("memory", {}).get("swap") not in (None, -1) and not self.layout.can_limit_swap():
            raise MiniContainerError("cannot apply --memory-swap: this kernel does not account swap "
                                     "in the memory cgroup controller (boot option swapaccount=1)")

    def _enable_v2_controllers(self) -> None:
        """Write `+memory +cpu +pids` into `cgroup.subtree_control` on the way down.

        In v2 a controller reaches a cgroup only if every ancestor hands it
        down; the root offers what the kernel has, each level must pass it on.
        """
        assert self.layout.v2 is not None
        wanted = [c for c in ("cpu", "memory", "pids") if self.layout.where(c) == "v2"]
        if not wanted:
            return  # a hybrid host's v2 tree: no controller to hand down, only the processes
        control = " ".join(f"+{c}" for c in wanted)
        node = self.layout.v2
        for part in Path(self.name.strip("/")).parts[:-1]:  # the root, then each parent
            self._write(node / "cgroup.subtree_control", control)
            node = node / part
        self._write(node / "cgroup.subtree_control", control)

    def _apply(self, resources: dict[str, Any]) -> None:
        """Translate OCI `linux.resources` into the files of v1 or v2."""
        memory = resources.get("memory") or {}
        cpu = resources.get("cpu") or {}
        pids = resources.get("pids") or {}
        if memory.get("limit"):
            if self.layout.where("memory") == "v1":
                self._write(self._file("memory", "memory.limit_in_bytes"), str(memory["limit"]))
                if memory.get("swap") not in (None, 0):
                    # memsw counts memory + swap, exactly OCI's memory.swap
                    self._write(self._file("memory", "memory.memsw.limit_in_bytes"), str(memory["swap"]))
            else:
                self._write(self._file("memory", "memory.max"), str(memory["limit"]))
                swap = memory.get("swap")
                if swap not in (None, 0) and self.layout.can_limit_swap():
                    # v2 limits swap alone: memory.swap.max = (memory + swap) - memory
                    self._write(self._file("memory", "memory.swap.max"),
                                "max" if swap == -1 else str(swap - memory["limit"]))
        if cpu.get("shares"):
            if self.layout.where("cpu") == "v1":
                self._write(self._file("cpu", "cpu.shares"), str(cpu["shares"]))
            else:
                self._write(self._file("cpu", "cpu.weight"), str(cpu_weight(cpu["shares"])))
        if cpu.get("quota") or cpu.get("period"):
            period = cpu.get("period") or DEFAULT_CPU_PERIOD
            quota = cpu.get("quota") or -1
            if self.layout.where("cpu") == "v1":
                self._write(self._file("cpu", "cpu.cfs_period_us"), str(period))
                self._write(self._file("cpu", "cpu.cfs_quota_us"), str(quota))
            else:
                self._write(self._file("cpu", "cpu.max"), f"{'max' if quota < 0 else quota} {period}")
        if pids.get("limit", 0) > 0:
            self._write(self._file("pids", "pids.max"), str(pids["limit"]))
        self._apply_devices(resources.get("devices") or [])

    def _apply_devices(self, rules: list[dict[str, Any]]) -> None:
        """Write the device rules into the v1 devices controller, where there is one.

        v2 has no device files (it wants an eBPF program); there the
        container's root is mounted nodev and only the runtime's own /dev holds
        nodes, which stops the same attack.
        """
        if not rules or "devices" not in self.layout.v1:
            return
        directory = self._path(self.layout.v1["devices"])
        for rule in rules:
            self._write(directory / ("devices.allow" if rule.get("allow") else "devices.deny"),
                        _device_rule_v1(rule))

    def add(self, pid: int) -> None:
        """Move process `pid` (and later all its children) into the cgroup: write it to cgroup.procs."""
        for directory in self.directories():
            _write(directory / "cgroup.procs", str(pid))

    def join(self) -> None:
        """Move the calling process in (pid 0 means "me", whatever pid namespace I am in)."""
        self.add(0)

    def pids(self) -> list[int]:
        """The processes in the cgroup (all of them: children inherit the cgroup)."""
        for directory in self.directories():
            try:
                return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
            except OSError:
                continue
        return []

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.directories())

    # -- reading

    def stats(self) -> Stats:
        """One sample of CPU time, memory, pids and OOM kills."""
        return Stats(cpu_usage_ns=self._cpu_usage_ns(), memory_usage=self._memory_usage(),
                     memory_limit=self._memory_limit(), pids=self._pids_current(),
                     oom_kills=self.oom_kills())

    def _cpu_usage_ns(self) -> int:
        where = self.layout.where("cpuacct")
        if where == "v1":
            return _read_int(self._file("cpuacct", "cpuacct.usage"))
        if where == "v2":
            return _read_keyed(self._file("cpuacct", "cpu.stat")).get("usage_usec", 0) * 1000
        return 0

    def _memory_usage(self) -> int:
        """Usage minus the inactive page cache, as `docker stats` shows it."""
        where = self.layout.where("memory")
        if where is None:
            return 0
        if where == "v1":
            usage = _read_int(self._file("memory", "memory.usage_in_bytes"))
            cache = _read_keyed(self._file("memory", "memory.stat")).get("total_inactive_file", 0)
        else:
            usage = _read_int(self._file("memory", "memory.current"))
            cache = _read_keyed(self._file("memory", "memory.stat")).get("inactive_file", 0)
        return usage - cache if cache < usage else usage

    def _memory_limit(self) -> int | None:
        where = self.layout.where("memory")
        if where is None:
            return None
        name = "memory.limit_in_bytes" if where == "v1" else "memory.max"
        try:
            text = self._file("memory", name).read_text().strip()
        except OSError:
            return None
        if text == "max" or int(text) >= V1_UNLIMITED:
            return None
        return int(text)

    def _pids_current(self) -> int:
        if self.layout.where("pids") is None:
            return len(self.pids())
        return _read_int(self._file("pids", "pids.current"))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup.

        v1: the `oom_kill` line of memory.oom_control (Linux 4.13+); v2: the
        `oom_kill` line of memory.events.
        """
        where = self.layout.where("memory")
        if where is None:
            return 0
        name = "memory.oom_control" if where == "v1" else "memory.events"
        return _read_keyed(self._file("memory", name)).get("oom_kill", 0)

    def oom_killed(self) -> bool:
        return self.oom_kills() > 0

    # -- ending

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the container, including ones that escaped PID 1's wait.

        With SIGKILL and a v2 directory that has `cgroup.kill` (Linux 5.14+) the
        kernel does it atomically; otherwise freeze the cgroup first so that no
        process can fork a new one between our reading the list and the kill.
        """
        v2 = self._v2_path()
        if sig == signal.SIGKILL and v2 is not None and (v2 / "cgroup.kill").exists():
            _write(v2 / "cgroup.kill", "1")
            return
        with self._frozen():
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    @contextmanager
    def _frozen(self) -> Iterator[None]:
        """Freeze the cgroup for the block: v1 freezer.state, v2 cgroup.freeze."""
        if "freezer" in self.layout.v1:
            state, frozen, thawed = self._path(self.layout.v1["freezer"]) / "freezer.state", "FROZEN", "THAWED"
        elif self._v2_path() is not None and (self._v2_path() / "cgroup.freeze").exists():
            state, frozen, thawed = self._v2_path() / "cgroup.freeze", "1", "0"
        else:
            yield
            return
        _write(state, frozen)
        try:
            yield
        finally:
            _write(state, thawed)  # a killed process dies only once it runs again

    def destroy(self, timeout: float = 10.0) -> None:
        """Kill what is left and rmdir(2) every directory, then the shared parent if empty.

        A cgroup directory can be removed only once it holds no process; a
        leftover `minicontainer` parent would be clutter (and a leak) on the host.
        """
        if not self.exists():
            self._remove_empty_parents()
            return
        if self.pids():
            self.kill(signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for directory in self.directories():
            while directory.is_dir():
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise MiniContainerError(f"cannot remove cgroup {directory}: {e.strerror}") from e
                    time.sleep(0.02)  # killed processes are still exiting
        self._remove_empty_parents()

    def _remove_empty_parents(self) -> None:
        parts = Path(self.name.strip("/")).parts
        for depth in range(len(parts) - 1, 0, -1):
            for root in {*self.layout.v1.values(), *([self.layout.v2] if self.layout.v2 else [])}:
                try:
                    (root / Path(*parts[:depth])).rmdir()
                except OSError:  # missing, or another container still lives there
                    pass


# ---------------------------------------------------------------- small file helpers


def _mkdir_parents(directory: Path) -> None:
    """mkdir -p, tolerating a parent that another container's destroy() removes meanwhile."""
    for _ in range(10):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    directory.mkdir(parents=True, exist_ok=True)


def _write(path: Path, value: str) -> None:
    """Write one value to a cgroup file; the kernel's refusal becomes a readable error."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise MiniContainerError(f"cannot write {value!r} to {path}: {e.strerror}") from e


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (`key value` per line, as memory.stat) as a dict."""
    result: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return result
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            result[key] = int(value)
    return result

