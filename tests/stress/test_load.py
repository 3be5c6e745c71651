"""Load: many runs at once, many runs in a row, rm/ps/run racing each other.

Thirty `run`s of an archive the store has never seen must unpack it once and
all succeed; hundreds of runs in a row must not make anything grow (mounts,
open files, cgroups, the store beyond the containers kept); `rm`, `ps` and
`run` at the same time must neither crash nor ever show a half-written
state.json (the store writes it atomically: write, fsync, rename).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stresskit import containers, layer_dirs, scale, spawn, staging, wait_for


def test_thirty_concurrent_runs_of_a_new_archive(mc, store_root: Path, busybox: Path, tmp_path: Path) -> None:
    """The demo archive (two layers): every run loads it, one unpacks it, all run."""
    from minicontainer.demo import build_demo_image

    archive = tmp_path / "fresh.tar"
    build_demo_image(archive, busybox)
    procs = [spawn(store_root, "run", "--rm", str(archive), "sh", "-c", f"cat /etc/motd >/dev/null && echo {i}")
             for i in range(30)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    failures = [(i, r) for i, r in enumerate(results) if r[0] != 0 or r[1] != f"{i}\n"]
    assert failures == []
    assert len(layer_dirs(store_root)) == 2               # unpacked once: one directory per layer
    assert len(os.listdir(store_root / "images")) == 1
    assert staging(store_root) == [] and containers(store_root) == []


def _mounts(store: Path) -> int:
    """Host mounts that name the store (mount point, root or options): the runtime's all live in
    the container's own mount namespace, so none should ever appear here."""
    return sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(store) in line)


def _cgroups_of(short_ids: set[str]) -> list[Path]:
    """Cgroup directories left of these containers (by the 12-digit id their hostname shows)."""
    return [d for d in Path("/sys/fs/cgroup").glob("*/minicontainer/*") if d.name[:12] in short_ids]


def _size(path: Path, skip: set[str]) -> int:
    """Bytes under `path`, leaving out the kept containers' directories."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in skip]
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def test_sequential_runs_grow_nothing(mc, store_root: Path, bb_archive: Path) -> None:
    """Every tenth container is kept (not --rm): the store may grow by exactly those."""
    mc("load", str(bb_archive), check=True)
    mc("run", "--rm", "stress", "true", check=True)  # warm: lock files, caches
    mounts, size = _mounts(store_root), _size(store_root, set())
    kept: set[str] = set()
    ran: set[str] = set()
    for i in range(scale(20, 200)):
        if i % 10 == 0:
            mc("run", "--name", f"kept{i}", "stress", "true", check=True)
            kept.add(json.loads(mc("container", "inspect", f"kept{i}", check=True).stdout)[0]["Id"])
        else:  # the hostname is the container's short id, as in Docker
            ran.add(mc("run", "--rm", "stress", "sh", "-c", "echo $$ > /tmp/pid; hostname",
                       check=True).stdout.strip())
        assert _mounts(store_root) == mounts
        assert _cgroups_of(ran | {k[:12] for k in kept}) == []
    assert len(ran) == scale(20, 200) - len(kept) and all(len(h) == 12 for h in ran)
    assert set(containers(store_root)) == kept
    assert _size(store_root, kept) <= size + 4096 * len(kept)   # a lock file per container at most
    assert staging(store_root) == []
    mc("container", "prune", check=True)
    assert containers(store_root) == []


def test_in_process_runs_leak_no_file_descriptors(store_root: Path, bb_archive: Path, capfd) -> None:
    """The library itself, driven from this process: its open descriptors must not grow."""
    from minicontainer.bundle import RunOptions
    from minicontainer.container import Container
    from minicontainer.image import load
    from minicontainer.store import Store

    store = Store.open(store_root)
    load(store, bb_archive)
    before = sorted(os.listdir("/proc/self/fd"))
    for i in range(scale(10, 100)):
        c = Container.create(store, "stress", RunOptions(command=["echo", str(i)], network="none"),
                             auto_remove=True)
        assert c.run_foreground() == 0
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert capfd.readouterr().out.split() == [str(i) for i in range(scale(10, 100))]
    assert containers(store_root) == []


def test_rm_ps_run_race(mc, store_root: Path, bb_archive: Path) -> None:
    mc("load", str(bb_archive), check=True)
    ids = [mc("run", "-d", "stress", "sleep", "1000", check=True).stdout.strip() for _ in range(scale(6, 20))]
    torn: list[str] = []
    stop = threading.Event()

    def read_states() -> None:
        """Parse every state.json over and over: a half-written one would not parse."""
        while not stop.is_set():
            for f in (store_root / "containers").glob("*/state.json"):
                try:
                    json.loads(f.read_bytes())
                except FileNotFoundError:
                    continue  # removed meanwhile: fine
                except ValueError:
                    torn.append(str(f))

    reader = threading.Thread(target=read_states)
    reader.start()
    jobs = [("rm", "-f", cid) for cid in ids] + [("ps", "-a")] * len(ids) + \
           [("run", "--rm", "stress", "true")] * len(ids) + [("container", "prune")] * 3
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda args: (args, mc(*args, timeout=120)), jobs))
    finally:
        stop.set()
        reader.join()
    assert torn == []
    crashes = [(a, r.returncode, r.stderr) for a, r in results if r.returncode != 0 or "Traceback" in r.stderr]
    assert crashes == []
    for f in (store_root / "containers").glob("*/state.json"):
        json.loads(f.read_bytes())
    leftover = mc("ps", "-aq", check=True).stdout.split()
    if leftover:
        mc("rm", "-f", *leftover, check=True)
    assert containers(store_root) == []


def test_ps_survives_a_container_removed_while_listing(mc, store_root: Path, bb_archive: Path,
                                                       monkeypatch, capsys) -> None:
    """The race made certain: the listing is taken, then one container goes, then ps prints."""
    from minicontainer import cli
    from minicontainer.container import Container
    from minicontainer.store import remove_tree

    mc("load", str(bb_archive), check=True)
    for _ in range(2):
        mc("run", "stress", "true", check=True)
    listed = Container.all.__func__

    def all_then_one_goes(cls, store):
        found = listed(cls, store)
        remove_tree(found[0].dir)  # what a concurrent `rm` does right now
        return found

    monkeypatch.setattr(Container, "all", classmethod(all_then_one_goes))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ps", "-a"])
    assert exit_.value.code == 0, capsys.readouterr().err


def test_prune_spares_a_container_being_started(mc, store_root: Path, bb_archive: Path) -> None:
    import signal

    mc("load", str(bb_archive), check=True)
    proc = spawn(store_root, "run", "--rm", "stress", "echo", "started")
    try:
        wait_for("the container's directory", lambda: containers(store_root))
        proc.send_signal(signal.SIGSTOP)  # hold `run` between create and start
        cid = containers(store_root)[0]
        if json.loads((store_root / "containers" / cid / "state.json").read_text())["status"] != "created":
            pytest.skip("run got past its start before it could be held")
        mc("container", "prune", check=True)
    finally:
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out) == (0, "started\n"), err
