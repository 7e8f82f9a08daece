"""``offsite demo``: the product's story told in a throw-away sandbox systemd.

A real systemd boots in a private namespace; offsite installs the units of the embedded
demo configuration into it; the demo drive is plugged and systemd itself starts the drive
job; a job made to fail writes its failure mail, which waits in the spool since the demo's
mail server is down. Later parts of offsite (the LED, status) add their steps here.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import sys
import time
from importlib import resources
from pathlib import Path

from offsite import config, render, sandbox
from offsite.model import DriveTrigger

DEMO_CONFIG = "demo.yaml"
CONFIG_INSIDE = "/etc/offsite/offsite.yaml"
BORG_ENV = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}


def _say(step: str) -> None:
    bold, reset = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}==> {step}{reset}", flush=True)


def _show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}", flush=True)


def main() -> int:
    started = time.monotonic()
    offsite = str(Path(sys.prefix) / "bin" / "offsite")
    text = (resources.files("offsite") / "data" / DEMO_CONFIG).read_text()
    _say("The demo configuration")
    with resources.as_file(resources.files("offsite") / "data" / DEMO_CONFIG) as path:
        cfg = config.load(Path(path))
    job, trigger = next((j, j.trigger) for j in cfg.jobs if isinstance(j.trigger, DriveTrigger))
    drive = cfg.drive(trigger.drives[0])
    _show(f"drive {drive.name!r}: UUID {drive.uuid} ({drive.type})")
    for j in cfg.jobs:
        _show(f"job {j.name!r}: {j.kind}, {j.description}")

    _say("Booting a real systemd as PID 1 of a private namespace (nothing reaches this host)")
    with sandbox.booted() as box:
        state = box.systemctl("is-system-running", check=False).stdout.strip()
        _show(f"systemd is host pid {box.pid1}; system state: {state}")

        _say("Plugging the NAS's internal backup disk (a loop device) and installing offsite")
        internal = next(m for m in cfg.namespace.mounts if m.where == Path("/backup"))
        # 1 GiB (sparse): borg wants room for a whole 500 MiB segment before it commits
        box.plug(box.make_drive("internal", internal.what.removeprefix("UUID="), size_mb=1024))
        box.write(CONFIG_INSIDE, text)
        plan = box.run([offsite, "plan"]).stdout
        _show(plan.strip().splitlines()[-1])
        _show(box.run([offsite, "install"]).stdout)
        _show(box.systemctl("list-timers", "--no-legend", "offsite-*").stdout)

        _say("The backup namespace: /backup is mounted there and nowhere else")
        box.systemctl("start", "offsite-namespace.service")
        holder = json.loads(box.run([offsite, "namespace", "status"]).stdout)["pid"]
        inside = ["nsenter", f"--target={holder}", "--mount", "--"]
        repo = str(cfg.repository("demo").path)
        box.run([*inside, "borg", "init", "--make-parent-dirs", "--encryption=none", "--", repo],
                env=BORG_ENV)
        for name in ("monday", "tuesday"):
            box.run([*inside, "sh", "-c", f"head -c 2000000 /dev/urandom > /tmp/{name} && "
                     f"borg create --stats {repo}::{name} /tmp/{name}"], env=BORG_ENV)
        _show(f"inside: {repo} with archives monday, tuesday")
        seen = box.run(["findmnt", "--noheadings", "--output", "TARGET", "/backup"], check=False)
        _show("outside: findmnt /backup -> " + (seen.stdout.strip() or "nothing"))

        unit = render.job_unit(job.name, drive.name)
        _say(f"Plugging the off-site drive: systemd starts {unit} by itself")
        image = box.make_drive("demo-drive", drive.uuid, label="DEMO")
        plugged_at = time.monotonic()
        device = box.plug(image)
        box.wait_for_state(unit, ["activating", "active"], timeout=10)
        latency_ms = (time.monotonic() - plugged_at) * 1000
        _show(f"plugged as {device}; {unit} was starting {latency_ms:.0f} ms later")
        box.wait_until("the drive job to finish", lambda: bool(box.start_results(unit)), 120)
        _show("\n".join(e["MESSAGE"] for e in box.entries(f"JOB={job.name}")))
        _show(f"result: {box.start_results(unit)[-1]}")
        _say("offsite run offsite-copy: start it by hand, follow it to the end")
        add = [*inside, "sh", "-c", f"head -c 3000000 /dev/urandom > /tmp/wednesday && "
               f"borg create {repo}::wednesday /tmp/wednesday"]
        box.run(add, env=BORG_ENV)
        _show(box.run([offsite, "run", job.name], timeout=120).stdout)

        _say("offsite drives")
        _show(box.run([offsite, "drives"]).stdout)

        failing = render.job_unit("will-fail")
        _say(f"Starting {failing}, which fails: OnFailure= writes the failure mail")
        box.systemctl("start", "--", failing, check=False)
        notify = f"offsite-notify@{failing}.service"
        box.wait_until("the notify unit", lambda: bool(box.start_results(notify)), 30)
        lines = [e["MESSAGE"] for e in box.entries("JOB=will-fail")]
        lines += [e["MESSAGE"] for e in box.entries("_PID=1", f"UNIT={failing}")]
        lines += [e["MESSAGE"] for e in box.entries(f"_SYSTEMD_UNIT={notify}")]
        _show("\n".join(lines))
        spool = box.host_path("/var/lib/offsite/spool")
        box.wait_until("the outbox to try the mail", lambda: any(
            "stays in the spool" in e.get("MESSAGE", "")
            for e in box.entries(f"_SYSTEMD_UNIT={render.OUTBOX_SERVICE}")), 30)
        _say("The mail server of the demo is down: the mail waits in the spool, to be retried")
        _show(box.run([offsite, "notify", "spool"]).stdout)
        entry = json.loads(sorted(spool.glob("[0-9]*.json"))[0].read_text())
        message = email.message_from_string(entry["message"], policy=email.policy.default)
        body = message.get_body() if isinstance(message, email.message.EmailMessage) else None
        text = body.get_content() if body is not None else ""
        _show(f"Subject: {message['Subject']}\n\n" + "\n".join(text.splitlines()[:32]) + "\n[...]")

        _say("Pulling the drive out")
        box.unplug(device)
        _say("Halting the sandbox")
    _show(f"done in {time.monotonic() - started:.1f} s; no process, mount or loop device left behind")
    return 0
