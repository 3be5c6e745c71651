"""Isolation: what a process inside the container tries, from the inside.

The chroot-escape trick, the host's root through /proc/1/root, file
descriptors leaked into the container, the runtime's own binary through
/proc/PID/exe while `exec` joins the container (runc's CVE-2019-5736), and
writes to masked and read-only paths.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from hostile import CANARY_TEXT
from imagefactory import Entry, docker_save, layer_tar
from stresskit import scale


def chroot_escape_elf(script: str) -> bytes:
    """A tiny static x86-64 program doing the classic chroot escape, then `sh -c script`.

    mkdir("x"); chroot("x")  - the root moves below the working directory…
    chdir("..") × 64         - …so ".." walks up past it, as far as the real root;
    chroot(".")              - and makes that the root: the escape, under a plain chroot.
    Under pivot_root with the old root unmounted there is nothing above the
    container's root to walk to. Hand-assembled: the image has no compiler.
    """
    base, code_at = 0x400000, 64 + 56
    strings = [b"x", b"..", b".", b"/bin/sh", b"sh", b"-c", script.encode()]

    def mov(reg: int, value: int) -> bytes:  # mov r32, imm32 (zero-extends to 64 bits)
        return bytes([0xB8 + reg]) + struct.pack("<I", value)

    eax, edx, esi, edi = 0, 2, 6, 7
    syscall = b"\x0f\x05"

    def code(addr: dict[bytes, int], argv: int) -> bytes:
        loop = mov(eax, 80) + mov(edi, addr[b".."]) + syscall + b"\x41\xff\xcc"   # chdir; dec r12d
        loop += bytes([0x75, (-(len(loop) + 2)) & 0xFF])                             # jnz loop
        return (mov(eax, 83) + mov(edi, addr[b"x"]) + mov(esi, 0o755) + syscall      # mkdir
                + mov(eax, 161) + mov(edi, addr[b"x"]) + syscall                     # chroot
                + b"\x41\xbc" + struct.pack("<I", 64) + loop                          # mov r12d, 64
                + mov(eax, 161) + mov(edi, addr[b"."]) + syscall                     # chroot(".")
                + mov(eax, 59) + mov(edi, addr[b"/bin/sh"]) + mov(esi, argv) + mov(edx, 0) + syscall
                + mov(eax, 60) + mov(edi, 99) + syscall)                             # exit(99)

    size = len(code({s: 0 for s in strings}, 0))
    addr, data, at = {}, b"", base + code_at + size
    for s in strings:
        addr[s] = at + len(data)
        data += s + b"\0"
    data += b"\0" * (-len(data) % 8)
    argv = at + len(data)
    data += struct.pack("<4Q", addr[b"sh"], addr[b"-c"], addr[script.encode()], 0)
    body = code(addr, argv) + data
    total = code_at + len(body)
    header = (b"\x7fELF\x02\x01\x01" + b"\0" * 9
              + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + code_at, 64, 0, 0, 64, 56, 1, 0, 0, 0))
    program = struct.pack("<IIQQQQQQ", 1, 7, 0, base, base, total, total, 0x1000)  # PT_LOAD, rwx
    return header + program + body


@pytest.fixture
def inmate(mc, tmp_path: Path, base: bytes, canary: Path) -> str:
    """A loaded busybox image with the escape program at /escape; the canary is on the host."""
    script = f'if [ -e {canary}/canary ]; then echo ESCAPED; cat {canary}/canary; else echo contained; fi'
    extra = layer_tar([Entry("escape", data=chroot_escape_elf(script), mode=0o755)])
    archive = docker_save(tmp_path / "inmate.tar", [base, extra],
                          {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}, ["inmate:latest"])
    mc("load", str(archive), check=True)
    return "inmate:latest"


def test_escape_program_escapes_a_plain_chroot(tmp_path: Path, base: bytes, canary: Path) -> None:
    """The escape program works where only chroot(2) confines: so its failure below means something."""
    import subprocess

    root = tmp_path / "jail"
    for d in ("bin", "escape-here"):
        (root / d).mkdir(parents=True)
    (root / "bin" / "sh").write_bytes(Path("/bin/busybox").read_bytes())
    (root / "bin" / "sh").chmod(0o755)
    script = f'if [ -e {canary}/canary ]; then echo ESCAPED; else echo contained; fi'
    (root / "escape").write_bytes(chroot_escape_elf(script))
    (root / "escape").chmod(0o755)
    out = subprocess.run(["chroot", str(root), "/escape"], capture_output=True, text=True, timeout=30)
    assert out.stdout == "ESCAPED\n", out.stderr


def test_chroot_escape_trick_stays_inside(mc, inmate: str) -> None:
    result = mc("run", "--rm", inmate, "/escape")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "contained\n"


def test_host_root_through_proc_1_root(mc, inmate: str, canary: Path) -> None:
    script = (f'cat /proc/1/root{canary}/canary 2>/dev/null && echo LEAK; '
              'ls /proc | grep -c "^[0-9]"; readlink /proc/1/exe; '
              f'for p in /proc/[0-9]*; do cat $p/root{canary}/canary 2>/dev/null && echo LEAK $p; done; true')
    result = mc("run", "--rm", inmate, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "LEAK" not in result.stdout and CANARY_TEXT.decode() not in result.stdout
    count, exe = result.stdout.split()[:2]
    assert int(count) <= 4          # sh, grep, ls and a subshell: no host process is visible
    assert exe == "/bin/busybox"    # PID 1 is our own shell, not the host's init


FD_WALK = "ls -1 /proc/self/fd"  # ls's own fd (3: the directory it reads) is the walker's


def _fds(output: str) -> set[str]:
    return set(output.split())


def test_no_leaked_fds_in_foreground_run(mc, inmate: str) -> None:
    # `; true`: the shell stays PID 1 instead of exec'ing its last command
    result = mc("run", "--rm", inmate, "sh", "-c", FD_WALK + "; echo ==; ls -1 /proc/1/fd; true")
    walker, init = result.stdout.split("==")
    assert _fds(walker) <= {"0", "1", "2", "3"}
    assert _fds(init) <= {"0", "1", "2"}     # PID 1 (the shell) holds nothing else either


def test_no_leaked_fds_in_detached_run_and_exec(mc, inmate: str, store_root: Path) -> None:
    cid = mc("run", "-d", inmate, "sh", "-c", FD_WALK + "; sleep 1000", check=True).stdout.strip()
    try:
        pid = json.loads((store_root / "containers" / cid / "state.json").read_text())["pid"]
        targets = {n: Path(f"/proc/{pid}/fd/{n}").readlink() for n in Path(f"/proc/{pid}/fd").iterdir()
                   for n in [n.name]}
        assert set(targets) <= {"0", "1", "2"}, targets      # seen from the host: PID 1's own fds
        executed = mc("exec", cid, "sh", "-c", FD_WALK, check=True)
        assert _fds(executed.stdout) <= {"0", "1", "2", "3"}
        logs = mc("logs", cid, check=True)
        assert _fds(logs.stdout) <= {"0", "1", "2", "3"}
    finally:
        mc("rm", "-f", cid)


# Inside the container: for every process whose command line names minicontainer (the
# exec-joining runtime, before it execs), try to open its /proc/PID/exe.
EXE_HUNTER = r"""
runtime=mini; runtime="${runtime}container exec"  # spelt apart: PID 1's own command line must not match
while :; do
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
      *"$runtime"*) echo "${p#/proc/}" >> /seen
                    # open it, then ask what was opened: by then it may have exec'd our own binary
                    got=$( (exec 3< $p/exe && readlink /proc/self/fd/3) 2>/dev/null)
                    case "$got" in ""|/bin/busybox) ;; *) echo "$p $got" >> /opened;; esac;;
    esac
  done
done
"""


def test_runtime_exe_cannot_be_opened_during_exec(mc, inmate: str, store_root: Path) -> None:
    cid = mc("run", "-d", inmate, "sh", "-c", EXE_HUNTER, check=True).stdout.strip()
    try:
        for _ in range(scale(15, 100)):
            mc("exec", cid, "true", check=True)
        upper = store_root / "containers" / cid / "upper"
        assert not (upper / "opened").exists(), (upper / "opened").read_text()
        seen = len(set((upper / "seen").read_text().split())) if (upper / "seen").exists() else 0
        print(f"exec-joining runtime processes seen from inside: {seen}")
    finally:
        mc("rm", "-f", cid)


def test_writes_to_masked_and_read_only_paths_fail(mc, inmate: str) -> None:
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    writes = ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/vm/drop_caches",
              "/sys/kernel/uevent_helper", "/sys/fs/cgroup/cgroup.procs", "/proc/irq/default_smp_affinity",
              "/proc/bus/x", "/proc/fs/x"]
    reads = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"]
    script = "".join(f'echo "|/tmp/pwn" > {p} 2>/dev/null && echo WROTE {p}; ' for p in writes)
    # a masked file reads as empty (/dev/null), a masked directory lists nothing (empty tmpfs)
    script += "".join(f'[ -n "$(head -c 16 {p} 2>/dev/null; ls -A {p}/ 2>/dev/null)" ] && echo READ {p}; '
                      for p in reads)
    result = mc("run", "--rm", inmate, "sh", "-c", script + "echo done")
    assert result.stdout == "done\n", result.stdout
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
