"""Shared test fixtures.

Unit tests (tests/unit) need neither root nor busybox. Integration tests
(tests/integration, marker `root`) need root, namespaces and a static busybox;
they skip without them on a developer's machine, but with
MINICONTAINER_REQUIRE_ROOT=1 (set by .ci/run) they fail instead, so CI can never
pass by skipping them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
REQUIRE_ROOT = os.environ.get("MINICONTAINER_REQUIRE_ROOT") == "1"


def _root_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/proc/self/ns/pid").exists():
        return "no namespace support"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None:
        return
    problem = _root_problem()
    if problem:
        if REQUIRE_ROOT:
            pytest.fail(f"root integration test cannot run here: {problem}")
        pytest.skip(problem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration is a root test."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.root)


@pytest.fixture
def store_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store for one test (MINICONTAINER_ROOT points at it)."""
    root = tmp_path_factory.mktemp("minicontainer-store")
    monkeypatch.setenv("MINICONTAINER_ROOT", str(root))
    # `run` defaults to the `bridge` network, whose host bridge mc0 stays until
    # `network rm`; tests get `none` unless they pass --network themselves.
    monkeypatch.setenv("MINICONTAINER_NETWORK", "none")
    return root


@pytest.fixture(scope="session")
def busybox() -> Path:
    """A statically linked busybox (the demo image's, found or fetched once)."""
    from minicontainer.demo import find_busybox

    try:
        return find_busybox(PROJECT / "build")
    except Exception as e:  # noqa: BLE001 - reported as skip or failure below
        if REQUIRE_ROOT:
            pytest.fail(f"no static busybox: {e}")
        pytest.skip(f"no static busybox: {e}")


@pytest.fixture(scope="session")
def demo_tar(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Path:
    """build/demo.tar (made by `make image`), or a fresh one built for this session."""
    built = PROJECT / "build" / "demo.tar"
    if built.exists():
        return built
    from minicontainer.demo import build_demo_image

    out = tmp_path_factory.mktemp("demo") / "demo.tar"
    build_demo_image(out, busybox)
    return out


class MC:
    """Runs the real `minicontainer` command against one store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60,
                 check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # --network none unless a test asks for one (see store_root)
        full_env = {**os.environ, "MINICONTAINER_ROOT": str(self.root), "MINICONTAINER_NETWORK": "none",
                    **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "minicontainer", *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=full_env,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"minicontainer {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result


@pytest.fixture
def mc(store_root: Path) -> MC:
    """`mc("run", image, "true")` runs the CLI in a subprocess against a temporary store."""
    return MC(store_root)


# ---------------------------------------------------------------- leak check

def _is_ours(pid: str, basetemp: str) -> bool:
    """Whether a process belongs to this test session's minicontainer: a CLI or monitor on a
    test store (MINICONTAINER_ROOT under the session's temp dir), or a container process whose
    own mount table names a test store (its overlay's upperdir, or its copied root) - even one
    that escaped its cgroup. Other work on the machine is not this test's business."""
    proc = Path("/proc") / pid
    if f"MINICONTAINER_ROOT={basetemp}".encode() in (proc / "environ").read_bytes():
        return True
    if os.stat(proc / "ns" / "mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
        return False
    return basetemp in (proc / "mountinfo").read_text()


def _our_processes(basetemp: str, everything: bool = False) -> set[str]:
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or p.name == str(os.getpid()):
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            if not cmd or not (everything or _is_ours(p.name, basetemp)):  # kernel threads have no cmdline
                continue
        except OSError:
            continue  # exited meanwhile
        text = cmd.replace(b"\0", b" ").decode(errors="replace")[:120]
        found.add(f"{p.name} {text}")
    return found


def _ours_or_empty(cgroup: Path, basetemp: str) -> bool:
    """An empty cgroup is anyone's leak; a busy one is ours only if one of its processes is."""
    try:
        pids = (cgroup / "cgroup.procs").read_text().split()
        return not pids or any(_is_ours(pid, basetemp) for pid in pids)
    except OSError:
        return False  # removed meanwhile


def _store_networks(store: Path | None) -> set[str]:
    """The bridges and subnets (as "10.250.3." address prefixes) of the test store's networks."""
    import json

    words = set()
    for f in (store / "networks").glob("*.json") if store else ():
        try:
            net = json.loads(f.read_text())
            words |= {net["bridge"], net["subnet"], net["subnet"].rsplit(".", 1)[0] + "."}
        except (OSError, ValueError, KeyError, AttributeError):
            continue  # an .ipam.json, or a record being written
    return words


def _nft_rules(ours: set[str] | None) -> set[str]:
    """The lines of minicontainer's own nftables table (chains and rules), if nft is there.

    With `ours` (bridges and subnets of the test's store), only the chains and rules that
    name one of them: networks of other stores on this machine are not this test's leak.
    """
    import shutil

    if shutil.which("nft") is None:
        return set()
    out = subprocess.run(["nft", "list", "table", "ip", "minicontainer"],
                         capture_output=True, text=True).stdout
    lines = [line.strip() for line in out.splitlines() if line.strip() not in ("", "}")]
    if ours is None:
        return set(lines)
    chains: dict[str, list[str]] = {}
    chain = ""
    for line in lines:
        if line.startswith("chain "):
            chain = line.split()[1]
        chains.setdefault(chain, []).append(line)
    mine = {name for name, body in chains.items() if any(w in line for line in body for w in ours)}
    words = ours | {f" {name}" for name in mine if name}  # a rule that jumps to one of our chains
    return {line for name, body in chains.items() for line in body
            if name in mine and line.startswith("chain ") or any(w in line for w in words)}


def _our_links(ours: set[str] | None) -> set[str]:
    """Links; with `ours`, only the store's bridges and the veths plugged into them (or into
    nothing: a veth left behind by a removed network)."""
    net = Path("/sys/class/net")
    # podman's links (veth*, podman*, cni-*) come and go with the reference runs, not with ours
    names = {p.name for p in net.iterdir() if not p.name.startswith(("veth", "podman", "cni-"))} \
        if net.exists() else set()
    if ours is None:
        return names
    found = set()
    for name in names:
        master = net / name / "master"
        if name in ours or (name.startswith("mcv") and (not master.exists() or master.resolve().name in ours)):
            found.add(name)
    return found


def _ipam_entries(store: Path | None) -> set[str]:
    """Addresses the test's store still hands out to some container."""
    import json

    found = set()
    for f in (store / "networks").glob("*.ipam.json") if store else ():
        try:
            found |= {f"{f.name}: {ip}" for ip in json.loads(f.read_text()).get("allocations", {})}
        except (OSError, ValueError):
            continue
    return found


def _snapshot(basetemp: str, store: Path | None, everything: bool = False) -> dict[str, set[str]]:
    """What a container could leave behind on the host: mounts, cgroups, links, nft rules,
    IPAM entries, processes (with `everything`, also those of others: the "before" picture)."""
    # a mount of ours lies in a test store or names minicontainer; podman's and the rest are not ours
    mounts = {m for m in (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
              if m.startswith(basetemp) or "minicontainer" in m}
    cgroups = {str(p) for p in Path("/sys/fs/cgroup").glob("*/minicontainer*")}
    cgroups |= {str(p) for p in Path("/sys/fs/cgroup").glob("*/*/minicontainer*")}
    # one container's cgroup, even when the shared parent stays (another container uses it)
    cgroups |= {str(p) for p in Path("/sys/fs/cgroup").glob("*/minicontainer/*") if p.is_dir()}
    # a container of someone else on this machine (another store) is not this test's leak
    cgroups = {c for c in cgroups if everything or Path(c).name == "minicontainer"
               or _ours_or_empty(Path(c), basetemp)}
    ours = None if everything else _store_networks(store)
    return {"mounts": mounts, "cgroups": cgroups, "links": _our_links(ours), "nft": _nft_rules(ours),
            "ipam": _ipam_entries(store), "processes": _our_processes(basetemp, everything)}


def _leaks(before: dict[str, set[str]], basetemp: str, store: Path | None) -> dict[str, set[str]]:
    after = _snapshot(basetemp, store)
    return {k: after[k] - before[k] for k in after if after[k] - before[k]}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail a root test that leaves a mount, cgroup, link, nft rule, IPAM entry or process behind."""
    if request.node.get_closest_marker("root") is None or os.geteuid() != 0:
        yield
        return
    # with the slash: pytest-1/ must not match pytest-12/ of another session
    basetemp = str(request.getfixturevalue("tmp_path_factory").getbasetemp()) + "/"
    store = request.getfixturevalue("store_root") if "store_root" in request.fixturenames else None
    # what existed before is never this test's leak, whoever it belonged to
    before = _snapshot(basetemp, store, everything=True)
    yield
    import time

    deadline = time.monotonic() + 5
    leaks = _leaks(before, basetemp, store)
    while leaks and time.monotonic() < deadline:  # give exiting processes a moment
        time.sleep(0.1)
        leaks = _leaks(before, basetemp, store)
    if leaks:
        pytest.fail(f"test left behind: {leaks}")
