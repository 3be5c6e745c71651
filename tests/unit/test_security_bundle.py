"""What the run flags of limits and confinement write into config.json (no root needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from minicontainer import bundle, cgroups, security
from minicontainer.errors import MiniContainerError

IMAGE_CONFIG = {"config": {"Cmd": ["sh"]}}


def config_for(tmp_path: Path, **flags: Any) -> dict[str, Any]:
    opts = bundle.RunOptions(network="none", **flags)
    plan = bundle.RootfsPlan("overlay", tmp_path / "layers", [], tmp_path / "upper", tmp_path / "work")
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    return bundle.build_config("c0ffee", "sha256:1234", IMAGE_CONFIG, opts, plan, etc)


def dev_options(config: dict[str, Any]) -> list[str]:
    return next(m["options"] for m in config["mounts"] if m["destination"] == "/dev")


def test_default_container(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    caps = config["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == security.DEFAULT_CAPABILITIES
    assert caps["inheritable"] == caps["ambient"] == []
    assert config["process"]["noNewPrivileges"] is False
    linux = config["linux"]
    assert linux["cgroupsPath"] == f"{cgroups.PARENT}/c0ffee"
    assert linux["resources"] == {"devices": cgroups.default_devices()}
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "nodev" in dev_options(config)


def test_privileged_container(tmp_path: Path) -> None:
    config = config_for(tmp_path, privileged=True)
    assert config["process"]["capabilities"]["effective"] == security.all_capabilities()
    linux = config["linux"]
    assert "seccomp" not in linux
    assert linux["maskedPaths"] == linux["readonlyPaths"] == []
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "nodev" not in dev_options(config)


def test_non_root_user_and_security_opts(tmp_path: Path) -> None:
    config = config_for(tmp_path, user="1000", cap_add=["NET_ADMIN"],
                        security_opt=["no-new-privileges", "seccomp=unconfined"])
    caps = config["process"]["capabilities"]
    assert "CAP_NET_ADMIN" in caps["bounding"]
    assert caps["effective"] == caps["permitted"] == []
    assert config["process"]["noNewPrivileges"] is True
    assert "seccomp" not in config["linux"]


def test_limits_reach_the_resources(tmp_path: Path) -> None:
    config = config_for(tmp_path, memory="64m", memory_swap="128m", cpus="0.5", cpu_shares=512, pids_limit=20)
    resources = config["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert resources["cpu"] == {"quota": 50000, "period": 100000, "shares": 512}
    assert resources["pids"] == {"limit": 20}


@pytest.mark.parametrize("flags,named", [({"memory": "12q"}, "--memory"), ({"cpus": "-2"}, "--cpus"),
                                         ({"cap_add": ["FLY"]}, "--cap-add"),
                                         ({"security_opt": ["apparmor=strict"]}, "--security-opt")])
def test_bad_flags_name_themselves(tmp_path: Path, flags: dict[str, Any], named: str) -> None:
    with pytest.raises(MiniContainerError, match=named):
        config_for(tmp_path, **flags)
