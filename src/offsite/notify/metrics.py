"""Prometheus metrics in node_exporter's textfile-collector format: per job the last
success time, last duration, last result and bytes; per drive the last copy; the age
limits the configuration sets (so alert rules follow it); and, in a file of its own that
only the agent writes, the agent's heartbeat. Written atomically (a temporary file, then
rename), so the collector never reads half a file.

The job's label is `offsite_job`, not `job`: Prometheus gives every scraped series the
scrape's own `job` label, and would rename ours to `exported_job`.
Alert rules for these: packaging/prometheus/offsite-alerts.yml."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from offsite import durable, state
from offsite.config.model import Config
from offsite.notify import history

log = logging.getLogger(__name__)

TEXTFILE_DIR = Path("/var/lib/prometheus/node-exporter")  # Debian's node_exporter reads here
FILE_NAME = "offsite.prom"
AGENT_FILE_NAME = "offsite-agent.prom"  # the heartbeat: only the agent writes it
HEARTBEAT_EVERY = 60.0  # seconds
RESULT_CODES = {"success": 0, "warning": 1, "skipped": 2, "interrupted": 3, "failed": 4}

_HELP = {
    "offsite_job_last_success_timestamp_seconds": "When the job last succeeded (unix time).",
    "offsite_job_last_duration_seconds": "How long the job's last finished run took.",
    "offsite_job_last_result": "The job's last result: 0 success, 1 warning, 2 skipped, "
                               "3 interrupted, 4 failed.",
    "offsite_job_last_bytes": "Bytes the job's last run copied (copying jobs only).",
    "offsite_drive_last_copy_timestamp_seconds": "When the drive last got a complete copy.",
    "offsite_drive_stale_after_seconds": "The drive's stale_after: a last copy older than "
                                         "this is stale.",
    "offsite_job_stale_after_seconds": "The job's stale_after (jobs that set one, and push "
                                       "jobs): no success for longer is stale.",
}
_HEARTBEAT = "offsite_agent_heartbeat_timestamp_seconds"


def label_value(text: str) -> str:
    """A label value in the text exposition format: backslash, double quote and newline
    escaped (names may hold any of them but a newline; the file must still parse)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def text(jobs: Sequence[str], runs: Mapping[str, list[history.Run]],
         drives: Mapping[str, float | None], limits: Mapping[str, float] | None = None,
         drive_limits: Mapping[str, float] | None = None) -> str:
    """The textfile for jobs (their runs, newest first) and drives (name -> last copy);
    limits: stale_after of jobs (by name) and drives (drive_limits)."""
    samples: dict[str, list[str]] = {name: [] for name in _HELP}
    for job, limit in (limits or {}).items():
        samples["offsite_job_stale_after_seconds"].append(
            f'{{offsite_job="{label_value(job)}"}} {limit:.0f}')
    for drive, limit in (drive_limits or {}).items():
        samples["offsite_drive_stale_after_seconds"].append(
            f'{{drive="{label_value(drive)}"}} {limit:.0f}')
    for job in jobs:
        finished = [r for r in runs.get(job, []) if r.result is not None]
        label = f'{{offsite_job="{label_value(job)}"}}'
        success = next((r for r in finished if r.succeeded), None)
        if success and success.finished:
            samples["offsite_job_last_success_timestamp_seconds"].append(
                f"{label} {success.finished:.3f}")
        if finished:
            last = finished[0]
            if last.duration is not None:
                samples["offsite_job_last_duration_seconds"].append(f"{label} {last.duration:.3f}")
            samples["offsite_job_last_result"].append(
                f"{label} {RESULT_CODES.get(last.result or '', 4)}")
            if last.bytes is not None:
                samples["offsite_job_last_bytes"].append(f"{label} {last.bytes}")
    for drive, copied in drives.items():
        if copied is not None:
            samples["offsite_drive_last_copy_timestamp_seconds"].append(
                f'{{drive="{label_value(drive)}"}} {copied:.3f}')
    out = []
    for name, values in samples.items():
        out += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        out += [name + v for v in values]
    return "\n".join(out) + "\n"


def write(cfg: Config, directory: Path = TEXTFILE_DIR) -> Path | None:
    """Rewrite the textfile if node_exporter's directory exists; None if it does not."""
    if not directory.is_dir():
        return None
    runs = {job.name: history.runs(job.name, limit=50) for job in cfg.jobs}
    copies: dict[str, Any] = {d.name: state.read(state.drive_file(d.uuid)).get("last_copy")
                              for d in cfg.drives}
    drives = {k: float(v) if isinstance(v, int | float) else None for k, v in copies.items()}
    path = directory / FILE_NAME
    limits = {j.name: j.stale_after for j in cfg.jobs if j.stale_after is not None}
    body = text([j.name for j in cfg.jobs], runs, drives, limits,
                {d.name: d.stale_after for d in cfg.drives})
    try:
        durable.replace(path, body, mode=0o644)
    except OSError as exc:
        log.warning("cannot write the metrics file %s: %s", path, exc.strerror)
        return None
    return path


def heartbeat_text(now: float) -> str:
    return (f"# HELP {_HEARTBEAT} When the offsite agent last said it is alive (unix time).\n"
            f"# TYPE {_HEARTBEAT} gauge\n{_HEARTBEAT} {now:.3f}\n")


def write_heartbeat(now: float, directory: Path = TEXTFILE_DIR) -> Path | None:
    """The agent's own file: an alert fires when it grows old (the agent is down or stuck)."""
    if not directory.is_dir():
        return None
    path = directory / AGENT_FILE_NAME
    try:
        durable.replace(path, heartbeat_text(now), mode=0o644)
    except OSError as exc:
        log.warning("cannot write the metrics file %s: %s", path, exc.strerror)
        return None
    return path
