"""Plug to safe-to-remove: a full copy, then a copy after about 1% new data (issue #19).

In a sandbox systemd, a plain drive is plugged (`losetup`) and offsite's copy job runs by
itself: mount, copy with read-back, recovery notes, sync, unmount; on the first plug of
a drive also `borg check` of its copy (a new drive is always checked; then every
`check_every`), which the full-copy figure includes. Measured from just before `losetup` to
the job's own "safe to remove" line. The floor, in the same run on a drive of the same
kind: `losetup`, mount, `cp -a` of the repository (for the second plug `cp -a -u`, which
copies only the files that changed), `sync`, unmount: no read-back, no marker, no swap.
The page cache is dropped before every plug.
Run as root: .venv/bin/python bench/plug_to_safe.py [SIZE_MB]   (default 512)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mirror_copy import cold
from offsite_lab import sandbox
from plug_latency import PASSPHRASE, REPO, copy_job
from table import Figure, report

DRIVE_UUID = "66666666-7777-8888-9999-bbbbbbbbbbbb"
FLOOR_UUID = "66666666-7777-8888-9999-cccccccccccc"
SAID = "safe to remove"


class Bench:
    def __init__(self, box: sandbox.Sandbox, pid: int) -> None:
        self.box, self.pid = box, pid

    def in_namespace(self, script: str, timeout: float = 3600) -> None:
        """A shell script in offsite's backup namespace (where the repository is mounted)."""
        self.box.run(["nsenter", f"--target={self.pid}", "--mount", "--", "sh", "-ec", script],
                     env={"BORG_PASSPHRASE": PASSPHRASE}, timeout=timeout)

    def offsite_copy(self, image: Path, nth: int) -> float:
        """Seconds from the plug to the job's 'safe to remove' (its nth)."""
        cold()
        since = int(time.time() * 1e6)
        started = time.monotonic()
        device = self.box.plug(image)
        self.box.wait_until("the copy to say the drive is safe to remove", lambda: sum(
            SAID in e["MESSAGE"] for e in self.box.entries("JOB=copy")) >= nth, 3600)
        took = time.monotonic() - started
        print(f"plug {nth}: where the time went (ms after the plug)")
        for e in self.box.entries("_PID=1", "+", "JOB=copy"):
            at = int(e["__REALTIME_TIMESTAMP"]) - since
            if at >= 0 and (e.get("JOB") or e.get("UNIT", "").startswith("offsite")):
                print(f"  {at / 1000:8.0f}  {e['MESSAGE'][:100]}")
        self.box.wait_for_state("offsite-copy@d1.service", ["inactive", "failed"], 120)
        self.box.unplug(device)
        return took

    def floor_copy(self, image: Path, only_changed: bool) -> float:
        cold()
        started = time.monotonic()
        device = self.box.plug(image)
        self.in_namespace(f"mount -o nodev,nosuid,noexec {device} "
                          f"/mnt/offsite && cp -a {'-u' if only_changed else ''} {REPO} "
                          "/mnt/offsite/ && sync -f /mnt/offsite && umount /mnt/offsite")
        took = time.monotonic() - started
        self.box.unplug(device)
        return took


def main() -> int:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    drive_mb = 3 * size + 256  # the old and the new tree, and room
    with sandbox.booted() as box:
        bench = Bench(box, copy_job(box, DRIVE_UUID, internal_mb=2 * size + 1024))
        bench.in_namespace(
            f"mkdir -p /backup/data && head -c {size}M /dev/urandom > /backup/data/one && "
            f"borg create --compression=none {REPO}::one /backup/data")
        drive = box.make_drive("d1", DRIVE_UUID, size_mb=drive_mb)
        floor = box.make_drive("floor", FLOOR_UUID, size_mb=drive_mb)

        full = bench.offsite_copy(drive, 1)
        full_floor = bench.floor_copy(floor, only_changed=False)
        bench.in_namespace(f"head -c {max(1, size // 100)}M /dev/urandom > /backup/data/two && "
                           f"borg create --compression=none {REPO}::two /backup/data")
        small = bench.offsite_copy(drive, 2)
        small_floor = bench.floor_copy(floor, only_changed=True)

    print(f"a {size} MiB repository, then {max(1, size // 100)} MiB new; plain drives "
          "(loop devices) in a sandbox systemd")
    return report([
        Figure("plug_to_safe", "plug -> safe to remove, full copy", full, "s",
               "losetup+mount+cp -a+sync+umount", full_floor),
        Figure("plug_to_safe", "plug -> safe to remove, 1% new", small, "s",
               "losetup+mount+cp -au+sync+umount", small_floor),
    ])


if __name__ == "__main__":
    raise SystemExit(main())
