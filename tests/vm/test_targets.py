"""Targets other than a USB drive, in a Debian guest with md, loop, dm-crypt and nbd:
a cloud RAID5 over image files in three "sync folders", and LUKS over a network block
device reached through an SSH tunnel. After each step the guest has no array, loop, nbd or
device-mapper device left."""

from __future__ import annotations

import json
import time

from .guest import Guest
from .test_luks import CONFIG, REPO, runs

OFFSITE = ["offsite", "--config", CONFIG]
KEY = "/etc/offsite/keys/target.key"
FOLDERS = ["/srv/sync/dropbox", "/srv/sync/gdrive", "/srv/sync/nextcloud"]


def _keyfile(g: Guest) -> None:
    g.run(["sh", "-c", f"mkdir -p /etc/offsite/keys && head -c 64 /dev/urandom > {KEY} && "
           f"chmod 0400 {KEY}"])


def _repo(g: Guest, size: int) -> None:
    g.run(["borg", "init", "--make-parent-dirs", "--encryption=none", "--", REPO])
    g.run(["sh", "-c", f"mkdir -p /srv/data && head -c {size} /dev/urandom > /srv/data/one && "
           f"borg create {REPO}::one /srv/data"], timeout=600)


def leftovers(g: Guest) -> list[str]:
    """Arrays, loop devices, connected nbd devices and device-mapper devices still there."""
    found = []
    mdstat = g.run(["cat", "/proc/mdstat"]).stdout
    found += [line.split()[0] for line in mdstat.splitlines() if line.startswith("md")]
    found += [line for line in g.run(["losetup", "-a"]).stdout.splitlines() if line.strip()]
    found += [f"/dev/mapper/{n}" for n in g.run(["ls", "/dev/mapper"]).stdout.split()
              if n != "control"]
    for nbd in g.run(["sh", "-c", "ls -d /sys/block/nbd* 2>/dev/null || true"]).stdout.split():
        if g.run(["cat", f"{nbd}/size"]).stdout.strip() not in ("0", ""):
            found.append(nbd)
    return found


def namespace_mounts(g: Guest) -> list[str]:
    pid = json.loads(g.run(["cat", "/run/offsite/namespace.json"]).stdout)["pid"]
    return [line.split()[1] for line in g.run(["cat", f"/proc/{pid}/mounts"]).stdout.splitlines()]


def job_state(g: Guest, unit: str) -> str:
    return g.run(["systemctl", "show", "-P", "Result", unit]).stdout.strip()


def start_job(g: Guest, unit: str) -> bool:
    """Start a job unit and wait for it (a oneshot); True if it succeeded."""
    return g.run(["systemctl", "start", unit], check=False, timeout=900).returncode == 0


def spooled_subjects(g: Guest) -> list[str]:
    """The subjects of the mails waiting in the spool (no mail server in the guest)."""
    out = g.run(["/opt/offsite/venv/bin/python", "-c", "from offsite import spool\n"
                 "for e in spool.entries():\n    print(e.subject)"]).stdout
    return out.splitlines()


def led(g: Guest) -> str:
    return str(json.loads(g.run(["cat", "/run/offsite/led.json"]).stdout)["state"])


def verify_copy(g: Guest) -> str:
    """Assemble by hand, mount outside any job, run borg check on the copy, take it down."""
    g.run([*OFFSITE, "target", "assemble", "cloud"])
    try:
        g.run(["mkdir", "-p", "/mnt/verify"])
        g.run(["mount", "-o", "ro", "/dev/mapper/offsite-target-cloud", "/mnt/verify"])
        try:
            return g.run(["borg", "list", "--short", "/mnt/verify/main"]).stdout
        finally:
            g.run(["umount", "/mnt/verify"])
    finally:
        g.run([*OFFSITE, "target", "disassemble", "cloud"])


def test_a_cloud_raid_runs_degraded_loudly_resyncs_and_refuses_a_second_computer(
        guest: Guest) -> None:
    g = guest
    g.run(["mkdir", "-p", *FOLDERS])
    _keyfile(g)
    _repo(g, 300_000)
    g.write(CONFIG, json.dumps({
        "targets": {"cloud": {"type": "cloud-raid", "level": 5, "members": FOLDERS,
                              "member_size": "40M", "keyfile": KEY, "mount": "/mnt/cloud"}},
        "repositories": {"main": {"path": REPO}},
        "jobs": {"cloudcopy": {"kind": "mirror", "repositories": ["main"], "target": "cloud"}},
        "notify": {"email": {"to": ["me@example.org"], "from": "offsite@example.org",
                             "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"}}},
    }))
    print(g.run([*OFFSITE, "target", "create", "cloud"], timeout=600).stdout)
    images = [f"{f}/offsite-cloud.img" for f in FOLDERS]
    sums = g.run(["sha256sum", *images]).stdout.split()[::2]
    assert len(set(sums)) == 3  # random, never copies of each other
    assert leftovers(g) == []
    g.run([*OFFSITE, "install"], timeout=600)

    unit = "offsite-cloudcopy.service"
    assert start_job(g, unit), g.run(["journalctl", "-u", unit, "--no-pager"]).stdout
    g.wait_until("the target to be taken down", lambda: leftovers(g) == [], 60)
    assert "/mnt/cloud" not in namespace_mounts(g)
    assert "one" in verify_copy(g)
    markers = [json.loads(g.run(["cat", f"{f}/offsite-cloud.marker"]).stdout) for f in FOLDERS]
    assert {m["state"] for m in markers} == {"clean"}
    assert len({m["generation"] for m in markers}) == 1

    # one provider lost its file: the job still copies, degraded, and says so loudly
    g.run(["rm", images[1]])
    g.run(["sh", "-c", f"head -c 100000 /dev/urandom > /srv/data/two && borg create {REPO}::two "
           "/srv/data/two"])
    assert not start_job(g, unit)
    log = g.run(["journalctl", "-u", unit, "--no-pager"]).stdout
    assert "DEGRADED" in log and FOLDERS[1] in log, log
    g.wait_until("the failure mail to be spooled",
                 lambda: any("FAILED" in s for s in spooled_subjects(g)), 60)
    g.wait_until("the LED to turn red", lambda: led(g) == "failed", 30)
    status = g.run([*OFFSITE, "target", "status", "cloud"]).stdout
    assert "NO IMAGE" in status and "DEGRADED" in status, status
    g.wait_until("the target to be taken down", lambda: leftovers(g) == [], 60)
    listing = verify_copy(g)  # degraded, by hand: the data is all there
    assert "one" in listing and "two" in listing, listing

    # a new member file: the next run rebuilds it, and the alert clears
    g.run([*OFFSITE, "target", "repair", "cloud"])
    assert start_job(g, unit), g.run(["journalctl", "-u", unit, "--no-pager"]).stdout
    g.wait_until("the recovery mail to be spooled",
                 lambda: any("recovered" in s for s in spooled_subjects(g)), 60)
    g.wait_until("the LED to leave red", lambda: led(g) != "failed", 30)
    g.wait_until("the target to be taken down", lambda: leftovers(g) == [], 60)
    markers = [json.loads(g.run(["cat", f"{f}/offsite-cloud.marker"]).stdout) for f in FOLDERS]
    assert {m["state"] for m in markers} == {"clean"}, markers
    assert len({m["generation"] for m in markers}) == 1, markers
    health = json.loads(g.run(["cat", "/var/lib/offsite/targets/cloud.json"]).stdout)
    assert health["state"] == "ok", health

    # another computer assembled the set (its marker): refused, nothing set up here
    for folder in FOLDERS:
        path = f"{folder}/offsite-cloud.marker"
        marker = json.loads(g.run(["cat", path]).stdout)
        marker.update(machine="0123456789abcdef0123456789abcdef", hostname="laptop",
                      state="assembled", generation=marker["generation"] + 1,
                      time=time.time())
        g.write(path, json.dumps(marker))
    assert not start_job(g, unit)
    log = g.run(["journalctl", "-u", unit, "-n", "30", "--no-pager"]).stdout
    assert "another computer, laptop" in log, log
    assert leftovers(g) == []
    refused = g.run([*OFFSITE, "target", "assemble", "cloud"], check=False)
    assert refused.returncode != 0 and "laptop" in refused.stderr, refused
    assert leftovers(g) == []
    assert runs(g)[-1] == ("cloudcopy", "failed")
