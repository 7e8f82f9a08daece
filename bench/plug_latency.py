"""Plug-to-job-start latency: the off-site copy unit against a bare unit (the floor).

Both units are WantedBy= the same kind of drive device unit; each plug is a `losetup` in
the sandbox systemd. Measured from just before `losetup` to systemd's "Starting" of the
unit (the job start; goal: median within 1.5x of the floor), and to the first line the
unit's own process logs (for offsite: Python starting twice, outside and inside the
backup namespace).
Run as root: .venv/bin/python bench/plug_latency.py [PLUGS]   (default 20)
"""

from __future__ import annotations

import json
import statistics
import sys
import textwrap
import time
from pathlib import Path

from offsite_lab import sandbox
from table import Figure, report

from offsite import escape, unitnames

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
SECRET = "/etc/offsite/secrets/main.pass"  # an encrypted repository, as users have
CONFIG = "/etc/offsite/offsite.yaml"
BARE_UUID = "55555555-6666-7777-8888-999999999999"
DRIVE_UUID = "66666666-7777-8888-9999-aaaaaaaaaaaa"
INTERNAL_UUID = "77777777-8888-9999-aaaa-bbbbbbbbbbbb"
REPO = "/backup/borg/main"
PASSPHRASE = "bench passphrase"


def first_after(entries: list[dict[str, str]], since_us: int, text: str) -> int | None:
    times = [int(e["__REALTIME_TIMESTAMP"]) for e in entries
             if text in e["MESSAGE"] and int(e["__REALTIME_TIMESTAMP"]) >= since_us]
    return min(times) if times else None


def measure(box: sandbox.Sandbox, image: Path, unit: str, log_match: list[str],
            log_text: str, done: str, plugs: int) -> tuple[list[float], list[float]]:
    to_start, to_log = [], []
    for _ in range(plugs):
        since = int(time.time() * 1e6)
        device = box.plug(image)
        box.wait_until(f"{unit} to finish", lambda t=since: first_after(  # type: ignore[misc]
            box.entries(*log_match), t, done) is not None, 60)
        starting = first_after(box.entries("_PID=1", f"UNIT={unit}"), since, "Starting")
        logged = first_after(box.entries(*log_match), since, log_text)
        assert starting is not None and logged is not None
        to_start.append((starting - since) / 1000)
        to_log.append((logged - since) / 1000)
        box.unplug(device)
        box.run(["udevadm", "settle"])
        box.wait_for_state(unit, ["inactive", "failed"])
    return to_start, to_log


def copy_job(box: sandbox.Sandbox, drive_uuid: str, internal_mb: int) -> int:
    """offsite in the sandbox with one job, `copy`: a mirror of an encrypted repository
    (REPO, on an internal drive mounted only in the backup namespace) to plain drive d1;
    the backup namespace's pid (for `nsenter --target`)."""
    box.plug(box.make_drive("internal", INTERNAL_UUID, size_mb=internal_mb))
    box.write(SECRET, PASSPHRASE + "\n", mode=0o400)
    box.write(CONFIG, textwrap.dedent(f"""\
        drives:
          d1: {{uuid: {drive_uuid}, type: plain, mount: /mnt/offsite}}
        repositories:
          main: {{path: {REPO}, passphrase_file: {SECRET}}}
        jobs:
          copy: {{kind: mirror, repositories: [main], drive: d1}}
        namespace:
          mounts:
            - {{what: "UUID={INTERNAL_UUID}", where: /backup, type: ext4}}
        """))
    box.run([str(OFFSITE), "--config", CONFIG, "install"])
    box.systemctl("start", "offsite-namespace.service")
    pid = int(json.loads(box.run([str(OFFSITE), "--config", CONFIG, "namespace"]).stdout)["pid"])
    box.run(["nsenter", f"--target={pid}", "--mount", "--", "borg", "init",
             "--make-parent-dirs", "--encryption=repokey-blake2", REPO],
            env={"BORG_PASSPHRASE": PASSPHRASE})
    return pid


def main() -> int:
    plugs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with sandbox.booted() as box:
        bare = "bare-plug.service"
        device = escape.uuid_device_unit(BARE_UUID)
        box.install_unit(bare, textwrap.dedent(f"""\
            [Unit]
            BindsTo={device}
            After={device}
            [Service]
            Type=oneshot
            ExecStart=/bin/echo bare-unit-ran
            [Install]
            WantedBy={device}
            """), enable=True)
        bare_image = box.make_drive("bare", BARE_UUID)
        floor_start, floor_log = measure(box, bare_image, bare, ["_SYSTEMD_UNIT=" + bare],
                                         "bare-unit-ran", "bare-unit-ran", plugs)

        # borg wants room for a whole segment (500 MiB) on the source before it commits
        copy_job(box, DRIVE_UUID, internal_mb=1024)
        unit = unitnames.job_unit("copy", "d1")
        job_start, job_log = measure(box, box.make_drive("d1", DRIVE_UUID), unit, ["JOB=copy"],
                                     "started", "succeeded", plugs)

    print(f"{plugs} plugs each; medians")
    med = statistics.median
    return report([
        Figure("plug_latency", "plug -> job unit starting", med(job_start), "ms", "bare unit",
               med(floor_start), "<= 1.5x", med(job_start) <= 1.5 * med(floor_start)),
        Figure("plug_latency", "plug -> first line of the job", med(job_log), "ms",
               "bare unit's line", med(floor_log)),
    ])


if __name__ == "__main__":
    raise SystemExit(main())
