"""``offsite status``: each job's last result, when, how long, next run; each drive's last
copy; the LED. Failures first. collect() asks systemd and reads the history; render() is
pure and fits 80 columns."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from offsite import quantities, state, unitnames
from offsite.config.model import Config, DriveTrigger, Schedule
from offsite.notify import history
from offsite.units import systemd
from offsite.views import drives
from offsite.views.drives import TargetRow

LED_STATE = state.RUN_DIR / "led.json"
LED_WORDS = {"failed": "red (a job failed)", "working-drive": "blue (copying to a drive)",
             "working": "yellow (a job runs)", "done": "green (safe to remove the drive)",
             "off": "off"}


@dataclass(frozen=True)
class JobRow:
    name: str
    kind: str
    trigger: str
    running: bool
    result: str | None  # of the last finished run
    detail: str | None
    finished: float | None
    duration: float | None
    next_run: float | None
    failures: int  # in a row, up to now


@dataclass(frozen=True)
class Status:
    jobs: list[JobRow]
    drives: list[drives.DriveRow]
    targets: list[TargetRow]
    led: str | None
    led_why: str | None
    agent: str
    led_failed: bool = False  # a failure shown beside the work (a red flash, or LED 2)


def _next_elapse(timer: str) -> float | None:
    return systemd.timestamp(systemd.properties(timer, "Timer").get("NextElapseUSecRealtime"))


def collect(cfg: Config, now: float | None = None) -> Status:
    now = time.time() if now is None else now
    timers = {j.name: unitnames.timer_unit(j.name) for j in cfg.jobs if isinstance(j.trigger, Schedule)}
    next_runs = {t: _next_elapse(t) for t in timers.values()}
    units = {j.name: ([unitnames.job_unit(j.name, d) for d in j.trigger.drives]
                      if isinstance(j.trigger, DriveTrigger) else [unitnames.job_unit(j.name)])
             for j in cfg.jobs}
    states = systemd.active_states([u for us in units.values() for u in us] +
                                   [unitnames.AGENT_UNIT])
    active = {u for u, s in states.items() if s in ("active", "activating", "deactivating")}
    rows = []
    for job in cfg.jobs:
        runs = [r for r in history.runs(job.name, limit=50) if r.result is not None]
        last = runs[0] if runs else None
        if isinstance(job.trigger, Schedule):
            trigger = job.trigger.calendar
        elif isinstance(job.trigger, DriveTrigger):
            trigger = "plug " + "/".join(job.trigger.drives)
        else:
            trigger = "by hand"
        rows.append(JobRow(job.name, job.kind.value, trigger, any(u in active for u in units[job.name]),
                           last.result if last else None, last.detail if last else None,
                           last.finished if last else None, last.duration if last else None,
                           next_runs.get(timers.get(job.name, "")),
                           history.streak(job.name).failures))
    rows.sort(key=lambda r: (r.result != "failed", r.name))
    led = state.read(LED_STATE)
    agent = states[unitnames.AGENT_UNIT]
    return Status(rows, drives.rows(cfg, drives.load_records(cfg), now),
                  drives.target_rows(cfg, drives.load_target_records(cfg), now),
                  led.get("state"), led.get("why"), agent or "unknown", bool(led.get("failed")))


def _until(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    return "now" if t <= now else f"in {quantities.duration(t - now)}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def render_text(s: Status, now: float) -> str:
    lines = []
    failed = [j.name for j in s.jobs if j.result == "failed"]
    headline = f"{len(failed)} job(s) FAILED: {', '.join(failed)}" if failed else "All jobs OK"
    led = LED_WORDS.get(s.led or "", "unknown (the agent has not run)")
    if s.led_failed and s.led != "failed":
        led = led.split(" (")[0] + " + red (a job failed)"
    lines += [_short(headline, 79), f"LED: {_short(led, 40)}   agent: {s.agent}", ""]
    header = ("JOB", "LAST RESULT", "WHEN", "TOOK", "NEXT")
    table = [header]
    for j in s.jobs:
        result = "running" if j.running else (j.result or "never run")
        if j.result == "failed":
            result = "FAILED" + (f" x{j.failures}" if j.failures > 1 else "")
        next_run = _until(j.next_run, now) if j.next_run else j.trigger
        took = quantities.duration(j.duration) if j.duration is not None else "-"
        table.append((_short(j.name, 18), result, quantities.age(j.finished, now), took,
                      _short(next_run, 22)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in table]
    for j in s.jobs:
        if j.result == "failed" and j.detail:
            lines.append(_short(f"  {j.name}: {j.detail}", 79))
    if s.drives:
        lines += ["", drives.table(s.drives, now).rstrip()]
    if s.targets:
        lines += ["", *(_short(line, 79) for line in
                        drives.target_table(s.targets, now).rstrip().splitlines())]
    return "\n".join(lines) + "\n"


def as_json(s: Status) -> str:
    data: dict[str, Any] = asdict(s)
    return json.dumps(data, indent=1)
