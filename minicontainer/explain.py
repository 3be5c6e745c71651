"""`--explain`: the runtime tells you each real step as it takes it.

A container is made of ordinary system calls and file writes. With
`--explain`, every step prints, numbered, on stderr: the call with the
arguments it really got (the container's own id, the layer digests, the pid)
and one line of *why*:

    [3] fork() = 20652 on the host, 1 inside
        one process, two pids: the host's /proc still shows the host's number
    [7] unshare(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWNET)
        new, empty namespaces: network, ipc, uts, mount (the host's stay untouched)

Each step function of the program receives a narrator and calls
`narrator.step(lambda: "<the call>", "<why>")` once. The lambda is the trick
that makes narration free when it is off: the text is only built (and the
flags only decoded) by a `Narrator`, never by `SILENT`, the do-nothing
narrator every function gets by default.

The steps of one command happen in several processes (the CLI, a detached
container's monitor, the container's own process before execve). They all
write to one copy of the CLI's stderr and count in one shared counter, so the
numbers follow each other whichever process takes the step.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

# Terminal colours (ECMA-48 SGR), used only when stderr is a terminal.
_NUMBER, _WHY, _RESET = "\033[1;36m", "\033[2m", "\033[0m"
_COUNTER = struct.Struct("=Q")


class Narration(Protocol):
    """What every step function may call; `Narrator` and `Silent` both fit."""

    enabled: bool

    def step(self, what: Callable[[], str], why: str) -> None: ...

    def fds(self) -> list[int]: ...

    def close(self) -> None: ...


class Silent:
    """The narrator when `--explain` is off: it does nothing, and builds no text.

    It has no state at all (not even a __dict__), so the one instance
    `SILENT` can be every function's default. A plain class, not a dataclass:
    every command imports this module, and a dataclass costs time to build.
    """

    __slots__ = ()
    enabled: ClassVar[bool] = False

    def step(self, what: Callable[[], str], why: str) -> None:
        """Do nothing: `what` is never called, so no string is ever formatted."""

    def fds(self) -> list[int]:
        return []

    def close(self) -> None:
        """Nothing to close."""


SILENT: Final = Silent()


@dataclass(eq=False)
class Narrator:
    """Numbers the steps and writes each one, with its why, to its own copy of stderr.

    Its own copy (a dup(2), O_CLOEXEC): a detached container's monitor points
    0, 1 and 2 at /dev/null and the container's process points them at its
    log, yet the narration still reaches the terminal that asked for it; and
    the user's command never inherits it, since execve(2) closes it.
    """

    fd: int
    colour: bool = False
    # One counter in memory shared across fork(2) (an anonymous MAP_SHARED
    # mapping), so steps taken by a child continue the parent's numbering.
    counter: mmap.mmap = field(default_factory=lambda: mmap.mmap(-1, _COUNTER.size))

    enabled: ClassVar[bool] = True

    @classmethod
    def to_stderr(cls) -> Narrator:
        """A narrator writing to a private duplicate of file descriptor 2, coloured on a terminal."""
        fd = fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, 3)
        return cls(fd, colour=os.isatty(fd))

    def step(self, what: Callable[[], str], why: str) -> None:
        """Print `[n] <what()>` and, indented below it, the why."""
        if self.fd < 0:
            return  # closed: this process has handed the narration back
        number = _COUNTER.unpack_from(self.counter)[0] + 1
        _COUNTER.pack_into(self.counter, 0, number)
        if self.colour:
            text = f"{_NUMBER}[{number}]{_RESET} {what()}\n    {_WHY}{why}{_RESET}\n"
        else:
            text = f"[{number}] {what()}\n    {why}\n"
        data = text.encode(errors="backslashreplace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass  # a closed pipe must not fail the container over its commentary

    def fds(self) -> list[int]:
        """The descriptors a step closing "every other fd" must leave open (see runtime.close_other_fds)."""
        return [self.fd] if self.fd >= 0 else []

    def close(self) -> None:
        """Stop narrating in this process (a monitor, once the container runs, lets go of the terminal)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def narrator(enabled: bool) -> Narrator | Silent:
    """The narrator for a command: a real one with `--explain`, else SILENT."""
    return Narrator.to_stderr() if enabled else SILENT


# ---------------------------------------------------------------- writing calls the way man pages do


class Symbol(str):
    """A word printed bare in a call, like a flag name (MS_BIND), never quoted."""


def flag_names(value: int, constants: Mapping[str, object], prefix: str) -> Symbol:
    """0x5000 → MS_REC|MS_BIND: a flag word spelled with the constants' own names.

    `constants` is a module's namespace (`vars(linux)`), `prefix` picks the
    family ("MS_", "CLONE_NEW"); bits no name covers are shown in hex.
    """
    bits = sorted((bit, name) for name, bit in constants.items()
                  if name.startswith(prefix) and isinstance(bit, int) and bit > 0
                  and bit & (bit - 1) == 0 and value & bit)  # one-bit flags that are set
    text = [name for _, name in bits]
    rest = value & ~sum(bit for bit, _ in bits)
    if rest:
        text.append(hex(rest))
    return Symbol("|".join(text) or "0")


def call(name: str, *args: object) -> str:
    """`call("mount", "proc", "/x/proc", "proc", Symbol("MS_NOSUID"), None)` → mount("proc", …, NULL).

    Strings are quoted as in C, None is NULL, a Symbol or a number is shown as is.
    """
    return f"{name}({', '.join(_argument(a) for a in args)})"


def _argument(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, (str, os.PathLike)):
        return json.dumps(os.fspath(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_argument(v) for v in value) + "]"
    return str(value)
