"""``make demo`` (``offsite-lab demo``): the product's story told in a throw-away sandbox systemd.

A real systemd boots in a private namespace; offsite installs the units of the embedded
demo configuration into it; a timer runs borgmatic, which fills the demo repository; the
demo drive is plugged and systemd itself starts the copy; the LED (an emulated BlinkStick
driven by the real `blinkstick` library) is shown as a coloured block whenever it changes;
a job made to fail sends its mail to the demo's own mail server, which delivers it into a
local mailbox; `offsite status` and `offsite schedule` end it. Everything is torn down.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

from offsite import unitnames
from offsite.agent import ledstate
from offsite.config import reader
from offsite.config.model import Config, DriveTrigger
from offsite.errors import Fatal
from offsite_lab import blinkstick_emulator, sandbox
from offsite_lab.demomail import Mailbox

DEMO_CONFIG = "demo.yaml"
DEMO_BORGMATIC = "demo-borgmatic.yaml"
CONFIG_INSIDE = "/etc/offsite/offsite.yaml"
BORGMATIC_INSIDE = "/etc/offsite/demo-borgmatic.yaml"
PASSPHRASE_INSIDE = "/etc/offsite/demo.pass"  # borgmatic's encryption_passcommand reads it
DEMO_PASSPHRASE = "demo passphrase: keep yours away from the machine"
BORG_ENV = {"BORG_PASSPHRASE": DEMO_PASSPHRASE}  # the demo's own borg commands


def _say(step: str) -> None:
    bold, reset = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}==> {step}{reset}", flush=True)


def _show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}", flush=True)


class LedWatch:
    """Prints the emulated LED as a coloured block each time the device is set anew."""

    def __init__(self, box: sandbox.Sandbox, cfg: Config, state_inside: str) -> None:
        self.path = box.host_path(state_inside)
        led = cfg.notify.led
        self.names = {ledstate.rgb(color, led.brightness): (state, color)
                      for state, color in led.colors}
        self.names[(0, 0, 0)] = ("off", "#000000")
        self.seen = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LedWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)

    def _run(self) -> None:
        last = None
        while not self.stop.wait(0.05):
            changes = blinkstick_emulator.colors(self.path)
            for change in changes[self.seen:]:
                rgb = tuple(change["rgb"])
                if rgb != last:
                    last = rgb
                    state, color = self.names.get(rgb, ("?", "#808080"))
                    print(f"    LED {_block(color)} {state}", flush=True)
            self.seen = len(changes)


def _block(color: str) -> str:
    if not sys.stdout.isatty():
        return f"[{color}]"
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    if (r, g, b) == (0, 0, 0):
        return "\033[2m\u2591\u2591\033[0m"
    return f"\033[38;2;{r};{g};{b}m\u2588\u2588\033[0m"


def main() -> int:
    started = time.monotonic()
    offsite = str(Path(sys.prefix) / "bin" / "offsite")
    work = Path(tempfile.mkdtemp(prefix="offsite-demo-", dir="/var/tmp"))
    try:
        with Mailbox(work / "mailbox") as mail:
            return _story(offsite, mail, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _story(offsite: str, mail: Mailbox, started: float) -> int:
    data = resources.files("offsite_lab") / "data"
    text = (data / DEMO_CONFIG).read_text().replace("port: 1\n", f"port: {mail.port}\n")
    _say("The demo configuration (the whole file is lab/offsite_lab/data/demo.yaml)")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as tmp:
        tmp.write(text)
        tmp.flush()
        cfg = reader.load(Path(tmp.name))
    job, trigger = next((j, j.trigger) for j in cfg.jobs if isinstance(j.trigger, DriveTrigger))
    drive = cfg.drive(trigger.drives[0])
    _show(f"drive {drive.name!r}: UUID {drive.uuid} ({drive.type})")
    for j in cfg.jobs:
        _show(f"job {j.name!r}: {j.kind}, {j.description}")
    _show(f"mail: to the demo's own SMTP server on 127.0.0.1:{mail.port}, into {mail.path}")

    _say("Booting a real systemd as PID 1 of a private namespace (nothing reaches this host)")
    with sandbox.booted() as box:
        state = box.systemctl("is-system-running", check=False).stdout.strip()
        _show(f"systemd is host pid {box.pid1}; system state: {state}")
        _show("a BlinkStick is plugged in (emulated at the USB level; the real blinkstick "
              "library drives it)")
        led_state = blinkstick_emulator.plug_into(box, CONFIG_INSIDE)
        with LedWatch(box, cfg, led_state):
            _tell(box, cfg, text, offsite, mail, job.name, drive.name, drive.uuid)
        _say("Halting the sandbox")
    _show(f"done in {time.monotonic() - started:.1f} s; no process, mount or loop device left "
          "behind")
    return 0


def _tell(box: sandbox.Sandbox, cfg: Config, text: str, offsite: str, mail: Mailbox,
          job: str, drive: str, uuid: str) -> None:
    _say("Plugging the NAS's internal backup disk (a loop device) and installing offsite")
    internal = next(m for m in cfg.namespace.mounts if m.where == Path("/backup"))
    # 1 GiB (sparse): borg wants room for a whole 500 MiB segment before it commits
    box.plug(box.make_drive("internal", internal.what.removeprefix("UUID="), size_mb=1024))
    box.write(CONFIG_INSIDE, text)
    box.write(BORGMATIC_INSIDE, (resources.files("offsite_lab") / "data" / DEMO_BORGMATIC).read_text())
    box.write(PASSPHRASE_INSIDE, DEMO_PASSPHRASE + "\n", mode=0o400)
    # the repository exists before the timer's first borgmatic run: made on the internal
    # disk, mounted for a moment where the namespace will mount it for the jobs
    repo = str(cfg.repository("demo").path)
    box.run(["sh", "-c", f"mkdir -p {internal.where} && mount {internal.what} {internal.where} "
             f"&& borg init --make-parent-dirs --encryption=repokey-blake2 -- {repo}; "
             f"status=$?; umount {internal.where}; exit $status"], env=BORG_ENV)
    for name, size in (("photos.jpg", 1_500_000), ("notes.txt", 20_000)):
        box.run(["sh", "-c", f"mkdir -p /srv/demo-data && head -c {size} /dev/urandom > "
                 f"/srv/demo-data/{name}"])
    plan = box.run([offsite, "plan"]).stdout
    _show(plan.strip().splitlines()[-1])
    _show(box.run([offsite, "install"]).stdout)
    _show(box.systemctl("list-timers", "--no-legend", "offsite-*").stdout)

    _say("The backup namespace: /backup is mounted there and nowhere else")
    box.systemctl("start", "offsite-namespace.service")
    holder = json.loads(box.run([offsite, "namespace", "status"]).stdout)["pid"]
    inside = ["nsenter", f"--target={holder}", "--mount", "--"]
    _show("inside: " + box.run([*inside, "findmnt", "--noheadings", "--output",
                                "TARGET,SOURCE", "/backup"]).stdout.strip())
    seen = box.run(["findmnt", "--noheadings", "--output", "TARGET", "/backup"], check=False)
    _show("outside: findmnt /backup -> " + (seen.stdout.strip() or "nothing"))

    backup = unitnames.job_unit("backup")
    _say(f"Waiting for offsite-backup.timer to run borgmatic ({backup}; systemd fires a "
         "timer within its 1-minute accuracy)")
    box.wait_until("the timer's borgmatic run", lambda: bool(box.start_results(backup)), 150)
    _show("\n".join(e["MESSAGE"] for e in box.entries("JOB=backup")))
    if box.start_results(backup)[0] != "done":
        raise Fatal(f"the demo's borgmatic run failed: {box.start_results(backup)[0]}")
    archives = box.run([*inside, "borg", "list", "--short", repo], env=BORG_ENV).stdout
    _show(f"the repository now holds: {' '.join(archives.split())}")

    unit = unitnames.job_unit(job, drive)
    _say(f"Plugging the off-site drive: systemd starts {unit} by itself (watch the LED)")
    image = box.make_drive("demo-drive", uuid, label="DEMO")
    plugged_at = time.monotonic()
    device = box.plug(image)
    box.wait_for_state(unit, ["activating", "active"], timeout=10)
    _show(f"plugged as {device}; {unit} was starting "
          f"{(time.monotonic() - plugged_at) * 1000:.0f} ms later")
    box.wait_until("the drive job to finish", lambda: bool(box.start_results(unit)), 120)
    time.sleep(0.5)  # the agent's green
    _show("\n".join(e["MESSAGE"] for e in box.entries(f"JOB={job}")))
    _show(f"result: {box.start_results(unit)[-1]}")
    box.run(["mkdir", "-p", "/mnt/look"])
    box.run(["mount", "-o", "ro", device, "/mnt/look"])
    try:
        page = box.host_path("/mnt/look/offsite-recovery/RECOVERY.txt").read_text()
        carried = sorted(p.name for p in box.host_path("/mnt/look/offsite-recovery").rglob("*"))
    finally:
        box.run(["umount", "/mnt/look"])
    lines = page.splitlines()
    listed = lines.index("Repositories on this drive:")
    _show("the drive also carries offsite-recovery/ (" + ", ".join(carried) + "); its "
          "RECOVERY.txt says, among the steps to restore on a new machine:\n" +
          "\n".join(lines[listed:listed + 5]))

    _say(f"offsite run {job}: start it by hand and follow it, with its progress line")
    box.run([*inside, "sh", "-c", f"head -c 30000000 /dev/urandom > /tmp/wednesday && "
             f"borg create {repo}::wednesday /tmp/wednesday"], env=BORG_ENV)
    _show(box.run([offsite, "run", job], timeout=120).stdout)

    _say("offsite drives")
    _show(box.run([offsite, "drives"]).stdout)

    failing = unitnames.job_unit("will-fail")
    _say(f"Starting {failing}, which fails: OnFailure= mails it (watch the LED)")
    box.systemctl("start", "--", failing, check=False)
    box.wait_until("the mail to arrive", lambda: bool(mail.messages()), 60)
    message = mail.messages()[0]
    body = message.get_body()
    lines = body.get_content().splitlines() if body is not None else []
    _say(f"The mail, as delivered to the local mailbox {mail.path}")
    _show(f"From: {message['From']}\nTo: {message['To']}\nSubject: {message['Subject']}\n\n"
          + "\n".join(lines[:24]) + "\n[...]")

    _say("Pulling the drive out")
    box.unplug(device)
    time.sleep(0.5)

    _say("offsite status")
    _show(box.run([offsite, "status"], check=False).stdout)
    _say("offsite schedule")
    _show(box.run([offsite, "schedule"]).stdout)
