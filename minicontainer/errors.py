"""The exceptions minicontainer raises, and the exit status each one means.

Code inside the package raises; only the command line (cli.py) turns an
exception into an exit status, the way Docker does: 125 when minicontainer
itself fails, 126 when the command cannot be executed, 127 when it is not
found.
"""

from __future__ import annotations


class MiniContainerError(Exception):
    """Something minicontainer could not do (exit status 125)."""

    exit_code = 125


class ImageError(MiniContainerError):
    """An archive or image that cannot be loaded, found or used."""


class ContainerError(MiniContainerError):
    """A container that cannot be found, created, started or removed."""


class CommandNotExecutable(MiniContainerError):
    """The container's command exists but cannot be run (exit status 126)."""

    exit_code = 126


class CommandNotFound(MiniContainerError):
    """The container's command does not exist in its root (exit status 127)."""

    exit_code = 127
