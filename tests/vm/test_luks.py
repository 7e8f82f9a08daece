"""Real LUKS drives in a Debian guest: enroll, plug, unlock with the keyfile, copy, lock
again, unplug; a month later only the new data is copied; a wrong keyfile never mounts;
pulled out mid-copy, the stop reaches the work and the next plug completes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from .guest import SUITES, Guest, python

CONFIG = "/etc/offsite/offsite.yaml"
REPO = "/srv/borg/main"
WEAK = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]  # tests only: fast to open
SECRET = "/etc/offsite/secrets/main.pass"
PASSPHRASE = "vm tier passphrase"


def encrypted_repository(g: Guest) -> dict[str, str]:
    """The guest's repository, encrypted as users have it; its settings for the config.
    borg run by the test itself finds the passphrase in /root/.borg-env."""
    g.write(SECRET, PASSPHRASE + "\n", mode=0o400)
    g.write("/root/.borg-env", f"export BORG_PASSPHRASE='{PASSPHRASE}'\n", mode=0o400)
    g.run(["sh", "-c", f". /root/.borg-env && borg init --make-parent-dirs "
           f"--encryption=repokey-blake2 -- {REPO}"])
    return {"path": REPO, "passphrase_file": SECRET}


def blank(path: Path, size_mb: int = 96) -> Path:
    with path.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    return path


def luks_drive(g: Guest, image: Path, node: str, passphrase: str, bus: str = "virtio") -> str:
    """A LUKS2 drive with an ext4 inside, opened by passphrase only (as bought and set up)."""
    device = g.plug(image, node, bus)
    g.wait_until(f"{device}", lambda: g.run(["test", "-b", device], check=False).returncode == 0)
    format_luks(g, device, node, passphrase)
    return device


def format_luks(g: Guest, device: str, node: str, passphrase: str) -> None:
    """LUKS2 with an ext4 inside on device; its passphrase in /root/NODE.pass."""
    g.write(f"/root/{node}.pass", passphrase, mode=0o400)
    g.run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", *WEAK, "--key-file",
           f"/root/{node}.pass", device])
    g.run(["cryptsetup", "open", "--key-file", f"/root/{node}.pass", device, f"setup-{node}"])
    g.run(["mkfs.ext4", "-q", f"/dev/mapper/setup-{node}"])
    g.run(["cryptsetup", "close", f"setup-{node}"])


def enroll(g: Guest, device: str, node: str) -> str:
    """offsite drive enroll, by the passphrase format_luks left; the drive's LUKS UUID."""
    out = g.run(["offsite", "drive", "enroll", device, "--name", node,
                 "--passphrase-file", f"/root/{node}.pass"]).stdout
    return next(line.split()[1] for line in out.splitlines() if line.strip().startswith("uuid:"))


def one_drive_config(node: str, uuid: str, repository: dict[str, str], **drive: str) -> str:
    """A configuration with one LUKS drive (its enrolled keyfile) and a mirror job `copy`."""
    return json.dumps({
        "drives": {node: {"uuid": uuid, "type": "luks", "keyfile": f"/etc/offsite/keys/{node}.key",
                          "mount": "/mnt/offsite", **drive}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": node}},
        "notify": {"led": {"enabled": False}},
    })


def remove_when_locked(g: Guest, uuid: str, mapped: str) -> None:
    """Unplug a drive that is a device-mapper device: once offsite has locked it again."""
    mapper = f"/dev/mapper/offsite-{uuid}"
    g.wait_until("the drive to be locked", lambda: g.run(["test", "-e", mapper],
                                                       check=False).returncode != 0, 120)
    g.run(["dmsetup", "remove", "--retry", mapped])
    g.run(["udevadm", "settle"])


# offsite's copy itself, for pgrep -f (not `borg with-lock`, whose argv names it too)
COPY_PROCESS = "python[0-9.]* [^ ]*/offsite mirror-copy"


def runs(g: Guest) -> list[tuple[str, str]]:
    out = g.run(python("from offsite.notify import history\n"
                             "for r in reversed(history.runs(limit=1000)):\n"
                             "    print(r.job, r.result)"))
    return [(a, b) for a, b in (line.split() for line in out.stdout.splitlines())]


@pytest.mark.parametrize("guest", SUITES, indirect=True)  # Debian 12 and 13
def test_a_luks_drive_is_enrolled_plugged_copied_locked_and_unplugged(
        guest: Guest, tmp_path: Path) -> None:
    g = guest
    image = blank(tmp_path / "d1.img")
    device = luks_drive(g, image, "d1", "correct horse")
    out = g.run(["offsite", "drive", "enroll", device, "--name", "d1",
                 "--passphrase-file", "/root/d1.pass"]).stdout
    uuid = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("uuid:"))
    mode = g.run(["stat", "-c", "%a", f"/var/lib/offsite/luks-headers/{uuid}.img"]).stdout.strip()
    assert mode == "400"
    assert g.run(["stat", "-c", "%a", "/etc/offsite/keys/d1.key"]).stdout.strip() == "400"
    g.unplug("d1")

    repository = encrypted_repository(g)
    g.run(["sh", "-c", f". /root/.borg-env && head -c 200000 /dev/urandom > /srv/one && "
           f"borg create {REPO}::one /srv/one"])
    g.write(CONFIG, json.dumps({
        "drives": {"d1": {"uuid": uuid, "type": "luks", "keyfile": "/etc/offsite/keys/d1.key",
                          "mount": "/mnt/offsite"}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d1"}},
        "notify": {"led": {"enabled": False}},
    }))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)

    # plugged as a person does: unlocked with the keyfile, copied, locked again
    g.plug(image, "d1")
    g.wait_until("the copy", lambda: ("copy", "success") in runs(g), 300)
    mapper = f"/dev/mapper/offsite-{uuid}"
    g.wait_until("the drive to be locked", lambda: g.run(["test", "-e", mapper],
                                                       check=False).returncode != 0, 60)
    # (the unlock unit ejects the drive after closing it: inactive once that is done)
    g.wait_until("the unlock unit to end", lambda: g.run(
        ["systemctl", "is-active", "offsite-unlock-d1.service"], check=False
    ).stdout.strip() in ("inactive", "failed"), 60)
    assert g.run(["systemctl", "is-active", "offsite-unlock-d1.service"],
                 check=False).stdout.strip() == "inactive"
    record = json.loads(g.run(["cat", f"/var/lib/offsite/drives/{uuid}.json"]).stdout)
    first_bytes = record["last_copy_bytes"]
    assert first_bytes > 200_000
    g.unplug("d1")

    # a month later: a new archive; only the new data is copied
    g.run(["date", "-s", "+31 days"])
    g.run(["sh", "-c", f". /root/.borg-env && head -c 50000 /dev/urandom > /srv/two && "
           f"borg create {REPO}::two /srv/two"])
    g.plug(image, "d1")
    g.wait_until("the second copy", lambda: runs(g).count(("copy", "success")) == 2, 300)
    record = json.loads(g.run(["cat", f"/var/lib/offsite/drives/{uuid}.json"]).stdout)
    assert record["last_copy_bytes"] < first_bytes / 2, (record, first_bytes)
    g.wait_until("the drive to be locked", lambda: g.run(["test", "-e", mapper],
                                                       check=False).returncode != 0, 60)
    g.unplug("d1")


def test_a_drive_whose_keyfile_does_not_open_it_is_never_mounted(
        guest: Guest, tmp_path: Path) -> None:
    g = guest
    image = blank(tmp_path / "d2.img", 64)
    device = luks_drive(g, image, "d2", "some passphrase")
    uuid = g.run(["cryptsetup", "luksUUID", device]).stdout.strip()
    g.unplug("d2")
    g.run(["sh", "-c", "mkdir -p /etc/offsite/keys && head -c 64 /dev/urandom > "
           "/etc/offsite/keys/wrong.key && chmod 0400 /etc/offsite/keys/wrong.key"])
    repository = encrypted_repository(g)
    g.write(CONFIG, json.dumps({
        "drives": {"d2": {"uuid": uuid, "type": "luks", "keyfile": "/etc/offsite/keys/wrong.key",
                          "mount": "/mnt/offsite"}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d2"}},
        "notify": {"led": {"enabled": False}},
    }))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)
    g.plug(image, "d2")
    g.wait_until("the unlock to fail", lambda: g.run(
        ["systemctl", "is-failed", "offsite-unlock-d2.service"], check=False).stdout.strip()
        == "failed", 120)
    log = g.run(["journalctl", "-u", "offsite-unlock-d2.service", "--no-pager"]).stdout
    # systemd-cryptsetup's own words for a key that does not open the container (not any
    # "Failed", which systemd prints for every failed unit)
    assert re.search(r"Key data incorrect|No key available with this passphrase", log), log
    mounts = g.run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
    assert "/mnt/offsite" not in mounts
    assert ("copy", "success") not in runs(g)
    g.unplug("d2")


def test_a_keyfile_on_a_separate_usb_key(guest: Guest, tmp_path: Path) -> None:
    g = guest
    image = blank(tmp_path / "d3.img", 64)
    device = luks_drive(g, image, "d3", "passphrase three")
    uuid = g.run(["cryptsetup", "luksUUID", device]).stdout.strip()
    # the USB key: a small ext4 disk holding the keyfile, which is added to the drive
    key_image = blank(tmp_path / "key.img", 16)
    key_dev = g.plug(key_image, "usbkey")
    g.wait_until("the key disk", lambda: g.run(["test", "-b", key_dev], check=False).returncode == 0)
    g.run(["mkfs.ext4", "-q", "-U", "12345678-1234-1234-1234-123456789abc", key_dev])
    g.run(["sh", "-c", f"mkdir -p /mnt/k && mount {key_dev} /mnt/k && head -c 64 /dev/urandom "
           f"> /mnt/k/d3.key && chmod 0400 /mnt/k/d3.key && cryptsetup luksAddKey --batch-mode "
           f"{' '.join(WEAK)} --key-file /root/d3.pass {device} /mnt/k/d3.key && umount /mnt/k"])
    g.unplug("d3")
    # mounted read-only by its own fstab line when needed, waited for at most 20 s
    g.run(["sh", "-c", "mkdir -p /media/offsite-key && echo 'UUID=12345678-1234-1234-1234-"
           "123456789abc /media/offsite-key ext4 ro,nofail,noauto,x-systemd.device-timeout=20s "
           "0 0' >> /etc/fstab && systemctl daemon-reload"])
    repository = encrypted_repository(g)
    g.write(CONFIG, json.dumps({
        "drives": {"d3": {"uuid": uuid, "type": "luks", "keyfile": "/media/offsite-key/d3.key",
                          "mount": "/mnt/offsite"}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d3"}},
        "notify": {"led": {"enabled": False}},
    }))
    key_mount = "media-offsite\\x2dkey.mount"
    g.run(["systemctl", "start", key_mount])  # `offsite check` reads the keyfile's mode
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)
    g.run(["systemctl", "stop", key_mount])
    # the key stays plugged; the drive comes: the unlock unit mounts the key (read-only)
    # first, opens the drive with the key's file; the copy runs; the drive is locked again
    g.plug(image, "d3")
    # (any end of the run, so that a warning or a failure is reported as what it is)
    g.wait_until("the copy to end", lambda: _last_run(g, "copy") is not None, 300)
    assert _last_run(g, "copy") == ("success", ""), _last_run(g, "copy")
    options = g.run(["findmnt", "-rn", "-o", "OPTIONS", "/media/offsite-key"]).stdout
    assert options.startswith("ro,"), options
    g.wait_until("the drive to be locked", lambda: g.run(
        ["test", "-e", f"/dev/mapper/offsite-{uuid}"], check=False).returncode != 0, 60)
    g.unplug("d3")

    # without its key: the drive waits for it a bounded time (the key's 20 s device
    # timeout), then its job gives up; the drive is never unlocked nor mounted
    g.run(["systemctl", "stop", key_mount])
    g.unplug("usbkey")
    began = time.monotonic()
    g.plug(image, "d3")
    unit = "offsite-copy@d3.service"
    g.wait_until("the copy job to give up", lambda: g.run(
        ["systemctl", "show", "-p", "ActiveState", "--value", unit]).stdout.strip() != "activating"
        and time.monotonic() - began > 5 and not g.run(
            ["systemctl", "list-jobs", "--no-legend", unit]).stdout.strip(), 90)
    assert time.monotonic() - began < 90
    assert g.run(["test", "-e", f"/dev/mapper/offsite-{uuid}"], check=False).returncode != 0
    assert "/mnt/offsite" not in g.run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
    assert runs(g).count(("copy", "success")) == 1
    g.unplug("d3")


def _led(g: Guest) -> dict[str, Any]:
    """What the agent shows now (its state file; the stick itself: test_usb)."""
    out = g.run(["cat", "/run/offsite/led.json"], check=False).stdout
    return json.loads(out) if out.strip() else {}


def _last_run(g: Guest, job: str) -> tuple[str, str] | None:
    out = g.run(python(
        "from offsite.notify import history\n"
        "done = [r for r in history.runs(limit=1000) if r.job == sys.argv[1] and r.result]\n"
        "print(done[0].result, done[0].detail or '', sep='\\t') if done else None", job))
    line = out.stdout.rstrip("\n")
    if not line:
        return None
    result, _, detail = line.partition("\t")
    return result, detail


# the copy itself (not `borg with-lock`, whose argv names it too) once the source is locked
FREEZE_THE_COPY = (
    "for i in $(seq 1200); do "
    f"pid=$(pgrep -f '{COPY_PROCESS}' | head -n1); "
    f"if [ -n \"$pid\" ] && ls {REPO}/lock.* >/dev/null 2>&1; then kill -STOP $pid; echo $pid; "
    "exit 0; fi; sleep 0.1; done; exit 1")


@pytest.mark.parametrize(("guest", "bus"), [("bookworm", "virtio"),  # Debian 12
                                            ("trixie+usb", "uas")],  # and 13
                         indirect=["guest"])
def test_a_drive_pulled_out_mid_copy(guest: Guest, bus: str, tmp_path: Path) -> None:
    """Pulled out while the copy writes (frozen there, so the pull lands mid-copy however
    slow the guest is): the job is stopped by systemd, borg's with-lock gets the stop and
    lets go of the source, nothing stays mounted or mapped, the run is recorded as pulled
    out and the LED says so (red), and the next plug finishes a copy borg accepts. A
    virtio disk, and a USB disk (UAS: the kernel's I/O errors under a mounted filesystem)."""
    g = guest
    image = blank(tmp_path / "d4.img", 160)
    device = luks_drive(g, image, "d4", "a passphrase", bus)
    out = g.run(["offsite", "drive", "enroll", device, "--name", "d4",
                 "--passphrase-file", "/root/d4.pass"]).stdout
    uuid = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("uuid:"))
    g.unplug("d4")
    repository = encrypted_repository(g)
    g.run(["sh", "-c", f". /root/.borg-env && head -c 40000000 /dev/urandom > /srv/big && "
           f"borg create --compression=none {REPO}::big /srv/big && rm /srv/big"], timeout=600)
    g.write(CONFIG, json.dumps({
        "drives": {"d4": {"uuid": uuid, "type": "luks", "keyfile": "/etc/offsite/keys/d4.key",
                          "mount": "/mnt/offsite"}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d4"}},
        "notify": {"led": {"enabled": False}},
    }))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)

    g.plug(image, "d4", bus)
    caught = g.run(["sh", "-c", FREEZE_THE_COPY], timeout=300, check=False)
    assert caught.returncode == 0, g.run(["journalctl", "--no-pager", "-o", "cat", "-u",
                                          "offsite-copy@d4.service"]).stdout
    frozen = caught.stdout.strip()
    g.unplug("d4")
    g.wait_until("the stopped run to be recorded", lambda: _last_run(g, "copy") is not None, 180)
    g.run(["kill", "-CONT", frozen], check=False)  # (borg has killed it; if not, it may go)
    result, detail = _last_run(g, "copy") or ("", "")
    assert result == "interrupted" and "its drive was pulled out" in detail, (result, detail)
    journal = g.run(["journalctl", "--no-pager", "-o", "cat", "-u", "offsite-copy@d4.service"]).stdout
    assert "asked to stop (SIGTERM); passed on to borg" in journal, journal
    g.wait_until("the LED to say the copy was cut short", lambda: _led(g).get("failed") == [
        "copy"], 60)
    mapper = f"/dev/mapper/offsite-{uuid}"
    g.wait_until("the mapping to go", lambda: g.run(["test", "-e", mapper],
                                                    check=False).returncode != 0, 60)
    holder = json.loads(g.run(["offsite", "--config", CONFIG, "namespace", "status"]).stdout)
    mounted = g.run(["nsenter", f"--target={holder['pid']}", "--mount", "--", "findmnt", "-rn",
                     "-o", "TARGET"]).stdout.split()
    assert "/mnt/offsite" not in mounted, mounted
    assert g.run(["sh", "-c", f"ls {REPO}/lock.*"], check=False).returncode != 0, "still locked"
    g.run(["sh", "-c", f". /root/.borg-env && borg check {REPO}"], timeout=600)

    g.plug(image, "d4", bus, wait=False)  # a USB drive is ejected after its copy
    g.wait_until("the next copy", lambda: _last_run(g, "copy") == ("success", ""), 600)
    g.wait_until("the red to end", lambda: _led(g).get("failed") == [], 60)
    g.wait_until("the drive to be locked", lambda: g.run(["test", "-e", mapper],
                                                       check=False).returncode != 0, 60)
    g.unplug("d4")
