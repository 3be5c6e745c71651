"""attach/detach against real network namespaces (made with unshare(1)), before any container runs.

Traffic only ever goes to addresses of this machine: loopback, the test
bridge, and the namespaces the tests made.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minicontainer import ipam, network, ports
from minicontainer.store import Store

BUSYBOX = "/bin/busybox"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def free_test_subnet() -> ipaddress.IPv4Network:
    """A random 10.250.x.0/24 that no route of this host covers."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    taken = []
    for line in routes.splitlines():
        word = line.split()[1] if line.startswith(("local", "broadcast")) else line.split()[0]
        if word[0].isdigit():
            taken.append(ipaddress.IPv4Network(word, strict=False))
    while True:
        candidate = ipaddress.IPv4Network(f"10.250.{secrets.randbelow(250)}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return candidate


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def our_table() -> str:
    return subprocess.run(["nft", "list", "table", "ip", ports.TABLE], capture_output=True, text=True).stdout


def in_netns(pid: int, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def store(store_root: Path) -> Store:
    return Store.open(store_root)


@pytest.fixture
def keep_ip_forward() -> Iterator[None]:
    """attach may enable ip_forward (and says so); the tests put the host back as it was."""
    before = IP_FORWARD.read_text()
    yield
    IP_FORWARD.write_text(before)


@pytest.fixture
def testnet(store: Store, keep_ip_forward: None) -> Iterator[ipam.Network]:
    """A user-defined network with its own bridge name and a subnet no host route uses."""
    net = network.create_network(store, "testnet", subnet=str(free_test_subnet()),
                                 bridge=f"mct{secrets.token_hex(4)}")
    yield net
    for entry in ipam.read_allocations(store, net.name).values():
        network.detach(store, entry["container"])
    network.remove_network(store, net.name)


@pytest.fixture
def netns_process() -> Iterator[Callable[[], int]]:
    """Start `busybox sleep` in a new network namespace; returns its pid (killed afterwards)."""
    procs: list[subprocess.Popen[bytes]] = []
    own = os.stat("/proc/self/ns/net").st_ino

    def start() -> int:
        proc = subprocess.Popen(["unshare", "--net", BUSYBOX, "sleep", "1000"])
        procs.append(proc)
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino == own:  # until unshare(2) is done
            if proc.poll() is not None:
                raise RuntimeError("unshare failed")
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def host_address_besides(bridge: str) -> str:
    """An IPv4 address of this host that is neither loopback nor on the test bridge."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields[1] not in ("lo", bridge) and not fields[1].startswith("mc"):
            return fields[3].split("/")[0]
    pytest.skip("this host has no address besides loopback")


def test_two_namespaces_on_one_bridge_talk(store: Store, testnet: ipam.Network,
                                           netns_process: Callable[[], int]) -> None:
    a, b = netns_process(), netns_process()
    ep_a = network.attach(store, testnet.name, "a" * 64, a, name="alpha")
    ep_b = network.attach(store, testnet.name, "b" * 64, b, name="beta")
    assert ep_a.ip != ep_b.ip and ep_a.bridge == testnet.bridge
    assert {ep_a.host_veth, ep_b.host_veth} <= links()
    # the veth is plugged into the bridge, on the host side
    assert Path(f"/sys/class/net/{ep_a.host_veth}/master").resolve().name == testnet.bridge
    addr = in_netns(b, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert f"{ep_b.ip}/{ep_b.prefixlen}" in addr
    assert f"link/ether {ep_b.mac}" in in_netns(b, "ip", "-o", "link", "show", "eth0").stdout
    assert f"default via {testnet.gateway} dev eth0" in in_netns(b, "ip", "route").stdout
    assert "UP" in in_netns(b, "ip", "-o", "link", "show", "lo").stdout
    ping = in_netns(b, BUSYBOX, "ping", "-c", "1", "-W", "5", ep_a.ip)
    assert ping.returncode == 0 and "1 packets received" in ping.stdout
    gateway = in_netns(a, BUSYBOX, "ping", "-c", "1", "-W", "5", testnet.gateway)
    assert gateway.returncode == 0


def test_published_port_reachable_from_the_host(store: Store, testnet: ipam.Network,
                                                netns_process: Callable[[], int], tmp_path: Path) -> None:
    pid = netns_process()
    (tmp_path / "index.html").write_text("hello from the namespace\n")
    port = 20000 + secrets.randbelow(20000)
    endpoint = network.attach(store, testnet.name, "c" * 64, pid,
                              publish=ports.parse_ports([f"{port}:80"]))
    server = subprocess.Popen(["nsenter", "-t", str(pid), "-n", BUSYBOX, "httpd", "-f", "-p", "80",
                               "-h", str(tmp_path)])
    try:
        while ":80 " not in in_netns(pid, BUSYBOX, "netstat", "-ltn").stdout:  # until httpd listens
            assert server.poll() is None
        for address in ("127.0.0.1", testnet.gateway, host_address_besides(testnet.bridge)):
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=10) as reply:
                assert reply.read() == b"hello from the namespace\n", address
    finally:
        server.kill()
        server.wait()
    assert f"dport {port} dnat to {endpoint.ip}:80" in our_table()


def test_detach_removes_veth_rules_and_address(store: Store, testnet: ipam.Network,
                                               netns_process: Callable[[], int]) -> None:
    pid = netns_process()
    port = 20000 + secrets.randbelow(20000)
    endpoint = network.attach(store, testnet.name, "d" * 64, pid,
                              publish=ports.parse_ports([f"127.0.0.1:{port}:80"]))
    assert f"c{'d' * 64}-output" in our_table()
    released = network.detach(store, "d" * 64)
    assert [r["ip"] for r in released] == [endpoint.ip]
    assert endpoint.host_veth not in links()
    assert "eth0" not in in_netns(pid, "ip", "link").stdout
    assert "d" * 64 not in our_table()
    assert ipam.read_allocations(store, testnet.name) == {}
    assert network.detach(store, "d" * 64) == []  # idempotent


def test_detach_after_the_namespace_died(store: Store, testnet: ipam.Network,
                                         netns_process: Callable[[], int]) -> None:
    pid = netns_process()
    endpoint = network.attach(store, testnet.name, "e" * 64, pid,
                              publish=ports.parse_ports([f"{20000 + secrets.randbelow(20000)}:80"]))
    os.kill(pid, signal.SIGKILL)  # like kill -9 of everything: nobody runs detach but us, later
    network.detach(store, "e" * 64)
    assert endpoint.host_veth not in links()
    assert "e" * 64 not in our_table()


def test_hosts_files_name_the_peers(store: Store, testnet: ipam.Network,
                                    netns_process: Callable[[], int], tmp_path: Path) -> None:
    files = {}
    for cid, name in (("1" * 64, "web"), ("2" * 64, "db")):
        files[name] = tmp_path / f"{name}.hosts"
        files[name].write_text("")
        network.attach(store, testnet.name, cid, netns_process(), name=name, hostname=cid[:12],
                       hosts_file=files[name])
    db_ip = network.endpoint_of(store, "2" * 64).ip
    assert f"{db_ip}\t{'2' * 12} db\n" in files["web"].read_text()
    network.detach(store, "2" * 64)
    assert " db" not in files["web"].read_text()


def test_a_taken_host_port_is_refused_and_nothing_stays(store: Store, testnet: ipam.Network,
                                                        netns_process: Callable[[], int]) -> None:
    port = 20000 + secrets.randbelow(20000)
    network.attach(store, testnet.name, "f" * 64, netns_process(), publish=ports.parse_ports([f"{port}:80"]))
    with pytest.raises(ports.PortError, match="already allocated"):
        network.attach(store, testnet.name, "9" * 64, netns_process(), publish=ports.parse_ports([f"{port}:80"]))
    assert network.host_veth_name("9" * 64) not in links()
    assert "9" * 64 not in our_table()
    assert network.endpoint_of(store, "9" * 64) is None


def test_bridge_of_someone_else_is_never_taken_over(store: Store, keep_ip_forward: None) -> None:
    name = f"mct{secrets.token_hex(4)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        with pytest.raises(ipam.NetworkError, match="is not this network's bridge"):
            network.create_network(store, "other", subnet=str(free_test_subnet()), bridge=name)
        assert name in links()
        assert ipam.list_networks(store) == []
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)


def test_cli_refuses_a_subnet_that_overlaps_a_host_route(mc, keep_ip_forward: None) -> None:
    route = subprocess.run(["ip", "-4", "route", "show", "scope", "link"], capture_output=True, text=True).stdout
    if not route.strip():
        pytest.skip("no directly connected route on this host")
    overlapping = route.split()[0]
    result = mc("network", "create", "clash", "--subnet", overlapping, "--bridge", f"mct{secrets.token_hex(4)}")
    assert result.returncode == 125 and "overlaps" in result.stderr
    assert mc("network", "ls").stdout.count("\n") == 1  # the header only


def test_cli_network_lifecycle(mc, keep_ip_forward: None) -> None:
    bridge = f"mct{secrets.token_hex(4)}"
    subnet = str(free_test_subnet())
    assert mc("network", "create", "appnet", "--subnet", subnet, "--bridge", bridge, check=True).stdout == "appnet\n"
    assert bridge in links()
    assert f"appnet               {bridge}" in mc("network", "ls", check=True).stdout
    import json

    info = json.loads(mc("network", "inspect", "appnet", check=True).stdout)[0]
    assert (info["subnet"], info["bridge"], info["containers"]) == (subnet, bridge, {})
    assert f"{bridge}-postrouting" in our_table()
    assert mc("network", "create", "appnet", "--bridge", "mctother").returncode == 125
    mc("network", "rm", "appnet", check=True)
    assert bridge not in links() and bridge not in our_table()
    assert mc("network", "rm", "appnet").returncode == 125
