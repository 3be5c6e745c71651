"""Fixtures of the stress and fault suite.

Every test here is marked `root` (it runs the real CLI: namespaces, mounts,
cgroups) and `stress`. By default the counts are small, so `make test` runs the
whole suite quickly; MINICONTAINER_STRESS=full (set by `make stress`) raises
them to the issue's figures (200 sequential runs, many random kill points).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from hostile import base_layer, canary_state, make_canary
from imagefactory import docker_save, layer_tar
from stresskit import big_layer_entries, tree_digest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stress: the stress and fault suite (tests/stress); "
                                       "MINICONTAINER_STRESS=full for the long form")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.stress)


@pytest.fixture(scope="session")
def rng() -> random.Random:
    """Random kill points, reproducible: the seed is printed (MINICONTAINER_STRESS_SEED to replay)."""
    seed = int(os.environ.get("MINICONTAINER_STRESS_SEED") or time.time_ns() % 100000)
    print(f"stress seed: MINICONTAINER_STRESS_SEED={seed}")
    return random.Random(seed)


@pytest.fixture(scope="session")
def base(busybox: Path) -> bytes:
    """The busybox layer every stress image starts from."""
    return base_layer(busybox)


@pytest.fixture(scope="session")
def bb_archive(tmp_path_factory: pytest.TempPathFactory, base: bytes) -> Path:
    """A one-layer busybox image (docker-save), tagged stress:latest."""
    return docker_save(tmp_path_factory.mktemp("bb") / "bb.tar", [base],
                       {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}, ["stress:latest"])


@pytest.fixture(scope="session")
def big_archive(tmp_path_factory: pytest.TempPathFactory, base: bytes) -> Path:
    """busybox + one big layer; its unpacked content is known (tree_digest of big/)."""
    out = tmp_path_factory.mktemp("big") / "big.tar"
    return docker_save(out, [base, layer_tar(big_layer_entries())],
                       {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}, ["big:latest"])


@pytest.fixture(scope="session")
def big_digest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What big/ must hash to once unpacked: the files as written, no more, no less."""
    top = tmp_path_factory.mktemp("big-reference")
    for e in big_layer_entries():
        path = top / e.name
        if e.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.write_bytes(e.data)
    return tree_digest(top / "big")


@pytest.fixture
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory that must come out of the test byte for byte as it went in."""
    directory = make_canary(tmp_path_factory.mktemp("canary"))
    before = canary_state(directory)
    yield directory
    assert canary_state(directory) == before, "a host canary file was touched"
