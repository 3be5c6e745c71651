"""`doctor` tries each feature for real and says ok / missing / note, with what to do."""

from __future__ import annotations

from pathlib import Path

from conftest import MC
from minicontainer import cgroups, doctor
from minicontainer.store import Store


def lines_by_name(output: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "missing", "note"):
            name, _, detail = rest.strip().partition("  ")
            found[name.strip()] = (status, detail.strip())
    return found


def test_doctor_on_this_host(mc: MC, store_root: Path) -> None:
    result = mc("doctor")
    checks = lines_by_name(result.stdout)
    assert result.returncode == 0, result.stdout
    for kind in ("pid", "network", "mount", "ipc", "uts", "cgroup"):
        assert checks[f"{kind} namespace"][0] == "ok"
    assert checks["root"][0] == "ok"
    assert checks["overlayfs"][0] == "ok"
    assert checks["pivot_root"][0] == "ok"
    # the mode it names is the one cgroups.py detects (the runtime's own view)
    assert checks["cgroups"][1].startswith(cgroups.detect().mode.value + ":")
    assert checks["memory controller"][0] == "ok" and checks["pids controller"][0] == "ok"
    assert "NAT (nftables)" in checks and "busybox" in checks
    # every trial ran in a throwaway child: nothing of it is left in the store
    assert list((store_root / "tmp").iterdir()) == []


def test_doctor_without_root_says_what_to_do(store_root: Path, monkeypatch) -> None:
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 1000)
    checks = doctor.run_checks(Store.open(store_root))
    assert [(c.name, c.status) for c in checks] == [("root", "missing")]
    text = doctor.report(checks)
    assert text.splitlines()[0].split() == ["missing", "root", "running", "as", "uid", "1000"]
    assert "→ run minicontainer as root" in text.splitlines()[1]
