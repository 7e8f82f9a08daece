"""``offsite demo``: the product's story told in a throw-away sandbox systemd.

Today it shows the foundation: the embedded demo config is validated, a real systemd boots
in a private namespace, a drive-triggered unit is installed, the demo drive is plugged,
and systemd itself starts the unit, with the journal to prove it. Later parts of offsite
(unit generation, the copy, the LED, mail) add their steps here.
"""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

from offsite import config, escape, sandbox
from offsite.model import DriveTrigger

DEMO_CONFIG = "demo.yaml"


def _say(step: str) -> None:
    bold, reset = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}==> {step}{reset}", flush=True)


def _show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}", flush=True)


def _drive_unit_text(job: str, device_unit: str) -> str:
    # What the unit-generation issue will render from the config; hand-written for now.
    return (
        "[Unit]\n"
        f"Description=offsite demo: job {job} (started by systemd when the drive appears)\n"
        f"BindsTo={device_unit}\n"
        f"After={device_unit}\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart=/bin/echo offsite: the drive is here, job {job} would copy now\n\n"
        "[Install]\n"
        f"WantedBy={device_unit}\n"
    )


def main() -> int:
    started = time.monotonic()
    _say("Reading the demo configuration")
    with resources.as_file(resources.files("offsite") / "data" / DEMO_CONFIG) as path:
        cfg = config.load(Path(path))
    job, trigger = next((j, j.trigger) for j in cfg.jobs if isinstance(j.trigger, DriveTrigger))
    drive = cfg.drive(trigger.drives[0])
    _show(f"drive {drive.name!r}: UUID {drive.uuid}, {drive.type}")
    _show(f"job {job.name!r} ({job.kind}) runs when it is plugged")

    _say("Booting a real systemd as PID 1 of a private namespace (nothing reaches this host)")
    with sandbox.booted() as box:
        state = box.systemctl("is-system-running", check=False).stdout.strip()
        _show(f"systemd is host pid {box.pid1}; system state: {state}")
        device_unit = escape.uuid_device_unit(drive.uuid)
        unit = f"offsite-{escape.escape_name(job.name)}.service"
        _say(f"Installing {unit}, wanted by the drive's device unit")
        box.install_unit(unit, _drive_unit_text(job.name, device_unit), enable=True)
        _show(f"WantedBy={device_unit}")

        _say("Making the demo drive (an image file with that filesystem UUID) and plugging it in")
        image = box.make_drive("demo-drive", drive.uuid, label="DEMO")
        plugged_at = time.monotonic()
        device = box.plug(image)
        box.wait_for_state(unit, ["active", "failed"])
        latency_ms = (time.monotonic() - plugged_at) * 1000
        _show(f"plugged as {device}; systemd started {unit} {latency_ms:.0f} ms later")
        _say(f"The journal of {unit}")
        _show(box.journal(unit=unit))

        _say("Pulling the drive out")
        box.unplug(device)
        box.wait_for_state(unit, ["inactive"])
        _show(f"{unit} is {box.show(unit, 'ActiveState')} again (BindsTo= the drive)")
        _say("Halting the sandbox")
    _show(f"done in {time.monotonic() - started:.1f} s; no process, mount or loop device left behind")
    return 0
