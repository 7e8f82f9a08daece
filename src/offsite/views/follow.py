"""``offsite run JOB``: start a job's unit through systemd and follow it to the end.

The journal is followed from before the start, so no line is missed; lines of this run
(by invocation id) are shown, progress lines as one updating line on a terminal, and the
run ends with systemd's own verdict on the start job.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from offsite import unitnames
from offsite.config.model import Config, DriveTrigger, Job
from offsite.errors import Fatal
from offsite.run import stream
from offsite.targets import devices
from offsite.units import systemd


@dataclass(frozen=True)
class Outcome:
    result: str  # systemd's JOB_RESULT: done, failed, canceled, timeout, dependency, ...
    lines: int


def unit_for(cfg: Config, job: Job, drive: str | None) -> str | None:
    """The unit that runs job; for a drive job the plugged drive's (None: none plugged)."""
    if not isinstance(job.trigger, DriveTrigger):
        return unitnames.job_unit(job.name)
    names = [drive] if drive else list(job.trigger.drives)
    for name in names:
        if name not in job.trigger.drives:
            raise Fatal(f"job {job.name} does not copy to drive {name!r}",
                        "its drives: " + ", ".join(job.trigger.drives))
        if Path(devices.drive_device(cfg.drive(name))).exists():
            return unitnames.job_unit(job.name, name)
    return None


def render_entry(entry: dict[str, str]) -> tuple[str, bool] | None:
    """(text, is_progress) for a journal entry worth showing, else None."""
    message = entry.get("MESSAGE")
    if not isinstance(message, str):
        return None
    if "PROGRESS_BYTES" in entry:
        return message.removeprefix("copy: "), True
    return message, False


def follow(lines: Iterable[str], unit: str, out: TextIO, tty: bool, job_id: str | None = None
           ) -> Outcome:
    """Show the lines of one run of unit until systemd reports how its start job (job_id,
    if known) ended."""
    shown = 0
    progress_open = False
    ours = job_id is None  # lines count once systemd says it is starting our job
    for raw in lines:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if entry.get("JOB_TYPE") == "start" and "JOB_RESULT" in entry:
            if job_id is not None and entry.get("JOB_ID") != job_id:
                continue  # an earlier run's end
            if progress_open:
                out.write("\n")
            return Outcome(entry["JOB_RESULT"], shown)
        if ours and entry.get("JOB_TYPE") == "stop" and "JOB_RESULT" in entry:
            # Stopped while starting (its drive pulled, systemctl stop): the start job
            # then logs no result of its own.
            if progress_open:
                out.write("\n")
            return Outcome("stopped", shown)
        if entry.get("_PID") == "1":
            ours = ours or entry.get("JOB_ID") == job_id
            continue  # systemd's own lines about the unit
        if not ours:
            continue  # the end of an earlier run
        shown_entry = render_entry(entry)
        if shown_entry is None:
            continue
        text, is_progress = shown_entry
        if is_progress and tty:
            out.write("\r\033[K" + text)
            progress_open = True
        else:
            if progress_open:
                out.write("\n")
                progress_open = False
            out.write(text + "\n")
        out.flush()
        shown += 1
    raise Fatal(f"the journal ended before {unit} finished")


def run_job(cfg: Config, job: Job, drive: str | None, out: TextIO = sys.stdout) -> int:
    unit = unit_for(cfg, job, drive)
    if unit is None:
        names = ", ".join(job.trigger.drives) if isinstance(job.trigger, DriveTrigger) else ""
        out.write(f"skipped: no drive of job {job.name} is plugged in ({names}); nothing to do\n")
        return 0
    # From a moment before the start: nothing is missed, whenever journalctl gets going.
    since = f"--since=@{time.time() - 0.2:.3f}"
    argv = ["journalctl", "--follow", "--output=json", since, f"--unit={unit}"]
    with stream(argv) as lines:
        [job_id] = systemd.start([unit])
        out.write(f"started {unit}\n")
        outcome = follow(lines, unit, out, out.isatty(), job_id)
    verdict = {"done": "succeeded"}.get(outcome.result, f"ended: {outcome.result}")
    out.write(f"{unit} {verdict}\n")
    return 0 if outcome.result == "done" else 1

