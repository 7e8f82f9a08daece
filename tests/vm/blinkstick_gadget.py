#!/usr/bin/python3
"""A BlinkStick Nano that the guest's kernel enumerates, for the vm tier.

Runs inside the guest (standard kernel), as root, with only the standard library:
dummy_hcd gives the guest a USB device controller wired to a host controller of its own;
a configfs gadget with the BlinkStick's ids (20a0:41e5), strings (its serial) and
bcdDevice (0x0202: a Nano, two LEDs) carries one FunctionFS function: a HID interface
with an interrupt IN endpoint, as the stick has. This program answers the control
requests on ep0 (FUNCTIONFS_ALL_CTRL_RECIP: the blinkstick library sends its feature
reports to the device, not to the interface): SET_REPORT sets colours, GET_REPORT reads
them, and the HID report descriptor for the kernel's usbhid. Every colour it is set to is
appended to RECORD as a JSON line: {"mono": CLOCK_MONOTONIC seconds (the journal's
monotonic clock), "t": unix time, "index": LED, "rgb": [r, g, b]}.

    blinkstick_gadget.py RECORD SERIAL

Plugged in once its descriptors are written (the gadget bound to dummy_udc.0); `plug` and
`unplug` below are what a test does to the gadget's UDC file to pull it out and plug it
in again. Ends on SIGTERM, unbinding the gadget and removing it from configfs.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

CONFIGFS = Path("/sys/kernel/config")
GADGET = CONFIGFS / "usb_gadget" / "blinkstick"
FFS = Path("/dev/ffs-blinkstick")
UDC = "dummy_udc.0"

# FunctionFS (linux/usb/functionfs.h)
DESCRIPTORS_MAGIC_V2, STRINGS_MAGIC = 3, 2
HAS_FS_DESC, HAS_HS_DESC, ALL_CTRL_RECIP = 1, 2, 64
BIND, UNBIND, ENABLE, DISABLE, SETUP, SUSPEND, RESUME = range(7)
EVENT = struct.Struct("<BBHHHB3x")  # usb_ctrlrequest, then the event type

# The stick's HID report descriptor: vendor page, feature reports 1 (one LED: 3 bytes),
# 5 (one LED of many: channel, index, r, g, b) and 6 (8 LEDs at once, as the library's
# set_led_data sends: 1 + 24 bytes).
REPORT_DESCRIPTOR = bytes([
    0x06, 0x00, 0xFF, 0x09, 0x01, 0xA1, 0x01, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08,
    0x85, 0x01, 0x95, 0x03, 0x09, 0x01, 0xB2, 0x02, 0x01,
    0x85, 0x05, 0x95, 0x05, 0x09, 0x01, 0xB2, 0x02, 0x01,
    0x85, 0x06, 0x95, 0x19, 0x09, 0x01, 0xB2, 0x02, 0x01,
    0xC0])
INTERFACE = bytes([9, 4, 0, 0, 1, 3, 0, 0, 0])  # one endpoint, HID, no subclass
HID = bytes([9, 0x21, 0x01, 0x01, 0, 1, 0x22]) + struct.pack("<H", len(REPORT_DESCRIPTOR))
ENDPOINT = bytes([7, 5, 0x81, 3]) + struct.pack("<H", 8) + bytes([10])  # interrupt IN


def descriptors() -> bytes:
    speed = INTERFACE + HID + ENDPOINT
    body = struct.pack("<II", 3, 3) + speed + speed  # full speed, high speed
    flags = HAS_FS_DESC | HAS_HS_DESC | ALL_CTRL_RECIP
    return struct.pack("<III", DESCRIPTORS_MAGIC_V2, 12 + len(body), flags) + body


def strings() -> bytes:
    return struct.pack("<IIII", STRINGS_MAGIC, 16, 0, 0)


def write(path: Path, value: str) -> None:
    path.write_text(value)


def create(serial: str) -> None:
    for module in ("dummy_hcd", "libcomposite", "usb_f_fs"):
        subprocess.run(["/usr/sbin/modprobe", module], check=True)  # noqa: S603
    if not (CONFIGFS / "usb_gadget").exists():
        subprocess.run(["/usr/bin/mount", "-t", "configfs", "none", str(CONFIGFS)],  # noqa: S603
                       check=True)
    GADGET.mkdir()
    write(GADGET / "idVendor", "0x20a0")
    write(GADGET / "idProduct", "0x41e5")
    write(GADGET / "bcdDevice", "0x0202")
    write(GADGET / "bcdUSB", "0x0200")
    english = GADGET / "strings" / "0x409"
    english.mkdir()
    write(english / "manufacturer", "Agile Innovative Ltd")
    write(english / "product", "BlinkStick Nano")
    write(english / "serialnumber", serial)
    config = GADGET / "configs" / "c.1"
    config.mkdir()
    write(config / "MaxPower", "100")
    function = GADGET / "functions" / "ffs.blinkstick"
    function.mkdir()
    (config / "ffs.blinkstick").symlink_to(function)
    FFS.mkdir(exist_ok=True)
    subprocess.run(["/usr/bin/mount", "-t", "functionfs", "blinkstick", str(FFS)],  # noqa: S603
                   check=True)


def destroy() -> None:
    unplug()
    subprocess.run(["/usr/bin/umount", str(FFS)], check=False)  # noqa: S603
    link = GADGET / "configs" / "c.1" / "ffs.blinkstick"
    if link.is_symlink():
        link.unlink()
    for path in (GADGET / "configs" / "c.1", GADGET / "functions" / "ffs.blinkstick",
                 GADGET / "strings" / "0x409", GADGET):
        if path.exists():
            path.rmdir()


def plug() -> None:
    write(GADGET / "UDC", UDC)


def unplug() -> None:
    if (GADGET / "UDC").exists() and (GADGET / "UDC").read_text().strip():
        write(GADGET / "UDC", "\n")


class Stick:
    def __init__(self, record: Path) -> None:
        self.record = record
        self.leds = [(0, 0, 0)] * 8

    def set(self, index: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= index < len(self.leds):
            self.leds[index] = rgb
        line = {"mono": time.monotonic(), "t": time.time(), "index": index, "rgb": list(rgb)}
        with self.record.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def set_report(self, report: int, data: bytes) -> None:
        if report == 1 and len(data) >= 4:  # [id or 0, r, g, b]: LED 0
            self.set(0, (data[1], data[2], data[3]))
        elif report == 5 and len(data) >= 6:  # [5, channel, index, r, g, b]
            if data[1] == 0:
                self.set(data[2], (data[3], data[4], data[5]))
        elif report == 6 and len(data) >= 2:  # [6, channel, g r b g r b ...]
            for i in range((len(data) - 2) // 3):
                g, r, b = data[2 + 3 * i:5 + 3 * i]
                self.set(i, (r, g, b))

    def get_report(self, report: int, length: int) -> bytes:
        if report == 1:
            r, g, b = self.leds[0]
            data = bytes([1, r, g, b])
        else:
            data = bytes([report])
        return (data + bytes(length))[:length]


def serve(ep0: int, stick: Stick) -> None:
    # poll before each read: a read that waits for an event holds FunctionFS's mutex, and
    # unbinding the gadget (unplug) waits for that mutex (Linux 6.1): a deadlock
    waiting = select.poll()
    waiting.register(ep0, select.POLLIN)
    while True:
        try:
            waiting.poll()
            chunk = os.read(ep0, EVENT.size * 4)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        for offset in range(0, len(chunk), EVENT.size):
            request_type, request, value, _index, length, kind = EVENT.unpack_from(chunk, offset)
            if kind == SETUP:
                answer(ep0, stick, request_type, request, value, length)


def answer(ep0: int, stick: Stick, request_type: int, request: int, value: int,
           length: int) -> None:
    into_host = bool(request_type & 0x80)
    kind = request_type & 0x60
    try:
        if into_host and request == 6 and value >> 8 == 0x22:  # the HID report descriptor
            os.write(ep0, REPORT_DESCRIPTOR[:length])
        elif into_host and kind == 0x20 and request == 0x01:  # GET_REPORT
            os.write(ep0, stick.get_report(value & 0xFF, length))
        elif not into_host and kind == 0x20 and request == 0x09:  # SET_REPORT
            stick.set_report(value & 0xFF, os.read(ep0, length) if length else b"")
        elif into_host or (kind == 0x20 and request == 0x0A):
            # a read: on SET_IDLE (no data) the status stage, the request accepted; on any
            # other IN request a stall (a read answers an IN request with a stall)
            os.read(ep0, 0)
        else:  # any other OUT request: stalled (a write, on an OUT request)
            os.write(ep0, b"")
    except OSError as exc:
        if exc.errno not in (errno.EL2HLT, errno.EIDRM, errno.ESHUTDOWN):
            raise


def main() -> int:
    record, serial = Path(sys.argv[1]), sys.argv[2]
    record.parent.mkdir(parents=True, exist_ok=True)
    stick = Stick(record)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    create(serial)
    ep0 = os.open(FFS / "ep0", os.O_RDWR)
    try:
        os.write(ep0, descriptors())
        os.write(ep0, strings())
        plug()
        serve(ep0, stick)
    finally:
        os.close(ep0)
        destroy()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("plug", "unplug"):
        plug() if sys.argv[1] == "plug" else unplug()
        sys.exit(0)
    sys.exit(main())
