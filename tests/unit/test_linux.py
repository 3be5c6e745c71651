"""linux.py's wrappers and the runtime's pure helpers: paths inside a root, mount options, users."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from minicontainer import linux, runtime
from minicontainer.errors import ContainerError

# ---------------------------------------------------------------- syscall wrappers


def test_namespace_flags() -> None:
    assert linux.namespace_flags([]) == 0
    assert linux.namespace_flags(["mount", "uts"]) == linux.CLONE_NEWNS | linux.CLONE_NEWUTS
    assert linux.namespace_flags(["pid", "network", "ipc", "cgroup"]) == (
        linux.CLONE_NEWPID | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP)
    for name, (proc_name, _) in linux.NAMESPACES.items():
        assert Path(f"/proc/self/ns/{proc_name}").exists(), name


def test_flags_agree_with_the_standard_library() -> None:
    for name in ("CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWUTS", "CLONE_NEWIPC"):
        if hasattr(os, name):  # Python 3.12+
            assert getattr(linux, name) == getattr(os, name)


def test_failures_raise_oserror_with_errno_and_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(OSError) as e:
        linux.umount2(missing)
    assert e.value.errno in (errno.ENOENT, errno.EPERM)
    assert missing in str(e.value)
    with pytest.raises(OSError) as e:
        linux.mount(None, missing, None, linux.MS_BIND | linux.MS_REMOUNT)
    assert e.value.errno in (errno.ENOENT, errno.EPERM)


def test_prctl_returns_the_kernels_answer() -> None:
    PR_GET_DUMPABLE = 3
    assert linux.prctl(PR_GET_DUMPABLE) == 1


def test_setns_to_our_own_namespace_is_allowed_or_refused_cleanly() -> None:
    fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
    try:
        try:
            linux.setns(fd, linux.CLONE_NEWUTS)  # root: joining where we already are is a no-op
        except OSError as e:
            assert e.errno == errno.EPERM  # not root
    finally:
        os.close(fd)


# ---------------------------------------------------------------- paths inside a root

@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "real").mkdir()
    os.symlink("/real", r / "abs")             # absolute: means the root's /real
    os.symlink("../../../../real", r / "up")   # climbing: stops at the root
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    os.symlink("/etc/../real/x", r / "mixed")
    return r


@pytest.mark.parametrize("path, inside", [
    ("/etc/hosts", "etc/hosts"),
    ("/abs/file", "real/file"),
    ("/up/file", "real/file"),
    ("/../../etc", "etc"),
    ("/mixed", "real/x"),
    ("/", ""),
])
def test_resolve_in_root_never_leaves_the_root(root: Path, path: str, inside: str) -> None:
    assert runtime.resolve_in_root(str(root), path) == os.path.join(str(root), inside)


def test_resolve_in_root_detects_loops(root: Path) -> None:
    with pytest.raises(OSError) as e:
        runtime.resolve_in_root(str(root), "/loop1/x")
    assert e.value.errno == errno.ELOOP


# ---------------------------------------------------------------- mount options

def test_mount_options_split_flags_from_data() -> None:
    flags, data = runtime.mount_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert flags == linux.MS_NOSUID | linux.MS_STRICTATIME
    assert data == "mode=755,size=65536k"
    flags, data = runtime.mount_options(["rbind", "ro", "rprivate"])
    assert flags == linux.MS_BIND | linux.MS_REC | linux.MS_RDONLY and data == ""
    flags, _ = runtime.mount_options(["ro", "rw"])  # the later word wins
    assert flags & linux.MS_RDONLY == 0


# ---------------------------------------------------------------- users from the image's files

@pytest.fixture
def dbs(tmp_path: Path) -> tuple[str, str]:
    passwd = tmp_path / "passwd"
    group = tmp_path / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n"
                      "# a comment\n"
                      "student:x:1000:1000:A student:/home/student:/bin/sh\n"
                      "nohome:x:1001:1001:::/bin/sh\n")
    group.write_text("root:x:0:\nstudent:x:1000:\naudio:x:29:student,other\nvideo:x:44:other\n"
                     "nogroup:x:65534:\n")
    return str(passwd), str(group)


@pytest.mark.parametrize("spec, uid, gid, groups, home", [
    ("student", 1000, 1000, [1000, 29], "/home/student"),  # primary + the groups listing it
    ("1000", 1000, 1000, [1000, 29], "/home/student"),     # a number known to passwd
    ("4242", 4242, 0, [0], "/"),                           # a number unknown: gid 0, HOME /
    ("student:nogroup", 1000, 65534, [65534], "/home/student"),
    ("student:44", 1000, 44, [44], "/home/student"),
    ("0:0", 0, 0, [0], "/root"),
    ("nohome", 1001, 1001, [1001], "/"),
])
def test_lookup_user(dbs: tuple[str, str], spec: str, uid: int, gid: int, groups: list[int],
                     home: str) -> None:
    user = runtime.lookup_user(spec, *dbs)
    assert (user.uid, user.gid, user.groups, user.home) == (uid, gid, groups, home)


def test_unknown_names_are_docker_errors(dbs: tuple[str, str]) -> None:
    with pytest.raises(ContainerError, match="unable to find user ghost: no matching entries in passwd file"):
        runtime.lookup_user("ghost", *dbs)
    with pytest.raises(ContainerError, match="unable to find group ghosts: no matching entries in group file"):
        runtime.lookup_user("student:ghosts", *dbs)


def test_missing_files_still_allow_numbers(tmp_path: Path) -> None:
    user = runtime.lookup_user("5:6", str(tmp_path / "none"), str(tmp_path / "none"))
    assert (user.uid, user.gid, user.home) == (5, 6, "/")
