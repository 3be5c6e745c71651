"""security.py without root: capability rules, --security-opt, and the seccomp filter.

The filter is checked twice: by running the BPF program in a tiny interpreter
here (for both architectures), and by installing it in a child process (which
needs no root once no_new_privs is set) and watching the kernel refuse calls.
"""

from __future__ import annotations

import errno
import struct
import subprocess
import sys

import pytest

from minicontainer import security
from minicontainer.errors import MiniContainerError

DOCKER_DEFAULT_MASK = 0xA80425FB  # CapBnd of a default `docker run`


def mask(names: list[str]) -> int:
    return sum(1 << security.CAPABILITIES[n] for n in set(names))


def test_default_set_is_dockers() -> None:
    assert mask(security.capabilities()) == DOCKER_DEFAULT_MASK
    assert len(security.capabilities()) == 14


def test_names_are_normalised() -> None:
    caps = security.capabilities(cap_add=["net_admin", "CAP_SYS_TIME", "Sys_Ptrace"], cap_drop=["cap_chown"])
    assert {"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_SYS_PTRACE"} <= set(caps)
    assert "CAP_CHOWN" not in caps


def test_all_rules() -> None:
    assert security.capabilities(cap_drop=["ALL"]) == []
    assert security.capabilities(cap_drop=["all"], cap_add=["kill"]) == ["CAP_KILL"]
    everything = security.capabilities(cap_add=["ALL"], cap_drop=["SYS_ADMIN"])
    assert "CAP_SYS_ADMIN" not in everything and "CAP_SYS_MODULE" in everything
    assert set(security.capabilities(privileged=True)) == set(security.all_capabilities())


@pytest.mark.parametrize("flag,kwargs", [("--cap-add", {"cap_add": ["NET_FOO"]}),
                                         ("--cap-drop", {"cap_drop": ["bogus"]})])
def test_unknown_capability_names_the_flag(flag: str, kwargs: dict[str, list[str]]) -> None:
    with pytest.raises(MiniContainerError, match=flag):
        security.capabilities(**kwargs)


def test_non_root_gets_bounding_only() -> None:
    caps = security.capabilities()
    root = security.process_capabilities(caps, 0)
    assert root["effective"] == root["permitted"] == root["bounding"] == caps
    user = security.process_capabilities(caps, 1000)
    assert user["bounding"] == caps and user["effective"] == user["permitted"] == []
    assert root["inheritable"] == user["inheritable"] == []


def test_security_opts() -> None:
    assert security.parse_security_opts([]) == security.SecurityOptions(False, True)
    assert security.parse_security_opts(["no-new-privileges"]).no_new_privileges
    assert security.parse_security_opts(["no-new-privileges:true"]).no_new_privileges
    assert not security.parse_security_opts(["no-new-privileges=false"]).no_new_privileges
    assert not security.parse_security_opts(["seccomp=unconfined"]).seccomp
    for bad in ("seccomp=/tmp/profile.json", "bogus", "no-new-privileges=maybe"):
        with pytest.raises(MiniContainerError, match="--security-opt"):
            security.parse_security_opts([bad])


def test_masked_and_readonly_defaults() -> None:
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"} <= set(security.DEFAULT_MASKED_PATHS)
    assert {"/proc/sys", "/proc/sysrq-trigger"} <= set(security.DEFAULT_READONLY_PATHS)


# ---------------------------------------------------------------- the filter, interpreted


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate a classic BPF seccomp program on one system call (the subset compile_seccomp emits)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    a, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == security.BPF_LD_W_ABS:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == security.BPF_ALU_AND_K:
            a &= k
        elif code == security.BPF_JEQ_K:
            pc += jt if a == k else jf
        elif code == security.BPF_JGE_K:
            pc += jt if a >= k else jf
        elif code == security.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


EPERM = security.SECCOMP_RET_ERRNO | errno.EPERM
ALLOW = security.SECCOMP_RET_ALLOW
X86, ARM = security.AUDIT_ARCH["x86_64"], security.AUDIT_ARCH["aarch64"]


@pytest.mark.parametrize("machine,arch,column", [("x86_64", X86, 0), ("aarch64", ARM, 1)])
def test_default_filter_decisions(machine: str, arch: int, column: int) -> None:
    program = security.compile_seccomp(security.default_seccomp_profile(security.capabilities()), machine)
    nr = {name: numbers[column] for name, numbers in security.SYSCALLS.items()}
    for denied in ("keyctl", "kexec_load", "open_by_handle_at", "init_module", "bpf", "mount",
                   "unshare", "reboot", "perf_event_open", "settimeofday"):
        assert run_bpf(program, nr[denied], arch) == EPERM, denied
    assert run_bpf(program, nr["clone3"], arch) == security.SECCOMP_RET_ERRNO | errno.ENOSYS
    sigchld = 17
    assert run_bpf(program, nr["clone"], arch, (sigchld,)) == ALLOW  # fork
    assert run_bpf(program, nr["clone"], arch, (0x10000000 | sigchld,)) == EPERM  # CLONE_NEWUSER
    assert run_bpf(program, nr["clone"], arch, (0x40000000 | sigchld,)) == EPERM  # CLONE_NEWNET
    assert run_bpf(program, 0, arch) == ALLOW  # read / io_setup
    assert run_bpf(program, 0, 0x40000003) == security.SECCOMP_RET_KILL_PROCESS  # i386


def test_x32_calls_are_refused() -> None:
    program = security.compile_seccomp(security.default_seccomp_profile([]), "x86_64")
    assert run_bpf(program, security.X32_SYSCALL_BIT | 250, X86) == security.SECCOMP_RET_KILL_PROCESS


def test_capabilities_reopen_their_calls() -> None:
    caps = security.capabilities(cap_add=["SYS_ADMIN", "SYS_TIME"])
    program = security.compile_seccomp(security.default_seccomp_profile(caps), "x86_64")
    nr = {name: numbers[0] for name, numbers in security.SYSCALLS.items()}
    assert run_bpf(program, nr["mount"], X86) == ALLOW
    assert run_bpf(program, nr["clone"], X86, (0x10000000,)) == ALLOW
    assert run_bpf(program, nr["settimeofday"], X86) == ALLOW
    assert run_bpf(program, nr["keyctl"], X86) == EPERM  # no capability reopens the keyring
    assert run_bpf(program, nr["init_module"], X86) == EPERM


def test_unsupported_architecture_and_rules() -> None:
    with pytest.raises(MiniContainerError, match="architecture"):
        security.compile_seccomp({"syscalls": []}, "mips")
    bad = {"syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_GT"}]}]}
    with pytest.raises(MiniContainerError, match="argument"):
        security.compile_seccomp(bad, "x86_64")


# ---------------------------------------------------------------- the filter, in a real kernel

CHILD = """
import ctypes, errno, os, platform
from minicontainer import security
security.set_no_new_privs()
profile = security.default_seccomp_profile(security.capabilities())
security.install_seccomp(security.compile_seccomp(profile))
libc = ctypes.CDLL(None, use_errno=True)
col = 0 if platform.machine() == "x86_64" else 1
def call(name, *args):
    r = libc.syscall(security.SYSCALLS[name][col], *args)
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
print(call("keyctl", 0, 0, 0, 0), call("unshare", 0x10000000), call("clone3", 0, 0), os.getpid() > 0)
print(open("/proc/self/status").read().split("Seccomp:")[1].split()[0])
"""


@pytest.mark.skipif(security.platform.machine() not in security.AUDIT_ARCH, reason="x86_64/aarch64 only")
def test_kernel_enforces_the_filter() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["EPERM", "EPERM", "ENOSYS", "True", "2"]  # Seccomp: 2 = filter mode
