"""The lesson: "what is the difference between an image and a container?", run for real.

Seven steps, in the order the question unfolds: an image is just files; two
containers from it are two instances; a write in one changes neither the other
nor the image; look inside one; limit one; connect two; turn one back into an
image. Each step is a list of the very commands a teacher types.

    python -m minicontainer.lesson                  print the README section
    python -m minicontainer.lesson --write README.md  regenerate it in place
    python -m minicontainer.demo tour build/demo.tar  play it (PAUSE=1: Enter between steps)

Every command runs for real against a temporary store (never the machine's
own), so the outputs in the README are real outputs, and a test runs the same
list so the README cannot drift from the program.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minicontainer.errors import MiniContainerError

START, END = "<!-- lesson:start -->", "<!-- lesson:end -->"
SHOWN_ROOT = "/var/lib/minicontainer"   # the store as a teacher's commands name it
STEP_SECONDS = 3.0                      # the tour's pause between steps


@dataclass(frozen=True)
class Command:
    """One command as the teacher types it, and the exit status it should end with."""

    shown: str
    expect: int = 0
    max_lines: int = 30   # the README shows at most this much of its output


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    commands: tuple[Command, ...]


def _c(*shown: str) -> tuple[Command, ...]:
    return tuple(Command(s) for s in shown)


STEPS: tuple[Step, ...] = (
    Step("An image is just files",
         "Loading unpacks the image's layers into the store, one directory per layer. "
         "Nothing runs: an image is an inert template (a class, not an object). The second layer "
         "changed /etc/motd and deleted /etc/draft.txt: the deletion is a file too (a whiteout).",
         _c("minicontainer load build/demo.tar",
            "minicontainer images",
            "minicontainer history minicontainer-demo",
            f'find {SHOWN_ROOT}/layers -path "*/etc/*"',
            "minicontainer ps -a")),
    Step("Two containers: two instances of one image",
         "Each container is a process with namespaces of its own: each is PID 1 in its own PID "
         "namespace and has its own hostname, though the host sees two ordinary PIDs. "
         "(`--network none`: only a loopback for now; step 6 connects them.)",
         _c("minicontainer run -d --name one --network none minicontainer-demo sleep 600",
            "minicontainer run -d --name two --network none minicontainer-demo sleep 600",
            "minicontainer exec one sh -c 'hostname; ps'",
            "minicontainer exec two sh -c 'hostname; ps'",
            "minicontainer ps")),
    Step("Write in one: the other and the image do not change",
         "Writes go to the container's own writable layer (an overlayfs upperdir); the image's "
         "layers are read-only lowerdirs shared by both. `diff` lists that writable layer.",
         _c("minicontainer exec one sh -c 'echo hello > /home/student/note.txt; rm /etc/motd'",
            "minicontainer exec two sh -c 'cat /home/student/note.txt; head -n1 /etc/motd'",
            "minicontainer diff one",
            "minicontainer diff two",
            "minicontainer run --rm --network none minicontainer-demo head -n1 /etc/motd")),
    Step("Look inside one",
         "`anatomy` puts a container's parts on one screen: layers, PID on the host and inside, "
         "each namespace's inode beside the host's, its cgroup, its network. `--explain` narrates "
         "every system call of a `run` as it happens.",
         (Command("minicontainer anatomy one", max_lines=60),
          Command("minicontainer run --rm --network none --explain minicontainer-demo hostname",
                  max_lines=24))),
    Step("Limit one and watch it",
         "Limits are cgroup files the kernel enforces on every process of the container: "
         "a pids limit makes fork(2) fail (the shell gives up: exit status 2), a memory limit calls "
         "the OOM killer (exit status 137).",
         (Command("minicontainer run -d --name limited --network none --memory 32m --pids-limit 20 "
                  "minicontainer-demo sleep 600"),
          Command("minicontainer exec limited sh -c "
                  "'for i in $(seq 30); do sleep 60 >/dev/null 2>&1 & echo -n \"$i \"; done'", expect=2),
          Command("minicontainer stats --no-stream limited"),
          Command("minicontainer run --rm --network none --memory 32m minicontainer-demo "
                  "sh -c 'head -c 100m /dev/zero | tail'", expect=137))),
    Step("Connect two",
         "A network is a bridge on the host; each container gets one end of a veth pair, an "
         "address, and its peers' names in /etc/hosts. `-p` publishes a port on the host (nftables DNAT).",
         _c("minicontainer network create classroom",
            "minicontainer run -d --name web --network classroom -p 8080:80 minicontainer-demo "
            "httpd -f -p 80 -h /etc",
            "minicontainer run --rm --network classroom minicontainer-demo wget -qO- http://web/os-release",
            "busybox wget -qO- http://127.0.0.1:8080/os-release")),
    Step("Turn a container back into an image",
         "`commit` stacks the container's writable layer on the image's layers as one more layer: "
         "a new image, the old one untouched. `save` writes it as a `docker save` archive "
         "(docker and podman load it); loaded back, it has the same id: an image's id is the "
         "sha256 of its config, which names each layer by the sha256 of its tar. `export` writes "
         "the container's files as one flat tar, with no layers and no history.",
         _c("minicontainer commit one classroom:v1",
            "minicontainer history classroom:v1",
            "minicontainer run --rm --network none classroom:v1 cat /home/student/note.txt",
            "minicontainer save classroom:v1 -o classroom.tar",
            "minicontainer rmi classroom:v1",
            "minicontainer load classroom.tar",
            "minicontainer run --rm --network none classroom:v1 cat /home/student/note.txt",
            "minicontainer export one -o one.tar",
            "tar -tf one.tar home/student/note.txt")),
    Step("Clean up",
         "Containers, their writable layers and the network go; the demo image stays until `rmi`.",
         _c("minicontainer rm -f one two limited web",
            "minicontainer network rm classroom",
            "minicontainer rmi classroom:v1",
            "rm classroom.tar one.tar")),
)


@dataclass
class Ran:
    """A command of the lesson, after it ran."""

    command: Command
    output: str
    status: int


class LessonError(MiniContainerError):
    """A command of the lesson did not end as the lesson says it does."""


# ---------------------------------------------------------------- running it


def all_commands() -> list[str]:
    return [c.shown for step in STEPS for c in step.commands]


def _argv(shown: str, store: Path) -> list[str]:
    argv = [a.replace(SHOWN_ROOT, str(store)) for a in shlex.split(shown)]
    if argv[0] == "minicontainer":  # the CLI of this very checkout, with this Python
        argv = [sys.executable, "-m", "minicontainer", *argv[1:]]
    return argv


def _tidy(output: str, work: Path, store: Path) -> str:
    """The output as it reads with the default store, and without terminal colours."""
    output = output.replace(str(store), SHOWN_ROOT).replace(str(work) + "/", "")
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output)


def run_lesson(demo_tar: Path, on_step: Callable[[int, Step], None] | None = None,
               on_command: Callable[[Ran], None] | None = None) -> list[list[Ran]]:
    """Run every step in a temporary store and directory; always clean up, even after a failure."""
    results: list[list[Ran]] = []
    with tempfile.TemporaryDirectory(prefix="minicontainer-lesson-") as tmp:
        work = Path(tmp)
        store = work / "store"
        (work / "build").mkdir()
        (work / "build" / "demo.tar").symlink_to(Path(demo_tar).resolve())
        env = {**os.environ, "MINICONTAINER_ROOT": str(store)}
        try:
            for number, step in enumerate(STEPS, start=1):
                if on_step:
                    on_step(number, step)
                results.append([])
                for command in step.commands:
                    done = subprocess.run(_argv(command.shown, store), cwd=work, env=env, text=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, timeout=120)
                    ran = Ran(command, _tidy(done.stdout, work, store), done.returncode)
                    results[-1].append(ran)
                    if on_command:
                        on_command(ran)
                    if ran.status != command.expect:
                        raise LessonError(f"step {number}: `{command.shown}` exited {ran.status} "
                                          f"(expected {command.expect}):\n{ran.output}")
        finally:
            _clean_up(store, work, env)
    return results


def _clean_up(store: Path, work: Path, env: dict[str, str]) -> None:
    """What the last step does, done again quietly: a failed lesson must not leave containers."""
    for shown in STEPS[-1].commands:
        subprocess.run(_argv(shown.shown, store), cwd=work, env=env, capture_output=True, timeout=120)


# ---------------------------------------------------------------- the README section


def _shown_output(ran: Ran) -> list[str]:
    lines = ran.output.rstrip("\n").splitlines()
    limit = ran.command.max_lines
    if len(lines) > limit:
        lines = lines[:limit] + [f"… ({len(lines) - limit} more lines)"]
    if ran.status != 0:
        lines.append(f"[exit status {ran.status}]")
    return lines


def render(results: list[list[Ran]]) -> str:
    """The README section: each step's text, then its commands and their real output."""
    out = [START,
           "## The lesson: an image and its containers",
           "",
           "Run as root, from this directory, after `make image`; `minicontainer doctor` first "
           "tries what this machine can do and says what to install if something is missing. "
           "Every output below is real: `python -m minicontainer.lesson --write README.md` ran "
           "these commands (in a temporary store) and wrote what they printed. `make demo` plays "
           "the same steps (`PAUSE=1 make demo` waits for Enter between them).",
           ""]
    for number, (step, ran) in enumerate(zip(STEPS, results), start=1):
        out += [f"### {number}. {step.title}", "", step.text, "", "```console"]
        for r in ran:
            out.append(f"$ {r.command.shown}")
            out += _shown_output(r)
        out += ["```", ""]
    out.append(END)
    return "\n".join(out) + "\n"


def readme_commands(text: str) -> list[str]:
    """The `$ ` lines of the lesson section of a README (what the test compares)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0:
        return []
    return [line[2:] for line in text[start:end].splitlines() if line.startswith("$ ")]


def write_section(readme: Path, section: str) -> None:
    """Replace the text between the markers (or append the section if there are none)."""
    text = readme.read_text() if readme.exists() else ""
    start, end = text.find(START), text.find(END)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    readme.write_text(text)


# ---------------------------------------------------------------- the tour


def play(demo_tar: Path, pause: bool = False, seconds: float = STEP_SECONDS) -> None:
    """Run the lesson on the terminal, step by step: `make demo` (PAUSE=1 waits for Enter)."""
    bold, cyan, plain = ("\033[1m", "\033[36m", "\033[0m") if sys.stdout.isatty() else ("", "", "")

    def on_step(number: int, step: Step) -> None:
        if number > 1:
            if pause:
                input("\n[Enter] next step ")
            else:
                time.sleep(seconds)
        print(f"\n{bold}{number}. {step.title}{plain}\n{step.text}\n", flush=True)

    def on_command(ran: Ran) -> None:
        print(f"{cyan}$ {ran.command.shown}{plain}")
        print("\n".join(_shown_output(ran)), flush=True)

    run_lesson(demo_tar, on_step, on_command)


def main(argv: list[str]) -> int:
    """`[--write README.md] [--demo build/demo.tar]`"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m minicontainer.lesson", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="README", help="rewrite the lesson section of this file")
    parser.add_argument("--demo", default="build/demo.tar", help="the demo image archive (make image)")
    args = parser.parse_args(argv)
    try:
        section = render(run_lesson(Path(args.demo)))
    except MiniContainerError as e:
        print(f"minicontainer.lesson: {e}", file=sys.stderr)
        return e.exit_code
    if args.write:
        write_section(Path(args.write), section)
        print(f"wrote the lesson into {args.write}")
    else:
        sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
