"""USB drives, as users plug them: a QEMU USB mass-storage device hot-plugged into the
guest's xHCI controller (Debian's standard kernel: usb-storage, the SCSI disk above it).

Safe to remove means: the copy synced and unmounted, the LUKS mapping closed, then the disk
flushed, stopped and taken out of the system (`offsite drive eject`, as udisksctl power-off
does); only then the agent says "done" (green), and it says it until the USB device is
pulled out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .guest import Guest
from .test_luks import (
    CONFIG,
    blank,
    encrypted_repository,
    enroll,
    format_luks,
    runs,
)

USB = "bookworm+usb"


def _cursor(g: Guest) -> str:
    out = g.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"]).stdout
    return out.strip().rsplit("-- cursor: ", 1)[1]


def _journal(g: Guest, *match: str) -> list[dict[str, str]]:
    out = g.run(["journalctl", "-b", "--no-pager", "-o", "json", *match]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _first(entries: list[dict[str, str]], text: str) -> tuple[int, str]:
    """(monotonic µs, message) of the first entry whose message holds text."""
    for e in entries:
        message = e.get("MESSAGE", "")
        if isinstance(message, str) and text in message:
            return int(e["__MONOTONIC_TIMESTAMP"]), message
    raise AssertionError(f"no journal line with {text!r}")


def _led(g: Guest) -> dict[str, object]:
    out = g.run(["cat", "/run/offsite/led.json"], check=False).stdout
    return json.loads(out) if out.strip() else {}


def _usb_devices(g: Guest) -> set[str]:
    return set(g.run(["ls", "/sys/bus/usb/devices"]).stdout.split())


@pytest.mark.parametrize("guest", [USB], indirect=True)
def test_usb_drives_are_copied_ejected_and_green_until_pulled_out(
        guest: Guest, tmp_path: Path) -> None:
    g = guest
    before = _usb_devices(g)
    # a LUKS drive and a plain one, set up as their owner would
    luks_image, plain_image = blank(tmp_path / "l1.img", 96), blank(tmp_path / "p1.img", 96)
    device = g.plug(luks_image, "l1", "usb-storage")
    g.wait_until(device, lambda: g.run(["test", "-b", device], check=False).returncode == 0)
    format_luks(g, device, "l1", "a usb passphrase")
    luks_uuid = enroll(g, device, "l1")
    g.unplug("l1")
    device = g.plug(plain_image, "p1", "usb-storage")
    g.wait_until(device, lambda: g.run(["test", "-b", device], check=False).returncode == 0)
    g.run(["mkfs.ext4", "-q", device])
    plain_uuid = g.run(["blkid", "-s", "UUID", "-o", "value", device]).stdout.strip()
    g.unplug("p1")

    repository = encrypted_repository(g)
    g.run(["sh", "-c", ". /root/.borg-env && head -c 300000 /dev/urandom > /srv/one && "
           f"borg create {repository['path']}::one /srv/one"])
    g.write(CONFIG, json.dumps({
        "drives": {
            "l1": {"uuid": luks_uuid, "type": "luks", "keyfile": "/etc/offsite/keys/l1.key",
                   "mount": "/mnt/offsite"},
            "p1": {"uuid": plain_uuid, "type": "plain", "mount": "/mnt/offsite-p"}},
        "repositories": {"main": repository},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "l1"},
                 "copyp": {"kind": "mirror", "repositories": ["main"], "drive": "p1"}},
    }))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)

    for node, image, job, unit in (
            ("l1", luks_image, "copy", "offsite-unlock-l1.service"),
            ("p1", plain_image, "copyp", "offsite-copyp@p1.service")):
        cursor = _cursor(g)
        g.plug(image, node, "usb-storage")
        g.wait_until(f"{job} to succeed", lambda job=job: (job, "success") in runs(g), 300)
        g.wait_until("the agent's green", lambda: _led(g).get("state") == "done", 60)
        # what happened before the green, in the order it happened (one clock: the
        # journal's monotonic time)
        entries = _journal(g, f"--after-cursor={cursor}")
        unmounted, _ = _first(entries, f"drive {node} holds a complete copy; it is unmounted")
        ejected, said = _first(entries, f"drive {node} (sd")
        green, _ = _first(entries, f"LED: done (safe to remove: drive {node})")
        assert unmounted < ejected < green, (unmounted, ejected, green)
        assert "cache flushed, stopped and taken out of the system" in said, said
        assert ", USB device " in said, said
        # at the green: no mapping, no mount, no disk; the USB device is still there
        assert g.run(["sh", "-c", "ls /dev/mapper | grep offsite-"], check=False).stdout == ""
        assert g.run(["sh", "-c", "ls /sys/block | grep ^sd"], check=False).stdout == ""
        assert _usb_devices(g) - before, "the USB device went with the disk"
        eject_unit = _journal(g, "-u", unit, f"--after-cursor={cursor}")
        assert any("taken out of the system" in str(e.get("MESSAGE")) for e in eject_unit), unit
        # pulled out: the green ends
        g.unplug(node)
        g.wait_until("the LED to go off", lambda: _led(g).get("state") == "off", 60)
        assert f"drive {node} pulled out" in g.run(
            ["journalctl", "-b", "--no-pager", "-o", "cat", "-u", "offsite-agent.service"]).stdout

    # no BlinkStick in this guest: the backups ran, and the journal said so once
    agent = g.run(["journalctl", "-b", "--no-pager", "-o", "cat", "-u",
                   "offsite-agent.service"]).stdout
    assert agent.count("no BlinkStick found") == 1, agent
