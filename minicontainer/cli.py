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

# ---------------------------------------------------------------- runtime half
# run, ps, logs, exec, stop, kill, rm, container prune

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
