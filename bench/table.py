"""The figures a benchmark measured, each beside its anchor measured in the same run, and
the one table `make bench` prints (bench/all.py)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

OUT = "OFFSITE_BENCH_JSON"  # bench/all.py collects every script's figures through this file


@dataclass(frozen=True)
class Figure:
    bench: str  # which script
    name: str
    value: float
    unit: str  # "s", "ms", "MiB", "bytes", "" (a count)
    anchor_name: str = ""  # what it is compared with, measured in the same run
    anchor: float | None = None
    goal: str = "-"
    ok: bool | None = None  # None: a figure without a goal

    @property
    def ratio(self) -> float | None:
        if self.anchor in (None, 0):
            return None
        return self.value / self.anchor


def _number(value: float, unit: str) -> str:
    if unit in ("", "bytes"):
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def render(figures: list[Figure]) -> str:
    header = ("bench", "figure", "value", "anchor (same run)", "ratio", "goal", "")
    rows = [header]
    for f in figures:
        anchor = (f"{f.anchor_name} {_number(f.anchor, f.unit)} {f.unit}".strip()
                  if f.anchor is not None else f.anchor_name or "-")
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        verdict = "" if f.ok is None else ("OK" if f.ok else "MISSED")
        rows.append((f.bench, f.name, f"{_number(f.value, f.unit)} {f.unit}".strip(), anchor,
                     ratio, f.goal, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 4}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"


def report(figures: list[Figure]) -> int:
    """Print this script's table, hand the figures to bench/all.py if it asked; 0 if every
    goal was met."""
    print(render(figures), end="")
    out = os.environ.get(OUT)
    if out:
        with Path(out).open("a") as f:
            for fig in figures:
                f.write(json.dumps(asdict(fig)) + "\n")
    return 0 if all(f.ok is not False for f in figures) else 1


def load(path: Path) -> list[Figure]:
    if not path.exists():
        return []
    return [Figure(**json.loads(line)) for line in path.read_text().splitlines() if line]
