"""Containers on networks, through the real CLI: bridge, none, host, container:NAME, -p, --ip.

Every test uses its own network (a random `mct…` bridge and a free 10.250.x.0/24)
and removes it; traffic only ever goes to this machine's own addresses.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imagefactory import busybox_image
from tests.integration.test_network_attach import free_test_subnet, host_address_besides, links, our_table

IMAGE = "busybox-test:latest"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@pytest.fixture(scope="module")
def web_image(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Path:
    """busybox plus a page for `httpd -h /www`."""
    return busybox_image(tmp_path_factory.mktemp("img") / "web.tar", busybox,
                         extra_files={"/www/index.html": "hello from the container\n"})


@pytest.fixture
def net(mc, web_image: Path) -> Iterator[dict[str, str]]:
    """A loaded image and a network of this test's own; every container and the network go afterwards."""
    forward = IP_FORWARD.read_text()
    mc("load", str(web_image), check=True)
    name, bridge, subnet = "testnet", f"mct{secrets.token_hex(4)}", str(free_test_subnet())
    mc("network", "create", name, "--subnet", subnet, "--bridge", bridge, check=True)
    yield {"name": name, "bridge": bridge, "subnet": subnet, "gateway": subnet.rsplit(".", 1)[0] + ".1"}
    ids = mc("ps", "-aq").stdout.split()
    if ids:
        mc("rm", "-f", *ids)
    mc("network", "rm", name, check=True)
    IP_FORWARD.write_text(forward)  # attach turned it on (and said so); put the host back


def container_ip(mc, ref: str) -> str:
    return json.loads(mc("container", "inspect", ref, check=True).stdout)[0]["NetworkSettings"]["IPAddress"]


def start_web(mc, net: dict[str, str], *args: str) -> str:
    """A detached busybox httpd on port 80; returns once it listens."""
    cid = mc("run", "-d", "--network", net["name"], *args, IMAGE, "httpd", "-f", "-p", "80", "-h", "/www",
             check=True).stdout.strip()
    while ":80 " not in mc("exec", cid, "netstat", "-ltn", check=True).stdout:
        pass
    return cid


def veths(bridge: str) -> set[str]:
    """The host ends plugged into one bridge (other tests may run beside us with their own)."""
    return set(os.listdir(f"/sys/class/net/{bridge}/brif"))


def test_two_containers_on_one_bridge_talk_by_name(mc, net: dict[str, str]) -> None:
    start_web(mc, net, "--name", "web")
    web_ip = container_ip(mc, "web")
    result = mc("run", "--rm", "--network", net["name"], IMAGE, "sh", "-c",
                "ping -c 1 -W 5 web && wget -q -O- http://web/ && grep -w web /etc/hosts", check=True)
    assert "1 packets received" in result.stdout
    assert "hello from the container" in result.stdout
    assert re.search(rf"^{re.escape(web_ip)}\s.*\bweb\b", result.stdout, re.M)


def test_container_sees_eth0_address_route_and_inspect_agrees(mc, net: dict[str, str]) -> None:
    cid = mc("run", "-d", "--network", net["name"], "--ip", net["gateway"][:-1] + "77", IMAGE,
             "sleep", "1000", check=True).stdout.strip()
    info = json.loads(mc("container", "inspect", cid, check=True).stdout)[0]["NetworkSettings"]
    inside = mc("exec", cid, "sh", "-c", "ip -o -4 addr show eth0; ip -o link show eth0; ip route; cat /etc/hosts",
                check=True).stdout
    assert info["IPAddress"] == net["gateway"][:-1] + "77"
    assert f"{info['IPAddress']}/24" in inside
    assert info["MacAddress"] in inside
    assert f"default via {net['gateway']} dev eth0" in inside
    assert (info["Network"], info["Bridge"]) == (net["name"], net["bridge"])
    assert info["HostVeth"] in veths(net["bridge"])
    assert Path(f"/sys/class/net/{info['HostVeth']}/master").resolve().name == net["bridge"]
    assert f"{info['IPAddress']}\t{cid[:12]}" in inside
    again = mc("run", "--rm", "--network", net["name"], "--ip", info["IPAddress"], IMAGE, "true")
    assert again.returncode == 125 and "already in use" in again.stderr


def test_published_port_from_the_host(mc, net: dict[str, str]) -> None:
    port = 20000 + secrets.randbelow(20000)
    cid = start_web(mc, net, "-p", f"{port}:80")
    for address in ("127.0.0.1", net["gateway"], host_address_besides(net["bridge"])):
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=10) as reply:
            assert reply.read() == b"hello from the container\n", address
    # another container through the host's published port (hairpin NAT on the bridge)
    hairpin = mc("run", "--rm", "--network", net["name"], IMAGE, "wget", "-q", "-O-",
                 f"http://{net['gateway']}:{port}/", check=True)
    assert hairpin.stdout == "hello from the container\n"
    info = json.loads(mc("container", "inspect", cid, check=True).stdout)[0]["NetworkSettings"]
    assert info["Ports"] == [f"0.0.0.0:{port}->80/tcp"]
    taken = mc("run", "--rm", "--network", net["name"], "-p", f"{port}:80", IMAGE, "true")
    assert taken.returncode == 125 and "already allocated" in taken.stderr
    mc("rm", "-f", cid, check=True)
    assert f"dport {port}" not in our_table()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)


def test_loopback_only_port_is_not_published_elsewhere(mc, net: dict[str, str]) -> None:
    port = 20000 + secrets.randbelow(20000)
    start_web(mc, net, "-p", f"127.0.0.1:{port}:80")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        assert reply.read() == b"hello from the container\n"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{net['gateway']}:{port}/", timeout=10)


def test_none_has_only_lo(mc, net: dict[str, str]) -> None:
    result = mc("run", "--rm", "--network", "none", IMAGE, "ip", "-o", "link", check=True,
                env={"PYTHONPROFILEIMPORTTIME": "1"})  # python -X importtime: every import on stderr
    out = result.stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    assert "encodings" in result.stderr and "pyroute2" not in result.stderr  # none never pays for it
    assert "UP" in out
    bad = mc("run", "--rm", "--network", "none", "-p", "8080:80", IMAGE, "true")
    assert bad.returncode == 125 and "bridge network" in bad.stderr
    missing = mc("run", "--rm", "--network", "nosuchnet", IMAGE, "true")
    assert missing.returncode == 125 and "network nosuchnet not found" in missing.stderr
    assert mc("ps", "-aq").stdout == ""  # no container is left by a failed start


def test_host_sees_the_hosts_interfaces(mc, net: dict[str, str]) -> None:
    out = mc("run", "--rm", "--network", "host", IMAGE, "ip", "-o", "link", check=True).stdout
    seen = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    assert net["bridge"] in seen and "lo" in seen
    assert seen >= {name for name in os.listdir("/sys/class/net") if not name.startswith("mc")} - {"lo"}


def test_container_network_is_shared(mc, net: dict[str, str]) -> None:
    first = mc("run", "-d", "--name", "first", "--network", net["name"], IMAGE, "sleep", "1000",
               check=True).stdout.strip()
    before = veths(net["bridge"])
    out = mc("run", "--rm", "--network", "container:first", IMAGE, "ip", "-o", "-4", "addr", "show", "eth0",
             check=True).stdout
    assert f"{container_ip(mc, first)}/24" in out
    assert veths(net["bridge"]) == before  # joined, not wired anew
    second = mc("run", "-d", "--network", "container:first", IMAGE, "sleep", "1000", check=True).stdout.strip()
    namespaces = [json.loads(mc("container", "inspect", c, check=True).stdout)[0]["Namespaces"] for c in (first, second)]
    assert namespaces[0]["net"] == namespaces[1]["net"] and namespaces[0]["mnt"] != namespaces[1]["mnt"]
    stopped = mc("run", "--rm", "--network", "container:nosuchthing", IMAGE, "true")
    assert stopped.returncode == 125


def test_twenty_concurrent_runs_get_twenty_addresses(mc, net: dict[str, str]) -> None:
    """Twenty `run -d` started at once, all alive together: twenty different addresses."""
    env = {**os.environ, "MINICONTAINER_ROOT": str(mc.root)}
    command = [sys.executable, "-m", "minicontainer", "run", "-d", "--network", net["name"], IMAGE,
               "sleep", "1000"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(20)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, [err for _, err in outputs]
    ids = [out.strip() for out, _ in outputs]
    seen = set()
    for cid in ids:  # what each container really has on its eth0
        out = mc("exec", cid, "ip", "-o", "-4", "addr", "show", "eth0", check=True).stdout
        seen.add(re.search(r"inet (\S+)/", out).group(1))
    assert len(seen) == 20
    assert len(veths(net["bridge"])) == 20
    mc("rm", "-f", *ids, check=True)
    assert json.loads(mc("network", "inspect", net["name"], check=True).stdout)[0]["containers"] == {}
    assert veths(net["bridge"]) == set()


def test_nothing_remains_after_kill_9_of_the_cli(mc, net: dict[str, str]) -> None:
    port = 20000 + secrets.randbelow(20000)
    env = {**os.environ, "MINICONTAINER_ROOT": str(mc.root)}
    cli = subprocess.Popen([sys.executable, "-m", "minicontainer", "run", "--name", "victim", "--network",
                            net["name"], "-p", f"{port}:80", IMAGE, "sleep", "1000"], env=env)
    while not re.search(r"Up .*victim", mc("ps").stdout):  # until the command runs
        assert cli.poll() is None
    cli.kill()  # SIGKILL: the CLI cleans nothing up
    cli.wait()
    mc("rm", "-f", "victim", check=True)
    assert veths(net["bridge"]) == set()
    assert f"dport {port}" not in our_table()
    assert json.loads(mc("network", "inspect", net["name"], check=True).stdout)[0]["containers"] == {}


def test_network_rm_refuses_while_used_then_removes_everything(mc, net: dict[str, str]) -> None:
    mc("run", "-d", "--name", "user", "--network", net["name"], IMAGE, "sleep", "1000", check=True)
    busy = mc("network", "rm", net["name"])
    assert busy.returncode == 125 and "active endpoints: user" in busy.stderr
    mc("rm", "-f", "user", check=True)
    mc("network", "rm", net["name"], check=True)
    assert net["bridge"] not in links() and net["bridge"] not in our_table()
    mc("network", "create", net["name"], "--subnet", net["subnet"], "--bridge", net["bridge"], check=True)


def test_default_network_is_bridge_mc0(mc, web_image: Path) -> None:
    if "mc0" in links():
        pytest.skip("mc0 exists already (a real store uses it)")
    forward = IP_FORWARD.read_text()
    mc("load", str(web_image), check=True)
    try:
        out = mc("run", "--rm", IMAGE, "ip", "-o", "-4", "addr", "show", "eth0",
                 env={"MINICONTAINER_NETWORK": ""}).stdout
        assert "inet 10.213.0.2/24" in out
        assert "mc0" in links()
    finally:
        mc("network", "rm", "bridge")
        IP_FORWARD.write_text(forward)
    assert "mc0" not in links() and "mc0" not in our_table()
