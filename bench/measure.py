"""How the benchmark measures: interleaved runs, medians, and what a process keeps resident.

A laptop or a shared VM is noisy: a cron job, a page-cache flush or CPU
frequency scaling can slow down a whole minute. Running the contenders
interleaved (A B C A B C …) spreads that noise over all of them instead of
punishing whichever ran at the wrong moment, and the median with its min–max
says more than a mean that one slow run can drag.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class BenchError(Exception):
    """One contender failed; the others go on and the table says why it is missing."""


@dataclass
class Contender:
    """One way of doing the row's job. `run` is timed; `prepare` and `cleanup` are not."""

    name: str
    run: Callable[[], dict[str, float] | None]
    prepare: Callable[[], None] = lambda: None
    cleanup: Callable[[], None] = lambda: None
    reference: bool = True  # False for minicontainer itself: ratios compare to references


@dataclass
class Result:
    """The samples of one contender in one row (seconds, or MB for memory rows)."""

    name: str
    reference: bool = True
    samples: list[float] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def low(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def high(self) -> float | None:
        return max(self.samples) if self.samples else None

    def extra(self, key: str) -> float | None:
        values = self.extras.get(key)
        return statistics.median(values) if values else None


@dataclass
class Row:
    """One line of the issue's table: a title, its results and what to say about them."""

    title: str
    unit: str
    results: list[Result]
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> Result | None:
        return next((r for r in self.results if r.name == name and r.samples), None)

    def fastest_reference(self) -> Result | None:
        measured = [r for r in self.results if r.reference and r.samples]
        return min(measured, key=lambda r: r.median) if measured else None


def command(argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 600) -> Callable[[], None]:
    """A contender body that runs `argv` and fails with its stderr when it exits non-zero."""
    def run() -> None:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, timeout=timeout)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise BenchError(f"{Path(argv[0]).name} exited {done.returncode}: {tail[0][:160]}")
    return run


def interleave(contenders: list[Contender], runs: int, warmup: int,
               log: Callable[[str], None]) -> list[Result]:
    """Run every contender `warmup` times untimed, then `runs` rounds of A B C …, timed.

    A contender that fails is dropped from later rounds (its error is kept);
    the others go on, so one broken tool never loses the whole table.
    """
    results = {c.name: Result(c.name, c.reference) for c in contenders}
    for round_no in range(-warmup, runs):
        for c in contenders:
            result = results[c.name]
            if result.error:
                continue
            try:
                c.prepare()
                start = time.perf_counter()
                extras = c.run()
                elapsed = time.perf_counter() - start
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                result.error = str(e)
                log(f"  {c.name}: FAILED: {e}")
                _quietly(c.cleanup)
                continue
            _quietly(c.cleanup)
            if round_no >= 0:  # negative rounds are the warm-up
                result.samples.append(elapsed)
                for key, value in (extras or {}).items():
                    result.extras.setdefault(key, []).append(value)
        log(f"  round {round_no + 1}/{runs}" if round_no >= 0 else "  warm-up")
    return list(results.values())


def _quietly(step: Callable[[], None]) -> None:
    try:
        step()
    except (BenchError, OSError, subprocess.SubprocessError):
        pass


# ---------------------------------------------------------------- processes and memory


def find_process(argv: list[str], timeout: float = 15) -> int:
    """The pid of the process whose command line is exactly `argv` (a container's PID 1)."""
    wanted = ("\0".join(argv) + "\0").encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if (proc / "cmdline").read_bytes() == wanted:
                        return int(proc.name)
                except OSError:
                    continue
        time.sleep(0.05)
    raise BenchError(f"no process {' '.join(argv)!r} appeared")


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def ancestors(pid: int) -> list[int]:
    """pid's parent, grandparent … up to (not including) pid 1."""
    chain = []
    pid = parent_of(pid)
    while pid > 1:
        chain.append(pid)
        pid = parent_of(pid)
    return chain


def keepers(container_pid: int, own: int) -> list[int]:
    """What a runtime keeps running above a detached container: its monitor, conmon, shims.

    These are the container's ancestors that are not ours (the benchmark's
    own ancestors, or init that adopts orphans).
    """
    ours = {own, *ancestors(own)}
    return [p for p in ancestors(container_pid) if p not in ours]


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) in kB: resident pages, and resident pages shared fairly among their users.

    RSS counts a shared library page in full in every process using it; PSS
    (from smaps_rollup, proc(5)) divides it by the number of users, which is
    the honest figure for "what does one more container cost".
    """
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80].strip()
    except OSError:
        return "?"


def disk_bytes(path: Path) -> int:
    """`du -sx`: bytes used under `path`, not descending into the containers' overlay mounts."""
    out = subprocess.run(["du", "-sx", "--block-size=1", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])
