"""Hostile archives (hostile.py's corpus) through `load` and through `run`.

A case either loads (its tricks stay inside the image) or is refused with exit
125 and one line; either way the host canary directory it aims at must come
out untouched (the `canary` fixture compares it byte for byte), and so must
the store: no half-unpacked layer, no staging left behind.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hostile import corpus, write_archive
from stresskit import assert_one_line_error, containers, layer_dirs, staging

# The case names, for parametrize (the canary path is only known inside the test).
CASES = [case.name for case in corpus(Path("/canary"))]
MODES = [(name, rootfs) for name in CASES for rootfs in ("overlay", "copy")]

# Write through every probe, append, replace it with a symlink to /, delete it:
# all from inside the container, all must stay inside it.
PROBE = ('for p in "$@"; do echo pwned > "$p"; echo more >> "$p"; '
         'rm -rf "$p"; ln -s / "$p"; echo pwned > "$p/x"; done 2>/dev/null; echo probed')


def _case(name: str, canary: Path):
    return next(c for c in corpus(canary) if c.name == name)


@pytest.fixture
def deep_trees_removed(store_root: Path):
    """pytest's own clean-up (shutil.rmtree) recurses: remove the store's deep trees with rm(1)."""
    yield
    subprocess.run(["rm", "-rf", "--one-file-system", str(store_root / "layers"), str(store_root / "containers"),
                    str(store_root / "tmp")], check=True)


@pytest.mark.parametrize("name, rootfs", MODES)
def test_hostile_archive_load_and_run(mc, store_root: Path, canary: Path, base: bytes, tmp_path: Path,
                                      deep_trees_removed: None, name: str, rootfs: str) -> None:
    case = _case(name, canary)
    archive = write_archive(case, base, tmp_path / f"{name}.tar")

    loaded = mc("load", str(archive))
    if case.expect == "refused" or (case.expect == "either" and loaded.returncode != 0):
        assert loaded.returncode == 125, loaded.stdout + loaded.stderr
        assert_one_line_error(loaded.stderr)
    else:
        assert loaded.returncode == 0, loaded.stderr
    assert staging(store_root) == []
    assert all((store_root / "layers" / f"{n}.json").exists() for n in layer_dirs(store_root))

    # both ways of assembling the root: overlayfs, and copying the layers (the fallback)
    ran = mc("run", "--rm", str(archive), "sh", "-c", PROBE, "sh", *case.probes,
             env={"MINICONTAINER_ROOTFS": rootfs})
    if loaded.returncode != 0:
        assert ran.returncode == 125   # the same refusal, through `run`
        assert_one_line_error(ran.stderr)
    else:
        # the runtime may refuse a root whose /proc or /dev is a symlink (125, one line) - or
        # run it with the symlink resolved inside the root; it may never follow it out
        assert ran.returncode in (0, 125), ran.stderr
        if ran.returncode == 0:
            assert ran.stdout.endswith("probed\n")
        else:
            assert_one_line_error(ran.stderr)
    assert containers(store_root) == []
