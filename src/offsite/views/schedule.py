"""``offsite schedule``: when each job runs and how long it usually takes (from the
history), on a 24-hour clock, with overlaps flagged, so nobody keeps that table by hand.

The times come from systemd itself (`systemd-analyze calendar`); overlaps are looked for
over the next 7 days, counting each run from its start to start + randomized delay +
its usual duration. Everything but occurrences() is pure.
"""

from __future__ import annotations

import json
import statistics
import time
from calendar import timegm
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from offsite import quantities
from offsite.config.model import Config, DriveTrigger, Schedule
from offsite.notify import history
from offsite.run import run

HORIZON = 7 * 86400.0
SLOTS = 48  # half hours on the clock line


ITERATIONS = 200  # elapses asked of systemd per expression; more means "runs all day"


def occurrences(expressions: Sequence[str], now: float, horizon: float = HORIZON
                ) -> dict[str, list[float]]:
    """When each OnCalendar expression elapses within horizon, per systemd."""
    unique = sorted(set(expressions))
    if not unique:
        return {}
    out = run(["systemd-analyze", "calendar", f"--iterations={ITERATIONS}", "--", *unique],
              env={"TZ": "UTC"}, check=False).stdout
    blocks = [b for b in out.split("\n\n") if b.strip()]
    found: dict[str, list[float]] = {}
    for expression, block in zip(unique, blocks, strict=False):
        times = []
        for line in block.splitlines():
            label, _, value = line.strip().partition(": ")
            if label == "Next elapse" or label.startswith("Iter. #"):
                stamp = timegm(time.strptime(value.strip(), "%a %Y-%m-%d %H:%M:%S UTC"))
                if stamp <= now + horizon:
                    times.append(float(stamp))
        found[expression] = times
    return found


def usual_duration(runs: Sequence[history.Run]) -> float | None:
    """The median duration of the last 20 successful runs (None: no history yet)."""
    took = [r.duration for r in runs if r.succeeded and r.duration is not None][:20]
    return statistics.median(took) if took else None


@dataclass
class Entry:
    job: str
    when: str  # the calendar expression, or "when drive X is plugged"
    starts: list[float]  # within the next 7 days
    spread: float  # randomized delay, seconds
    usual: float | None  # seconds
    overlaps: list[str] = field(default_factory=list)  # jobs whose runs overlap this one's


def plan(cfg: Config, starts: Mapping[str, list[float]],
         durations: Mapping[str, float | None]) -> list[Entry]:
    entries = []
    for job in cfg.jobs:
        if isinstance(job.trigger, Schedule):
            entries.append(Entry(job.name, job.trigger.calendar, starts.get(job.trigger.calendar, []),
                                 job.trigger.randomized_delay, durations.get(job.name)))
        elif isinstance(job.trigger, DriveTrigger):
            entries.append(Entry(job.name, "when " + "/".join(job.trigger.drives) + " is plugged",
                                 [], 0.0, durations.get(job.name)))
    for a in entries:
        for b in entries:
            if a is not b and _overlap(a, b):
                a.overlaps.append(b.job)
    return entries


def _windows(e: Entry) -> list[tuple[float, float]]:
    length = e.spread + (e.usual if e.usual is not None else 60.0)
    return [(t, t + length) for t in e.starts]


def _overlap(a: Entry, b: Entry) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in _windows(a) for s2, e2 in _windows(b))


def _clock(e: Entry, utc_offset: float) -> str:
    """The entry's runs on a 24-hour line, one character per half hour."""
    line = ["·"] * SLOTS
    for start, end in _windows(e):
        first = int(((start + utc_offset) % 86400) // 1800)
        count = max(1, int((end - start + 1799) // 1800))
        for i in range(min(count, SLOTS)):
            line[(first + i) % SLOTS] = "#" if not e.overlaps else "!"
    return "".join(line)


def render_text(entries: Sequence[Entry], now: float) -> str:
    offset = float(time.localtime(now).tm_gmtoff)
    ruler = "".join(f"{h:02d}  " for h in range(0, 24, 2))[:SLOTS]
    lines = [f"{'JOB':<16} {ruler}  USUALLY", f"{'':<16} " + "|   " * 12]
    for e in entries:
        usual = quantities.duration(e.usual) if e.usual is not None else "?"
        clock = _clock(e, offset) if e.starts else f"{e.when[:SLOTS]:<{SLOTS}}"
        if len(e.starts) >= ITERATIONS:  # every few minutes or more often: all day
            clock = "#" * SLOTS
        lines.append(f"{e.job[:16]:<16} {clock}  {usual}")
    lines.append("")
    for e in entries:
        if e.starts:
            first = time.strftime("%a %H:%M", time.localtime(e.starts[0]))
            many = len(e.starts) >= ITERATIONS
            every = f"{'more than ' if many else ''}{len(e.starts)} run(s) in 7 days, next {first}"
            lines.append(f"{e.job[:16]:<16} {e.when}: {every}"[:79])
        if e.overlaps:
            lines.append(f"  ! {e.job} overlaps {', '.join(sorted(set(e.overlaps)))}; they take "
                         "turns if they share data"[:79])
    lines.append("# runs (start + randomized delay + usual duration), ! overlaps, ? no "
                 "runs yet; local time"[:79])
    return "\n".join(lines) + "\n"


def collect(cfg: Config, now: float | None = None) -> list[Entry]:
    now = time.time() if now is None else now
    starts = occurrences([j.trigger.calendar for j in cfg.jobs if isinstance(j.trigger, Schedule)],
                         now)
    durations = {j.name: usual_duration(history.runs(j.name, limit=100)) for j in cfg.jobs}
    return plan(cfg, starts, durations)


def as_json(entries: Sequence[Entry]) -> str:
    return json.dumps([asdict(e) for e in entries], indent=1)
