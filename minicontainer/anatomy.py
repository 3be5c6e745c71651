"""`minicontainer anatomy CONTAINER`: one screen that shows what a container is made of.

A container is not one thing the kernel knows. It is an ordinary process plus
a few kernel features pointed at it, and this view puts each one on the
projector, read live from the places the kernel exposes them:

- files: the image's read-only layers (store/layers/…) with the container's
  writable layer (its overlay upperdir) on top: what `diff` lists;
- process: its PID on the host and inside its PID namespace
  (`NSpid:` in /proc/PID/status, proc(5));
- namespaces: the inode of each /proc/PID/ns/* link beside the host's own:
  a different inode is a different namespace (isolated), the same is shared
  (namespaces(7));
- cgroup: the directory holding its processes, its limits and current use;
- network: the veth pair, its address, the bridge it is plugged into.

It works on a running container and on an exited one (whose process,
namespaces and cgroup are gone: only its files and its records remain).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minicontainer.store import Store, digest_hex

if TYPE_CHECKING:  # for type hints only: importing them costs time `anatomy` may not need
    from minicontainer.container import Container
    from minicontainer.image import Image

WIDTH = 78
NAMESPACE_ORDER = ("pid", "net", "mnt", "uts", "ipc", "cgroup", "user")
SHOWN_CHANGES = 4


@dataclass
class LayerRow:
    """One read-only layer of the image, as the anatomy shows it."""

    number: int
    diff_id: str
    size: int
    created_by: str


@dataclass
class Anatomy:
    """Everything the screen shows about one container."""

    name: str
    id: str
    status: str
    image: str
    command: str
    layers: list[LayerRow]                                   # topmost first
    upper: str
    changes: list[str]                                       # "A /path" …
    host_pid: int | None = None
    ns_pids: list[int] = field(default_factory=list)         # NSpid: host first, innermost last
    namespaces: list[tuple[str, int | None, int]] = field(default_factory=list)  # name, container, host
    cgroup_dirs: list[str] = field(default_factory=list)
    limits: dict[str, str] = field(default_factory=dict)
    usage: dict[str, str] = field(default_factory=dict)
    network: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading the live system


def ns_pids(pid: int) -> list[int]:
    """`NSpid:` of /proc/PID/status: the pid in each nested PID namespace, the host's first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(p) for p in line.split()[1:]]
    return [pid]


def namespace_inodes(pid: int | str) -> dict[str, int]:
    """The inode of each /proc/PID/ns/* link: equal inodes, same namespace."""
    found = {}
    for name in NAMESPACE_ORDER:
        try:
            found[name] = os.stat(f"/proc/{pid}/ns/{name}").st_ino
        except OSError:
            continue
    return found


def _iec(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.4g}{unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.4g}TiB"


def limits_of(resources: dict[str, Any]) -> dict[str, str]:
    """The OCI `linux.resources` of config.json, in words."""
    memory = (resources.get("memory") or {}).get("limit")
    pids = (resources.get("pids") or {}).get("limit")
    cpu = resources.get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period")
    return {
        "memory": _iec(memory) if memory and memory > 0 else "no limit",
        "pids": str(pids) if pids and pids > 0 else "no limit",
        "cpu": f"{quota / period:.2g} CPU ({quota}µs per {period}µs)" if quota and period and quota > 0
        else "no limit",
    }


def gather(store: Store, ref: str) -> Anatomy:
    """Read everything the screen shows about CONTAINER, from its records and from /proc."""
    from minicontainer import commit
    from minicontainer.container import Container

    container = Container.find(store, ref)
    state = container.refresh()
    img = commit.image_of(store, container)
    config = json.loads((container.dir / "config.json").read_text())
    running = state.status == "running"
    status = "running" if running else (f"exited ({state.exit_code})" if state.status == "exited"
                                        else state.status)
    tag = img.tags[0] if img.tags else img.short_id
    found = Anatomy(
        name=state.name, id=state.id, status=status, image=f"{tag} ({img.short_id})",
        command=container.command_text(), layers=_layers(store, img),
        upper=_in_store(commit.upper_dir(container), store) if state.rootfs_mode == "overlay"
        else "(a copied root: no overlayfs here)",
        changes=[str(c) for c in commit.diff(store, state.id)] if state.rootfs_mode == "overlay" else [],
        limits=limits_of(config.get("linux", {}).get("resources") or {}),
    )
    if running and state.pid:
        found.host_pid = state.pid
        found.ns_pids = ns_pids(state.pid)
        mine, host = namespace_inodes(state.pid), namespace_inodes("self")
        found.namespaces = [(n, mine.get(n), host[n]) for n in NAMESPACE_ORDER if n in host]
    _add_cgroup(found, container)
    found.network = _network(store, container, config)
    return found


def _in_store(path: Path, store: Store) -> str:
    """`containers/<id>/upper (in the store)`: short enough for the box, whatever the store."""
    try:
        return f"{path.relative_to(store.root)}  (in the store)"
    except ValueError:
        return str(path)


def _layers(store: Store, img: Image) -> list[LayerRow]:
    from minicontainer import image as images

    made_by = {row["layer"]: row["created_by"] for row in images.history(img) if row["layer"]}
    rows = [LayerRow(i + 1, diff_id, images.layer_size(store, img, diff_id), made_by.get(diff_id, ""))
            for i, diff_id in enumerate(img.layers)]
    return list(reversed(rows))


def _add_cgroup(found: Anatomy, container: Container) -> None:
    from minicontainer import runtime

    cgroup = runtime.container_cgroup(container.bundle())
    found.cgroup_dirs = [str(d) for d in cgroup.directories()]
    if not cgroup.exists():
        return
    stats = cgroup.stats()
    found.usage = {"memory": _iec(stats.memory_usage), "pids": str(stats.pids),
                   "cpu": f"{stats.cpu_usage_ns / 1e9:.2f}s of CPU time so far"}


def _network(store: Store, container: Container, config: dict[str, Any]) -> list[str]:
    from minicontainer.bundle import A_NETWORK

    namespaces = {ns["type"]: ns for ns in config.get("linux", {}).get("namespaces", [])}
    wanted = config.get("annotations", {}).get(A_NETWORK)
    if "network" not in namespaces:
        return ["host: the host's own network namespace (shared, nothing isolated)"]
    if namespaces["network"].get("path"):
        return [f"joined another container's network namespace ({namespaces['network']['path']})"]
    if not wanted:
        return ["none: its own network namespace with only lo (127.0.0.1)"]
    from minicontainer.network import endpoint_of

    endpoint = endpoint_of(store, container.id)
    if endpoint is None:
        return [f"network {wanted}: no address now (released when the container stopped)"]
    veth = endpoint.host_veth or "?"
    lines = [f"eth0 {endpoint.ip}/{endpoint.prefixlen} inside ══ veth pair ══ {veth} on the host",
             f"{veth} plugged into bridge {endpoint.bridge} of network {endpoint.network}",
             f"(gateway {endpoint.gateway}: the host's address on that bridge)"]
    if endpoint.ports:
        lines.append("published: " + ", ".join(endpoint.ports))
    return lines


# ---------------------------------------------------------------- drawing


def _box(title: str, lines: list[str]) -> list[str]:
    inner = WIDTH - 4
    out = [f"┌─ {title} " + "─" * max(0, inner - len(title) - 1) + "┐"]
    for line in lines:
        if line == "---":
            out.append("├" + "─" * (WIDTH - 2) + "┤")
            continue
        text = line if len(line) <= inner else line[:inner - 1] + "…"
        out.append(f"│ {text:<{inner}} │")
    out.append("└" + "─" * (WIDTH - 2) + "┘")
    return out


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000  # type: ignore[assignment]
    return str(size)


def _short(path: str, a: Anatomy) -> str:
    """A path with the container's 64-hex id cut to 12, so that it fits the box."""
    return path.replace(a.id, a.id[:12] + "…")


def _files(a: Anatomy) -> list[str]:
    counts = {k: sum(1 for c in a.changes if c.startswith(k + " ")) for k in "ACD"}
    lines = [f"writable layer, this container's only: {counts['A']} added, {counts['C']} changed, "
             f"{counts['D']} deleted",
             f"  {_short(a.upper, a)}"]
    # added and deleted paths say more than the parent directories they "changed"
    picked = sorted(sorted(a.changes, key=lambda c: c.startswith("C "))[:SHOWN_CHANGES],
                    key=lambda c: c[2:])
    lines += [f"    {c}" for c in picked]
    if len(a.changes) > len(picked):
        lines.append(f"    … {len(a.changes) - len(picked)} more: minicontainer diff {a.name}")
    lines += ["---", "read-only image layers, shared by every container of the image:"]
    for row in a.layers:
        lines.append(f"  layer {row.number}  {digest_hex(row.diff_id)[:12]}  {_human(row.size):>7}  "
                     f"{row.created_by}")
    return lines


def _process(a: Anatomy) -> list[str]:
    if a.host_pid is None:
        return ["no process: it has exited, and its namespaces went with it",
                "(a namespace lives only as long as a process or a mount holds it)"]
    inside = a.ns_pids[-1] if a.ns_pids else "?"
    return [f"PID {a.host_pid} on the host  =  PID {inside} inside  (NSpid: "
            + " ".join(map(str, a.ns_pids)) + ")",
            f"command: {a.command}"]


def _namespaces(a: Anatomy) -> list[str]:
    if not a.namespaces:
        return ["gone with the process"]
    lines = [f"{'':8}{'container':>12}{'host':>12}"]
    for name, mine, host in a.namespaces:
        verdict = "shared with the host" if mine == host else "isolated"
        lines.append(f"{name:8}{mine or '-':>12}{host:>12}   {verdict}")
    return lines


def _cgroup(a: Anatomy) -> list[str]:
    lines = [_short(d, a) for d in a.cgroup_dirs[:1]]
    if len(a.cgroup_dirs) > 1:
        lines.append(f"  (and {len(a.cgroup_dirs) - 1} more hierarchies, same name)")
    for key in ("memory", "pids", "cpu"):
        used = a.usage.get(key, "-" if a.host_pid is None else "?")
        lines.append(f"{key:7} limit {a.limits.get(key, 'no limit'):<34} using {used}")
    if not a.usage:
        lines.append("(the cgroup was removed when the container exited)")
    return lines


def render(a: Anatomy) -> str:
    """The whole screen."""
    head = [f"container {a.name} ({a.id[:12]}), {a.status}, from image {a.image}"]
    parts = [_box("files: overlayfs, top layer wins", _files(a)),
             _box("process", _process(a)),
             _box("namespaces: /proc/PID/ns/* inode numbers", _namespaces(a)),
             _box("cgroup: limits and use", _cgroup(a)),
             _box("network", a.network)]
    return "\n".join(head + [line for part in parts for line in part])
