"""What the LED says, from what the agent knows: pure functions, no device, no systemd.

States, highest priority first: failed (red, until that job succeeds again or `offsite
led clear`), working (blue for a drive job, or as soon as a drive is plugged in; yellow
for other jobs), done (green: a drive's copy is complete and the drive is locked, safe to
remove), off.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """Where a plugged drive stands."""

    PENDING = "pending"  # plugged; its job has not finished yet
    DONE = "done"  # its job succeeded and the drive is locked: safe to remove
    FAILED = "failed"  # its job failed


STATES = ("failed", "working-drive", "working", "done", "off")


@dataclass(frozen=True)
class Picture:
    active: Mapping[str, str | None] = field(default_factory=dict)  # running unit -> its drive
    drives: Mapping[str, Phase] = field(default_factory=dict)  # plugged drive -> phase
    failed_jobs: Set[str] = frozenset()  # jobs whose last run failed (not cleared)
    unlocked: Set[str] = frozenset()  # LUKS drives still open (unlock unit active)


@dataclass(frozen=True)
class Verdict:
    state: str  # one of STATES
    why: str


def resolve(p: Picture) -> Verdict:
    if p.failed_jobs:
        return Verdict("failed", "failed: " + ", ".join(sorted(p.failed_jobs)))
    drive_jobs = sorted(u for u, d in p.active.items() if d is not None)
    pending = sorted(d for d, phase in p.drives.items() if phase is Phase.PENDING)
    if drive_jobs or pending:
        return Verdict("working-drive", "copying to drive " + ", ".join(
            sorted({*pending, *(str(p.active[u]) for u in drive_jobs)})))
    if p.active:
        return Verdict("working", "running: " + ", ".join(sorted(p.active)))
    done = sorted(d for d, phase in p.drives.items()
                  if phase is Phase.DONE and d not in p.unlocked)
    if done:
        return Verdict("done", "safe to remove: drive " + ", ".join(done))
    return Verdict("off", "idle")


def rgb(color: str, brightness: int) -> tuple[int, int, int]:
    """#rrggbb scaled to brightness percent (1-100); off is (0, 0, 0)."""
    value = color.lstrip("#")
    channels = [int(value[i:i + 2], 16) for i in (0, 2, 4)]
    scaled = [round(c * brightness / 100) for c in channels]
    return scaled[0], scaled[1], scaled[2]
