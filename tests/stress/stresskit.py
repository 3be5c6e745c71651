"""Helpers of the stress suite: counts for the short and long form, polling, store views."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imagefactory import Entry

FULL = os.environ.get("MINICONTAINER_STRESS") == "full"


def scale(short: int, full: int) -> int:
    """`short` in the everyday run, `full` under MINICONTAINER_STRESS=full."""
    return full if FULL else short


BIG_FILES = 3000
BIG_FILE_SIZE = 16 << 10


def big_layer_entries(seed: int = 1) -> list[Entry]:
    """~48 MB of incompressible files: unpacking takes long enough to be interrupted."""
    r = random.Random(seed)
    entries = [Entry(f"big/{i // 100:02d}", "dir", mode=0o755) for i in range(0, BIG_FILES, 100)]
    entries += [Entry(f"big/{i // 100:02d}/f{i:05d}", data=r.randbytes(BIG_FILE_SIZE))
                for i in range(BIG_FILES)]
    return entries


def tree_digest(top: Path) -> str:
    """sha256 over every relative name and file content under `top`."""
    h = hashlib.sha256()
    for path in sorted(top.rglob("*")):
        h.update(path.relative_to(top).as_posix().encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


def spawn(store: Path, *args: str) -> subprocess.Popen[str]:
    """The CLI in the background, so the test can kill it wherever it likes."""
    env = {**os.environ, "MINICONTAINER_ROOT": str(store), "MINICONTAINER_NETWORK": "none"}
    return subprocess.Popen([sys.executable, "-m", "minicontainer", *args], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(what: str, condition: Callable[[], object], timeout: float = 30) -> object:
    """Poll until `condition()` is true; fail naming `what` if it never becomes so."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.005)


def layer_dirs(store: Path) -> set[str]:
    return {p.name for p in (store / "layers").iterdir() if p.is_dir()}


def staging(store: Path) -> list[str]:
    """What is left in the store's tmp/ (work in progress, or abandoned by a killed command)."""
    return sorted(p.name for p in (store / "tmp").iterdir()) if (store / "tmp").exists() else []


def containers(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "containers").iterdir()) if (store / "containers").exists() else []


def cgroup_dirs(container_id: str) -> list[Path]:
    """Every cgroup directory of one container, in any hierarchy (v1, v2, hybrid)."""
    root = Path("/sys/fs/cgroup")
    return [p for pattern in (f"*/minicontainer/{container_id}", f"*/*/minicontainer/{container_id}")
            for p in root.glob(pattern) if p.is_dir()]


def assert_one_line_error(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("minicontainer: "), stderr
    assert "Traceback" not in stderr
