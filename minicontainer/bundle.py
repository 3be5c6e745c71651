"""From an image and `run` options to an OCI runtime bundle.

The seam between the two halves of minicontainer is the one Docker, containerd
and CRI-O use to hand work to runc: a *bundle*, i.e. a directory holding a
`config.json` (field names from the OCI runtime-spec, config.md and
config-linux.md) beside the container's root filesystem. This module writes
that file. It decides *what* the container will be - its command, environment,
user, hostname, mounts, namespaces - but runs nothing; runtime.py then reads
only the bundle and never the image.

Two things the runtime-spec expects to be ready before the runtime starts are
instead described in annotations, because minicontainer prepares them inside
the container's own mount namespace (so the host never sees them): the overlay
that forms the root filesystem, and a user given by *name*, which must be looked
up in the container's own /etc/passwd rather than the host's.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicontainer import cgroups, security
from minicontainer.errors import ContainerError

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Docker's

# Annotation keys (runtime-spec: reverse-domain names for tool-specific data).
A_ROOTFS_MODE = "org.minicontainer.rootfs.mode"          # "overlay" or "copy"
A_LAYERS_DIR = "org.minicontainer.rootfs.layersdir"      # where the lowerdirs live
A_LOWERDIR = "org.minicontainer.rootfs.lowerdir"         # layer dir names, topmost first, ":"-joined
A_UPPERDIR = "org.minicontainer.rootfs.upperdir"
A_WORKDIR = "org.minicontainer.rootfs.workdir"
A_USER = "org.minicontainer.user"                        # `-u` / image User, resolved inside the root
A_IMAGE = "org.minicontainer.image"
A_NAME = "org.minicontainer.name"                        # the container's name (its /etc/hosts line)
A_STORE = "org.minicontainer.store"                      # the store root (networks' IPAM lives there)
A_NETWORK = "org.minicontainer.network"                  # bridge network to attach to (absent: none)
A_NETWORK_IP = "org.minicontainer.network.ip"            # --ip
A_NETWORK_PORTS = "org.minicontainer.network.ports"      # -p specs, comma-joined

NAMESPACE_TYPES = ("pid", "network", "ipc", "uts", "mount", "cgroup")


@dataclass
class RunOptions:
    """What `minicontainer run` was asked for, before the image is consulted."""

    command: list[str] = field(default_factory=list)
    entrypoint: str | None = None          # None: the image's; "": none at all
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None
    tty: bool = False
    interactive: bool = False
    volumes: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    read_only: bool = False
    network: str = "none"                  # none: only lo; host: the host's; bridge or NAME: a veth
                                           # on that bridge network (the CLI's default, as Docker's);
                                           # container:NAME: that container's
    network_namespace: str = ""            # container:NAME resolved: /proc/<its pid>/ns/net
    ip: str | None = None                  # --ip on a bridge network
    publish: list[str] = field(default_factory=list)  # -p [HOSTIP:]HOSTPORT:CTRPORT[/PROTO]
    pid: str = "private"                   # "private" or "host"
    uts: str = "private"
    ipc: str = "private"
    # limits (cgroups.py) and confinement (security.py), Docker's flags
    memory: str | None = None
    memory_swap: str | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)


@dataclass
class RootfsPlan:
    """How the root filesystem will be made: an overlay of layers, or a plain copy."""

    mode: str                              # "overlay" or "copy"
    layers_dir: Path
    lowerdirs: list[str]                   # names inside layers_dir, lowest first
    upperdir: Path
    workdir: Path


def command_line(image_config: dict[str, Any], opts: RunOptions) -> list[str]:
    """Entrypoint + Cmd, combined exactly as Docker combines them.

    `--entrypoint` replaces the image's Entrypoint *and* drops the image's Cmd
    (Docker does this so that an old Cmd is not fed to a new program).
    """
    if opts.entrypoint is not None:
        entrypoint = [opts.entrypoint] if opts.entrypoint else []
        default_cmd: list[str] = []
    else:
        entrypoint = list(image_config.get("Entrypoint") or [])
        default_cmd = list(image_config.get("Cmd") or [])
    args = entrypoint + (list(opts.command) if opts.command else default_cmd)
    if not args:
        raise ContainerError("no command specified")
    return args


def parse_env_file(path: str) -> list[str]:
    """Docker's --env-file format: KEY=VALUE or KEY (taken from the host), # comments."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ContainerError(f"open {path}: {e.strerror}") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def environment(image_config: dict[str, Any], opts: RunOptions, hostname: str) -> list[str]:
    """The process environment: image Env, then --env-file, then -e, later ones winning.

    PATH gets Docker's default when the image sets none; HOSTNAME is the
    container's; HOME is filled in by the runtime from the container's own
    /etc/passwd once the user is known.
    """
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if opts.tty:  # Docker's default for a container with a terminal
        env["TERM"] = "xterm"
    given = list(image_config.get("Env") or [])
    for f in opts.env_files:
        given += parse_env_file(f)
    given += opts.env
    for item in given:
        key, eq, value = item.partition("=")
        if not key:
            raise ContainerError(f"invalid environment variable: {item!r}")
        if eq:
            env[key] = value
        elif key in os.environ:  # `-e NAME` passes the host's value, as Docker does
            env[key] = os.environ[key]
    return [f"{k}={v}" for k, v in env.items()]


def parse_volume(spec: str) -> dict[str, Any]:
    """`-v HOSTPATH:CTRPATH[:ro|rw]` → a runtime-spec bind mount."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ContainerError(f"invalid volume specification: {spec!r} (want HOSTPATH:CTRPATH[:ro])")
    source, dest = parts[0], parts[1]
    mode = parts[2].split(",") if len(parts) == 3 else ["rw"]
    if not source.startswith("/"):
        raise ContainerError(f"invalid volume specification: {spec!r}: named volumes are not supported,"
                             " give an absolute host path")
    if not dest.startswith("/"):
        raise ContainerError(f"invalid volume specification: {spec!r}: container path must be absolute")
    if not set(mode) <= {"ro", "rw"}:
        raise ContainerError(f"invalid volume specification: {spec!r}: unknown mode {parts[2]!r}")
    if not os.path.exists(source):
        raise ContainerError('invalid mount config for type "bind": '
                             f"bind source path does not exist: {source}")
    return {"destination": os.path.normpath(dest), "type": "bind", "source": os.path.realpath(source),
            "options": ["rbind", "ro" if "ro" in mode else "rw"]}


def parse_tmpfs(spec: str) -> dict[str, Any]:
    """`--tmpfs PATH[:OPTIONS]` → a runtime-spec tmpfs mount (Docker's default options)."""
    dest, _, options = spec.partition(":")
    if not dest.startswith("/"):
        raise ContainerError(f"invalid tmpfs mount {spec!r}: path must be absolute")
    opts = options.split(",") if options else ["rw", "noexec", "nosuid", "nodev"]
    return {"destination": os.path.normpath(dest), "type": "tmpfs", "source": "tmpfs", "options": opts}


def default_mounts() -> list[dict[str, Any]]:
    """The filesystems every container gets (runc's `spec` defaults, as Docker uses them)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]


def write_etc_files(directory: Path, hostname: str, network: str) -> list[dict[str, Any]]:
    """Write the container's /etc/hostname, /etc/hosts, /etc/resolv.conf; return their bind mounts.

    Docker generates these three per container (the image's own copies would
    name the wrong host), and bind-mounts them so the image's layers stay untouched.
    """
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if network == "host":
        hosts = [Path("/etc/hosts").read_text().rstrip("\n")] if Path("/etc/hosts").exists() else hosts
    else:
        hosts.append(f"127.0.1.1\t{hostname}")
    files = {
        "hostname": hostname + "\n",
        "hosts": "\n".join(hosts) + "\n",
        "resolv.conf": resolv_conf(network),
    }
    mounts = []
    for name, text in files.items():
        (directory / name).write_text(text)
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(directory / name),
                       "options": ["rbind", "rw"]})
    return mounts


def resolv_conf(network: str) -> str:
    """The host's resolv.conf, minus loopback name servers a private network cannot reach.

    Docker does the same: 127.0.0.53 (systemd-resolved) means nothing inside a
    new network namespace, so it falls back to public servers when none remain.
    """
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        lines = []
    if network != "host":
        lines = [ln for ln in lines if not (ln.split()[:1] == ["nameserver"]
                                            and ln.split()[1:2]
                                            and ln.split()[1].startswith(("127.", "::1")))]
        if not any(ln.startswith("nameserver") for ln in lines):
            lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def default_hostname(container_id: str, opts: RunOptions) -> str:
    """--hostname, else the host's name on the host network (as Docker), else the short id."""
    if opts.hostname:
        return opts.hostname
    if opts.network == "host" or opts.uts == "host":
        return socket.gethostname()
    return container_id[:12]


def namespaces(opts: RunOptions) -> list[dict[str, str]]:
    """The namespaces to create; one left out of the list is shared with the host (runtime-spec).

    An entry with a `path` is joined instead of created: `--network container:NAME`.
    """
    shared = {"pid": opts.pid == "host", "network": opts.network == "host",
              "uts": opts.uts == "host", "ipc": opts.ipc == "host"}
    joined = {"network": opts.network_namespace}
    return [{"type": t, **({"path": joined[t]} if joined.get(t) else {})}
            for t in NAMESPACE_TYPES if not shared.get(t, False)]


def network_annotations(opts: RunOptions) -> dict[str, str]:
    """What the runtime's network step needs: the bridge network, --ip and -p (network.py)."""
    if opts.network in ("none", "host"):
        kind = opts.network  # known without importing the network code: `--network none` stays lean
    else:
        from minicontainer.network import NetworkMode

        mode = NetworkMode.parse(opts.network)
        kind = mode.kind
    if kind != "bridge":
        if opts.ip or opts.publish:
            raise ContainerError(f"--ip and -p need a bridge network, not --network {opts.network}")
        return {}
    return {A_NETWORK: mode.name, A_NETWORK_IP: opts.ip or "", A_NETWORK_PORTS: ",".join(opts.publish)}


def numeric_user(spec: str | None) -> tuple[int, int]:
    """uid and gid when `-u` gave numbers; names are resolved later, inside the root."""
    user, _, group = (spec or "").partition(":")
    uid = int(user) if user.isdigit() else 0
    gid = int(group) if group.isdigit() else 0
    return uid, gid


def _dev_without_new_devices(mounts: list[dict[str, Any]]) -> None:
    """Mount the container's /dev nodev: only the runtime's own device nodes work there.

    Stops: `mknod /dev/sda b 8 0` then reading the host's disk, on hosts where
    no devices cgroup can refuse it (cgroup v2 has none without eBPF). The
    runtime bind-mounts null, zero, … from the host, and a bind mount keeps the
    flags of its source, so they still work. --privileged keeps /dev usable.
    """
    for mount in mounts:
        if mount["destination"] == "/dev" and "nodev" not in mount["options"]:
            mount["options"].append("nodev")


def resources(opts: RunOptions) -> dict[str, Any]:
    """OCI `linux.resources`: the limit flags, plus runc's device allow-list (all for --privileged)."""
    swap_accounting = True
    if opts.memory is not None and opts.memory_swap is None:
        swap_accounting = cgroups.detect().can_limit_swap()  # Docker's 2x default needs it
    limits = cgroups.resources_from_flags(memory=opts.memory, memory_swap=opts.memory_swap,
                                          cpus=opts.cpus, cpu_shares=opts.cpu_shares,
                                          pids_limit=opts.pids_limit, swap_accounting=swap_accounting)
    return {**limits, "devices": cgroups.default_devices(opts.privileged)}


def build_config(container_id: str, image_id: str, image_config: dict[str, Any],
                 opts: RunOptions, rootfs: RootfsPlan, etc_dir: Path) -> dict[str, Any]:
    """The OCI runtime-spec config.json of one container, as a dict."""
    cfg = image_config.get("config") or {}
    hostname = default_hostname(container_id, opts)
    user = opts.user if opts.user is not None else (cfg.get("User") or "")
    uid, gid = numeric_user(user)
    # A user given by name counts as uid 0 here; harmless: execve(2) empties a
    # non-root user's permitted and effective sets whatever this config says.
    caps = security.capabilities(opts.cap_add, opts.cap_drop, opts.privileged)
    secopts = security.parse_security_opts(opts.security_opt)
    confined = secopts.seccomp and not opts.privileged  # Docker: --privileged is unconfined
    cwd = opts.workdir or cfg.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise ContainerError(f"the working directory {cwd!r} is invalid, it needs to be an absolute path")
    mounts = default_mounts()
    if not opts.privileged:
        _dev_without_new_devices(mounts)
    mounts += write_etc_files(etc_dir, hostname, opts.network)
    mounts += [parse_volume(v) for v in opts.volumes]
    mounts += [parse_tmpfs(t) for t in opts.tmpfs]
    annotations = {
        A_IMAGE: image_id,
        A_ROOTFS_MODE: rootfs.mode,
        A_LAYERS_DIR: str(rootfs.layers_dir),
        A_LOWERDIR: ":".join(reversed(rootfs.lowerdirs)),  # overlayfs wants the topmost first
        A_UPPERDIR: str(rootfs.upperdir),
        A_WORKDIR: str(rootfs.workdir),
    }
    if user:
        annotations[A_USER] = user
    annotations.update(network_annotations(opts))
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": opts.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": []},
            "args": command_line(cfg, opts),
            "env": environment(cfg, opts, hostname),
            "cwd": os.path.normpath(cwd),
            "capabilities": security.process_capabilities(caps, uid),
            "noNewPrivileges": secopts.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces(opts),
            "cgroupsPath": f"{cgroups.PARENT}/{container_id}",
            "resources": resources(opts),
            "maskedPaths": [] if opts.privileged else list(security.DEFAULT_MASKED_PATHS),
            "readonlyPaths": [] if opts.privileged else list(security.DEFAULT_READONLY_PATHS),
            **({"seccomp": security.default_seccomp_profile(caps)} if confined else {}),
        },
        "annotations": annotations,
    }


def write_bundle(bundle_dir: Path, config: dict[str, Any]) -> Path:
    """Write config.json into the bundle directory and return its path.

    The bundle is built in a staging directory that appears by rename(2) only
    when complete, so a plain write suffices: an fsync(2) here was the largest
    single cost of creating a container.
    """
    import json

    path = bundle_dir / "config.json"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def describe_command(args: list[str]) -> str:
    """The command as `ps` shows it."""
    return shlex.join(args)
