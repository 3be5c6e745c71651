"""The command line: parse, call the library, print.

This is the only place that knows about exit statuses. Everything below it
raises exceptions (errors.py); `main()` turns them into Docker's statuses:
125 when minicontainer fails, 126 when the command cannot be executed, 127 when
it is not found, otherwise the container command's own status.

Commands import what they need inside their body, so that `minicontainer run`
does not pay for what only `network` or `stats` use.
"""

from __future__ import annotations

import sys
import traceback

import click

from minicontainer.errors import MiniContainerError


class Context:
    """What every command gets: the store root and whether to show tracebacks."""

    def __init__(self, root: str | None, debug: bool) -> None:
        self.root = root
        self.debug = debug

    def store(self):  # -> Store
        from minicontainer.store import Store

        return Store.open(self.root)


pass_ctx = click.make_pass_decorator(Context)

# --explain (load, run, exec, commit, rm): every real step, numbered, on stderr (explain.py).
explain_option = click.option("--explain", is_flag=True,
                              help="Narrate each real step (system calls, files written) on stderr.")


def _narrator(enabled: bool):  # -> explain.Narration
    from minicontainer.explain import narrator

    return narrator(enabled)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="MINICONTAINER_ROOT", default=None,
              help="Store directory (default /var/lib/minicontainer).")
@click.option("--debug", is_flag=True, help="Show a traceback when something fails.")
@click.version_option(package_name="minicontainer")
@click.pass_context
def cli(ctx: click.Context, root: str | None, debug: bool) -> None:
    """minicontainer: images are inert templates, containers are running instances of them."""
    ctx.obj = Context(root, debug)


# ---------------------------------------------------------------- image half
# load, images, inspect, history, rmi, image prune


def _human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    return f"{size}"


@cli.command()
@click.argument("archive")
@explain_option
@pass_ctx
def load(ctx: Context, archive: str, explain: bool) -> None:
    """Load an image archive (docker save, OCI layout, or a root filesystem tar)."""
    from pathlib import Path

    from minicontainer import image

    for img in image.load_all(ctx.store(), Path(archive), progress=True, narrator=_narrator(explain)):
        for tag in img.tags:
            click.echo(f"Loaded image: {tag}")
        click.echo(f"Loaded image ID: {img.id}")


def _list_images(ctx: Context) -> None:
    from minicontainer import image

    rows = [("REPOSITORY", "TAG", "IMAGE ID", "LAYERS", "CREATED", "SIZE")]
    for img in image.list_images(ctx.store()):
        names = [t.rsplit(":", 1) for t in img.tags] or [["<none>", "<none>"]]
        for repo, tag in names:
            rows.append((repo, tag, img.short_id, str(len(img.layers)),
                         img.created[:19].replace("T", " ") or "N/A", _human_size(img.size)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@cli.command()
@pass_ctx
def images(ctx: Context) -> None:
    """List the images of the store."""
    _list_images(ctx)


@cli.command("history")
@click.argument("image_ref", metavar="IMAGE")
@pass_ctx
def history_cmd(ctx: Context, image_ref: str) -> None:
    """Show how an image was built: its layers, newest first."""
    from minicontainer import image

    store = ctx.store()
    img = image.resolve(store, image_ref)
    click.echo(f"{'LAYER':14}{'CREATED':22}{'SIZE':>9}  CREATED BY")
    for row in image.history(img):
        layer = row["layer"][7:19] if row["layer"] else "<missing>"
        size = _human_size(image.layer_size(store, img, row["layer"])) if row["layer"] else "0B"
        created = str(row["created"])[:19].replace("T", " ")
        click.echo(f"{layer:14}{created:22}{size:>9}  {row['created_by']}")


@cli.command("inspect")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@pass_ctx
def inspect_cmd(ctx: Context, refs: tuple[str, ...]) -> None:
    """Show images as JSON (docker inspect's field names)."""
    import json

    from minicontainer import image

    store = ctx.store()
    click.echo(json.dumps([_inspect_container_or(store, r, lambda r: image.inspect(store, image.resolve(store, r)))
                           for r in refs], indent=4))


@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-f", "--force", is_flag=True, help="Untag even if a container uses it.")
@pass_ctx
def rmi(ctx: Context, refs: tuple[str, ...], force: bool) -> None:
    """Remove images (their unpacked layers stay until `image prune`)."""
    from minicontainer import image

    store = ctx.store()
    for ref in refs:
        before = image.find(store, ref)
        image.remove(store, ref, force=force)
        for tag in set(before.tags) - set(_still_tagged(store, before.id)):
            click.echo(f"Untagged: {tag}")
        if not store.image_dir(before.id).exists():
            click.echo(f"Deleted: {before.id}")


def _still_tagged(store, image_id: str) -> list[str]:
    from minicontainer import image
    from minicontainer.errors import ImageError

    try:
        return image.get(store, image_id).tags
    except ImageError:
        return []


@cli.group("image")
def image_group() -> None:
    """Manage images (ls, prune)."""


@image_group.command("ls")
@pass_ctx
def image_ls(ctx: Context) -> None:
    """List the images of the store."""
    _list_images(ctx)


@image_group.command("prune")
@pass_ctx
def image_prune(ctx: Context) -> None:
    """Delete unpacked layers that no image uses."""
    from minicontainer import image

    removed = image.prune_layers(ctx.store())
    for chain in removed:
        click.echo(f"Deleted layer: {chain}")
    click.echo(f"Removed {len(removed)} unused layer(s)")

# ---------------------------------------------------------------- runtime half
# run, ps, logs, exec, stop, kill, rm, container prune|ls|inspect

_RUN_SETTINGS = {"allow_interspersed_args": False}  # options after IMAGE belong to the command


def _run_options(command: tuple[str, ...], **kw):  # -> bundle.RunOptions
    from minicontainer.bundle import RunOptions

    return RunOptions(command=list(command), **kw)


def _limit_and_security_options(command):
    """`run`'s flags for limits (cgroups.py) and confinement (security.py), Docker's spelling."""
    options = [
        click.option("-m", "--memory", default=None, help="Memory limit (e.g. 512m, 1g)."),
        click.option("--memory-swap", default=None, help="Memory plus swap limit (-1: unlimited swap)."),
        click.option("--cpus", default=None, help="Number of CPUs (e.g. 0.5: half of one CPU)."),
        click.option("-c", "--cpu-shares", type=int, default=None, help="Relative CPU weight (default 1024)."),
        click.option("--pids-limit", type=int, default=None, help="Maximum number of processes (-1: unlimited)."),
        click.option("--cap-add", multiple=True, help="Add a capability (e.g. NET_ADMIN, or ALL)."),
        click.option("--cap-drop", multiple=True, help="Drop a capability (e.g. CHOWN, or ALL)."),
        click.option("--privileged", is_flag=True, help="All capabilities and devices; no seccomp, no masked paths."),
        click.option("--security-opt", multiple=True,
                     help="no-new-privileges, or seccomp=unconfined."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _network_options(command):
    """`run`'s network flags (network.py), Docker's spelling."""
    options = [
        click.option("--network", "--net", envvar="MINICONTAINER_NETWORK", default="bridge", show_default=True,
                     help="bridge, a network NAME, none (only lo), host, or container:NAME "
                          "(default also from $MINICONTAINER_NETWORK)."),
        click.option("--ip", default=None, help="IPv4 address on the bridge network."),
        click.option("-p", "--publish", multiple=True,
                     help="Publish a port: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _check_network_options(kw: dict) -> None:
    """Refuse a bad --network or -p before anything is created (exit 125, one line)."""
    if kw["network"] in ("none", "host") and not kw["publish"]:
        return  # nothing to check, and `--network none` must not import the network code
    from minicontainer.network import NetworkMode
    from minicontainer.ports import parse_ports

    NetworkMode.parse(kw["network"])
    parse_ports(kw["publish"])
    kw["publish"] = list(kw["publish"])


@cli.command(context_settings=_RUN_SETTINGS)
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the container id.")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open (pass it to the container).")
@click.option("-t", "--tty", is_flag=True, help="Give the container a pseudo-terminal.")
@click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits.")
@click.option("--name", default=None, help="Name the container.")
@click.option("-e", "--env", multiple=True, help="Set an environment variable (KEY=VALUE, or KEY).")
@click.option("--env-file", multiple=True, help="Read environment variables from a file.")
@click.option("-u", "--user", default=None, help="user[:group], by name or number, from the image.")
@click.option("-w", "--workdir", default=None, help="Working directory inside the container.")
@click.option("--hostname", default=None, help="Container hostname (default: its short id).")
@click.option("--entrypoint", default=None, help="Override the image's Entrypoint (\"\" for none).")
@click.option("-v", "--volume", multiple=True, help="Bind mount HOSTPATH:CTRPATH[:ro].")
@click.option("--tmpfs", multiple=True, help="Mount a tmpfs at PATH[:OPTIONS].")
@click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only.")
@_network_options
@click.option("--pid", type=click.Choice(["private", "host"]), default="private", help="PID namespace.")
@click.option("--uts", type=click.Choice(["private", "host"]), default="private", help="UTS namespace.")
@click.option("--ipc", type=click.Choice(["private", "host"]), default="private", help="IPC namespace.")
@explain_option
@_limit_and_security_options
@pass_ctx
def run(ctx: Context, image: str, command: tuple[str, ...], detach: bool, auto_remove: bool,
        name: str | None, env: tuple[str, ...], env_file: tuple[str, ...], volume: tuple[str, ...],
        tmpfs: tuple[str, ...], explain: bool, **kw) -> int:
    """Run COMMAND in a new container made from IMAGE (the image's Cmd by default)."""
    from minicontainer.container import Container

    _check_network_options(kw)
    opts = _run_options(command, env=list(env), env_files=list(env_file), volumes=list(volume),
                        tmpfs=list(tmpfs), **kw)
    narrator = _narrator(explain)
    container = Container.create(ctx.store(), image, opts, name=name, auto_remove=auto_remove,
                                 detached=detach, narrator=narrator)
    if detach:
        container.run_detached(narrator)
        click.echo(container.id)
        return 0
    return container.run_foreground(narrator)


@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only print ids.")
@pass_ctx
def ps(ctx: Context, show_all: bool, quiet: bool) -> None:
    """List containers (running ones, or all with -a)."""
    from minicontainer.container import age, listing

    rows = listing(ctx.store(), show_all)
    if quiet:
        for c in rows:
            click.echo(c.id[:12])
        return
    click.echo(f"{'CONTAINER ID':<14}{'IMAGE':<20}{'COMMAND':<24}{'CREATED':<26}{'STATUS':<36}"
               f"{'PID':<8}NAMES")
    for c in rows:
        s = c.state
        command = c.command_text()
        command = '"' + (command if len(command) <= 20 else command[:19] + "…") + '"'
        click.echo(f"{c.id[:12]:<14}{s.image_ref[:19]:<20}{command:<24}{age(s.created) + ' ago':<26}"
                   f"{c.status_text():<36}{(s.pid or '') if s.status == 'running' else '':<8}{s.name}")


@cli.command()
@click.argument("container")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the container exits.")
@pass_ctx
def logs(ctx: Context, container: str, follow: bool) -> None:
    """Print the output of a detached container."""
    from minicontainer.container import Container

    Container.find(ctx.store(), container).logs(follow=follow)


def _inspect_container_or(store, ref: str, inspect_image):  # -> dict
    """`inspect` looks for a container by that name or id first, then for an image, as Docker does."""
    from minicontainer.container import Container
    from minicontainer.errors import ContainerError

    try:
        return Container.find(store, ref).inspect()
    except ContainerError:
        return inspect_image(ref)


@cli.command("exec", context_settings=_RUN_SETTINGS)
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a pseudo-terminal.")
@click.option("-u", "--user", default=None, help="user[:group] (default: the container's user).")
@click.option("-w", "--workdir", default=None, help="Working directory (default: the container's).")
@click.option("-e", "--env", multiple=True, help="Set an environment variable.")
@explain_option
@pass_ctx
def exec_(ctx: Context, container: str, command: tuple[str, ...], interactive: bool, tty: bool,
          user: str | None, workdir: str | None, env: tuple[str, ...], explain: bool) -> int:
    """Run COMMAND inside a running container (all its namespaces, its root, its cgroup)."""
    from minicontainer.container import Container

    return Container.find(ctx.store(), container).exec(
        list(command), interactive=interactive, tty=tty, user=user, workdir=workdir, env=list(env),
        narrator=_narrator(explain))


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=float, default=10, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@pass_ctx
def stop(ctx: Context, containers: tuple[str, ...], timeout: float) -> None:
    """Stop containers: SIGTERM, then SIGKILL after a grace period."""
    _for_each_container(ctx, containers, lambda c: c.stop(timeout))


def _for_each_container(ctx: Context, refs: tuple[str, ...], action) -> None:
    """Apply `action` to each named container and print its name, as Docker does."""
    from minicontainer.container import Container

    store = ctx.store()
    for ref in refs:
        action(Container.find(store, ref))
        click.echo(ref)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-s", "--signal", "sig", default="KILL", show_default=True, help="Signal name or number.")
@pass_ctx
def kill(ctx: Context, containers: tuple[str, ...], sig: str) -> None:
    """Send a signal to the containers' PID 1."""
    import signal as signals

    from minicontainer.errors import ContainerError

    name = sig.upper().removeprefix("SIG")
    try:
        number = int(name) if name.isdigit() else int(getattr(signals, "SIG" + name))
    except AttributeError:
        raise ContainerError(f"invalid signal: {sig}") from None
    _for_each_container(ctx, containers, lambda c: c.kill(number))


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Kill running containers first.")
@explain_option
@pass_ctx
def rm(ctx: Context, containers: tuple[str, ...], force: bool, explain: bool) -> None:
    """Remove containers (their writable layer, bundle, log and state)."""
    from minicontainer.container import Container

    store = ctx.store()
    narrator = _narrator(explain)
    for ref in containers:
        Container.find(store, ref).remove(force=force, narrator=narrator)
        click.echo(ref)


@cli.group("container")
def container_group() -> None:
    """Manage containers."""


@container_group.command("prune")
@pass_ctx
def container_prune(ctx: Context) -> None:
    """Remove all stopped containers."""
    from minicontainer.container import prune

    for container_id in prune(ctx.store()):
        click.echo(container_id)


container_group.add_command(ps, "ls")
container_group.add_command(rm, "rm")


@container_group.command("inspect")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def container_inspect(ctx: Context, containers: tuple[str, ...]) -> None:
    """Show containers as JSON: state, pid, namespaces, rootfs, bundle, config."""
    import json

    from minicontainer.container import Container

    store = ctx.store()
    click.echo(json.dumps([Container.find(store, ref).inspect() for ref in containers], indent=2))


# ---------------------------------------------------------------- limits
# stats


def _iec(size: float) -> str:
    """Docker's memory figures: binary units, four significant digits (1.5MiB, 64MiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.4g}{unit}"
        size /= 1024
    return f"{size:.4g}TiB"


def _stats_table(containers, interval: float) -> list[tuple[str, ...]]:
    """Sample each container's cgroup twice, `interval` seconds apart; one row each.

    CPU % is CPU time used per second of wall time (100% = one whole CPU),
    memory is usage without the inactive page cache, both as `docker stats`.
    """
    import time
    from pathlib import Path

    from minicontainer import runtime

    meminfo = Path("/proc/meminfo").read_text().split()
    host_memory = int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024
    groups = {c.id: runtime.container_cgroup(c.bundle()) for c in containers if c.running}
    first = {cid: cg.stats() for cid, cg in groups.items() if cg.exists()}
    start = time.monotonic()
    time.sleep(interval if first else 0)
    elapsed = time.monotonic() - start
    rows = [("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")]
    for c in containers:
        cg = groups.get(c.id)
        if c.id not in first or cg is None or not cg.exists():
            rows.append((c.id[:12], c.state.name, "--", "-- / --", "--", "--"))
            continue
        now = cg.stats()
        cpu = max(now.cpu_usage_ns - first[c.id].cpu_usage_ns, 0) / 1e9 / elapsed * 100
        limit = now.memory_limit or host_memory
        rows.append((c.id[:12], c.state.name, f"{cpu:.2f}%",
                     f"{_iec(now.memory_usage)} / {_iec(limit)}",
                     f"{now.memory_usage / limit * 100:.2f}%", str(now.pids)))
    return rows


@cli.command()
@click.argument("containers", nargs=-1)
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@pass_ctx
def stats(ctx: Context, containers: tuple[str, ...], no_stream: bool) -> None:
    """Show running containers' CPU %, memory usage / limit and number of processes.

    Without CONTAINER names, every running container (looked up again at
    each refresh). Watching a limit bite is the point: try it beside
    `run --cpus 0.5` or `--memory 32m`.
    """
    import time

    from minicontainer.container import Container

    store = ctx.store()
    while True:
        chosen = [Container.find(store, ref) for ref in containers] if containers else \
            [c for c in Container.all(store) if c.running]
        rows = _stats_table(chosen, interval=1.0)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        text = "\n".join("   ".join(col.ljust(w) for col, w in zip(r, widths)).rstrip() for r in rows)
        if no_stream:
            click.echo(text)
            return
        click.echo("\x1b[2J\x1b[H" + text)  # clear the screen, cursor home: a live table
        if len(rows) == 1:  # nothing sampled, so nothing slept: wait before looking again
            time.sleep(1.0)


# ---------------------------------------------------------------- network
# network ls, create, rm, inspect


@cli.group()
def network() -> None:
    """Bridge networks: a host bridge, a subnet, and the containers on it."""


@network.command("ls")
@pass_ctx
def network_ls(ctx: Context) -> None:
    """List networks."""
    from minicontainer import ipam

    store = ctx.store()
    click.echo(f"{'NAME':<20} {'BRIDGE':<16} {'SUBNET':<18} {'GATEWAY':<15} CONTAINERS")
    for net in ipam.list_networks(store):
        count = len(ipam.read_allocations(store, net.name))
        click.echo(f"{net.name:<20} {net.bridge:<16} {net.subnet:<18} {net.gateway:<15} {count}")


@network.command("create")
@click.argument("name")
@click.option("--subnet", default=None, help="IPv4 CIDR (default: the next free /24 of 10.214.0.0/16).")
@click.option("--bridge", default=None, help="Host bridge interface name (default: mc-NAME).")
@pass_ctx
def network_create(ctx: Context, name: str, subnet: str | None, bridge: str | None) -> None:
    """Create a bridge network (its bridge and NAT rules are made at once)."""
    from minicontainer.network import create_network

    click.echo(create_network(ctx.store(), name, subnet=subnet, bridge=bridge).name)


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def network_rm(ctx: Context, names: tuple[str, ...]) -> None:
    """Remove networks that no container uses (their bridge and rules go too)."""
    from minicontainer.network import remove_network

    store = ctx.store()
    for name in names:
        remove_network(store, name)
        click.echo(name)


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def network_inspect(ctx: Context, names: tuple[str, ...]) -> None:
    """Show networks as JSON: subnet, gateway, bridge, containers, NAT and forwarding."""
    import json

    from minicontainer.network import inspect_network

    store = ctx.store()
    click.echo(json.dumps([inspect_network(store, name) for name in names], indent=2))


# ---------------------------------------------------------------- classroom
# diff, commit, save, export, anatomy, doctor


@cli.command()
@click.argument("container")
@pass_ctx
def diff(ctx: Context, container: str) -> None:
    """List what CONTAINER changed in its image's files: A added, C changed, D deleted."""
    from minicontainer import commit as commits

    for change in commits.diff(ctx.store(), container):
        click.echo(str(change))


@cli.command("commit")
@click.argument("container")
@click.argument("repository", required=False, metavar="[REPOSITORY[:TAG]]")
@click.option("-m", "--message", default="", help="A comment for the new layer's history entry.")
@click.option("-a", "--author", default="", help="The new image's author.")
@explain_option
@pass_ctx
def commit_cmd(ctx: Context, container: str, repository: str | None, message: str, author: str,
               explain: bool) -> None:
    """Make a new image: the container's image layers plus its writable layer as one more."""
    from minicontainer import commit as commits

    img = commits.commit(ctx.store(), container, repository, message=message, author=author,
                         narrator=_narrator(explain))
    click.echo(img.id)


@cli.command()
@click.argument("image_ref", metavar="IMAGE")
@click.option("-o", "--output", default=None, help="The archive file to write (default: stdout).")
@pass_ctx
def save(ctx: Context, image_ref: str, output: str | None) -> None:
    """Write IMAGE as a `docker save` archive (docker load and podman load read it)."""
    from pathlib import Path

    from minicontainer import save as saving
    from minicontainer.errors import ImageError

    if output is not None:
        saving.save_image(ctx.store(), image_ref, Path(output))
        return
    if sys.stdout.isatty():
        raise ImageError("cowardly refusing to save to a terminal: use -o FILE or redirect")
    saving.save_to_stream(ctx.store(), image_ref, sys.stdout.buffer)


@cli.command()
@click.argument("container")
@click.option("-o", "--output", required=True, help="The tar file to write.")
@pass_ctx
def export(ctx: Context, container: str, output: str) -> None:
    """Write CONTAINER's root filesystem, as it sees it, as one flat tar."""
    from pathlib import Path

    from minicontainer import commit as commits

    commits.export(ctx.store(), container, Path(output))


@cli.command()
@click.argument("container")
@pass_ctx
def anatomy(ctx: Context, container: str) -> None:
    """One screen: CONTAINER's layers, process, namespaces, cgroup and network."""
    from minicontainer import anatomy as anat

    click.echo(anat.render(anat.gather(ctx.store(), container)))


@cli.command()
@pass_ctx
def doctor(ctx: Context) -> int:
    """Try what containers need on this host (root, namespaces, overlayfs, cgroups, NAT…)."""
    from minicontainer import doctor as doc

    checks = doc.run_checks(ctx.store())
    click.echo(doc.report(checks))
    return 1 if any(c.status == doc.MISSING for c in checks) else 0


# ---------------------------------------------------------------- the edge


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and turn every outcome into an exit status."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        status = cli.main(args=argv, prog_name="minicontainer", standalone_mode=False)
    except click.exceptions.Exit as e:
        status = e.exit_code
    except click.ClickException as e:  # a bad flag or argument: Docker says 125
        e.show()
        status = 125
    except click.exceptions.Abort:
        click.echo("minicontainer: aborted", err=True)
        status = 130
    except MiniContainerError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"minicontainer: {e}", err=True)
        status = e.exit_code
    except KeyboardInterrupt:
        click.echo("minicontainer: interrupted", err=True)
        status = 130
    except BrokenPipeError:
        status = 0
    except Exception as e:  # a bug or an unforeseen OS error: still one line, still 125
        if debug:
            traceback.print_exc()
        click.echo(f"minicontainer: {type(e).__name__}: {e}", err=True)
        status = 125
    sys.exit(status if isinstance(status, int) else 0)
