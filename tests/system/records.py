"""Reading what offsite recorded inside a sandbox, through offsite's own modules."""

from __future__ import annotations

import sys
from pathlib import Path

from offsite_lab.sandbox import Sandbox

PYTHON = str(Path(sys.prefix) / "bin" / "python")


def history(box: Sandbox) -> list[tuple[str, str]]:
    """(job, result) of every finished run in the sandbox's history, oldest first."""
    out = box.run([PYTHON, "-c", "from offsite.notify import history\n"
                   "for r in reversed(history.runs(limit=100000)):\n"
                   "    print(r.job, r.result)"]).stdout
    return [(job, result) for job, result in (line.split() for line in out.splitlines())
            if result != "None"]
