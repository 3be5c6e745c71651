"""Networking without root: modes, names, hosts files, and lazy imports."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from minicontainer import ipam, network
from minicontainer.ipam import NetworkError
from minicontainer.network import NetworkMode
from minicontainer.store import Store


def test_network_modes() -> None:
    assert NetworkMode.parse("none") == NetworkMode("none")
    assert NetworkMode.parse("host") == NetworkMode("host")
    assert NetworkMode.parse("bridge") == NetworkMode("bridge", "bridge")
    assert NetworkMode.parse("mynet") == NetworkMode("bridge", "mynet")
    assert NetworkMode.parse("container:web") == NetworkMode("container", "web")
    for bad in ("container:", "a/b"):
        with pytest.raises(NetworkError):
            NetworkMode.parse(bad)


def test_host_veth_name_fits_in_ifnamsiz() -> None:
    name = network.host_veth_name("0123456789abcdef" * 4)
    assert name == "mcv012345678" and len(name) <= ipam.IFNAMSIZ


def test_mac_is_derived_from_the_address() -> None:
    assert network.mac_for("10.213.0.2") == "02:6d:0a:d5:00:02"
    first_octet = int(network.mac_for("10.1.2.3").split(":")[0], 16)
    assert first_octet & 2 and not first_octet & 1  # locally administered, unicast


def test_hosts_text_lists_self_then_peers() -> None:
    text = network.hosts_text(("10.213.0.3", ["web", "web", "abc"]),
                              [("10.213.0.9", ["db"]), ("10.213.0.4", ["cache", ""])])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-3:] == ["10.213.0.3\tweb abc", "10.213.0.4\tcache", "10.213.0.9\tdb"]


def test_write_in_place_keeps_the_inode(tmp_path: Path) -> None:
    """A bind-mounted /etc/hosts only sees changes made to the same inode."""
    path = tmp_path / "hosts"
    path.write_text("a much longer first version of the file\n")
    inode = path.stat().st_ino
    network.write_in_place(path, "short\n")
    assert path.read_text() == "short\n" and path.stat().st_ino == inode


def _join(store: Store, net: ipam.Network, cid: str, name: str, tmp_path: Path) -> Path:
    hosts = tmp_path / f"{name}.hosts"
    hosts.write_text("")
    ipam.allocate(store, net, cid, name=name, hostname=cid[:12], hosts_file=str(hosts))
    return hosts


@pytest.mark.parametrize("net_name, peers_listed", [("bridge", False), ("appnet", True)])
def test_hosts_files_follow_the_network(tmp_path: Path, net_name: str, peers_listed: bool) -> None:
    """On a user-defined network containers find each other by name; on the default one they don't."""
    store = Store.open(tmp_path / "store")
    net = ipam.make_network(net_name, "mctunit", ipaddress.IPv4Network("10.250.40.0/24"))
    ipam.save_network(store, net)
    web = _join(store, net, "a" * 64, "web", tmp_path)
    db = _join(store, net, "b" * 64, "db", tmp_path)
    network.refresh_hosts_files(store, net)
    assert "10.250.40.2\taaaaaaaaaaaa web\n" in web.read_text()
    assert ("10.250.40.3\tbbbbbbbbbbbb db\n" in web.read_text()) is peers_listed
    assert ("10.250.40.2\taaaaaaaaaaaa web\n" in db.read_text()) is peers_listed
    ipam.release(store, net, "b" * 64)  # db leaves
    network.refresh_hosts_files(store, net)
    assert "db" not in web.read_text()


def test_endpoint_is_read_back_from_the_store(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    net = ipam.make_network("appnet", "mctunit", ipaddress.IPv4Network("10.250.41.0/24"))
    ipam.save_network(store, net)
    ipam.allocate(store, net, "c" * 64, veth="mcvccccccccc",
                  ports=[{"host_ip": "", "host_port": 8080, "container_port": 80, "protocol": "tcp"}])
    endpoint = network.endpoint_of(store, "c" * 64)
    assert endpoint is not None and endpoint.to_json() == {
        "network": "appnet", "bridge": "mctunit", "ip": "10.250.41.2", "prefixlen": 24,
        "gateway": "10.250.41.1", "mac": "02:6d:0a:fa:29:02", "host_veth": "mcvccccccccc",
        "ports": ["0.0.0.0:8080->80/tcp"]}
    assert network.endpoint_of(store, "d" * 64) is None


def test_pyroute2_is_not_imported_by_the_cli_or_the_network_module() -> None:
    """`run --network none` must not pay for pyroute2 (about 0.2 s to import)."""
    code = ("import sys, minicontainer.cli, minicontainer.network, minicontainer.ports;"
            "from minicontainer.network import NetworkMode; NetworkMode.parse('none');"
            "print('pyroute2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
