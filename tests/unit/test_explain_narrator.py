"""The narrator of --explain: numbered steps on its own stderr copy, nothing at all when off."""

from __future__ import annotations

import os

import pytest

from minicontainer import explain, linux


class Tripwire:
    """An argument that records any attempt to turn it into text."""

    def __init__(self) -> None:
        self.formatted = 0

    def __format__(self, spec: str) -> str:
        self.formatted += 1
        return "formatted"

    def __str__(self) -> str:
        return format(self)

    __repr__ = __str__


def read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.fixture
def pipe_narrator():
    """A Narrator writing into a pipe; yields (narrator, read end)."""
    read_end, write_end = os.pipe()
    narrator = explain.Narrator(write_end)
    yield narrator, read_end
    narrator.close()
    os.close(read_end)


def test_silent_narrator_never_calls_or_formats():
    tripwire = Tripwire()
    calls = []

    def what() -> str:
        calls.append(1)
        return f"mount({tripwire})"

    for _ in range(3):
        explain.SILENT.step(what, "why")
    assert calls == [] and tripwire.formatted == 0
    assert explain.SILENT.enabled is False
    assert explain.SILENT.fds() == []


def test_narrator_off_is_silent_on():
    assert explain.narrator(False) is explain.SILENT
    real = explain.narrator(True)
    try:
        assert real.enabled and real.fds() and real.fds()[0] > 2
        assert os.get_inheritable(real.fds()[0]) is False  # execve(2) must close it
    finally:
        real.close()


def test_narrator_numbers_steps_with_their_why(pipe_narrator):
    narrator, read_end = pipe_narrator
    tripwire = Tripwire()
    narrator.step(lambda: f"unshare({tripwire})", "a private world")
    narrator.step(lambda: "pivot_root(\".\", \".\")", "the image becomes /")
    narrator.close()
    text = read_all(read_end)
    assert text == ('[1] unshare(formatted)\n    a private world\n'
                    '[2] pivot_root(".", ".")\n    the image becomes /\n')
    assert tripwire.formatted == 1
    assert "\033[" not in text  # a pipe is not a terminal: no colour


def test_colour_only_marks_number_and_why(pipe_narrator):
    narrator, read_end = pipe_narrator
    narrator.colour = True
    narrator.step(lambda: "sethostname(\"abc\")", "its own name")
    narrator.close()
    text = read_all(read_end)
    assert "\033[1;36m[1]\033[0m sethostname(\"abc\")" in text
    assert "\033[2mits own name\033[0m" in text


def test_numbering_continues_across_fork(pipe_narrator):
    narrator, read_end = pipe_narrator
    narrator.step(lambda: "in the parent", "1")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        narrator.step(lambda: "in the child", "2")
        narrator.step(lambda: "still in the child", "3")
        os._exit(0)
    os.waitpid(pid, 0)
    narrator.step(lambda: "back in the parent", "4")
    narrator.close()
    lines = [ln for ln in read_all(read_end).splitlines() if ln.startswith("[")]
    assert lines == ["[1] in the parent", "[2] in the child", "[3] still in the child",
                     "[4] back in the parent"]


def test_closed_narrator_stays_quiet(pipe_narrator):
    narrator, read_end = pipe_narrator
    narrator.close()
    called = []
    narrator.step(lambda: called.append(1) or "x", "y")
    assert called == [] and narrator.fds() == []
    assert read_all(read_end) == ""


def test_flag_names_use_the_constants_own_names():
    assert explain.flag_names(linux.MS_REC | linux.MS_PRIVATE, vars(linux), "MS_") == "MS_REC|MS_PRIVATE"
    flags = linux.namespace_flags(["mount", "uts", "network"])
    assert explain.flag_names(flags, vars(linux), "CLONE_NEW") == "CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWNET"
    assert explain.flag_names(0, vars(linux), "MS_") == "0"
    assert explain.flag_names(linux.MS_BIND | 1 << 40, vars(linux), "MS_") == f"MS_BIND|{hex(1 << 40)}"


def test_call_quotes_strings_and_leaves_symbols_bare():
    text = explain.call("mount", "proc", "/c/rootfs/proc", "proc",
                        explain.flag_names(linux.MS_NOSUID, vars(linux), "MS_"), None, 3, ["a", "b"])
    assert text == 'mount("proc", "/c/rootfs/proc", "proc", MS_NOSUID, NULL, 3, ["a", "b"])'
