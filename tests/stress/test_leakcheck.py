"""The shared leak check (tests/conftest.py no_leaks) must see a real leak, and only that."""

from __future__ import annotations

from pathlib import Path

from stresskit import wait_for
from tests.conftest import _leaks, _snapshot


def test_leak_check_sees_a_running_container_and_then_nothing(mc, store_root: Path, bb_archive: Path,
                                                              tmp_path_factory) -> None:
    basetemp = str(tmp_path_factory.getbasetemp()) + "/"
    mc("load", str(bb_archive), check=True)
    before = _snapshot(basetemp, store_root, everything=True)
    cid = mc("run", "-d", "stress", "sleep", "1000", check=True).stdout.strip()
    try:
        leaks = _leaks(before, basetemp, store_root)
        assert any(cid in c for c in leaks.get("cgroups", ())), leaks
        assert any("sleep 1000" in p for p in leaks.get("processes", ())), leaks   # the container
        assert len(leaks["processes"]) >= 2, leaks                                  # and its monitor
    finally:
        mc("rm", "-f", cid, check=True)
    wait_for("the leak check to see nothing left", lambda: _leaks(before, basetemp, store_root) == {})


def test_leak_check_sees_a_network_of_its_store(mc, store_root: Path, bb_archive: Path, tmp_path_factory) -> None:
    import secrets

    from tests.integration.test_network_attach import free_test_subnet

    basetemp = str(tmp_path_factory.getbasetemp()) + "/"
    mc("load", str(bb_archive), check=True)
    before = _snapshot(basetemp, store_root, everything=True)
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    bridge = f"mcs{secrets.token_hex(4)}"
    mc("network", "create", "leaky", "--subnet", str(free_test_subnet()), "--bridge", bridge, check=True)
    cid = mc("run", "-d", "--network", "leaky", "-p", f"127.0.0.1:{20000 + secrets.randbelow(20000)}:80",
             "stress", "sleep", "1000", check=True).stdout.strip()
    try:
        leaks = _leaks(before, basetemp, store_root)
        assert bridge in leaks["links"] and any(n.startswith("mcv") for n in leaks["links"]), leaks
        assert any(bridge in line for line in leaks["nft"]), leaks
        assert leaks["ipam"], leaks
    finally:
        mc("rm", "-f", cid, check=True)
        mc("network", "rm", "leaky", check=True)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)  # attach turned it on
    wait_for("the leak check to see nothing left", lambda: _leaks(before, basetemp, store_root) == {})
