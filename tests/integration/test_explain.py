"""--explain, through the real CLI: every narrated value is the live one.

The container id, the layer digests, the host pid of PID 1, the overlay's
lowerdirs and the pivot_root path are checked against what the store and
`inspect` say, never against fixed text.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from minicontainer.image import chain_ids
from minicontainer.store import digest_hex

STEP = re.compile(r"^\[(\d+)\] (.*)$", re.M)


def steps(stderr: str) -> list[str]:
    """The narrated calls, checking that they are numbered 1, 2, 3… whichever process said them."""
    found = STEP.findall(stderr)
    assert found, f"no narration in: {stderr!r}"
    assert [int(n) for n, _ in found] == list(range(1, len(found) + 1)), stderr
    return [text for _, text in found]


def archive_facts(path: Path) -> dict[str, object]:
    """From the docker-save archive itself: image id, layer blobs and diff_ids."""
    with tarfile.open(path) as tar:
        entry = json.load(tar.extractfile("manifest.json"))[0]
        config = tar.extractfile(entry["Config"]).read()
        blobs = ["sha256:" + hashlib.sha256(tar.extractfile(name).read()).hexdigest()
                 for name in entry["Layers"]]
    return {"id": "sha256:" + hashlib.sha256(config).hexdigest(), "blobs": blobs,
            "diff_ids": json.loads(config)["rootfs"]["diff_ids"]}


def inspect(mc, ref: str) -> dict:
    return json.loads(mc("container", "inspect", ref, check=True).stdout)[0]


@pytest.fixture
def detached(mc, demo_tar: Path) -> Iterator[tuple[str, str]]:
    """A detached `sleep` started with --explain: (container id, its narration); removed afterwards."""
    result = mc("run", "-d", "--explain", "--network", "none", str(demo_tar), "sleep", "600", check=True)
    cid = result.stdout.strip()
    yield cid, result.stderr
    mc("rm", "-f", cid)


def test_load_narrates_format_each_verified_layer_and_the_image_id(mc, demo_tar: Path, store_root: Path):
    facts = archive_facts(demo_tar)
    text = "\n".join(steps(mc("load", "--explain", str(demo_tar), check=True).stderr))
    assert f"open {demo_tar}: a docker-save archive (manifest.json), 1 image(s), " \
           f"{len(facts['diff_ids'])} layer(s)" in text
    for blob, diff_id, chain in zip(facts["blobs"], facts["diff_ids"], chain_ids(facts["diff_ids"])):
        assert f"blob {blob}" in text and f"diff_id {diff_id} = the config's" in text
        assert f"rename → {store_root / 'layers' / digest_hex(chain)}" in text
        assert (store_root / "layers" / digest_hex(chain)).is_dir()
    assert f"image id {facts['id']}" in text
    again = "\n".join(steps(mc("load", "--explain", str(demo_tar), check=True).stderr))
    assert "same inode, size and mtime" in again and facts["id"] in again and "unpack" not in again


def test_run_narrates_the_live_container_overlay_and_pivot_root(mc, demo_tar: Path, store_root: Path):
    facts = archive_facts(demo_tar)
    result = mc("run", "--explain", "--network", "none", "--name", "told", str(demo_tar),
                "echo", "hello", check=True)
    assert result.stdout == "hello\n"  # the narration never reaches the command's output
    told = steps(result.stderr)
    text = "\n".join(told)
    info = inspect(mc, "told")
    cid, rootfs = info["Id"], store_root / "containers" / info["Id"] / "rootfs"
    assert f'"{store_root / "containers" / cid}")' in text  # the bundle renamed into place
    lowerdir = re.search(r'"lowerdir=([^,]+),upperdir=([^,]+),', text)
    assert lowerdir, text
    names = lowerdir.group(1).split(":")
    assert names == [digest_hex(c) for c in reversed(chain_ids(facts["diff_ids"]))]
    assert all((store_root / "layers" / n).is_dir() for n in names)
    assert lowerdir.group(2) == str(store_root / "containers" / cid / "upper")
    assert f'chdir("{store_root / "layers"}"); mount("overlay", "{rootfs}", "overlay", MS_NODEV' in text
    assert f'chdir("{rootfs}"); pivot_root(".", "."); umount2(".", MNT_DETACH)' in text
    assert f'sethostname("{cid[:12]}")' in text
    assert any(s.startswith("unshare(") and "CLONE_NEWNS" in s and "CLONE_NEWNET" in s for s in told)
    assert any(s.startswith('execve("/bin/echo", ["echo", "hello"], [') and "as uid 0 gid 0" in s
               for s in told)
    cgroup_dirs = next(s for s in told if s.startswith("mkdir(2) /sys/fs/cgroup"))
    assert f"minicontainer/{cid}" in cgroup_dirs
    # the steps come in runc's order
    order = [next(i for i, s in enumerate(told) if s.startswith(prefix))
             for prefix in ("unshare(CLONE_NEWPID)", "fork() = ", "unshare(CLONE_NEWNS", "mkdir(2) ",
                            'chdir("' + str(store_root / "layers"), 'chdir("' + str(rootfs), "execve(")]
    assert order == sorted(order)
    mc("rm", "told", check=True)


def test_without_explain_a_successful_run_prints_nothing_on_stderr(mc, demo_tar: Path):
    result = mc("run", "--rm", "--network", "none", str(demo_tar), "echo", "quiet", check=True)
    assert result.stdout == "quiet\n"
    assert result.stderr == ""


def test_detached_run_names_pid_1_as_the_host_sees_it(mc, detached: tuple[str, str]):
    cid, narration = detached
    pid = inspect(mc, cid)["State"]["Pid"]
    assert pid > 1
    told = steps(narration)
    assert f"fork() = {pid} on the host, 1 inside" in told
    assert f"write {pid} to cgroup.procs" in told
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00600\x00"


def test_exec_narrates_setns_cgroup_join_and_execve(mc, detached: tuple[str, str]):
    cid, _ = detached
    pid = inspect(mc, cid)["State"]["Pid"]
    result = mc("exec", "--explain", cid, "hostname", check=True)
    assert result.stdout == f"{cid[:12]}\n"
    told = steps(result.stderr)
    text = "\n".join(told)
    for flag in ("CLONE_NEWIPC", "CLONE_NEWUTS", "CLONE_NEWNET", "CLONE_NEWNS"):
        assert re.search(rf"setns\(.*/proc/{pid}/ns/.*{flag}\)", text), (flag, text)
    assert "setns(CLONE_NEWPID)" in told
    joined = [s for s in told if s.startswith("write /sys/fs/cgroup/") and "/cgroup.procs ← " in s]
    assert joined and all(f"/minicontainer/{cid}/cgroup.procs ← " in s for s in joined)
    assert f'fchdir(open("/proc/{pid}/root")); chroot(".")' in told
    assert any(s.startswith('execve("/bin/hostname", ["hostname"]') for s in told)


def test_rm_narrates_kill_cgroup_removal_and_directories(mc, detached: tuple[str, str], store_root: Path):
    cid, _ = detached
    pid = inspect(mc, cid)["State"]["Pid"]
    told = steps(mc("rm", "-f", "--explain", cid, check=True).stderr)
    assert f"kill({pid}, SIGKILL)" in told
    rmdir = next(s for s in told if s.startswith("rmdir(2) "))
    assert f"minicontainer/{cid}" in rmdir
    removed = next(s for s in told if s.startswith("rm -r "))
    assert removed.startswith(f"rm -r {store_root / 'containers' / cid}  (")
    assert "upper" in removed and "config.json" in removed
    assert not (store_root / "containers" / cid).exists()


def test_commit_narrates_the_new_layer_its_diff_id_and_the_image_id(mc, demo_tar: Path, store_root: Path):
    mc("run", "--network", "none", "--name", "writer", str(demo_tar), "sh", "-c", "echo x > /made",
       check=True)
    result = mc("commit", "--explain", "writer", "explained:1", check=True)
    image_id = result.stdout.strip()
    text = "\n".join(steps(result.stderr))
    layers = json.loads(mc("inspect", image_id, check=True).stdout)[0]["RootFS"]["Layers"]
    assert f"diff_id {layers[-1]}" in text
    assert f"image id {image_id}" in text
    assert layers[:-1] == archive_facts(demo_tar)["diff_ids"]
    mc("rm", "writer", check=True)


@pytest.fixture
def network(mc) -> Iterator[str]:
    """A bridge network of this test's own, removed afterwards (with the host's ip_forward put back)."""
    from tests.integration.test_network_attach import free_test_subnet

    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    subnet = str(free_test_subnet())
    mc("network", "create", "explained", "--subnet", subnet, "--bridge", f"mct{secrets.token_hex(4)}",
       check=True)
    yield subnet
    mc("network", "rm", "explained")
    Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)


def test_network_narration_names_the_live_veth_and_address(mc, demo_tar: Path, network: str):
    import ipaddress

    from minicontainer.network import host_veth_name

    text = "\n".join(steps(mc("run", "--rm", "--explain", "--network", "explained", str(demo_tar), "true",
                              check=True).stderr))
    cid = re.search(r"/containers/([0-9a-f]{64})\"\)", text).group(1)
    veth = host_veth_name(cid)
    plugged = re.search(rf"ip link add {veth} type veth peer name eth0 .* ip addr add ([\d.]+)/24 dev eth0",
                        text)
    assert plugged, text
    assert ipaddress.ip_address(plugged.group(1)) in ipaddress.ip_network(network)
    assert f"ip link del {veth}; release {plugged.group(1)} on explained" in text
