"""Reading what offsite recorded inside a sandbox, through offsite's own modules."""

from __future__ import annotations

import sys
from pathlib import Path

from offsite_lab.sandbox import Sandbox

from offsite import unitnames

PYTHON = str(Path(sys.prefix) / "bin" / "python")


def history(box: Sandbox) -> list[tuple[str, str]]:
    """(job, result) of every finished run in the sandbox's history, oldest first."""
    out = box.run([PYTHON, "-c", "from offsite.notify import history\n"
                   "for r in reversed(history.runs(limit=100000)):\n"
                   "    print(r.job, r.result)"]).stdout
    return [(job, result) for job, result in (line.split() for line in out.splitlines())
            if result != "None"]


def runs(box: Sandbox, job: str) -> list[tuple[str, str]]:
    """(result, detail) of every finished run of job, oldest first."""
    out = box.run([PYTHON, "-c", "import sys\nfrom offsite.notify import history\n"
                   "for r in reversed(history.runs(limit=100000)):\n"
                   "    if r.job == sys.argv[1] and r.result is not None:\n"
                   "        print(r.result, r.detail or '', sep='\\t')", job]).stdout
    return [(result, detail) for result, detail in (line.split("\t", 1)
                                                    for line in out.splitlines())]


def run_bytes(box: Sandbox, job: str) -> list[int | None]:
    """The bytes each finished run of job recorded (copied, sent), oldest first."""
    out = box.run([PYTHON, "-c", "import sys\nfrom offsite.notify import history\n"
                   "for r in reversed(history.runs(limit=100000)):\n"
                   "    if r.job == sys.argv[1] and r.result is not None:\n"
                   "        print(r.bytes)", job]).stdout
    return [None if line == "None" else int(line) for line in out.split()]


def start(box: Sandbox, job: str) -> bool:
    """Start job's unit and wait for it; whether it succeeded."""
    return box.systemctl("start", "--", unitnames.job_unit(job), check=False).returncode == 0


def messages(box: Sandbox, job: str) -> list[str]:
    """Every message job logged (JOB= field), oldest first."""
    return [e.get("MESSAGE", "") for e in box.entries(f"JOB={job}")]
