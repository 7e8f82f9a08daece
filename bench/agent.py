"""The agent at rest and at a plug, in the sandbox systemd with the emulated BlinkStick.

1. Idle: the agent, and beside it a bare Python process doing nothing (the anchor), both as
   units of the sandbox's systemd, left alone for SECONDS: CPU ticks used (goal: 0 for the
   agent: no polling) and resident memory (goal: at most 40 MB).
2. LED reaction: PLUGS plugs of a drive; from just before `losetup` to the emulated
   BlinkStick receiving the "working" colour (goal: p95 at most 100 ms), beside the time
   to systemd's "Starting" of the drive's job unit (the anchor: systemd's own reaction).
Run as root: .venv/bin/python bench/agent.py [SECONDS] [PLUGS]   (default 60 20)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from table import Figure, report

from offsite import render, sandbox
from offsite.blinkstick_emulator import STATE_INSIDE, colors, plug_into

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"
EMU = STATE_INSIDE  # the tests' emulated BlinkStick
DRIVE = "66666666-7777-8888-9999-aaaaaaaaaaaa"
TICK = os.sysconf("SC_CLK_TCK")


def ticks_and_rss(box: sandbox.Sandbox, unit: str) -> tuple[int, float]:
    pid = box.show(unit, "MainPID")
    fields = box.host_path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = next(int(line.split()[1]) for line in box.host_path(f"/proc/{pid}/status")
               .read_text().splitlines() if line.startswith("VmRSS:"))
    return ticks, rss / 1024


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    plugs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with sandbox.booted() as box:
        plug_into(box)
        box.run(["borg", "init", "--make-parent-dirs", "--encryption=none", "--",
                 "/srv/borg/main"])
        box.write(CONFIG, json.dumps({
            "drives": {"d1": {"uuid": DRIVE, "type": "plain", "mount": "/mnt/offsite"}},
            "repositories": {"main": {"path": "/srv/borg/main"}},
            "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d1"}},
        }))
        box.run([str(OFFSITE), "--config", CONFIG, "install"])
        box.wait_for_state(render.AGENT_UNIT, ["active"])
        box.run(["systemd-run", "--unit=anchor-idle", "--", sys.executable, "-c",
                 "import time\nwhile True: time.sleep(3600)"])
        box.wait_for_state("anchor-idle.service", ["active"])
        time.sleep(2)  # both settled

        before = {u: ticks_and_rss(box, u) for u in (render.AGENT_UNIT, "anchor-idle.service")}
        time.sleep(seconds)
        after = {u: ticks_and_rss(box, u) for u in before}
        agent_ticks = after[render.AGENT_UNIT][0] - before[render.AGENT_UNIT][0]
        anchor_ticks = after["anchor-idle.service"][0] - before["anchor-idle.service"][0]
        agent_rss, anchor_rss = after[render.AGENT_UNIT][1], after["anchor-idle.service"][1]

        image = box.make_drive("d1", DRIVE, size_mb=64)
        unit = render.job_unit("copy", "d1")
        led_ms, start_ms = [], []
        for _ in range(plugs):
            since = time.time()
            device = box.plug(image)
            box.wait_until("the LED", lambda t=since: any(  # type: ignore[misc]
                c["t"] >= t and c["rgb"] != [0, 0, 0] for c in colors(box.host_path(EMU))), 10)
            seen = next(c["t"] for c in colors(box.host_path(EMU))
                        if c["t"] >= since and c["rgb"] != [0, 0, 0])
            led_ms.append((seen - since) * 1000)
            def starts(t: float = since) -> list[float]:
                return [int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in box.entries(
                    "_PID=1", f"UNIT={unit}") if e["MESSAGE"].startswith("Starting")
                    and int(e["__REALTIME_TIMESTAMP"]) / 1e6 >= t]

            box.wait_until("the copy to start", lambda: bool(starts()), 30)
            box.wait_until("the copy to end", lambda: box.show(unit, "ActiveState") in (
                "inactive", "failed"), 60)
            start_ms.append((min(starts()) - since) * 1000)
            box.unplug(device)
            box.run(["udevadm", "settle"])

    p95 = percentile(led_ms, 95)
    med = statistics.median
    return report([
        Figure("agent", f"idle {seconds:.0f} s: CPU ticks", agent_ticks, "", "idle python",
               anchor_ticks, "0", agent_ticks == 0),
        Figure("agent", "resident memory", agent_rss, "MiB", "idle python", anchor_rss,
               "<= 40 MiB", agent_rss <= 40),
        Figure("agent", f"plug -> LED colour, median of {plugs}", med(led_ms), "ms",
               "systemd job start", med(start_ms)),
        Figure("agent", f"plug -> LED colour, p95 of {plugs}", p95, "ms", "job start p95",
               percentile(start_ms, 95), "<= 100 ms", p95 <= 100),
    ])


if __name__ == "__main__":
    sys.exit(main())
