"""Plug to the first colour on a BlinkStick, through the kernel's USB path, against the
guest's own systemd starting the drive's job, in the same run.

A Debian 12 guest (tests/vm: Debian's standard kernel, an xHCI controller) with offsite
installed from its package, a plain USB drive (QEMU usb-storage, hot-plugged over QMP) and
a BlinkStick Nano the guest's kernel enumerates (tests/vm/blinkstick_gadget.py). Each plug
is timed on the guest's monotonic clock from udev taking in the new USB device to
(a) the first colour the stick receives (the agent's "copying to the drive": udev's event,
the agent's picture, pyusb's control transfer, the gadget) and (b) systemd beginning to
start the drive's job unit (InactiveExitTimestampMonotonic, read while it runs): the floor, what any unit
WantedBy= the drive gets. Goal: the stick's colour no later than 1.5x the job's start
(median). Slow under TCG emulation: the figures are for their ratio.

Run as root: .venv/bin/python bench/usb_plug.py [PLUGS]   (default 20)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from table import Figure, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.vm.guest import Guest, booted  # noqa: E402
from tests.vm.test_luks import CONFIG, _led, blank, encrypted_repository, runs  # noqa: E402
from tests.vm.test_usb import COLORS, _expected, plain_usb_drive, start_stick  # noqa: E402

UNIT = "offsite-copy@p1.service"


def _setup(g: Guest, image: Path) -> None:
    uuid = plain_usb_drive(g, image, "p1")
    repository = encrypted_repository(g)
    g.run(["sh", "-c", ". /root/.borg-env && head -c 100000 /dev/urandom > /srv/one && "
           f"borg create {repository['path']}::one /srv/one"])
    g.write(CONFIG, json.dumps({
        "drives": {"p1": {"uuid": uuid, "type": "plain", "mount": "/mnt/offsite"}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "p1"}},
    }))
    start_stick(g)
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)


def _plug(g: Guest, image: Path, n: int) -> tuple[float, float]:
    """One plug: (seconds to the stick's first colour, seconds to the job's start)."""
    g.plug(image, "p1", "usb-storage", wait=False)  # the job's start is watched for below
    # systemd starting the job: when the unit left "inactive", read while it runs (once it
    # has ended it may be unloaded, and its timestamps with it)
    g.wait_until("the job to start", lambda: g.run(
        ["systemctl", "show", "-p", "ActiveState", "--value", UNIT]).stdout.strip() in (
        "activating", "active", "deactivating"), 120)
    started = int(g.run(["systemctl", "show", "-p", "InactiveExitTimestampMonotonic", "--value",
                         UNIT]).stdout.strip())
    g.wait_until("the copy", lambda: runs(g).count(("copy", "success")) == n, 300)
    g.wait_until("the green", lambda: _led(g).get("state") == "done", 60)
    # the plug, on CLOCK_MONOTONIC (as systemd's timestamps and the gadget's): when udev
    # took in the new USB device (the kernel's printk time is another clock, seconds apart
    # under TCG); the drive's USB device stays after the eject
    usb = g.run(["sh", "-c", "for d in /sys/bus/usb/devices/*; do [ \"$(cat $d/idVendor "
                 "2>/dev/null)\" = 46f4 ] && echo $d; done; true"]).stdout.split()
    if len(usb) != 1:
        raise SystemExit(f"expected the drive's one USB device, found {usb}")
    properties = g.run(["udevadm", "info", "--query=property", usb[0]]).stdout.splitlines()
    plugged = int(next(p.split("=", 1)[1] for p in properties if p.startswith("USEC_INITIALIZED=")))
    working = _expected("working-drive")
    out = g.run(["cat", COLORS]).stdout
    shown = [json.loads(line) for line in out.splitlines() if line.strip()]
    first = min(c["mono"] for c in shown if c["mono"] * 1e6 > plugged and c["rgb"] == working)
    g.unplug("p1")
    g.wait_until("the LED to go off", lambda: _led(g).get("state") == "off", 60)
    return (first * 1e6 - plugged) / 1e6, (started - plugged) / 1e6


def main() -> int:
    plugs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    colour, job = [], []
    with tempfile.TemporaryDirectory(prefix="offsite-usb-bench-") as tmp:
        work = Path(tmp)
        image = blank(work / "p1.img", 64)
        with booted(work, "bookworm", usb=True) as g:
            _setup(g, image)
            for n in range(1, plugs + 1):
                c, j = _plug(g, image, n)
                colour.append(c)
                job.append(j)
                print(f"plug {n}: first colour {c * 1000:.0f} ms, job starting {j * 1000:.0f} ms",
                      flush=True)
    med_c, med_j = statistics.median(colour), statistics.median(job)
    p95_c = statistics.quantiles(colour, n=20)[-1] if len(colour) > 1 else colour[0]
    p95_j = statistics.quantiles(job, n=20)[-1] if len(job) > 1 else job[0]
    return report([
        Figure("usb_plug", "USB plug -> first colour on the stick (median)", med_c * 1000, "ms",
               "job unit starting", med_j * 1000, "<= 1.5x", med_c <= 1.5 * med_j),
        Figure("usb_plug", "USB plug -> first colour on the stick (p95)", p95_c * 1000, "ms",
               "job unit starting", p95_j * 1000),
    ])


if __name__ == "__main__":
    sys.exit(main())
