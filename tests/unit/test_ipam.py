"""IPAM: subnets, overlap checks and address allocation, including many allocators at once."""

from __future__ import annotations

import ipaddress
import multiprocessing
from pathlib import Path

import pytest

from minicontainer import ipam
from minicontainer.ipam import NetworkError
from minicontainer.store import Store


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


@pytest.fixture
def network(store: Store) -> ipam.Network:
    network = ipam.make_network("testnet", "mcttestnet", net("10.250.30.0/24"))
    ipam.save_network(store, network)
    return network


def test_default_subnet_avoids_the_usual_ranges() -> None:
    default = net(ipam.DEFAULT_SUBNET)
    for crowded in ("172.16.0.0/12", "10.88.0.0/16", "10.89.0.0/16", "192.168.0.0/16",
                    "10.96.0.0/12", "10.244.0.0/16", "100.64.0.0/10"):
        assert not default.overlaps(net(crowded)), crowded
    assert not default.overlaps(net(ipam.USER_SUBNET_POOL))


def test_gateway_is_the_first_address() -> None:
    network = ipam.make_network("a", "mcta", net("10.250.31.0/24"))
    assert (network.gateway, network.prefixlen, network.subnet) == ("10.250.31.1", 24, "10.250.31.0/24")
    assert network.user_defined and not ipam.make_network("bridge", "mc0", net("10.213.0.0/24")).user_defined


@pytest.mark.parametrize("text", ["10.1.2.3/24", "nonsense", "10.0.0.0/31", "127.0.0.0/8",
                                  "224.0.0.0/4", "fd00::/64", "169.254.0.0/16"])
def test_bad_subnets_are_refused(text: str) -> None:
    with pytest.raises(NetworkError):
        ipam.parse_subnet(text)


@pytest.mark.parametrize("name", ["none", "host", "container:x", "-x", "a/b", "", "x" * 70])
def test_bad_network_names_are_refused(name: str) -> None:
    with pytest.raises(NetworkError):
        ipam.check_network_name(name)


@pytest.mark.parametrize("ifname", ["x" * 16, "a b", "", "a/b"])
def test_bad_bridge_names_are_refused(ifname: str) -> None:
    with pytest.raises(NetworkError):
        ipam.check_bridge_name(ifname)


def test_overlap_finds_the_clashing_route() -> None:
    taken = [(net("192.0.2.0/24"), "route via eth0"), (net("10.0.0.0/8"), "route via vpn0")]
    assert ipam.first_overlap(net("10.213.0.0/24"), taken) == (net("10.0.0.0/8"), "route via vpn0")
    assert ipam.first_overlap(net("192.0.2.128/25"), taken) == (net("192.0.2.0/24"), "route via eth0")
    assert ipam.first_overlap(net("198.51.100.0/24"), taken) is None


def test_next_free_subnet_skips_taken_ones() -> None:
    pool = net("10.214.0.0/16")
    taken = [(net("10.214.0.0/24"), "a"), (net("10.214.1.0/25"), "b")]
    assert ipam.next_free_subnet(pool, taken) == net("10.214.2.0/24")
    with pytest.raises(NetworkError, match="no free"):
        ipam.next_free_subnet(net("10.214.0.0/23"), taken)


def test_lowest_free_address_and_requested_ones(network: ipam.Network) -> None:
    allocations = {"10.250.30.2": {"container": "a"}}
    assert ipam.choose_address(network, allocations) == "10.250.30.3"
    assert ipam.choose_address(network, allocations, "10.250.30.77") == "10.250.30.77"
    for bad in ("10.250.30.2", "10.250.30.1", "10.250.30.255", "10.250.30.0", "10.9.9.9", "x"):
        with pytest.raises(NetworkError):
            ipam.choose_address(network, allocations, bad)


def test_full_subnet_is_reported() -> None:
    tiny = ipam.make_network("tiny", "mcttiny", net("10.250.32.0/30"))  # gateway .1, one container .2
    assert ipam.choose_address(tiny, {}) == "10.250.32.2"
    with pytest.raises(NetworkError, match="no free address"):
        ipam.choose_address(tiny, {"10.250.32.2": {"container": "a"}})


def test_allocate_release_round_trip(store: Store, network: ipam.Network) -> None:
    first = ipam.allocate(store, network, "c1", name="web")
    assert first == "10.250.30.2"
    assert ipam.allocate(store, network, "c1") == first  # asking again: same address
    assert ipam.allocate(store, network, "c2", requested="10.250.30.9") == "10.250.30.9"
    on_disk = ipam.read_allocations(store, "testnet")
    assert on_disk == {"10.250.30.2": {"container": "c1", "name": "web"},
                       "10.250.30.9": {"container": "c2"}}
    assert ipam.release(store, network, "c1") == {"ip": "10.250.30.2", "container": "c1", "name": "web"}
    assert ipam.release(store, network, "c1") is None  # idempotent
    assert ipam.allocate(store, network, "c3") == "10.250.30.2"  # freed address is reused
    assert [n.name for n in ipam.list_networks(store)] == ["testnet"]


def _allocate_one(root: str, index: int, queue: multiprocessing.Queue) -> None:
    store = Store.open(root)
    queue.put(ipam.allocate(store, ipam.load_network(store, "testnet"), f"container{index}"))


def test_twenty_processes_at_once_get_twenty_addresses(store: Store, network: ipam.Network) -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start = context.Event()

    def worker(index: int) -> None:
        start.wait()
        _allocate_one(str(store.root), index, queue)

    procs = [context.Process(target=worker, args=(i,)) for i in range(20)]
    for p in procs:
        p.start()
    start.set()  # release them together, to collide as much as possible
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    addresses = [queue.get(timeout=5) for _ in procs]
    assert len(set(addresses)) == 20
    recorded = ipam.read_allocations(store, "testnet")
    assert sorted(recorded) == sorted(addresses)
    assert {e["container"] for e in recorded.values()} == {f"container{i}" for i in range(20)}
