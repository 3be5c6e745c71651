"""A corpus of hostile image archives, generated on the spot (nothing binary is committed).

Each case is one way an archive found on the internet could try to reach the
host: through the names of its entries, its symlinks, hardlinks, whiteouts,
loops, device nodes, or names too long for the kernel - and, for `run`,
through the places the runtime itself writes into the root filesystem
(/proc, /dev, /sys, /etc/hosts…), the way runc's CVE-2019-19921 and
CVE-2021-30465 did. The classes follow the image half's unit tests
(tests/unit/test_layers_breakout.py), moby's archive tests and containerd's
TestBreakouts.

Every case aims at a *canary* directory on the host, named by its absolute
path, so a breakout would show as a changed canary. A case is stacked on a
busybox layer, so the same archive also goes through `run`, whose command
then writes through each `probes` path from inside the container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagefactory import Entry, docker_save, layer_tar
from minicontainer.demo import busybox_entries

CANARY_TEXT = b"the host's own file\n"


@dataclass
class Hostile:
    """One hostile archive: its layers (above busybox) and what `load` must do with it."""

    name: str
    layers: list[list[Entry]]
    expect: str = "loads"        # "loads", "refused" (exit 125, one line), or "either"
    probes: list[str] = field(default_factory=list)  # paths `run` writes through, in the container


def make_canary(directory: Path) -> Path:
    """The host directory every case aims at, holding one file and one subdirectory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "canary").write_bytes(CANARY_TEXT)
    (directory / "canary").chmod(0o600)
    (directory / "sub").mkdir(exist_ok=True)
    (directory / "sub" / "inner").write_bytes(CANARY_TEXT)
    return directory


def canary_state(directory: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Everything a breakout could change: names, modes, owners, link counts, contents."""
    state = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        state[str(path)] = (st.st_mode, st.st_uid, st.st_nlink, data)
    return state


def _f(name: str, data: bytes = b"pwned\n", **kw) -> Entry:
    return Entry(name, data=data, **kw)


def _sym(name: str, target: str) -> Entry:
    return Entry(name, "symlink", linkname=target)


def corpus(canary: Path) -> list[Hostile]:
    """Every hostile case, aimed at `canary` (an absolute host directory)."""
    c = str(canary)        # /tmp/…/canary
    rel = c.lstrip("/")    # the same path, relative: what a layer entry names
    up = "../" * 24        # more .. than any path has components
    return [
        # ---- names
        Hostile("dotdot-name", [[_f(f"{up}{rel}/canary")]], "refused"),
        Hostile("dotdot-inside-name", [[_f(f"a/b/{up}{rel}/canary")]], "refused"),
        Hostile("absolute-name", [[_f(f"{c}/canary"), _f(f"/{up}{rel}/sub/inner")]], "either",
                [f"{c}/canary"]),
        # ---- symlinks, then a write through them
        Hostile("symlink-root-same-layer", [[_sym("up", "/"), _f(f"up/{rel}/canary")]],
                probes=[f"/up/{rel}/canary"]),
        Hostile("symlink-dotdot-same-layer", [[_sym("up", up.rstrip("/")), _f(f"up/{rel}/canary")]],
                probes=[f"/up/{rel}/canary"]),
        Hostile("symlink-abs-later-layer", [[_sym("s", c)], [_f("s/canary"), _f("s/sub/inner")]],
                probes=["/s/canary", "/s/new"]),
        Hostile("symlink-dotdot-later-layer", [[_sym("s", up + rel)], [_f("s/canary")]],
                probes=["/s/canary"]),
        Hostile("multi-hop-chain", [[_sym("a", "b"), _sym("b", "c/../d"), Entry("c", "dir"),
                                     _sym("d", "../../.." + c), _f("a/canary")]],
                probes=["/a/canary", "/a/sub/inner"]),
        Hostile("multi-hop-across-layers", [[_sym("a", "/b")], [_sym("b", "../c")],
                                            [_sym("c", c), _f("a/canary")]],
                probes=["/a/canary"]),
        Hostile("symlink-loop", [[_sym("a", "b"), _sym("b", "a"), _f("a/x")]], "refused"),
        Hostile("symlink-self-loop", [[_sym("self", "self/x"), _f("self/y")]], "refused"),
        Hostile("symlink-like-later-dir", [[_sym("d", c), Entry("d", "dir"), _f("d/canary")]],
                probes=["/d/canary"]),
        Hostile("symlink-like-dir-of-later-layer", [[_sym("d", c)], [Entry("d", "dir"), _f("d/canary")]],
                probes=["/d/canary"]),
        Hostile("symlink-replacing-dir", [[Entry("d", "dir"), _f("d/a"), _sym("d", c), _f("d/canary")]],
                probes=["/d/canary"]),
        Hostile("file-over-symlink", [[_sym("x", f"{c}/canary"), _f("x", mode=0o777)]],
                probes=["/x"]),
        # ---- hardlinks
        Hostile("hardlink-dotdot", [[Entry("h", "hardlink", linkname=f"{up}{rel}/canary")]], "refused"),
        Hostile("hardlink-absolute", [[Entry("h", "hardlink", linkname=f"{c}/canary")]], "refused"),
        Hostile("hardlink-through-symlink", [[_sym("s", c), Entry("h", "hardlink", linkname="s/canary")]],
                "either", ["/h"]),
        Hostile("hardlink-to-symlink", [[_sym("s", f"{c}/canary"), Entry("h", "hardlink", linkname="s"),
                                         _f("h", b"overwrite")]],
                probes=["/s", "/h"]),
        Hostile("hardlink-to-symlink-kept", [[_sym("s", f"{c}/canary"), Entry("h", "hardlink", linkname="s")]],
                probes=["/h"]),
        # ---- whiteouts and opaque markers
        Hostile("whiteout-dotdot", [[_f(f"{up}{rel}/.wh.canary", b"")]], "refused"),
        Hostile("whiteout-through-symlink", [[_sym("s", c)], [_f("s/.wh.canary", b"")]]),
        Hostile("opaque-through-symlink", [[_sym("s", c)], [_f("s/.wh..wh..opq", b"")]]),
        Hostile("whiteout-of-parent", [[_f(".wh..", b"")]], "refused"),
        # ---- device nodes (never created: skipped with a warning) and a fifo
        Hostile("device-nodes", [[Entry("evil/mem", "char", devmajor=1, devminor=1),
                                  Entry("evil/sda", "block", devmajor=8),
                                  Entry("evil/fifo", "fifo")]],
                probes=["/evil/mem", "/evil/sda"]),
        # ---- the runtime's own targets: it mounts and writes here before pivot_root
        Hostile("proc-symlink", [[_sym("proc", c)]], "loads", ["/proc/canary"]),
        Hostile("dev-symlink", [[_sym("dev", c)]], "loads", ["/dev/canary"]),
        Hostile("sys-symlink", [[_sym("sys", c)]], "loads"),
        Hostile("etc-symlink", [[_sym("etc", c)]], "loads", ["/etc/canary"]),
        Hostile("etc-files-symlinks", [[_sym("etc/hosts", f"{c}/canary"), _sym("etc/hostname", f"{c}/canary"),
                                        _sym("etc/resolv.conf", f"{c}/sub/inner")]],
                "loads", ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]),
        Hostile("dev-null-symlink", [[_sym("dev/null", f"{c}/canary"), _sym("dev/pts", c)]], "loads"),
        Hostile("tmp-dotdot-symlink", [[_sym("run", up.rstrip("/")), _sym("tmp", c)]], "loads",
                ["/tmp/canary", f"/run/{rel}/canary"]),
        # ---- pathological names
        Hostile("name-255", [[_f("n" * 255)]], "loads"),
        Hostile("name-256", [[_f("n" * 256)]], "refused"),
        Hostile("path-over-path-max", [[_f("/".join(["d" * 200] * 25) + "/x")]], "either"),
        Hostile("deep-nesting", [[_f("d/" * 1100 + "x")]], "either", ["/" + "d/" * 1100 + "x"]),
        Hostile("symlink-target-huge", [[_sym("long", "x/" * 3000), _f("long/y")]], "either"),
        Hostile("name-control-bytes", [[_f("new\nline"), _f("tab\there"), _f("esc\x1b[31m")]], "either"),
        Hostile("name-dots", [[_f("./././x"), _f(".//y"), _f("a/./b/../c")]], "either"),
        Hostile("name-empty-and-dot", [[Entry(".", "dir", mode=0o777), Entry("", "dir")]], "either"),
    ]


def base_layer(busybox: Path) -> bytes:
    """busybox and its applets, /etc/passwd and /etc/group: enough for `run sh -c`."""
    entries = busybox_entries(busybox) + [
        Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        Entry("etc/group", data=b"root:x:0:\n")]
    return layer_tar(entries)


def write_archive(case: Hostile, base: bytes, out: Path) -> Path:
    """A docker-save archive: the busybox layer, then the case's layers."""
    layers = [base] + [layer_tar(entries) for entries in case.layers]
    return docker_save(out, layers, {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                       [f"hostile-{case.name}:latest"])
