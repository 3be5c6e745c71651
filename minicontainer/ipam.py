"""IP address management: which subnet a network uses and which address each container gets.

A bridge network is one IPv4 subnet. The bridge itself takes the first
address (the containers' gateway); every container that joins gets the lowest
free address after it. Docker, podman (netavark) and CNI's `host-local` plugin
all keep this bookkeeping in a file or a small database guarded by a lock, and
so does this module:

    networks/<name>.json        the network: name, bridge, subnet, gateway
    networks/<name>.ipam.json   {"allocations": {"10.213.0.2": {"container": id, ...}}}

The allocation file is changed only under `store.lock("network-<name>")` and
always rewritten atomically, so twenty `run`s started at once get twenty
different addresses, and a command killed half way leaves the old file intact.

This module is plain data and arithmetic (the `ipaddress` module); it talks to
no kernel. Reading the host's routes to avoid overlaps is network.py's job.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minicontainer.errors import MiniContainerError
from minicontainer.store import Store, atomic_write_json, read_json

# The default network `bridge` uses the host bridge `mc0` with 10.213.0.0/24.
# Why that subnet: the usual private ranges are crowded by the tools a student
# may already run beside us, and sharing a subnet with one of them breaks both:
#   172.17.0.0/16 is docker0, and Docker takes further networks from 172.18-31
#   (all of 172.16.0.0/12) and then from 192.168.0.0/16;
#   10.88.0.0/16 is podman's default network, and `podman network create` counts
#   up from 10.89.0.0/24; 192.168.122.0/24 is libvirt's virbr0; Kubernetes uses
#   10.96.0.0/12 (services), 10.244.0.0/16 (flannel), 10.42-43 (k3s);
#   100.64.0.0/10 is carrier-grade NAT and Tailscale.
# 10.213.x is in none of those. A /24 (253 containers) is plenty for a teaching
# runtime and, being small, is less likely to cover a LAN route. Whatever we
# choose is still checked against the host's routes before it is used.
DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "mc0"
DEFAULT_SUBNET = "10.213.0.0/24"
# User-defined networks without --subnet take the next free /24 from here.
USER_SUBNET_POOL = "10.214.0.0/16"

# Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
IFNAMSIZ = 15
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


class NetworkError(MiniContainerError):
    """A network that cannot be created, found, used or removed."""


@dataclass(frozen=True)
class Network:
    """One bridge network as stored in `networks/<name>.json`."""

    name: str
    bridge: str
    subnet: str
    gateway: str
    created: float = field(default_factory=time.time)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    @property
    def user_defined(self) -> bool:
        """Docker resolves container names only on networks the user created."""
        return self.name != DEFAULT_NETWORK

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Network:
        return cls(name=data["name"], bridge=data["bridge"], subnet=data["subnet"],
                   gateway=data["gateway"], created=data.get("created", 0.0))


def check_network_name(name: str) -> None:
    if not _NAME_RE.match(name) or name in ("none", "host") or name.startswith("container:"):
        raise NetworkError(f"invalid network name {name!r}")


def check_bridge_name(ifname: str) -> None:
    if not _IFNAME_RE.match(ifname) or ifname in (".", ".."):
        raise NetworkError(f"invalid bridge name {ifname!r} (1-{IFNAMSIZ} of a-z A-Z 0-9 _ . -)")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """A CIDR usable for a bridge: IPv4, host bits zero, room for a gateway and a container."""
    try:
        subnet = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise NetworkError(f"invalid subnet {text!r}: {e}") from None
    if subnet.prefixlen > 30:
        raise NetworkError(f"subnet {subnet} is too small: it needs a gateway and at least one container")
    if subnet.is_loopback or subnet.is_multicast or subnet.is_link_local or subnet.is_unspecified:
        raise NetworkError(f"subnet {subnet} is reserved and cannot hold containers")
    return subnet


def make_network(name: str, bridge: str, subnet: ipaddress.IPv4Network) -> Network:
    """The record for a new network: the bridge takes the subnet's first address."""
    check_network_name(name)
    check_bridge_name(bridge)
    gateway = next(subnet.hosts())
    return Network(name=name, bridge=bridge, subnet=str(subnet), gateway=str(gateway))


def first_overlap(subnet: ipaddress.IPv4Network,
                  taken: Iterable[tuple[ipaddress.IPv4Network, str]]) -> tuple[ipaddress.IPv4Network, str] | None:
    """The first (network, owner) in `taken` that shares addresses with `subnet`.

    Default routes (0.0.0.0/0) are left out by the caller: they overlap
    everything and mean "elsewhere", not "here".
    """
    for other, owner in taken:
        if subnet.overlaps(other):
            return other, owner
    return None


def next_free_subnet(pool: ipaddress.IPv4Network,
                     taken: Iterable[tuple[ipaddress.IPv4Network, str]],
                     prefixlen: int = 24) -> ipaddress.IPv4Network:
    """The first /24 of `pool` that overlaps nothing in `taken` (as podman does from 10.89.0.0/24)."""
    taken = list(taken)
    for candidate in pool.subnets(new_prefix=prefixlen):
        if first_overlap(candidate, taken) is None:
            return candidate
    raise NetworkError(f"no free /{prefixlen} left in {pool}; pass --subnet")


# ---------------------------------------------------------------- the store


def networks_dir(store: Store) -> Path:
    path = store.root / "networks"
    path.mkdir(exist_ok=True)
    return path


def network_file(store: Store, name: str) -> Path:
    return networks_dir(store) / f"{name}.json"


def ipam_file(store: Store, name: str) -> Path:
    return networks_dir(store) / f"{name}.ipam.json"


def lock_name(network_name: str) -> str:
    return f"network-{network_name}"


def load_network(store: Store, name: str) -> Network:
    try:
        return Network.from_json(read_json(network_file(store, name)))
    except FileNotFoundError:
        raise NetworkError(f"network {name} not found") from None


def list_networks(store: Store) -> list[Network]:
    return [Network.from_json(read_json(p))
            for p in sorted(networks_dir(store).glob("*.json"))
            if not p.name.endswith(".ipam.json")]


def save_network(store: Store, network: Network) -> None:
    atomic_write_json(network_file(store, network.name), asdict(network))


def read_allocations(store: Store, name: str) -> dict[str, dict[str, Any]]:
    """address → what IPAM knows of the container holding it (read without the lock: a snapshot)."""
    try:
        return dict(read_json(ipam_file(store, name)).get("allocations", {}))
    except FileNotFoundError:
        return {}


def write_allocations(store: Store, name: str, allocations: dict[str, dict[str, Any]]) -> None:
    """Caller holds the network lock."""
    atomic_write_json(ipam_file(store, name), {"allocations": allocations})


def choose_address(network: Network, allocations: dict[str, dict[str, Any]],
                   requested: str | None = None) -> str:
    """The address to give a container: the requested one if valid and free, else the lowest free one."""
    subnet = ipaddress.IPv4Network(network.subnet)
    used = set(allocations) | {network.gateway}
    if requested is not None:
        try:
            address = ipaddress.IPv4Address(requested)
        except ValueError:
            raise NetworkError(f"invalid IP address {requested!r}") from None
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            raise NetworkError(f"address {address} is not a usable address of network "
                               f"{network.name} ({network.subnet})")
        if str(address) in used:
            raise NetworkError(f"address {address} is already in use on network {network.name}")
        return str(address)
    for address in subnet.hosts():
        if str(address) not in used:
            return str(address)
    raise NetworkError(f"no free address left on network {network.name} ({network.subnet})")


def allocate(store: Store, network: Network, container_id: str,
             requested: str | None = None, **details: Any) -> str:
    """Reserve an address for `container_id` and record `details` beside it.

    A container holds at most one address per network: asking again returns
    the address it already has.
    """
    with store.lock(lock_name(network.name)):
        allocations = read_allocations(store, network.name)
        for address, entry in allocations.items():
            if entry.get("container") == container_id:
                return address
        address = choose_address(network, allocations, requested)
        allocations[address] = {"container": container_id, **details}
        write_allocations(store, network.name, allocations)
        return address


def release(store: Store, network: Network, container_id: str) -> dict[str, Any] | None:
    """Give back the container's address; returns its entry (None when it had none)."""
    with store.lock(lock_name(network.name)):
        allocations = read_allocations(store, network.name)
        for address, entry in list(allocations.items()):
            if entry.get("container") == container_id:
                del allocations[address]
                write_allocations(store, network.name, allocations)
                return {"ip": address, **entry}
        return None
