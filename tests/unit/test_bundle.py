"""bundle.py: how an image config and `run` options become an OCI config.json (no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minicontainer import bundle as b
from minicontainer.errors import ContainerError

IMAGE = {"config": {"Entrypoint": ["/entry"], "Cmd": ["default", "args"],
                    "Env": ["PATH=/image/bin", "FROM_IMAGE=1", "SHARED=image"],
                    "WorkingDir": "/work", "User": "student"}}


def plan(tmp_path: Path, layers: list[str] | None = None) -> b.RootfsPlan:
    return b.RootfsPlan("overlay", tmp_path / "layers", layers or ["low", "mid", "top"],
                        tmp_path / "c/upper", tmp_path / "c/work")


def config(tmp_path: Path, image: dict | None = None, **opts) -> dict:
    (tmp_path / "etc").mkdir(exist_ok=True)
    return b.build_config("ab" * 32, "sha256:" + "cd" * 32, IMAGE if image is None else image,
                          b.RunOptions(**opts), plan(tmp_path), tmp_path / "etc")


# ---------------------------------------------------------------- command

@pytest.mark.parametrize("entrypoint, command, expected", [
    (None, [], ["/entry", "default", "args"]),          # Entrypoint + Cmd
    (None, ["mine"], ["/entry", "mine"]),               # run's args replace Cmd only
    ("other", [], ["other"]),                           # --entrypoint drops the image's Cmd
    ("other", ["x"], ["other", "x"]),
    ("", ["sh"], ["sh"]),                               # --entrypoint "" removes it
])
def test_command_line_combines_as_docker(entrypoint, command, expected) -> None:
    opts = b.RunOptions(command=command, entrypoint=entrypoint)
    assert b.command_line(IMAGE["config"], opts) == expected


def test_no_command_at_all_is_an_error() -> None:
    with pytest.raises(ContainerError, match="no command specified"):
        b.command_line({}, b.RunOptions())


# ---------------------------------------------------------------- environment

def test_environment_precedence_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nSHARED=file\nFROM_FILE=yes\n")
    monkeypatch.setenv("FROM_HOST", "host-value")
    monkeypatch.delenv("NOT_ON_HOST", raising=False)
    opts = b.RunOptions(env=["SHARED=flag", "FROM_HOST", "NOT_ON_HOST"], env_files=[str(env_file)])
    env = dict(e.split("=", 1) for e in b.environment(IMAGE["config"], opts, "host1"))
    assert env["PATH"] == "/image/bin"
    assert env["HOSTNAME"] == "host1"
    assert env["SHARED"] == "flag"            # -e beats --env-file beats the image
    assert env["FROM_FILE"] == "yes" and env["FROM_IMAGE"] == "1"
    assert env["FROM_HOST"] == "host-value"   # `-e NAME` copies the host's value
    assert "NOT_ON_HOST" not in env
    assert "HOME" not in env                  # filled in by the runtime from /etc/passwd


def test_path_defaults_to_dockers() -> None:
    env = b.environment({}, b.RunOptions(), "h")
    assert env[0] == "PATH=" + b.DEFAULT_PATH
    assert not any(e.startswith("TERM=") for e in env)


def test_a_terminal_gets_term_xterm_unless_set() -> None:
    assert "TERM=xterm" in b.environment({}, b.RunOptions(tty=True), "h")
    assert "TERM=vt100" in b.environment({}, b.RunOptions(tty=True, env=["TERM=vt100"]), "h")


def test_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="open .*nope"):
        b.environment({}, b.RunOptions(env_files=[str(tmp_path / "nope")]), "h")


# ---------------------------------------------------------------- mounts

def test_volume_parsing(tmp_path: Path) -> None:
    m = b.parse_volume(f"{tmp_path}:/data")
    assert m == {"destination": "/data", "type": "bind", "source": str(tmp_path), "options": ["rbind", "rw"]}
    assert b.parse_volume(f"{tmp_path}:/data/../ro:ro")["options"] == ["rbind", "ro"]
    assert b.parse_volume(f"{tmp_path}:/ro:ro")["destination"] == "/ro"


@pytest.mark.parametrize("spec, message", [
    ("/definitely/not/here:/data", "bind source path does not exist: /definitely/not/here"),
    ("named:/data", "named volumes are not supported"),
    ("{tmp}:relative", "container path must be absolute"),
    ("{tmp}:/data:rx", "unknown mode"),
    ("{tmp}", "want HOSTPATH:CTRPATH"),
])
def test_bad_volumes(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        b.parse_volume(spec.format(tmp=tmp_path))


def test_tmpfs_defaults_and_options() -> None:
    assert b.parse_tmpfs("/run")["options"] == ["rw", "noexec", "nosuid", "nodev"]
    assert b.parse_tmpfs("/run:size=1m,mode=700")["options"] == ["size=1m", "mode=700"]
    with pytest.raises(ContainerError):
        b.parse_tmpfs("run")


def test_default_mounts_follow_runc(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmpfs=["/scratch"])
    destinations = [m["destination"] for m in cfg["mounts"]]
    assert destinations[:6] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert destinations[6:9] == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    assert destinations[-1] == "/scratch"
    pts = next(m for m in cfg["mounts"] if m["destination"] == "/dev/pts")
    assert "newinstance" in pts["options"] and "ptmxmode=0666" in pts["options"]
    sysfs = next(m for m in cfg["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]


def test_etc_files_are_written_and_bound(tmp_path: Path) -> None:
    cfg = config(tmp_path, hostname="box")
    assert (tmp_path / "etc/hostname").read_text() == "box\n"
    assert "127.0.1.1\tbox" in (tmp_path / "etc/hosts").read_text()
    binds = {m["destination"]: m["source"] for m in cfg["mounts"] if m["type"] == "bind"}
    assert binds["/etc/hosts"] == str(tmp_path / "etc/hosts")


def test_resolv_conf_drops_loopback_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = b.resolv_conf("none")
    servers = [ln.split()[1] for ln in text.splitlines() if ln.startswith("nameserver")]
    assert servers and not any(s.startswith("127.") for s in servers)


# ---------------------------------------------------------------- the whole config

def test_config_uses_runtime_spec_names(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg["ociVersion"].startswith("1.")
    assert set(cfg) >= {"process", "root", "hostname", "mounts", "linux", "annotations"}
    p = cfg["process"]
    assert p["args"] == ["/entry", "default", "args"]
    assert p["cwd"] == "/work"
    assert p["terminal"] is False
    assert set(p["user"]) >= {"uid", "gid", "additionalGids"}
    assert cfg["root"] == {"path": "rootfs", "readonly": False}
    assert cfg["hostname"] == "ab" * 6
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    json.dumps(cfg)  # serialisable as it stands


def test_overlay_annotations_list_the_topmost_layer_first(tmp_path: Path) -> None:
    ann = config(tmp_path)["annotations"]
    assert ann[b.A_ROOTFS_MODE] == "overlay"
    assert ann[b.A_LOWERDIR] == "top:mid:low"
    assert ann[b.A_UPPERDIR] == str(tmp_path / "c/upper")
    assert ann[b.A_LAYERS_DIR] == str(tmp_path / "layers")
    assert ann[b.A_IMAGE] == "sha256:" + "cd" * 32


def test_user_names_are_left_to_the_runtime(tmp_path: Path) -> None:
    cfg = config(tmp_path)  # image User "student": a name, resolved inside the root
    assert cfg["annotations"][b.A_USER] == "student"
    cfg = config(tmp_path, user="1000:50")
    assert cfg["process"]["user"]["uid"] == 1000 and cfg["process"]["user"]["gid"] == 50
    cfg = config(tmp_path, image={"config": {"Cmd": ["sh"]}})
    assert b.A_USER not in cfg["annotations"]
    assert cfg["process"]["user"]["uid"] == 0


def test_workdir(tmp_path: Path) -> None:
    assert config(tmp_path, workdir="/a/b/../c/")["process"]["cwd"] == "/a/c"
    assert config(tmp_path, image={"config": {"Cmd": ["sh"]}})["process"]["cwd"] == "/"
    with pytest.raises(ContainerError, match="absolute path"):
        config(tmp_path, workdir="relative")


@pytest.mark.parametrize("opts, shared", [
    ({}, set()),
    ({"pid": "host"}, {"pid"}),
    ({"network": "host"}, {"network"}),
    ({"uts": "host", "ipc": "host"}, {"uts", "ipc"}),
])
def test_namespace_toggles(tmp_path: Path, opts: dict, shared: set) -> None:
    types = {ns["type"] for ns in config(tmp_path, **opts)["linux"]["namespaces"]}
    assert types == {"pid", "network", "ipc", "uts", "mount", "cgroup"} - shared


def test_hostname_follows_the_host_on_host_networking(tmp_path: Path) -> None:
    import socket

    assert config(tmp_path, network="host")["hostname"] == socket.gethostname()
    assert config(tmp_path, network="host", hostname="mine")["hostname"] == "mine"


def test_write_bundle(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    path = b.write_bundle(tmp_path, cfg)
    assert json.loads(path.read_text()) == cfg
