"""Thin wrappers over the Linux system calls a container runtime needs.

A container is not a kernel object: it is an ordinary process started with a
handful of system calls - unshare(2) and setns(2) for namespaces, mount(2) and
pivot_root(2) for its own root filesystem, prctl(2) for a few per-process
switches. Python's standard library has some of them (os.unshare and os.setns
only from 3.12); the rest are called here through ctypes, one small function
per call, each naming its man page. Nothing else in the package touches ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform

# Namespace flags: clone(2), unshare(2), setns(2).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The name of each namespace in /proc/PID/ns/ and in runtime-spec's config.json.
NAMESPACES: dict[str, tuple[str, int]] = {
    # config.json type: (/proc/PID/ns file, clone flag)
    "pid": ("pid", CLONE_NEWPID),
    "network": ("net", CLONE_NEWNET),
    "mount": ("mnt", CLONE_NEWNS),
    "ipc": ("ipc", CLONE_NEWIPC),
    "uts": ("uts", CLONE_NEWUTS),
    "cgroup": ("cgroup", CLONE_NEWCGROUP),
    "user": ("user", CLONE_NEWUSER),
}

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2) flags.
MNT_DETACH = 0x2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# ioctl(2) requests on terminals: ioctl_tty(2).
TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431

# pivot_root has no glibc wrapper: it is called by number, syscall(2).
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once (use_errno so failures carry errno)."""
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str, *paths: str | None) -> int:
    """Turn a C-style -1 return into an OSError with the errno and the path."""
    if result == -1:
        err = ctypes.get_errno()
        shown = [p for p in paths if p]
        raise OSError(err, f"{what}: {os.strerror(err)}", *shown[:1])
    return result


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces: unshare(2)."""
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    _check(_libc().unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that `fd` (an open /proc/PID/ns/* file) refers to: setns(2)."""
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, nstype)
        return
    _check(_libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    """Attach a filesystem (or a bind, or change propagation) at `target`: mount(2)."""
    def c(s: str | None) -> bytes | None:
        return os.fsencode(s) if s is not None else None

    _check(_libc().mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)),
           f"mount {fstype or source or ''} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    """Detach the filesystem mounted at `target`: umount2(2)."""
    _check(_libc().umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """Make `new_root` the root mount and move the old root to `put_old`: pivot_root(2)."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc().syscall(ctypes.c_long(number), os.fsencode(new_root), os.fsencode(put_old)),
           "pivot_root", new_root)


def sethostname(name: str) -> None:
    """Set the hostname of the current UTS namespace: sethostname(2)."""
    raw = name.encode()
    _check(_libc().sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Change a per-process attribute (dumpable, parent-death signal, no_new_privs): prctl(2)."""
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    return _check(_libc().prctl(ctypes.c_int(option), *args), "prctl")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets, given as 64-bit masks: capset(2) (version 3: two 32-bit halves)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    low, high = (_CapData(*(m & 0xFFFFFFFF for m in (effective, permitted, inheritable))),
                 _CapData(*(m >> 32 for m in (effective, permitted, inheritable))))
    _check(_libc().capset(ctypes.byref(header), (_CapData * 2)(low, high)), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def set_seccomp_filter(program: bytes) -> None:
    """Install a classic BPF program (8-byte sock_filter records): prctl(PR_SET_SECCOMP), seccomp(2)."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def namespace_flags(types: list[str]) -> int:
    """Config.json namespace types (["pid", "network", …]) → CLONE_NEW* flags."""
    flags = 0
    for t in types:
        flags |= NAMESPACES[t][1]
    return flags
