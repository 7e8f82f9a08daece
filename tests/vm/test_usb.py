"""USB drives, as users plug them: QEMU USB disks (bulk-only mass storage, and UAS)
hot-plugged into the guest's xHCI controller (Debian's standard kernel: usb-storage or
uas, the SCSI disk above it).

Safe to remove means: the copy synced and unmounted, the LUKS mapping closed, then the disk
flushed, stopped and taken out of the system (`offsite drive eject`, as udisksctl power-off
does); only then the agent says "done" (green), and it says it until the USB device is
pulled out."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from offsite.agent.ledstate import rgb
from offsite.config.model import Led

from .guest import Guest
from .test_luks import (
    CONFIG,
    _led,
    blank,
    encrypted_repository,
    enroll,
    format_luks,
    runs,
)

USBS = ("bookworm+usb", "trixie+usb")
GADGET = Path(__file__).with_name("blinkstick_gadget.py")
COLORS = "/run/blinkstick/colors.jsonl"
SERIAL = "BS000042-3.0"


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


def plain_usb_drive(g: Guest, image: Path, node: str) -> str:
    """An ext4 drive on USB mass storage, made and pulled out again; its UUID."""
    device = g.plug(image, node, "usb-storage")
    g.wait_until(device, lambda: g.run(["test", "-b", device], check=False).returncode == 0)
    g.run(["mkfs.ext4", "-q", device])
    uuid = g.run(["blkid", "-s", "UUID", "-o", "value", device]).stdout.strip()
    g.unplug(node)
    return uuid


def start_stick(g: Guest) -> None:
    """The BlinkStick gadget plugged into the guest (a transient unit), recording to COLORS."""
    g.write("/root/blinkstick_gadget.py", GADGET.read_text())
    g.run(["systemd-run", "--unit=test-blinkstick", "/usr/bin/python3",
           "/root/blinkstick_gadget.py", COLORS, SERIAL])


def _colors(g: Guest) -> list[dict[str, Any]]:
    out = g.run(["cat", COLORS], check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _agent_said(g: Guest) -> str:
    return g.run(["journalctl", "-b", "--no-pager", "-o", "cat", "-u",
                  "offsite-agent.service"]).stdout


def _expected(state: str) -> list[int]:
    led = Led()
    return [0, 0, 0] if state == "off" else list(rgb(led.color(state), led.brightness))


def _uptime(g: Guest) -> float:
    return float(g.run(["cat", "/proc/uptime"]).stdout.split()[0])


@pytest.mark.parametrize("guest", USBS, indirect=True)  # Debian 12 and 13
def test_usb_drives_and_a_blinkstick_the_kernel_sees(guest: Guest, tmp_path: Path) -> None:
    """A plain USB drive (bulk-only mass storage) and a LUKS one (UAS), each: plugged,
    copied, ejected, green until pulled out. The plain drive's run has no stick (backups
    run; the journal says so once); then a BlinkStick Nano appears on USB
    (tests/vm/blinkstick_gadget.py, through dummy_hcd and the kernel's usbhid), the
    packaged udev rule gives it to the offsite group, the agent finds it, and the LUKS
    drive's colours reach it: the working colour, then green only after the eject, green
    again after the stick is pulled out and plugged back and after the agent restarts (it
    finds the stick at its start), off when the drive is pulled out."""
    g = guest
    # a LUKS drive and a plain one, set up as their owner would
    luks_image, plain_image = blank(tmp_path / "l1.img", 96), blank(tmp_path / "p1.img", 96)
    device = g.plug(luks_image, "l1", "uas")
    g.wait_until(device, lambda: g.run(["test", "-b", device], check=False).returncode == 0)
    format_luks(g, device, "l1", "a usb passphrase")
    luks_uuid = enroll(g, device, "l1")
    g.unplug("l1")
    plain_uuid = plain_usb_drive(g, plain_image, "p1")

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

    for node, image, job, unit, bus in (
            ("p1", plain_image, "copyp", "offsite-copyp@p1.service", "usb-storage"),
            ("l1", luks_image, "copy", "offsite-unlock-l1.service", "uas")):
        stick = node == "l1"
        if stick:  # the stick comes
            start_stick(g)
            g.wait_until("the agent to find the stick", lambda: f"BlinkStick {SERIAL} found"
                         in _agent_said(g), 60)
            node_path = g.run(["sh", "-c", "for d in /sys/bus/usb/devices/*; do "
                               "[ \"$(cat $d/idVendor 2>/dev/null)\" = 20a0 ] && "
                               "echo /dev/bus/usb/$(printf %03d $(cat $d/busnum))/"
                               "$(printf %03d $(cat $d/devnum)); done; true"]).stdout.strip()
            access = g.run(["stat", "-c", "%G %a", node_path]).stdout.split()
            assert access == ["offsite", "660"], (node_path, access)
            g.wait_until("the stick to show the state", lambda: _colors(g), 30)
            assert _colors(g)[-1]["rgb"] == _expected("off")
        cursor = _cursor(g)
        plugged = _uptime(g)
        g.plug(image, node, bus, wait=False)  # ejected after its copy: maybe gone soon
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
        usb_device = re.search(r", USB device ([0-9.-]+)\)", said)
        assert usb_device, said
        eject_unit = _journal(g, "-u", unit, f"--after-cursor={cursor}")
        assert any("taken out of the system" in str(e.get("MESSAGE")) for e in eject_unit), unit
        # at the green: no mapping, no mount, no disk; the USB device is still there
        assert g.run(["sh", "-c", "ls /dev/mapper | grep offsite-"], check=False).stdout == ""
        assert g.run(["sh", "-c", "ls /sys/block | grep ^sd"], check=False).stdout == ""
        assert g.run(["test", "-e", f"/sys/bus/usb/devices/{usb_device[1]}"],
                     check=False).returncode == 0, "the USB device went with the disk"
        if stick:
            # on the stick: the work's colour, then green, and green only after the eject
            shown = [c for c in _colors(g) if c["mono"] > plugged and c["index"] == 0]
            greens = [c for c in shown if c["rgb"] == _expected("done")]
            assert greens and greens[0]["mono"] * 1e6 > ejected, (greens, ejected)
            assert [c["rgb"] for c in shown][:2] == [_expected("working-drive"),
                                                      _expected("done")], shown
            # the stick pulled out and plugged back while the drive waits: green again
            g.run(["python3", "/root/blinkstick_gadget.py", "unplug"], timeout=60)
            back = _uptime(g)
            g.run(["python3", "/root/blinkstick_gadget.py", "plug"], timeout=60)
            g.wait_until("the green again", lambda back=back: any(
                c["mono"] > back and c["rgb"] == _expected("done") for c in _colors(g)), 60)
            # the agent restarted: it finds the stick at its start, and still knows the
            # ejected drive is there
            restarted = _uptime(g)
            g.run(["systemctl", "restart", "offsite-agent.service"], timeout=120)
            g.wait_until("the agent's green after its restart", lambda restarted=restarted: any(
                c["mono"] > restarted and c["rgb"] == _expected("done") for c in _colors(g)), 60)
            assert _agent_said(g).count(f"BlinkStick {SERIAL} found") >= 3
        # pulled out: the green ends
        pulled = _uptime(g)
        g.unplug(node)
        g.wait_until("the LED to go off", lambda: _led(g).get("state") == "off", 60)
        assert f"drive {node} pulled out" in _agent_said(g)
        if not stick:
            # no BlinkStick yet: the backup ran, and the journal said so once
            assert _agent_said(g).count("no BlinkStick found") == 1, _agent_said(g)
        else:
            g.wait_until("the stick to go dark", lambda pulled=pulled: any(
                c["mono"] > pulled and c["rgb"] == _expected("off") for c in _colors(g)), 30)
    g.run(["systemctl", "stop", "test-blinkstick"], timeout=60)
