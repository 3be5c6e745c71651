"""Published ports: parsing `-p`, and the nft rules written for them."""

from __future__ import annotations

import pytest

from minicontainer import ports
from minicontainer.ports import PortError, PortMapping


@pytest.mark.parametrize("spec, expected", [
    ("8080:80", PortMapping(8080, 80, "tcp", "")),
    ("127.0.0.1:8080:80", PortMapping(8080, 80, "tcp", "127.0.0.1")),
    ("0.0.0.0:8080:80/tcp", PortMapping(8080, 80, "tcp", "")),
    ("5353:53/udp", PortMapping(5353, 53, "udp", "")),
    ("192.0.2.2:1:65535/UDP", PortMapping(1, 65535, "udp", "192.0.2.2")),
])
def test_parse_port(spec: str, expected: PortMapping) -> None:
    assert ports.parse_port(spec) == expected


@pytest.mark.parametrize("spec", ["80", "a:80", "8080:80/sctp", "0:80", "8080:65536",
                                  "300.1.1.1:8080:80", "[::1]:8080:80", "1:2:3:4", ""])
def test_bad_port_specs_are_refused(spec: str) -> None:
    with pytest.raises(PortError):
        ports.parse_port(spec)


def test_same_host_port_twice_is_refused() -> None:
    assert len(ports.parse_ports(["8080:80", "8080:80/udp"])) == 2
    with pytest.raises(PortError, match="twice"):
        ports.parse_ports(["8080:80", "8080:81"])


def test_docker_notation_round_trips() -> None:
    for mapping in (PortMapping(8080, 80), PortMapping(53, 53, "udp", "127.0.0.1")):
        assert PortMapping.from_comment(str(mapping)) == mapping
        assert PortMapping.from_json(mapping.to_json()) == mapping
    assert str(PortMapping(8080, 80)) == "0.0.0.0:8080->80/tcp"
    assert PortMapping.from_comment("something else") is None


def test_container_rules_dnat_from_elsewhere_and_from_this_host() -> None:
    text = ports.container_rules("abc", "10.213.0.2", [PortMapping(8080, 80)])
    pre, out = ports.container_chains("abc")
    assert f"add chain ip minicontainer {pre} {{ type nat hook prerouting priority -100;" in text
    assert f"add chain ip minicontainer {out} {{ type nat hook output priority -100;" in text
    rules = [line for line in text.splitlines() if line.startswith("add rule")]
    assert rules == [
        f"add rule ip minicontainer {pre} fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 8080 "
        'dnat to 10.213.0.2:80 comment "0.0.0.0:8080->80/tcp"',
        f"add rule ip minicontainer {out} fib daddr type local tcp dport 8080 "
        'dnat to 10.213.0.2:80 comment "0.0.0.0:8080->80/tcp"',
    ]


def test_loopback_ports_are_never_translated_in_prerouting() -> None:
    """A neighbour's crafted packet for 127.0.0.1 must not reach the container (moby #41872)."""
    text = ports.container_rules("abc", "10.213.0.2", [PortMapping(8080, 80, "udp", "127.0.0.1")])
    pre, out = ports.container_chains("abc")
    rules = [line for line in text.splitlines() if line.startswith("add rule")]
    assert len(rules) == 1 and rules[0].startswith(f"add rule ip minicontainer {out} ip daddr 127.0.0.1 udp dport 8080")


def test_network_rules_masquerade_and_guard_the_loopback() -> None:
    text = ports.network_rules("mc0", "10.213.0.0/24")
    assert 'iifname "mc0" ip daddr 127.0.0.0/8 drop' in text
    assert 'ip saddr 10.213.0.0/24 oifname != "mc0" masquerade' in text
    assert 'ip saddr 127.0.0.0/8 oifname "mc0" masquerade' in text
    # each chain is emptied before it is filled: applying the script twice gives the same rules
    for chain in ports.network_chains("mc0"):
        assert f"flush chain ip minicontainer {chain}\n" in text


def test_removing_the_last_chains_removes_the_table() -> None:
    assert ports.delete_chains(["a", "b"]) == ("delete chain ip minicontainer a\n"
                                               "delete chain ip minicontainer b\n")


def test_ports_in_use_by_another_container_are_found() -> None:
    rule = {"comment": "0.0.0.0:8080->80/tcp"}
    chains = {"cX-output": [rule], "mc0-postrouting": [{"expr": []}]}
    assert ports.published_elsewhere(chains, PortMapping(8080, 81))
    assert ports.published_elsewhere(chains, PortMapping(8080, 81, "tcp", "127.0.0.1"))
    assert not ports.published_elsewhere(chains, PortMapping(8080, 80, "udp"))
    assert not ports.published_elsewhere(chains, PortMapping(8081, 80))
