"""Container networking: how a process in its own network namespace talks to the world.

A new network namespace has nothing but a `lo` that is down. The bridge
network mode (Docker's default) wires it up like this:

    host                                      container's network namespace
    ─────────────────────────────────────     ─────────────────────────────
    mc0 (bridge, 10.213.0.1/24) ── mcv1a2b3c4d5 ═══ veth ═══ eth0 (10.213.0.2/24)
                                                             default via 10.213.0.1
                                                             lo (up)

* a bridge is a virtual switch on the host; its own address is the
  containers' gateway;
* a veth pair is a virtual cable: what enters one end leaves the other. One
  end is plugged into the bridge, the other is created inside the container's
  namespace and named eth0;
* IPAM (ipam.py) hands out the addresses; nftables (ports.py) publishes ports
  and masquerades outbound traffic.

Every step is a netlink request made with pyroute2's `IPRoute`; each function
names the request and the `ip` command that makes the same one, so the code
can be replayed by hand. pyroute2 is imported inside the functions that use
it: `--network none` and `--network host` never load it.

The other modes need no wiring: `none` keeps the lone `lo` (the runtime brings
it up), `host` keeps the host's namespace, and `container:NAME` joins another
container's namespace, as the containers of a Kubernetes pod do.

Names: each container's /etc/hosts names itself, and on a user-defined network
it also lists every other container of that network, rewritten as they come
and go (Docker runs a DNS server for this; a hosts file shows the same idea with
nothing running).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minicontainer import ipam, ports
from minicontainer.errors import MiniContainerError
from minicontainer.ipam import Network, NetworkError
from minicontainer.store import Store, atomic_write_json

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True)
class NetworkMode:
    """What `--network` asked for: kind is bridge, none, host or container."""

    kind: str
    name: str = ""  # the network (bridge) or the container (container:NAME)

    @classmethod
    def parse(cls, text: str) -> NetworkMode:
        if text in ("none", "host"):
            return cls(text)
        if text.startswith("container:"):
            target = text.partition(":")[2]
            if not target:
                raise NetworkError("--network container: needs a container name or id")
            return cls("container", target)
        ipam.check_network_name(text)
        return cls("bridge", text)


@dataclass(frozen=True)
class Endpoint:
    """A container's place on a network, as `inspect` shows it."""

    network: str
    bridge: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    host_veth: str
    ports: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- names


def host_veth_name(container_id: str) -> str:
    """`mcv` + 9 hex of the id: unique enough, and within the 15 bytes Linux allows."""
    return f"mcv{container_id[:9]}"


def mac_for(address: str) -> str:
    """A MAC derived from the IP, as Docker does (02:42:ac:11:00:02 for 172.17.0.2).

    When an address is given to a new container, neighbours' ARP caches still
    hold the old MAC for it; deriving the MAC from the IP makes the old entry
    right. 02: marks it locally administered; 6d is "m".
    """
    return "02:6d:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def bridge_alias(store: Store, network: Network) -> str:
    """Written on the bridge (IFLA_IFALIAS, `ip link set mc0 alias …`) to mark it as ours."""
    return f"minicontainer {store.root} {network.name}"


# ---------------------------------------------------------------- host facts


def host_routes(ipr: IPRoute, ignore_ifname: str | None = None) -> list[tuple[ipaddress.IPv4Network, str]]:
    """IPv4 destinations this host already reaches directly (RTM_GETROUTE, RTM_GETADDR).

    Default routes are left out: they mean "everything else". Routes through
    `ignore_ifname` are left out too, so that our own bridge does not collide
    with itself when it is set up again.
    """
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    taken: list[tuple[ipaddress.IPv4Network, str]] = []
    for route in ipr.get_routes(family=2, table=254):
        dst, length = route.get("RTA_DST"), route["dst_len"]
        ifname = names.get(route.get("RTA_OIF"), "?")
        if dst and length and ifname != ignore_ifname:
            taken.append((ipaddress.IPv4Network(f"{dst}/{length}", strict=False), f"route via {ifname}"))
    for addr in ipr.get_addr(family=2):
        ifname = names.get(addr["index"], "?")
        if ifname not in (ignore_ifname, "lo"):
            net = ipaddress.IPv4Network(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False)
            taken.append((net, f"address of {ifname}"))
    return taken


def taken_subnets(store: Store, bridge: str) -> list[tuple[ipaddress.IPv4Network, str]]:
    """What a new network must not overlap: the host's routes and addresses, and the store's networks."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        taken = host_routes(ipr, ignore_ifname=bridge)
    return taken + [(ipaddress.IPv4Network(n.subnet), f"network {n.name}") for n in ipam.list_networks(store)]


# ---------------------------------------------------------------- networks


def create_network(store: Store, name: str, subnet: str | None = None, bridge: str | None = None) -> Network:
    """`network create`: record the network, then build its bridge and NAT rules."""
    ipam.check_network_name(name)
    bridge = bridge or (ipam.DEFAULT_BRIDGE if name == ipam.DEFAULT_NETWORK else f"mc-{name}"[:ipam.IFNAMSIZ])
    ipam.check_bridge_name(bridge)
    with store.lock("networks"):
        if ipam.network_file(store, name).exists():
            raise NetworkError(f"network {name} already exists")
        if any(n.bridge == bridge for n in ipam.list_networks(store)):
            raise NetworkError(f"bridge {bridge} is already used by another network")
        chosen = _choose_subnet(store, name, subnet, bridge)
        network = ipam.make_network(name, bridge, chosen)
        ipam.save_network(store, network)
    try:
        setup_network(store, network)
    except BaseException:
        remove_network(store, name)
        raise
    return network


def _choose_subnet(store: Store, name: str, subnet: str | None, bridge: str) -> ipaddress.IPv4Network:
    """--subnet if free; else the default's for `bridge`, or the pool's next free /24."""
    taken = taken_subnets(store, bridge)
    if subnet is None and name != ipam.DEFAULT_NETWORK:
        return ipam.next_free_subnet(ipaddress.IPv4Network(ipam.USER_SUBNET_POOL), taken)
    chosen = ipam.parse_subnet(subnet or ipam.DEFAULT_SUBNET)
    clash = ipam.first_overlap(chosen, taken)
    if clash:
        raise NetworkError(f"subnet {chosen} overlaps {clash[0]} ({clash[1]}); choose another with --subnet")
    return chosen


def get_network(store: Store, name: str) -> Network:
    """The network called `name`; the default `bridge` is created on first use, as docker0 is."""
    try:
        return ipam.load_network(store, name)
    except NetworkError:
        if name != ipam.DEFAULT_NETWORK:
            raise
    try:
        return create_network(store, name)
    except NetworkError as refused:
        try:
            return ipam.load_network(store, name)  # another command created it meanwhile
        except NetworkError:
            raise refused from None  # say why it could not be created, not that it is missing


def setup_network(store: Store, network: Network) -> None:
    """Make the bridge and NAT rules exist (idempotent: also repairs them after a reboot)."""
    from pyroute2 import IPRoute

    with store.lock(ipam.lock_name(network.name)), IPRoute() as ipr:
        ensure_bridge(ipr, store, network)
    if nat_available():
        ports.publish_network(network.bridge, network.subnet)


def remove_network(store: Store, name: str) -> None:
    """`network rm`: refused while a live container uses it; removes bridge, rules and files."""
    network = ipam.load_network(store, name)
    entries = ipam.read_allocations(store, name).values()
    users = [e.get("name") or e["container"] for e in entries if store.container_dir(e["container"]).exists()]
    if users:
        raise NetworkError(f"network {name} has active endpoints: {', '.join(sorted(users))}")
    for entry in entries:  # left by containers deleted without detach (their store dir is gone)
        detach(store, entry["container"])
    with store.lock(ipam.lock_name(name)):
        # a bridge of that name made by someone else keeps its NAT rules too
        if delete_bridge(store, network) and nat_available():
            ports.unpublish_network(network.bridge)
        ipam.ipam_file(store, name).unlink(missing_ok=True)
        ipam.network_file(store, name).unlink(missing_ok=True)


def inspect_network(store: Store, name: str) -> dict[str, Any]:
    network = ipam.load_network(store, name)
    return {**asdict(network),
            "containers": {ip: entry for ip, entry in sorted(ipam.read_allocations(store, name).items())},
            "ip_forward": IP_FORWARD.read_text().strip() == "1",
            "nat": nat_available()}


def nat_available() -> bool:
    """Masquerading and published ports need the nft tool (Debian package nftables)."""
    return shutil.which("nft") is not None


# ---------------------------------------------------------------- the bridge


def ensure_bridge(ipr: IPRoute, store: Store, network: Network) -> int:
    """The bridge exists, carries the gateway address and is up; returns its index.

    `ip link add mc0 type bridge; ip addr add 10.213.0.1/24 dev mc0; ip link set mc0 up`
    (RTM_NEWLINK, RTM_NEWADDR, RTM_NEWLINK). A bridge of the same name that
    another store or program made is refused, never taken over.
    """
    alias = bridge_alias(store, network)
    found = ipr.link_lookup(ifname=network.bridge)
    if found:
        index = found[0]
        owner = ipr.get_links(index)[0].get("IFLA_IFALIAS")
        if owner != alias:
            raise NetworkError(f"interface {network.bridge} exists and is not this network's bridge"
                               f" ({owner or 'not made by minicontainer'}); use another --bridge")
    else:
        ipr.link("add", ifname=network.bridge, kind="bridge")
        index = ipr.link_lookup(ifname=network.bridge)[0]
        ipr.link("set", index=index, ifalias=alias)
    allow_localnet(network.bridge)
    addresses = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
    if network.gateway not in addresses:
        ipr.addr("add", index=index, address=network.gateway, prefixlen=network.prefixlen)
    ipr.link("set", index=index, state="up")
    return index


def allow_localnet(bridge: str) -> None:
    """net.ipv4.conf.<bridge>.route_localnet = 1, on our bridge only.

    Lets packets from 127.0.0.1 be routed to a container after DNAT, so a
    published port answers on 127.0.0.1 (see ports.py for the guard rule
    that keeps containers away from the host's loopback).
    """
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1")


def delete_bridge(store: Store, network: Network) -> bool:
    """`ip link del mc0` (RTM_DELLINK), only if the bridge is the one this network made.

    Returns False when an interface of that name belongs to someone else.
    """
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=network.bridge)
        if not found:
            return True
        if ipr.get_links(found[0])[0].get("IFLA_IFALIAS") != bridge_alias(store, network):
            return False
        ipr.link("del", index=found[0])
        return True


def enable_ip_forward(store: Store) -> None:
    """net.ipv4.ip_forward = 1, once, said on stderr and recorded in networks/ip_forward.record.

    Needed only to carry containers' packets to the host's other networks
    (and published ports to callers on other machines): traffic between
    containers of one bridge and traffic with the host itself works without
    it. It is global, so it is left on afterwards (as Docker does): turning it
    off could break another user of it.
    """
    if IP_FORWARD.read_text().strip() == "1":
        return
    IP_FORWARD.write_text("1")
    atomic_write_json(ipam.networks_dir(store) / "ip_forward.record",
                      {"enabled": time.time(), "previous": 0,
                       "why": "containers on bridge networks reach other networks"})
    print("minicontainer: enabled net.ipv4.ip_forward so that containers can reach other networks "
          "(sysctl -w net.ipv4.ip_forward=0 turns it off again)", file=sys.stderr)


# ---------------------------------------------------------------- attach and detach


def attach(store: Store, network_name: str, container_id: str, pid: int, *,
           name: str = "", hostname: str = "", requested_ip: str | None = None,
           publish: list[ports.PortMapping] | None = None, hosts_file: Path | None = None) -> Endpoint:
    """Plug the network namespace of process `pid` into a bridge network.

    Runs in the parent while the child waits, after the child has unshared
    its network namespace and before it execs the command, so the command
    starts with its network ready. Every piece is recorded before it is made,
    so that `detach` can take it apart from the store alone, even after the
    command that made it was killed.
    """
    from pyroute2 import IPRoute

    publish = publish or []
    if publish and not nat_available():
        raise ports.PortError("publishing ports needs the nft tool: install the nftables package")
    network = get_network(store, network_name)
    veth = host_veth_name(container_id)
    address = ipam.allocate(store, network, container_id, requested_ip, name=name, hostname=hostname,
                            veth=veth, ports=[p.to_json() for p in publish],
                            hosts_file=str(hosts_file) if hosts_file else "")
    endpoint = Endpoint(network=network.name, bridge=network.bridge, ip=address,
                        prefixlen=network.prefixlen, gateway=network.gateway, mac=mac_for(address),
                        host_veth=veth, ports=[str(p) for p in publish])
    try:
        with IPRoute() as ipr:
            with store.lock(ipam.lock_name(network.name)):
                rebuilt = not Path("/sys/class/net", network.bridge).exists()  # e.g. after a reboot
                bridge_index = ensure_bridge(ipr, store, network)
            create_veth_pair(ipr, endpoint, pid)
            plug_into_bridge(ipr, endpoint, bridge_index)
        configure_container_side(endpoint, pid)
        if nat_available():
            if rebuilt:  # the bridge and its NAT rules are made (and lost) together
                ports.publish_network(network.bridge, network.subnet)
            ports.publish_container(container_id, address, publish)
            enable_ip_forward(store)
        refresh_hosts_files(store, network)
    except BaseException:
        detach(store, container_id)
        raise
    return endpoint


def attach_in_helper(store: Store, network_name: str, container_id: str, pid: int,
                     **options: Any) -> Endpoint:
    """attach() in a short-lived child process (fork(2)); the caller never loads pyroute2.

    pyroute2 costs about 11 MB of memory. A detached container's monitor
    process lives as long as the container, and should stay small; so the
    netlink work is done by a helper that exits when it is done, and the
    result (or the error) comes back pickled through a pipe.
    """
    import pickle

    read_end, write_end = os.pipe()
    helper = os.fork()
    if helper == 0:  # the helper: do the work, report, and leave without running any cleanup
        os.close(read_end)
        try:
            result: tuple[str, Any] = ("ok", attach(store, network_name, container_id, pid, **options))
        except MiniContainerError as e:
            result = ("error", e)
        except BaseException as e:  # noqa: BLE001 - e.g. a NetlinkError: report it as ours
            result = ("error", NetworkError(f"{type(e).__name__}: {e}"))
        with os.fdopen(write_end, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(helper, 0)
    kind, value = pickle.loads(data) if data else ("error", NetworkError("the network helper process died"))
    if kind == "error":
        raise value
    return value


def create_veth_pair(ipr: IPRoute, endpoint: Endpoint, pid: int) -> None:
    """`ip link add mcv… type veth peer name eth0 address <mac> netns <pid>` (RTM_NEWLINK).

    The peer is created directly inside the container's namespace, where the
    name eth0 is free even though the host has its own eth0; that saves the
    usual create / move (`ip link set … netns`) / rename dance, and the
    container never sees a half-configured interface with a temporary name.
    """
    ipr.link("add", ifname=endpoint.host_veth, kind="veth",
             peer={"ifname": "eth0", "address": endpoint.mac, "net_ns_pid": pid})


def plug_into_bridge(ipr: IPRoute, endpoint: Endpoint, bridge_index: int) -> None:
    """`ip link set mcv… master mc0 up` (RTM_NEWLINK with IFLA_MASTER)."""
    index = ipr.link_lookup(ifname=endpoint.host_veth)[0]
    ipr.link("set", index=index, master=bridge_index, state="up")


def configure_container_side(endpoint: Endpoint, pid: int) -> None:
    """Inside the container's namespace: lo up, eth0's address, eth0 up, default route.

    `ip addr add 10.213.0.2/24 dev eth0; ip link set eth0 up; ip link set lo up;
    ip route add default via 10.213.0.1` (RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE),
    sent over a netlink socket opened in /proc/<pid>/ns/net (pyroute2 opens it
    from a short-lived helper process that setns(2)s there, so this process
    stays in the host's namespace).
    """
    from pyroute2 import IPRoute

    with IPRoute(netns=f"/proc/{pid}/ns/net", flags=0) as ns:
        eth0 = ns.link_lookup(ifname="eth0")[0]
        ns.addr("add", index=eth0, address=endpoint.ip, prefixlen=endpoint.prefixlen)
        ns.link("set", index=eth0, state="up")
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        ns.route("add", dst="0.0.0.0/0", gateway=endpoint.gateway)


def detach(store: Store, container_id: str) -> list[dict[str, Any]]:
    """Undo attach from what the store recorded: veth, DNAT chains, address, peers' hosts files.

    Idempotent, and safe after kill -9 of anyone: a missing piece is simply
    skipped. Returns the released IPAM entries.
    """
    released = []
    for network in ipam.list_networks(store):
        entry = ipam.release(store, network, container_id)
        if entry is None:
            continue
        released.append({"network": network.name, **entry})
        delete_host_veth(entry.get("veth") or host_veth_name(container_id))
        if entry.get("ports") and nat_available():
            ports.unpublish_container(container_id)
        refresh_hosts_files(store, network)
    return released


def delete_host_veth(ifname: str) -> None:
    """`ip link del mcv…` (RTM_DELLINK): deleting one end of a veth deletes both.

    When the container's namespace is already gone (its last process exited)
    the kernel has deleted the pair on its own, and there is nothing to do.
    """
    if not Path("/sys/class/net", ifname).exists():
        return  # the usual case once the container has exited: no need to load pyroute2
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        try:
            if found:
                ipr.link("del", index=found[0])
        except NetlinkError as e:
            if e.code != errno.ENODEV:  # the kernel removed it meanwhile: what we wanted
                raise


def endpoint_of(store: Store, container_id: str) -> Endpoint | None:
    """The container's endpoint as recorded by IPAM (for `inspect`); no netlink needed."""
    for network in ipam.list_networks(store):
        for address, entry in ipam.read_allocations(store, network.name).items():
            if entry.get("container") == container_id:
                return Endpoint(network=network.name, bridge=network.bridge, ip=address,
                                prefixlen=network.prefixlen, gateway=network.gateway,
                                mac=mac_for(address), host_veth=entry.get("veth", ""),
                                ports=[str(ports.PortMapping.from_json(p)) for p in entry.get("ports", [])])
    return None


# ---------------------------------------------------------------- /etc/hosts

LOCALHOST_LINES = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts_text(own: tuple[str, list[str]] | None, peers: list[tuple[str, list[str]]] = ()) -> str:
    """The /etc/hosts Docker writes: localhost lines, the container's own line, then its peers'.

    `own` and each peer are (address, names); duplicate names on a line are dropped.
    """
    text = LOCALHOST_LINES
    for address, names in ([own] if own else []) + sorted(peers):
        unique = list(dict.fromkeys(n for n in names if n))
        if unique:
            text += f"{address}\t{' '.join(unique)}\n"
    return text


def _names(entry: dict[str, Any], container_id: str) -> list[str]:
    return [entry.get("hostname", ""), entry.get("name", ""), container_id[:12]]


def refresh_hosts_files(store: Store, network: Network) -> None:
    """Rewrite the hosts file of every container on `network` (under the network lock).

    On the default network a container knows only itself, as with Docker's
    default bridge; on a user-defined one it also knows every other container.
    """
    with store.lock(ipam.lock_name(network.name)):
        allocations = ipam.read_allocations(store, network.name)
        lines = {address: _names(entry, entry["container"]) for address, entry in allocations.items()}
        for address, entry in allocations.items():
            path = entry.get("hosts_file")
            if not path or not Path(path).exists():
                continue
            peers = [(a, n) for a, n in lines.items() if a != address] if network.user_defined else []
            write_in_place(Path(path), hosts_text((address, lines[address]), peers))


def write_in_place(path: Path, text: str) -> None:
    """Replace a file's content while keeping its inode.

    /etc/hosts in a running container is a bind mount of this very inode; the
    usual atomic write (new file + rename) would give the path a new inode and
    the container would keep seeing the old one. So the file is rewritten in
    place (its readers may, for an instant, see a partial file; the network
    lock keeps writers from interleaving).
    """
    with open(path, "r+" if path.exists() else "w") as f:
        f.write(text)
        f.truncate()
