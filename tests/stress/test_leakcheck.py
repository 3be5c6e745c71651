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
