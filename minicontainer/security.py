"""Confinement: why root inside a container is not root on the host.

A container's PID 1 usually runs as uid 0.  What keeps it from loading kernel
modules, rebooting the host or reading its disk is not the uid but a stack of
smaller locks, the same ones runc and Docker apply by default:

    capabilities    root's power split into ~40 pieces; a container keeps 14
                    (capabilities(7))
    no_new_privs    a setuid binary can no longer raise privileges (prctl(2))
    seccomp         a filter in the kernel refuses dangerous system calls
                    before they run (seccomp(2)), written here as classic BPF
    masked paths    /proc and /sys files that leak or change the host are
                    hidden or made read-only (lists below, applied by runtime.py)
    devices         cgroups.default_devices() and a nodev root filesystem

The first half of this module turns `docker run` flags into the OCI
config.json fields (`process.capabilities`, `process.noNewPrivileges`,
`linux.seccomp`); the second half is what the container's process does with
them just before execve(2), in runc's order.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minicontainer import linux
from minicontainer.errors import MiniContainerError

# capabilities(7): name → bit number (linux/capability.h).
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

# Docker's default set (moby oci/caps/defaults.go).  Everything else is gone,
# among them SYS_ADMIN (mount, namespaces), SYS_MODULE (kernel modules),
# SYS_RAWIO (/dev/mem, I/O ports), SYS_BOOT, SYS_TIME, NET_ADMIN, SYS_PTRACE.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# Docker's masked paths: /dev/null over a file, an empty read-only tmpfs over a
# directory.  They stop reading host secrets and host state: kernel memory
# (/proc/kcore), the kernel keyring (/proc/keys), timers and scheduler details
# useful for side channels, and firmware tables (/sys/firmware).
DEFAULT_MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]
# Read-only paths stop host-wide writes that no namespace isolates:
# /proc/sysrq-trigger (reboot or crash the host), /proc/sys (kernel tunables).
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


# ---------------------------------------------------------------- flags → OCI


def last_capability() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def all_capabilities() -> list[str]:
    """Every capability this runtime holds itself (what --privileged gets).

    Known to the kernel (cap_last_cap) and in our own bounding set: a process
    cannot hand out what it lacks (capset(2) would fail with EPERM), and the
    runtime may itself run confined, say inside another container.
    """
    last = last_capability()
    try:
        status = Path("/proc/self/status").read_text()
        own = int(status.split("CapBnd:")[1].split()[0], 16)
    except (OSError, IndexError, ValueError):
        own = (1 << (last + 1)) - 1
    return [name for name, bit in CAPABILITIES.items() if bit <= last and own & (1 << bit)]


def normalize_capability(name: str, flag: str) -> str:
    """`net_admin`, `NET_ADMIN`, `cap_net_admin` → `CAP_NET_ADMIN`; `all` → `ALL`."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in CAPABILITIES:
        raise MiniContainerError(f"invalid value {name!r} for {flag}: unknown capability")
    return full


def capabilities(cap_add: list[str] = (), cap_drop: list[str] = (),  # type: ignore[assignment]
                 privileged: bool = False) -> list[str]:
    """The container's capability list from the defaults and the flags (Docker's rules).

    `--cap-add ALL` gives everything except what `--cap-drop` names;
    `--cap-drop ALL` keeps only what `--cap-add` names; otherwise the
    defaults minus the drops plus the adds.
    """
    adds = [normalize_capability(c, "--cap-add") for c in cap_add]
    drops = [normalize_capability(c, "--cap-drop") for c in cap_drop]
    if privileged:
        return all_capabilities()
    if "ALL" in adds:
        chosen = [c for c in all_capabilities() if c not in drops]
    elif "ALL" in drops:
        chosen = adds
    else:
        chosen = [c for c in DEFAULT_CAPABILITIES if c not in drops] + adds
    return list(dict.fromkeys(chosen))  # no duplicates, order kept


def process_capabilities(caps: list[str], uid: int) -> dict[str, list[str]]:
    """OCI `process.capabilities` for a process that will run as `uid`.

    Root gets the list as bounding, permitted and effective set.  Any other
    user gets it as bounding set only, with empty effective and permitted sets,
    as Docker does: that is what execve(2) gives a non-root user anyway, and
    it stops `-u 1000` from quietly running with root's powers.  Inheritable
    stays empty (CVE-2022-24769: a non-empty one let file capabilities of a
    binary in the image climb back up).
    """
    if uid == 0:
        return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps),
                "inheritable": [], "ambient": []}
    return {"bounding": list(caps), "effective": [], "permitted": [], "inheritable": [], "ambient": []}


@dataclass(frozen=True)
class SecurityOptions:
    """What `--security-opt` asked for."""

    no_new_privileges: bool = False
    seccomp: bool = True


def parse_security_opts(opts: list[str]) -> SecurityOptions:
    """`--security-opt` values, Docker's spelling (`no-new-privileges`, `seccomp=unconfined`)."""
    nnp, seccomp = False, True
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep:  # the older spelling `no-new-privileges:true`
            key, _, value = opt.partition(":")
        if key == "no-new-privileges" and value.lower() in ("", "true", "false"):
            nnp = value.lower() != "false"
        elif key == "seccomp" and value == "unconfined":
            seccomp = False
        elif (key, value) in (("apparmor", "unconfined"), ("label", "disable")):
            pass  # asks for less of a Linux security module this runtime does not apply
        else:
            hint = " (seccomp profiles from files are not supported)" if key == "seccomp" else ""
            raise MiniContainerError(f"invalid value {opt!r} for --security-opt{hint}")
    return SecurityOptions(no_new_privileges=nnp, seccomp=seccomp)


# ---------------------------------------------------------------- the seccomp profile

# System call numbers on the two architectures served: (x86_64, aarch64).
# aarch64 uses the generic table and lacks some old calls (None).
SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    "acct": (163, 89), "add_key": (248, 217), "bpf": (321, 280), "clock_adjtime": (305, 266),
    "clock_settime": (227, 112), "clone": (56, 220), "clone3": (435, 435),
    "create_module": (174, None), "delete_module": (176, 106), "finit_module": (313, 273),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fsopen": (430, 430), "fspick": (433, 433),
    "get_kernel_syms": (177, None), "init_module": (175, 105), "ioperm": (173, None),
    "iopl": (172, None), "kcmp": (312, 272), "kexec_file_load": (320, 294), "kexec_load": (246, 104),
    "keyctl": (250, 219), "lookup_dcookie": (212, 18), "mount": (165, 40),
    "mount_setattr": (442, 442), "move_mount": (429, 429), "nfsservctl": (180, 42),
    "open_by_handle_at": (304, 265), "open_tree": (428, 428), "perf_event_open": (298, 241),
    "pivot_root": (155, 41), "quotactl": (179, 60), "reboot": (169, 142), "request_key": (249, 218),
    "setns": (308, 268), "settimeofday": (164, 170), "swapoff": (168, 225), "swapon": (167, 224),
    "sysfs": (139, None), "_sysctl": (156, None), "syslog": (103, 116), "umount2": (166, 39),
    "unshare": (272, 97), "uselib": (134, None), "userfaultfd": (323, 282), "ustat": (136, None),
}

# Docker's default profile, read the other way round: the calls it refuses,
# and the capability that would allow each again (None: refused whatever the
# capabilities).  Each group names the attack it stops.
DENIED_SYSCALLS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    # the kernel keyring is not namespaced: keys of the host and other containers
    (("add_key", "keyctl", "request_key"), ()),
    # replacing the running kernel
    (("kexec_load", "kexec_file_load"), ()),
    # "shocker": open any host file by its inode handle, escaping the root
    (("open_by_handle_at",), ("CAP_DAC_READ_SEARCH",)),
    # a favourite exploit primitive for kernel races
    (("userfaultfd",), ()),
    # obsolete calls with a record of bugs
    (("uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "create_module", "get_kernel_syms"), ()),
    # loading kernel code
    (("init_module", "finit_module", "delete_module"), ("CAP_SYS_MODULE",)),
    # mounts and namespaces: rearranging the filesystem, user namespaces as an attack surface
    (("mount", "umount2", "pivot_root", "setns", "unshare", "fsopen", "fsmount", "fsconfig",
      "fspick", "move_mount", "open_tree", "mount_setattr", "quotactl", "swapon", "swapoff",
      "lookup_dcookie"), ("CAP_SYS_ADMIN",)),
    (("bpf",), ("CAP_SYS_ADMIN", "CAP_BPF")),
    # performance counters leak kernel addresses and timings of other processes
    (("perf_event_open",), ("CAP_SYS_ADMIN", "CAP_PERFMON")),
    # the kernel log (addresses, host messages)
    (("syslog",), ("CAP_SYS_ADMIN", "CAP_SYSLOG")),
    (("reboot",), ("CAP_SYS_BOOT",)),
    # the clock is shared by every container and the host
    (("settimeofday", "clock_settime", "clock_adjtime"), ("CAP_SYS_TIME",)),
    (("acct",), ("CAP_SYS_PACCT",)),
    (("iopl", "ioperm"), ("CAP_SYS_RAWIO",)),
    (("kcmp",), ("CAP_SYS_PTRACE",)),
]

# clone(2) flags that create namespaces; refused (without CAP_SYS_ADMIN) like unshare.
CLONE_NAMESPACE_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
                         "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000,
                         "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                         "CLONE_NEWNET": 0x40000000}

OCI_ARCHES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def default_seccomp_profile(caps: list[str]) -> dict[str, Any]:
    """A Docker-like OCI `linux.seccomp` object for a container with `caps`.

    Everything is allowed except the calls above, which fail with EPERM as
    they would for an unprivileged user.  clone3 fails with ENOSYS instead, so
    that the C library falls back to clone, whose flags the filter can read
    (clone3 passes them in memory, out of a filter's reach).
    """
    have = set(caps)
    denied: list[str] = []
    for names, unless in DENIED_SYSCALLS:
        if not have.intersection(unless):
            denied += names
    rules: list[dict[str, Any]] = [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}]
    if "CAP_SYS_ADMIN" not in have:
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
        for flag in CLONE_NAMESPACE_FLAGS.values():
            rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                          "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]})
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": sorted(OCI_ARCHES.values()), "syscalls": rules}


# ---------------------------------------------------------------- seccomp → classic BPF

# linux/filter.h and linux/seccomp.h
BPF_LD_W_ABS = 0x20      # A = 32-bit word of struct seccomp_data at offset k
BPF_ALU_AND_K = 0x54     # A &= k
BPF_JEQ_K = 0x15         # if A == k jump jt else jf
BPF_JGE_K = 0x35         # if A >= k jump jt else jf
BPF_RET_K = 0x06         # return k: the verdict
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
OFFSET_NR, OFFSET_ARCH, OFFSET_ARGS = 0, 4, 16


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    """One `struct sock_filter`: u16 code, u8 jt, u8 jf, u32 k."""
    return struct.pack("=HBBI", code, jt, jf, k)


def _verdict(action: str, errno_ret: int | None) -> int:
    if action == "SCMP_ACT_ALLOW":
        return SECCOMP_RET_ALLOW
    if action == "SCMP_ACT_ERRNO":
        return SECCOMP_RET_ERRNO | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
        return SECCOMP_RET_KILL_PROCESS
    raise MiniContainerError(f"seccomp action {action} is not supported")


def compile_seccomp(profile: dict[str, Any], machine: str | None = None) -> bytes:
    """An OCI seccomp profile → a classic BPF program the kernel runs on every system call.

    The program reads `struct seccomp_data`: first the architecture (a 32-bit
    or x32 program uses other call numbers, so a filter written for x86_64
    numbers would not match them: such calls kill the process), then the call
    number, and for each rule compares number and arguments.  Only the low 32
    bits of an argument are compared; the profiles here need no more.
    """
    machine = machine or platform.machine()
    arch = AUDIT_ARCH.get(machine)
    if arch is None or OCI_ARCHES[machine] not in profile.get("architectures", [OCI_ARCHES[machine]]):
        raise MiniContainerError(f"seccomp: architecture {machine} is not supported")
    column = 0 if machine == "x86_64" else 1
    prog = [_insn(BPF_LD_W_ABS, OFFSET_ARCH), _insn(BPF_JEQ_K, arch, 1, 0),
            _insn(BPF_RET_K, SECCOMP_RET_KILL_PROCESS)]
    if machine == "x86_64":
        prog += [_insn(BPF_LD_W_ABS, OFFSET_NR), _insn(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
                 _insn(BPF_RET_K, SECCOMP_RET_KILL_PROCESS)]
    for rule in profile.get("syscalls", []):
        verdict = _verdict(rule["action"], rule.get("errnoRet"))
        args = rule.get("args") or []
        for name in rule["names"]:
            number = SYSCALLS.get(name, (None, None))[column]
            if number is None:
                continue  # not a call on this architecture: nothing to refuse
            prog += _rule(number, args, verdict)
    prog.append(_insn(BPF_RET_K, _verdict(profile.get("defaultAction", "SCMP_ACT_ALLOW"),
                                          profile.get("defaultErrnoRet"))))
    if len(prog) > 4096:  # BPF_MAXINSNS
        raise MiniContainerError("seccomp: the profile is too long for one filter")
    return b"".join(prog)


def _rule(number: int, args: list[dict[str, Any]], verdict: int) -> list[bytes]:
    """Instructions for "if nr == number and every argument condition holds: return verdict".

    Each failing test jumps over the rest of the rule (jump offsets count the
    instructions to skip), landing on the next rule.
    """
    body: list[list[bytes]] = []
    for arg in args:
        if arg.get("op") != "SCMP_CMP_MASKED_EQ" or max(arg["value"], arg.get("valueTwo", 0)) >= 1 << 32:
            raise MiniContainerError(f"seccomp: argument rule {arg} is not supported")
        body.append([_insn(BPF_LD_W_ABS, OFFSET_ARGS + 8 * arg["index"]),  # low word (little-endian)
                     _insn(BPF_ALU_AND_K, arg["value"]),
                     None])  # type: ignore[list-item]  # the jump, filled in below
    size = 2 + 3 * len(body) + 1  # load nr, compare, per argument 3, return
    out = [_insn(BPF_LD_W_ABS, OFFSET_NR), _insn(BPF_JEQ_K, number, 0, size - 2)]
    for i, (load, mask, _) in enumerate(body):
        remaining = size - (2 + 3 * i + 3)  # instructions after this jump, up to the next rule
        out += [load, mask, _insn(BPF_JEQ_K, args[i].get("valueTwo", 0), 0, remaining)]
    out.append(_insn(BPF_RET_K, verdict))
    return out


# ---------------------------------------------------------------- in the container's process

def _mask(names: list[str]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << CAPABILITIES[name]
    return bits


def drop_bounding_set(keep: list[str]) -> None:
    """prctl(PR_CAPBSET_DROP) every capability not in `keep` (capabilities(7)).

    Stops: a setuid-root or file-capability binary in the image regaining a
    dropped capability at execve(2) — nothing can ever climb above the
    bounding set.  Needs CAP_SETPCAP, so it happens before the user switch.
    """
    wanted = _mask(keep)
    for bit in range(last_capability() + 1):
        if not wanted & (1 << bit):
            linux.prctl(linux.PR_CAPBSET_DROP, bit)


def set_capabilities(effective: list[str], permitted: list[str], inheritable: list[str]) -> None:
    """capset(2): the process's effective, permitted and inheritable sets, 64 bits in two halves."""
    linux.capset(_mask(effective), _mask(permitted), _mask(inheritable))


def raise_ambient(names: list[str]) -> None:
    """prctl(PR_CAP_AMBIENT_RAISE): capabilities a non-root user keeps across execve(2)."""
    for name in names:
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, CAPABILITIES[name])


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): execve(2) can never grant more privileges.

    Stops: a setuid binary (su, sudo, ping) or a file capability in the image
    lifting a non-root container user back to root.  Irreversible, inherited.
    """
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def install_seccomp(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) — see seccomp(2).

    From here on the kernel runs `program` before every system call of this
    process and all its descendants; a filter can be added, never removed.
    Without no_new_privs this needs CAP_SYS_ADMIN, hence the order in
    before_user_switch().
    """
    linux.set_seccomp_filter(program)


def before_user_switch(process: dict[str, Any], seccomp: dict[str, Any] | None) -> None:
    """The container's privileges, part one, in runc's order (libcontainer/standard_init_linux.go).

    1. no_new_privs, if asked;
    2. without no_new_privs, the seccomp filter now, while CAP_SYS_ADMIN is still held;
    3. the bounding set, while CAP_SETPCAP is still held;
    4. KEEPCAPS on, for the user switch that follows (setgroups, setgid, setuid):
       without it the kernel empties the permitted set when uid 0 becomes
       another uid, and a config that grants a user capabilities could not be
       honoured; after_user_switch() then sets exactly what the config says.
    """
    nnp = bool(process.get("noNewPrivileges"))
    if nnp:
        set_no_new_privs()
    if seccomp and not nnp:
        install_seccomp(compile_seccomp(seccomp))
    drop_bounding_set((process.get("capabilities") or {}).get("bounding", []))
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)


def after_user_switch(process: dict[str, Any], seccomp: dict[str, Any] | None) -> None:
    """The container's privileges, part two, once the user is switched.

    5. KEEPCAPS off; capset: effective, permitted, inheritable; then the ambient set;
    6. with no_new_privs, the seccomp filter last, so that it filters as
       little of the runtime's own work as possible.
    """
    caps = process.get("capabilities") or {}
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)
    set_capabilities(caps.get("effective", []), caps.get("permitted", []), caps.get("inheritable", []))
    raise_ambient(caps.get("ambient", []))
    if seccomp and process.get("noNewPrivileges"):
        install_seccomp(compile_seccomp(seccomp))
