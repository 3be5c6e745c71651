"""`make bench`: minicontainer side by side with runc, podman and the floors, in one run.

What a student can learn here: how long each part of starting a container
really takes, measured fairly. Rows (see the README's benchmark section):

1. warm start, `--network none`: minicontainer, `runc run`, podman, and the floor
   `unshare … chroot ROOTFS /bin/true`
2. warm start with a bridge network: minicontainer `--network bridge`, podman's default
3. cold start of a ~275 MB Debian-based archive into an empty store: minicontainer,
   `podman load` + `podman run`, GNU tar extracting the same layers; and warm `load`
4. scale: 50 detached containers started and removed; disk used per container
5. memory: what stays resident beside one detached container (monitor vs conmon)
0. where a warm start's time goes: interpreter start-up, imports, the CLI itself

Usage: python bench/run.py [--runs N] [--rows 0,1,2,3,4,5]
Results: build/bench/results.md, results.json, bench.png, profile.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import debian_image
from images import BuiltImage, busybox_image, image_id_of, unpack_rootfs
from measure import (BenchError, Contender, Result, Row, command, disk_bytes, find_process,
                     interleave, keepers, memory_kb, process_name)
from references import (MiniContainer, Podman, Runc, ensure_references, netavark_chains,
                        remove_netavark_chains, remove_tree, tar_floor, unmount_under,
                        unshare_floor)
from report import Target, as_json, chart, markdown

PROJECT = Path(__file__).resolve().parent.parent
SCALE = 50


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Setup:
    """Everything the rows share: where to write, the images, how many runs."""

    out: Path  # build/bench: results and cached images
    work: Path  # temporary stores and storages, removed at the end
    small: BuiltImage  # a busybox image (rows 0, 1, 2, 4, 5)
    small_rootfs: Path  # the same image unpacked, for runc and the floor
    debian: BuiltImage  # the ~275 MB image (row 3)
    debian_layers: list[Path]
    runs: int
    warmup: int
    scale_runs: int
    have_runc: bool
    have_podman: bool


def tools_for(s: Setup, row: str) -> tuple[MiniContainer, Podman | None]:
    """A fresh minicontainer store and podman storage (when podman exists) for one row."""
    return (MiniContainer(s.work / f"mc-{row}"),
            Podman(s.work / f"podman-{row}") if s.have_podman else None)


def reset(*tools: MiniContainer | Podman | Runc | None) -> None:
    """Remove what the tools made: containers, images, mounts, their whole state directory."""
    for tool in tools:
        if tool is not None:
            tool.reset()


def failing(message: str) -> Callable[[], None]:
    """A contender body for a tool whose set-up already failed: the table shows why."""
    def run() -> None:
        raise BenchError(message)
    return run


def load_into(tool: MiniContainer | Podman, archive: Path) -> str | None:
    """Load `archive` untimed; None when it worked, else the error line."""
    args = ("load", str(archive)) if isinstance(tool, MiniContainer) else ("load", "-q", "-i", str(archive))
    try:
        done = tool.call(*args)
    except subprocess.TimeoutExpired:
        return f"load of {archive.name} timed out"
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines() or [""]
    return f"load exited {done.returncode}: {lines[-1][:160]}"


def mc_command(mc: MiniContainer, problem: str | None, *args: str) -> Callable[[], None]:
    return failing(problem) if problem else command(mc.argv(*args))


def podman_command(pm: Podman | None, problem: str | None, *args: str) -> Callable[[], None]:
    if pm is None:
        return failing("podman not available")
    return failing(problem) if problem else command(pm.argv(*args))


# ---------------------------------------------------------------- rows 0, 1, 2


def start_cost_row(s: Setup) -> list[Row]:
    """Row 0: the fixed costs under every `minicontainer run`, from the same venv."""
    py = sys.executable
    mc = MiniContainer(s.work / "mc-profile")
    contenders = [
        Contender("python -I -S -c pass (no site, no .pth files)",
                  command([py, "-I", "-S", "-c", "pass"])),
        Contender("python -c pass (interpreter start-up)", command([py, "-c", "pass"])),
        Contender("python -c 'import click'", command([py, "-c", "import click"])),
        Contender("python -c 'import minicontainer.cli'",
                  command([py, "-c", "import minicontainer.cli"])),
        Contender("minicontainer --version (CLI, no work)", command(mc.argv("--version"))),
    ]
    log("row 0: start-up costs")
    results = interleave(contenders, s.runs, s.warmup, log)
    remove_tree(mc.root)
    return [Row("0. fixed costs of a Python CLI", "s", results,
                ["ratios are to the bare interpreter; site runs the venv's .pth files, "
                 "among them an editable install's import finder"])]


def warm_start_rows(s: Setup) -> list[Row]:
    """Rows 1 and 2 in one interleaved loop, so that bridge − none is measured side by side."""
    mc, pm = tools_for(s, "warm")
    runc = Runc(s.work / "runc-bundle", s.work / "runc-state")
    ref = s.small.short_id
    mc_problem = load_into(mc, s.small.archive)
    pm_problem = load_into(pm, s.small.archive) if pm else None
    if s.have_runc:
        runc.make_bundle(s.small_rootfs)
        runc_run = lambda: command(runc.run_argv())()  # noqa: E731 - a fresh id each run
    else:
        runc_run = failing("runc not available")
    contenders = [
        Contender("minicontainer run --network none",
                  mc_command(mc, mc_problem, "run", "--rm", "--network", "none", ref, "true"),
                  reference=False),
        Contender("runc run", runc_run),
        Contender("podman run --network none",
                  podman_command(pm, pm_problem, "run", "--rm", "--network", "none", ref, "true")),
        Contender("unshare + chroot (floor)", command(unshare_floor(s.small_rootfs))),
        Contender("minicontainer run --network bridge",
                  mc_command(mc, mc_problem, "run", "--rm", "--network", "bridge", ref, "true"),
                  reference=False),
        Contender("podman run (default network)",
                  podman_command(pm, pm_problem, "run", "--rm", ref, "true")),
    ]
    log("rows 1 and 2: warm start")
    try:
        results = interleave(contenders, s.runs, s.warmup, log)
    finally:
        reset(mc, pm, runc)
    row1 = Row("1. warm start, no network", "s", results[:4])
    row2 = Row("2. warm start, bridge network", "s", results[4:])
    for bridge, none, who in ((results[4], results[0], "minicontainer"),
                              (results[5], results[2], "podman")):
        if bridge.samples and none.samples:
            row2.notes.append(f"{who} bridge − none: {(bridge.median - none.median) * 1000:.0f} ms "
                              "(medians, same run)")
    return [row1, row2]


# ---------------------------------------------------------------- row 3


def cold_start_rows(s: Setup) -> list[Row]:
    """Row 3: the first run of the Debian archive into empty storage, and a warm `load`."""
    mc, pm = tools_for(s, "cold")
    floor_dir = s.work / "tar-floor"
    archive = str(s.debian.archive)
    ref = s.debian.short_id

    def podman_cold() -> None:
        command(pm.argv("load", "-q", "-i", archive))()
        command(pm.argv("run", "--rm", "--network", "none", ref, "true"))()

    contenders = [
        Contender("minicontainer run ARCHIVE (empty store)",
                  command(mc.argv("run", "--rm", "--network", "none", archive, "true")),
                  prepare=mc.reset, cleanup=mc.reset, reference=False),
        Contender("podman load + podman run (empty storage)",
                  podman_cold if pm else failing("podman not available"),
                  prepare=pm.reset if pm else (lambda: None),
                  cleanup=pm.reset if pm else (lambda: None)),
        Contender("GNU tar -xzf of the same layers (floor)",
                  lambda: tar_floor(s.debian_layers, floor_dir),
                  prepare=lambda: remove_tree(floor_dir), cleanup=lambda: remove_tree(floor_dir)),
    ]
    log(f"row 3: cold start of {s.debian.archive.name}")
    cold = interleave(contenders, s.runs, min(s.warmup, 1), log)

    mc_problem = load_into(mc, s.debian.archive)
    pm_problem = load_into(pm, s.debian.archive) if pm else None
    warm = [
        Contender("minicontainer load (image already stored)",
                  mc_command(mc, mc_problem, "load", archive), reference=False),
        Contender("podman load (image already stored)",
                  podman_command(pm, pm_problem, "load", "-q", "-i", archive)),
    ]
    log("row 3b: warm load")
    try:
        warm_results = interleave(warm, s.runs, s.warmup, log)
    finally:
        reset(mc, pm)
    size = sum(layer.stat().st_size for layer in s.debian_layers) / 1e6
    row = Row("3. cold start, Debian archive", "s", cold,
              [f"{len(s.debian_layers)} gzipped layers, {size:.0f} MB compressed; the archive is "
               "in the page cache, the stores are empty"])
    return [row, Row("3b. warm load, Debian archive", "s", warm_results)]


# ---------------------------------------------------------------- row 4


def scale_row(s: Setup) -> list[Row]:
    """Row 4: 50 detached containers of one image, started one after another, then removed."""
    mc, pm = tools_for(s, "scale")
    ref = s.small.short_id
    mc_problem = load_into(mc, s.small.archive)
    pm_problem = load_into(pm, s.small.archive) if pm else None
    rounds = iter(range(10**6))

    def batch(tool: MiniContainer | Podman, run_args: list[str], rm_args: list[str],
              storage: Path) -> dict[str, float]:
        names = [f"bench{next(rounds)}" for _ in range(SCALE)]
        before = disk_bytes(storage)
        start = time.perf_counter()
        try:
            for name in names:
                command(tool.argv("run", "-d", "--name", name, *run_args, ref, "sleep", "1000"))()
            started = time.perf_counter()
            disk = disk_bytes(storage) - before
        finally:
            removing = time.perf_counter()
            command(tool.argv("rm", *rm_args, *names))()
        done = time.perf_counter()
        return {"start_s": started - start, "rm_s": done - removing,
                "disk_kb_per_container": disk / SCALE / 1024}

    contenders = [
        Contender(f"minicontainer: {SCALE}× run -d, then rm -f",
                  failing(mc_problem) if mc_problem else
                  lambda: batch(mc, ["--network", "none"], ["-f"], mc.root), reference=False),
        Contender(f"podman: {SCALE}× run -d, then rm -f",
                  failing(pm_problem or "podman not available") if pm_problem or pm is None else
                  lambda: batch(pm, ["--network", "none"], ["-f", "-t", "0"], pm.base / "root")),
    ]
    log(f"row 4: {SCALE} detached containers")
    try:
        results = interleave(contenders, s.scale_runs, 0, log)
    finally:
        reset(mc, pm)
    row = Row(f"4. {SCALE} detached containers, start + remove", "s", results)
    for r in results:
        if r.samples:
            row.notes.append(
                f"{r.name.split(':')[0]}: start {r.extra('start_s'):.2f} s, rm {r.extra('rm_s'):.2f} s, "
                f"disk {r.extra('disk_kb_per_container'):.0f} KiB per container (du -sx of the "
                "whole store, after − before)")
    return [row]


# ---------------------------------------------------------------- row 5


def memory_rows(s: Setup, samples: int = 3) -> list[Row]:
    """Row 5: resident memory of what a runtime leaves running beside one detached container."""
    mc, pm = tools_for(s, "memory")
    ref = s.small.short_id
    tools: list[tuple[str, MiniContainer | Podman, list[str], str | None]] = [
        ("minicontainer monitor", mc, ["-f"], load_into(mc, s.small.archive))]
    if pm:
        tools.append(("podman's conmon", pm, ["-f", "-t", "0"], load_into(pm, s.small.archive)))
    rss = {name: Result(name, name != "minicontainer monitor") for name, *_ in tools}
    pss = {name: Result(name, name != "minicontainer monitor") for name, *_ in tools}
    seen: dict[str, str] = {}
    log("row 5: monitor memory")
    try:
        for i in range(samples):
            for name, tool, rm_args, problem in tools:
                if problem or rss[name].error:
                    rss[name].error = pss[name].error = rss[name].error or problem
                    continue
                marker = str(900000 + i)
                try:
                    command(tool.argv("run", "-d", "--name", f"mem{i}", "--network", "none",
                                      ref, "sleep", marker))()
                    pid = find_process(["sleep", marker])
                    time.sleep(0.5)  # let the monitor settle after its start-up work
                    kept = keepers(pid, os.getpid())
                    sizes = [memory_kb(p) for p in kept]
                    programs = [Path(process_name(p).split()[0]).name for p in kept]
                    seen[name] = ", ".join(programs) or "nothing"
                    rss[name].samples.append(sum(r for r, _ in sizes) / 1024)
                    pss[name].samples.append(sum(p for _, p in sizes) / 1024)
                except (BenchError, OSError) as e:
                    rss[name].error = pss[name].error = str(e)
                finally:
                    tool.call("rm", *rm_args, f"mem{i}")
    finally:
        reset(mc, pm)
    notes = [f"{name}: {what}" for name, what in seen.items()]
    return [Row("5. memory beside a detached container (RSS)", "MB", list(rss.values()), notes),
            Row("5b. memory beside a detached container (PSS)", "MB", list(pss.values()))]


# ---------------------------------------------------------------- profile


def profile_command(s: Setup, label: str, archive: Path, args: list[str]) -> tuple[dict, str]:
    """`-X importtime` and cProfile of one warm command (image already stored): facts, text."""
    mc = MiniContainer(s.work / "mc-profile")
    problem = load_into(mc, archive)
    if problem:
        remove_tree(mc.root)
        return {"error": problem}, f"{label}: {problem}\n"
    cli = ["-m", "minicontainer", "--root", str(mc.root), *args]
    stats_file = s.out / f"{label.replace(' ', '-')}.prof"
    try:
        timed = subprocess.run([sys.executable, "-X", "importtime", *cli],
                               capture_output=True, text=True)
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats_file), *cli],
                       capture_output=True)
    finally:
        remove_tree(mc.root)
    imports = _top_level_imports(timed.stderr)
    heaviest = _heaviest_imports(timed.stderr)
    modules = {name for name, _ in heaviest}
    facts = {
        "exit_status": timed.returncode,
        "imports_total_ms": round(sum(ms for _, ms in imports), 1),
        "modules_imported": len(modules),
        "pyroute2_imported": any(m.startswith("pyroute2") for m in modules),
        "zstandard_imported": any(m.startswith("zstandard") for m in modules),
        "top_imports_ms": imports[:12],
    }
    text = (f"== {label}: minicontainer {' '.join(args)}\n"
            f"{json.dumps({k: v for k, v in facts.items() if k != 'top_imports_ms'})}\n\n"
            "python -X importtime: top-level imports, cumulative ms\n"
            + "".join(f"  {ms:8.1f}  {name}\n" for name, ms in imports[:25])
            + "\nheaviest single modules (self ms, without their own imports)\n"
            + "".join(f"  {ms:8.1f}  {name}\n" for name, ms in heaviest[:25])
            + "\ncProfile, by cumulative time\n" + _cprofile_summary(stats_file))
    return facts, text


def profile_start_path(s: Setup, wanted: set[str]) -> dict:
    """Profile a warm `run --rm --network none … true` (and a warm `load` of the Debian image)."""
    facts, text = profile_command(s, "warm start", s.small.archive,
                                  ["run", "--rm", "--network", "none", s.small.short_id, "true"])
    if "3" in wanted:
        load_facts, load_text = profile_command(s, "warm load", s.debian.archive,
                                                ["load", str(s.debian.archive)])
        facts["warm_load"] = load_facts
        text += "\n\n" + load_text
    (s.out / "profile.txt").write_text(text)
    return facts


def _top_level_imports(stderr: str) -> list[tuple[str, float]]:
    """Parse `-X importtime`: the imports made directly by the program, cumulative ms each."""
    top = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # nested imports are indented by two spaces per level
            top.append((name.strip(), int(cumulative) / 1000))
    return sorted(top, key=lambda item: -item[1])


def _heaviest_imports(stderr: str) -> list[tuple[str, float]]:
    """Parse `-X importtime`: every module by its own (self) time, in ms."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            own, _, name = line[len("import time:"):].split("|")
            found.append((name.strip(), int(own) / 1000))
    return sorted(found, key=lambda item: -item[1])


def _cprofile_summary(stats_file: Path) -> str:
    import io
    import pstats

    if not stats_file.exists():
        return "(no profile written)\n"
    buffer = io.StringIO()
    pstats.Stats(str(stats_file), stream=buffer).sort_stats("cumulative").print_stats(30)
    return buffer.getvalue()


# ---------------------------------------------------------------- the whole run


def small_image(out: Path) -> tuple[BuiltImage, Path]:
    """The demo image (`make image`) when it has /bin/true and /bin/sleep, else a busybox image."""
    demo = PROJECT / "build" / "demo.tar"
    rootfs = out / "small-rootfs"
    if demo.exists():
        unpack_rootfs(demo, rootfs)
        if all(os.path.lexists(rootfs / "bin" / tool) for tool in ("true", "sleep")):
            return BuiltImage(demo, image_id_of(demo)), rootfs
        log("build/demo.tar lacks /bin/true or /bin/sleep: using a plain busybox image")
    try:
        from minicontainer.demo import find_busybox

        busybox = find_busybox(PROJECT / "build")
    except Exception:  # noqa: BLE001 - the demo module may be absent or fail: use PATH
        found = shutil.which("busybox")
        if not found:
            raise SystemExit("bench: no static busybox (apt-get install busybox-static)")
        busybox = Path(found)
    image = busybox_image(out / "busybox.tar", busybox)
    unpack_rootfs(image.archive, rootfs)
    return image, rootfs


def host_snapshot() -> dict[str, set[str]]:
    """Mounts, network links and processes: compared before and after to prove a clean exit."""
    mounts = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    links = {p.name for p in Path("/sys/class/net").iterdir()}
    procs = {f"{p.name} {process_name(int(p.name))}" for p in Path("/proc").iterdir()
             if p.name.isdigit()}
    return {"mounts": mounts, "links": links, "processes": procs}


def ours(kind: str, item: str, out: Path) -> bool:
    """Could the benchmark have made this? (Others may use the machine at the same time.)"""
    if kind == "links":
        return item.startswith(("veth", "podman", "cni", "mc"))
    if kind == "processes":
        return str(out) in item or " conmon " in f" {item} " or "sleep 9000" in item
    return item.startswith(str(out)) or item == "/run/netns"


def tidy_podman_traces(before: dict[str, set[str]], chains_before: set) -> None:
    """Undo what podman keeps after its last container: netavark's chains, the /run/netns mount."""
    remove_netavark_chains(netavark_chains() - chains_before)
    netns = Path("/run/netns")
    if str(netns) not in before["mounts"] and netns.is_dir() and not any(netns.iterdir()):
        unmount_under(netns)


def leftovers(before: dict[str, set[str]], out: Path) -> list[str]:
    """What the benchmark may have left on the host: new mounts, links, processes of its kind."""
    after = host_snapshot()
    found = []
    for kind in ("mounts", "links", "processes"):
        new = sorted(item for item in after[kind] - before[kind] if ours(kind, item, out))
        if new:
            found.append(f"{kind}: {new[:5]}")
    return found


def targets(rows: list[Row], profile: dict) -> list[Target]:
    by_title = {row.title.split(".")[0]: row for row in rows}

    def median(row_key: str, name: str) -> float | None:
        row = by_title.get(row_key)
        r = row.result(name) if row else None
        return r.median if r else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def target(text: str, value: float | None, fmt: str, ok: Callable[[float], bool]) -> Target:
        return Target(text, fmt.format(value) if value is not None else "–",
                      ok(value) if value is not None else None)

    mc_warm = median("1", "minicontainer run --network none")
    mc_cold = median("3", "minicontainer run ARCHIVE (empty store)")
    scale_mc = median("4", f"minicontainer: {SCALE}× run -d, then rm -f")
    found = [
        target("warm start ≤ 1.5× runc", ratio(mc_warm, median("1", "runc run")), "{:.2f}× runc",
               lambda v: v <= 1.5),
        target("warm start ≥ 5× faster than podman",
               ratio(median("1", "podman run --network none"), mc_warm), "{:.1f}× faster",
               lambda v: v >= 5),
        target("cold start ≤ podman load + run",
               ratio(mc_cold, median("3", "podman load + podman run (empty storage)")),
               "{:.2f}× podman", lambda v: v <= 1),
        target("cold start ≤ 1.5× tar floor",
               ratio(mc_cold, median("3", "GNU tar -xzf of the same layers (floor)")),
               "{:.2f}× tar", lambda v: v <= 1.5),
        target("warm load < 0.1 s", median("3b", "minicontainer load (image already stored)"),
               "{:.3f} s", lambda v: v < 0.1),
        target("monitor ≤ 15 MB resident", median("5", "minicontainer monitor"), "{:.1f} MB RSS",
               lambda v: v <= 15),
        target(f"{SCALE} containers ≤ 2× podman's time",
               ratio(scale_mc, median("4", f"podman: {SCALE}× run -d, then rm -f")),
               "{:.2f}× podman", lambda v: v <= 2),
    ]
    if "pyroute2_imported" in profile:
        found.append(Target("`--network none` does not import pyroute2",
                            "imported" if profile["pyroute2_imported"] else "not imported",
                            not profile["pyroute2_imported"]))
    return found


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "absent"
    return out.strip().splitlines()[0] if out.strip() else "absent"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--scale-runs", type=int, default=None,
                        help=f"rounds of the {SCALE}-container row (default: --runs)")
    parser.add_argument("--rows", default="0,1,2,3,4,5", help="which rows, e.g. 1,3")
    parser.add_argument("--out", type=Path, default=PROJECT / "build" / "bench")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (containers need namespaces and mounts)")
    wanted = set(args.rows.split(","))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    notes = ensure_references(log)
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        # Without cached bytecode every start compiles the CLI's modules again, which
        # no user's machine does; measure what users get.
        notes.append("PYTHONDONTWRITEBYTECODE was set: unset for the benchmark")
    before, chains_before = host_snapshot(), netavark_chains()

    small, small_rootfs = small_image(out)
    debian, layers = debian_image.build(out) if "3" in wanted else (small, [])
    setup = Setup(out, out / "work", small, small_rootfs, debian, layers, args.runs,
                  args.warmup, args.scale_runs or args.runs,
                  shutil.which("runc") is not None, shutil.which("podman") is not None)
    remove_tree(setup.work)
    setup.work.mkdir()

    rows: list[Row] = []
    profile: dict = {}
    try:
        for keys, make in (({"0"}, start_cost_row), ({"1", "2"}, warm_start_rows),
                           ({"3"}, cold_start_rows), ({"4"}, scale_row), ({"5"}, memory_rows)):
            if wanted & keys:
                rows += make(setup)
        if wanted & {"0", "1"}:
            profile = profile_start_path(setup, wanted)
    finally:
        remove_tree(setup.work)
        tidy_podman_traces(before, chains_before)
    notes += [f"left behind on the host: {item}" for item in leftovers(before, out)]

    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kernel": platform.release(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "runs": args.runs, "warmup": args.warmup,
        "runc": tool_version(["runc", "--version"]), "podman": tool_version(["podman", "--version"]),
        "small_image": setup.small.archive.name, "debian_image": setup.debian.archive.name,
        "notes": notes, "profile": profile,
    }
    header = [f"minicontainer benchmark, {facts['date']}: kernel {facts['kernel']}, "
              f"Python {facts['python']}, {facts['cpus']} CPUs, {facts['runc']}, {facts['podman']}; "
              f"{args.runs} runs each, interleaved after {args.warmup} warm-up runs.",
              *(f"- {n}" for n in notes)]
    found_targets = targets(rows, profile)
    table = markdown(rows, found_targets, header)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(as_json(rows, found_targets, facts))
    print(table)
    if profile:
        print(f"profile of a warm start: {out / 'profile.txt'}")
    if chart(rows, out / "bench.png"):
        print(f"chart: {out / 'bench.png'}")
    else:
        print("no chart: matplotlib is not installed (pip install matplotlib)")


if __name__ == "__main__":
    main()
