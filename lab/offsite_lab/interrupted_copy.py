"""Fault injection for the tests: offsite's mirror copy, killed with SIGKILL after N steps.

``python -m offsite_lab.interrupted_copy N SOURCE DEST`` (under ``borg with-lock``, as the
job runs the copy). The kill comes from the progress callback the copy reports every step
to (once before the first step, then after each), so offsite's own code carries no test switch.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from offsite.jobs import mirror


def main(argv: list[str]) -> int:
    steps, source, dest = int(argv[0]), Path(argv[1]), Path(argv[2])

    def progress(p: mirror.Progress) -> None:
        if p.steps_done >= steps:
            os.kill(os.getpid(), signal.SIGKILL)

    result = mirror.copy(source, dest, progress)
    print(f"copied {result.bytes_copied} bytes in {result.steps} step(s), {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
