"""The benchmark's output: a table for the terminal and the README, JSON, and a bar chart.

Every row shows medians with their min–max range and the ratio to the fastest
reference in that row, so a reader can judge a figure without trusting the
machine it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from measure import Row


@dataclass
class Target:
    """One promise of the issue, and whether this run kept it."""

    text: str
    measured: str
    met: bool | None  # None: could not be measured in this run


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    return f"{value:.1f} {unit}"


def markdown(rows: list[Row], targets: list[Target], header: list[str]) -> str:
    lines = [*header, ""]
    lines += ["| row | contender | median | min – max | × fastest reference |",
              "| --- | --- | ---: | ---: | ---: |"]
    for row in rows:
        best = row.fastest_reference()
        for i, r in enumerate(row.results):
            title = row.title if i == 0 else ""
            if r.error or not r.samples:
                lines.append(f"| {title} | {r.name} | failed | {(r.error or 'no samples')[:90]} | |")
                continue
            ratio = f"{r.median / best.median:.2f}×" if best and best.median else "–"
            lines.append(f"| {title} | {r.name} | {_fmt(r.median, row.unit)} | "
                         f"{_fmt(r.low, row.unit)} – {_fmt(r.high, row.unit)} | {ratio} |")
    notes = [f"- {row.title}: {note}" for row in rows for note in row.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    if targets:
        lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
        for t in targets:
            verdict = {True: "yes", False: "**no**", None: "not measured"}[t.met]
            lines.append(f"| {t.text} | {t.measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def as_json(rows: list[Row], targets: list[Target], facts: dict) -> str:
    return json.dumps({
        "facts": facts,
        "rows": [{
            "title": row.title, "unit": row.unit, "notes": row.notes,
            "results": [{
                "name": r.name, "reference": r.reference, "error": r.error,
                "median": r.median, "min": r.low, "max": r.high, "samples": r.samples,
                "extras": r.extras,
            } for r in row.results],
        } for row in rows],
        "targets": [t.__dict__ for t in targets],
    }, indent=2)


def chart(rows: list[Row], out: Path) -> bool:
    """A bar chart, one panel per row (medians, min–max whiskers); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [row for row in rows if any(r.samples for r in row.results)]
    if not shown:
        return False
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 2.2 * len(shown) + 0.5), squeeze=False)
    for ax, row in zip(axes[:, 0], shown):
        measured = [r for r in row.results if r.samples]
        scale = 1000 if row.unit == "s" else 1
        medians = [r.median * scale for r in measured]
        whiskers = [[(r.median - r.low) * scale for r in measured],
                    [(r.high - r.median) * scale for r in measured]]
        colours = ["tab:blue" if not r.reference else "tab:gray" for r in measured]
        ax.barh([r.name for r in measured], medians, xerr=whiskers, color=colours, capsize=3)
        ax.invert_yaxis()
        ax.set_title(row.title, fontsize=10, loc="left")
        ax.set_xlabel("ms" if row.unit == "s" else row.unit, fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
