"""What the LED says, from what the agent knows: pure functions, no device, no systemd.

Two things at once: where the work stands (blue while a drive is plugged and copying,
yellow while another job runs, green once a drive's copy is complete and the drive locked
and ejected: unplug it now; off when idle), and whether a job's last run failed or was cut
short by its drive being pulled out (red, until that job succeeds again or `offsite led
clear`). Neither hides the other: with a second LED
(`notify.led.failure_index`, the BlinkStick Nano's other one) each has its own; with one
LED a failure alone is steady red, and beside work or a finished drive it is a short red
flash in the colour of the work. DISPLAYS is the table the README's picture is made from.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum

FLASH_EVERY = 2.0  # seconds: one red flash this often, beside work or a finished drive
FLASH_FOR = 0.4


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
    state: str  # one of STATES: the work (or "failed" when there is nothing else to show)
    why: str
    failed: tuple[str, ...] = ()  # jobs whose last run failed (not cleared)


def resolve(p: Picture) -> Verdict:
    failed = tuple(sorted(p.failed_jobs))
    work = _work(p)
    if failed and work.state == "off":
        return Verdict("failed", "failed: " + ", ".join(failed), failed)
    return Verdict(work.state, work.why + ("; failed: " + ", ".join(failed) if failed else ""),
                   failed)


def _work(p: Picture) -> Verdict:
    drive_jobs = sorted(u for u, d in p.active.items() if d is not None)
    # a drive whose job has ended is still being locked and ejected while its unlock unit
    # runs: not idle, and not safe yet (dark here would read as "done")
    pending = sorted(d for d, phase in p.drives.items()
                     if phase is Phase.PENDING or d in p.unlocked)
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


@dataclass(frozen=True)
class Frame:
    """What the stick shows for a while: (LED index, state whose colour) for each LED it
    sets; seconds before the next frame, None: until the verdict changes."""

    lights: tuple[tuple[int, str], ...]
    seconds: float | None = None


def frames(v: Verdict, index: int, failure_index: int | None) -> tuple[Frame, ...]:
    """The frames that show a verdict, shown in turn (one frame: steady)."""
    if failure_index is not None:
        work = "off" if v.state == "failed" else v.state
        return (Frame(((index, work), (failure_index, "failed" if v.failed else "off"))),)
    if not v.failed or v.state == "failed":
        return (Frame(((index, v.state),)),)
    return (Frame(((index, v.state),), FLASH_EVERY - FLASH_FOR),
            Frame(((index, "failed"),), FLASH_FOR))


# The README's picture (docs/led-states.svg, `make docs`) is drawn from this table.
DISPLAYS: tuple[tuple[str, Verdict], ...] = (
    ("idle", Verdict("off", "")),
    ("a drive is plugged and copying", Verdict("working-drive", "")),
    ("another job runs", Verdict("working", "")),
    ("the drive's copy is complete: unplug it now", Verdict("done", "")),
    ("a job failed, nothing else going on", Verdict("failed", "", ("x",))),
    ("copying while an earlier job failed", Verdict("working-drive", "", ("x",))),
    ("unplug now, and an earlier job failed", Verdict("done", "", ("x",))),
)


def svg(colors: Mapping[str, str]) -> str:
    """DISPLAYS drawn: each situation, one LED over two seconds, and two LEDs."""
    row, left, width = 34, 330, 200
    rows = []
    for i, (text, verdict) in enumerate(DISPLAYS):
        y = 40 + i * row
        rows.append(f'<text x="10" y="{y + 17}">{text}</text>')
        x: float = left
        for frame in frames(verdict, 0, None):
            w = width * (frame.seconds or FLASH_EVERY) / FLASH_EVERY
            fill = colors.get(frame.lights[0][1], "#000000")
            rows.append(f'<rect x="{x:.0f}" y="{y}" width="{w:.0f}" height="24" fill="{fill}" '
                        'stroke="#888"/>')
            x += w
        for j, (_, name) in enumerate(frames(verdict, 0, 1)[0].lights):
            rows.append(f'<circle cx="{left + width + 40 + j * 32}" cy="{y + 12}" r="11" '
                        f'fill="{colors.get(name, "#000000")}" stroke="#888"/>')
    height = 40 + len(DISPLAYS) * row + 10
    head = (f'<text x="{left}" y="24">one LED, over {FLASH_EVERY:g} s</text>'
            f'<text x="{left + width + 22}" y="24">two LEDs</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 110}" '
            f'height="{height}" font-family="sans-serif" font-size="14">'
            '<rect width="100%" height="100%" fill="#ffffff"/>' + head + "".join(rows) +
            "</svg>\n")


def rgb(color: str, brightness: int) -> tuple[int, int, int]:
    """#rrggbb scaled to brightness percent (1-100); off is (0, 0, 0)."""
    value = color.lstrip("#")
    channels = [int(value[i:i + 2], 16) for i in (0, 2, 4)]
    scaled = [round(c * brightness / 100) for c in channels]
    return scaled[0], scaled[1], scaled[2]


if __name__ == "__main__":  # make docs: docs/led-states.svg, in the default colours
    import sys

    from offsite.config.model import Led

    sys.stdout.write(svg(dict(Led().colors)))
