"""The agent at rest and at a plug, in the sandbox systemd with the emulated BlinkStick.

1. Idle: the agent, and beside it a bare Python process doing nothing (the anchor), both as
   units of the sandbox's systemd, left alone for SECONDS: CPU ticks used (goal: 0 for the
   agent: no polling), exact CPU time (schedstat), wakeups (goal: no more than the
   watchdog's keep-alives) and resident memory (goal: at most 40 MB).
2. LED reaction: PLUGS plugs of a drive; from just before `losetup` to the emulated
   BlinkStick receiving the "working" colour (goal: p95 at most 100 ms), beside the time
   to systemd's "Starting" of the drive's job unit (the anchor: systemd's own reaction).
Run as root: .venv/bin/python bench/agent.py [SECONDS] [PLUGS]   (default 60 20)
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from offsite_lab import sandbox
from offsite_lab.blinkstick_emulator import STATE_INSIDE, colors, plug_into
from table import Figure, report

from offsite import quantities, unitnames

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"
SECRET = "/etc/offsite/secrets/main.pass"  # an encrypted repository, as users have
EMU = STATE_INSIDE  # the tests' emulated BlinkStick
DRIVE = "66666666-7777-8888-9999-aaaaaaaaaaaa"


@dataclass(frozen=True)
class Sample:
    ticks: int  # utime + stime, as the kernel samples them (one per clock tick)
    cpu_ns: int  # time on a CPU, counted exactly (schedstat)
    sleeps: int  # voluntary context switches: one per wakeup; preemption not counted
    rss_mib: float


def sample(box: sandbox.Sandbox, unit: str) -> Sample:
    proc = box.host_path(f"/proc/{box.show(unit, 'MainPID')}")
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines()
                  if ":" in line)
    return Sample(int(fields[11]) + int(fields[12]), int((proc / "schedstat").read_text()
                                                          .split()[0]),
                  int(status["voluntary_ctxt_switches"]),
                  int(status["VmRSS"].split()[0]) / 1024)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    plugs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with sandbox.booted() as box:
        plug_into(box, CONFIG)
        box.write(SECRET, "bench passphrase\n", mode=0o400)
        box.run(["borg", "init", "--make-parent-dirs", "--encryption=repokey-blake2", "--",
                 "/srv/borg/main"], env={"BORG_PASSPHRASE": "bench passphrase"})
        box.write(CONFIG, json.dumps({
            "drives": {"d1": {"uuid": DRIVE, "type": "plain", "mount": "/mnt/offsite"}},
            "repositories": {"main": {"path": "/srv/borg/main", "passphrase_file": SECRET}},
            "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d1"}},
        }))
        box.run([str(OFFSITE), "--config", CONFIG, "install"])
        box.wait_for_state(unitnames.AGENT_UNIT, ["active"])
        box.run(["systemd-run", "--unit=anchor-idle", "--", sys.executable, "-c",
                 "import time\nwhile True: time.sleep(3600)"])
        box.wait_for_state("anchor-idle.service", ["active"])
        time.sleep(2)  # both settled

        units = (unitnames.AGENT_UNIT, "anchor-idle.service")
        before = {u: sample(box, u) for u in units}
        time.sleep(seconds)
        after = {u: sample(box, u) for u in units}
        agent, anchor = ({k: getattr(after[u], k) - getattr(before[u], k)
                          for k in ("ticks", "cpu_ns", "sleeps")} for u in units)
        agent_rss, anchor_rss = (after[u].rss_mib for u in units)
        # the watchdog's keep-alives are the only wakeups an idle agent may have
        watchdog = quantities.parse(box.show(unitnames.AGENT_UNIT, "WatchdogUSec"))  # "3min"
        pings = math.ceil(seconds / (watchdog / 2))

        image = box.make_drive("d1", DRIVE, size_mb=64)
        unit = unitnames.job_unit("copy", "d1")
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
        Figure("agent", f"idle {seconds:.0f} s: CPU ticks", agent["ticks"], "", "idle python",
               anchor["ticks"], "0", agent["ticks"] == 0),
        Figure("agent", f"idle {seconds:.0f} s: CPU time, exact", agent["cpu_ns"] / 1e6, "ms",
               "idle python", anchor["cpu_ns"] / 1e6),
        Figure("agent", f"idle {seconds:.0f} s: wakeups", agent["sleeps"], "", "idle python",
               anchor["sleeps"], f"<= {pings} (watchdog)", agent["sleeps"] <= pings),
        Figure("agent", "resident memory", agent_rss, "MiB", "idle python", anchor_rss,
               "<= 40 MiB", agent_rss <= 40),
        Figure("agent", f"plug -> LED colour, median of {plugs}", med(led_ms), "ms",
               "systemd job start", med(start_ms)),
        Figure("agent", f"plug -> LED colour, p95 of {plugs}", p95, "ms", "job start p95",
               percentile(start_ms, 95), "<= 100 ms", p95 <= 100),
    ])


if __name__ == "__main__":
    sys.exit(main())
