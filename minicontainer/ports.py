"""Published ports (`-p 8080:80`) and outbound NAT, written as nftables rules.

A container on a bridge has a private address (10.213.0.2) that only this host
can reach. Two kinds of address translation connect it to the rest:

* DNAT, for published ports: a packet for <a host address>:8080 has its
  destination rewritten to 10.213.0.2:80 before the kernel routes it, so it is
  delivered to the container; conntrack rewrites the replies back.
* masquerade (source NAT), for outbound traffic: a packet from 10.213.0.2 that
  leaves through another interface gets the host's address as its source, so
  that replies find their way back.

Why nftables rules and not a userspace proxy: Docker historically ran one
`docker-proxy` process per published port, which copies bytes between two
sockets. Rules in the kernel need no process to start, watch or kill, cost
nothing per packet in Python, keep the client's real source address, and are
all visible with `nft list table ip minicontainer`. They are written through
the `nft` tool (package nftables) so that a student can paste the same text.

Everything lives in one table of our own, `table ip minicontainer`; other
tables (the host's firewall, Docker's, podman's) are never read or changed.
Each network and each container owns separately named base chains, so removing
one is `delete chain` and nothing else has to be searched for; the table is
deleted when its last chain goes.

127.0.0.1: the kernel refuses to route a packet whose source or destination is
a loopback address out of a non-loopback interface ("martian"). Reaching a
container at 127.0.0.1:8080 from the host therefore needs two things that
Docker also uses when its proxy is off: `route_localnet=1` on our bridge only
(network.py sets it) and masquerading of 127.0.0.0/8 sources leaving through
the bridge. Because route_localnet would also let a container send packets to
the host's 127.0.0.1-only services, each network gets a guard chain that drops
packets entering from its bridge for 127.0.0.0/8; and DNAT for 127.0.0.1 is
done only in the `output` hook (packets made on this host), never in
`prerouting`, so that a neighbour cannot reach such a port with crafted packets
(moby issue 41872).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minicontainer.errors import MiniContainerError
from minicontainer.store import Store

TABLE = "minicontainer"
# The nft table is one per host, whatever store a command uses, so changes to
# it are serialised by a lock that is also one per host.
HOST_LOCK_ROOT = Path("/run/minicontainer")

_PORT_RE = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+):(?P<ctr>\d+)(?:/(?P<proto>\w+))?$")
_DOCKER_NOTATION_RE = re.compile(r"^(?P<ip>[0-9.]+):(?P<host>\d+)->(?P<ctr>\d+)/(?P<proto>tcp|udp)$")


class PortError(MiniContainerError):
    """A port mapping that cannot be parsed or published."""


@dataclass(frozen=True)
class PortMapping:
    """One `-p [HOSTIP:]HOSTPORT:CTRPORT[/PROTO]`; an empty host_ip means every host address."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def __str__(self) -> str:
        """Docker's notation: 0.0.0.0:8080->80/tcp."""
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}->{self.container_port}/{self.protocol}"

    @property
    def loopback_only(self) -> bool:
        return self.host_ip.startswith("127.")

    def to_json(self) -> dict[str, Any]:
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "container_port": self.container_port, "protocol": self.protocol}

    @classmethod
    def from_comment(cls, text: str) -> PortMapping | None:
        """The inverse of str(): `0.0.0.0:8080->80/tcp` → PortMapping (None if it is not one)."""
        match = _DOCKER_NOTATION_RE.match(text)
        if not match:
            return None
        host_ip = "" if match["ip"] == "0.0.0.0" else match["ip"]
        return cls(int(match["host"]), int(match["ctr"]), match["proto"], host_ip)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PortMapping:
        return cls(host_port=data["host_port"], container_port=data["container_port"],
                   protocol=data["protocol"], host_ip=data["host_ip"])


def parse_port(spec: str) -> PortMapping:
    """`8080:80`, `127.0.0.1:8080:80/tcp`, `5353:53/udp` → PortMapping."""
    match = _PORT_RE.match(spec.strip())
    if not match:
        raise PortError(f"invalid port mapping {spec!r}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]")
    protocol = (match["proto"] or "tcp").lower()
    if protocol not in ("tcp", "udp"):
        raise PortError(f"invalid protocol {protocol!r} in {spec!r}: tcp or udp")
    host_ip = match["ip"] or ""
    if host_ip.startswith("["):
        raise PortError(f"IPv6 host address in {spec!r}: only IPv4 is published")
    if host_ip:
        try:
            socket.inet_aton(host_ip)
        except OSError:
            raise PortError(f"invalid host address {host_ip!r} in {spec!r}") from None
        if host_ip == "0.0.0.0":  # Docker's spelling of "every address"
            host_ip = ""
    host_port, container_port = int(match["host"]), int(match["ctr"])
    for port in (host_port, container_port):
        if not 1 <= port <= 65535:
            raise PortError(f"invalid port {port} in {spec!r}: 1-65535")
    return PortMapping(host_port, container_port, protocol, host_ip)


def parse_ports(specs: Iterable[str]) -> list[PortMapping]:
    mappings = [parse_port(spec) for spec in specs]
    seen: set[tuple[str, int, str]] = set()
    for m in mappings:
        key = (m.host_ip, m.host_port, m.protocol)
        if key in seen:
            raise PortError(f"host port {m.host_port}/{m.protocol} is published twice")
        seen.add(key)
    return mappings


# ---------------------------------------------------------------- rule text
# Pure functions returning nft script text: unit tests read them, and so can
# a student (`nft -f` accepts exactly this).


def network_chains(bridge: str) -> tuple[str, str]:
    return f"{bridge}-guard", f"{bridge}-postrouting"


def container_chains(container_id: str) -> tuple[str, str]:
    return f"c{container_id}-prerouting", f"c{container_id}-output"


# Hook priorities, in numbers because nft 1.0.6 accepts the names (raw, dstnat,
# srcnat) only with some hooks: raw runs before conntrack, dstnat before routing.
PRIORITY = {"raw": -300, "dstnat": -100, "srcnat": 100}


def _base_chain(name: str, kind: str, hook: str, priority: str) -> str:
    return (f"add chain ip {TABLE} {name} "
            f"{{ type {kind} hook {hook} priority {PRIORITY[priority]}; policy accept; }}\n"
            f"flush chain ip {TABLE} {name}\n")


def network_rules(bridge: str, subnet: str) -> str:
    """Masquerade for the subnet's outbound traffic and for host→127.0.0.1 DNATs; the loopback guard."""
    guard, post = network_chains(bridge)
    return (
        f"add table ip {TABLE}\n"
        + _base_chain(guard, "filter", "prerouting", "raw")
        # route_localnet=1 on the bridge must not open the host's loopback to containers
        + f'add rule ip {TABLE} {guard} iifname "{bridge}" ip daddr 127.0.0.0/8 drop\n'
        + _base_chain(post, "nat", "postrouting", "srcnat")
        # leaving for another network: take the host's address (docker: -s SUBNET ! -o docker0)
        + f'add rule ip {TABLE} {post} ip saddr {subnet} oifname != "{bridge}" masquerade\n'
        # 127.0.0.1:PORT was DNATed to a container: it could not answer 127.0.0.1
        + f'add rule ip {TABLE} {post} ip saddr 127.0.0.0/8 oifname "{bridge}" masquerade\n'
        # a container reaching another one through a published host port (hairpin)
        + f'add rule ip {TABLE} {post} ip saddr {subnet} ip daddr {subnet} ct status dnat masquerade\n'
    )


def _match_destination(mapping: PortMapping, hook: str) -> str | None:
    if mapping.host_ip:
        if mapping.loopback_only and hook == "prerouting":
            return None  # only this host may use a loopback address
        return f"ip daddr {mapping.host_ip}"
    if hook == "prerouting":
        return "fib daddr type local ip daddr != 127.0.0.0/8"
    return "fib daddr type local"


def container_rules(container_id: str, container_ip: str, mappings: Iterable[PortMapping]) -> str:
    """DNAT rules: prerouting for packets from elsewhere, output for packets made on this host."""
    pre, out = container_chains(container_id)
    text = (f"add table ip {TABLE}\n"
            + _base_chain(pre, "nat", "prerouting", "dstnat")
            + _base_chain(out, "nat", "output", "dstnat"))
    for mapping in mappings:
        for chain, hook in ((pre, "prerouting"), (out, "output")):
            match = _match_destination(mapping, hook)
            if match is None:
                continue
            text += (f"add rule ip {TABLE} {chain} {match} {mapping.protocol} dport {mapping.host_port} "
                     f"dnat to {container_ip}:{mapping.container_port} "
                     f'comment "{mapping}"\n')
    return text


def delete_chains(names: Iterable[str]) -> str:
    return "".join(f"delete chain ip {TABLE} {name}\n" for name in names)


# ---------------------------------------------------------------- the nft tool


def nft(script: str) -> None:
    """Apply a script with `nft -f -`: the whole script is one atomic transaction."""
    try:
        result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    except FileNotFoundError:
        raise PortError("the nft tool is missing: install the nftables package") from None
    if result.returncode != 0:
        raise PortError(f"nft failed: {result.stderr.strip()}")


def table_chains() -> dict[str, list[dict[str, Any]]]:
    """Our table as {chain name: [rules]} from `nft -j list table` ({} when there is no table)."""
    result = subprocess.run(["nft", "-j", "list", "table", "ip", TABLE], capture_output=True, text=True)
    if result.returncode != 0:
        return {}  # "No such file or directory": the table does not exist
    chains: dict[str, list[dict[str, Any]]] = {}
    for item in json.loads(result.stdout).get("nftables", []):
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            chains.setdefault(item["rule"]["chain"], []).append(item["rule"])
    return chains


@contextmanager
def host_lock() -> Iterator[None]:
    """Serialise changes to our nft table among every minicontainer command on this host."""
    HOST_LOCK_ROOT.joinpath("locks").mkdir(parents=True, exist_ok=True)
    with Store(HOST_LOCK_ROOT).lock("nftables"):
        yield


def _remove_chains(names: Iterable[str]) -> None:
    """Caller holds host_lock. Delete those of `names` that exist, then the table if it is empty."""
    existing = table_chains()
    doomed = [name for name in names if name in existing]
    script = delete_chains(doomed)
    if existing and not set(existing) - set(doomed):
        script = f"delete table ip {TABLE}\n"  # deleting a table deletes its chains too
    if script:
        nft(script)


def published_elsewhere(chains: dict[str, list[dict[str, Any]]], mapping: PortMapping) -> bool:
    """Does a rule of our table (any store's container) already use this host port?

    Each DNAT rule carries its mapping in Docker's notation as a comment,
    which is how other commands, and people, recognise it.
    """
    for rules in chains.values():
        for rule in rules:
            other = PortMapping.from_comment(rule.get("comment", ""))
            if other is None:
                continue
            same_ip = not other.host_ip or not mapping.host_ip or other.host_ip == mapping.host_ip
            if same_ip and other.host_port == mapping.host_port and other.protocol == mapping.protocol:
                return True
    return False


def check_host_port_free(mapping: PortMapping) -> None:
    """Refuse a host port that a host program listens on: our DNAT would silently steal its traffic.

    Docker notices the same conflict when docker-proxy fails to bind(2) the port;
    we try the bind ourselves and close the socket at once.
    """
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((mapping.host_ip or "0.0.0.0", mapping.host_port))
        except OSError as e:
            raise PortError(f"cannot publish {mapping}: host port {mapping.host_port} is in use ({e.strerror})") from None


def publish_network(bridge: str, subnet: str) -> None:
    """Install (or refresh) a network's masquerade and guard chains."""
    with host_lock():
        nft(network_rules(bridge, subnet))


def unpublish_network(bridge: str) -> None:
    with host_lock():
        _remove_chains(network_chains(bridge))


def publish_container(container_id: str, container_ip: str, mappings: list[PortMapping]) -> None:
    """Install the DNAT chains of one container, after checking its host ports are free."""
    if not mappings:
        return
    with host_lock():
        chains = table_chains()
        for chain in container_chains(container_id):
            chains.pop(chain, None)  # a retry of our own may have left them
        for mapping in mappings:
            if published_elsewhere(chains, mapping):
                raise PortError(f"cannot publish {mapping}: host port {mapping.host_port}/"
                                f"{mapping.protocol} is already allocated")
            check_host_port_free(mapping)
        nft(container_rules(container_id, container_ip, mappings))


def unpublish_container(container_id: str) -> None:
    """Remove a container's DNAT chains (nothing to do when it published nothing)."""
    with host_lock():
        _remove_chains(container_chains(container_id))
