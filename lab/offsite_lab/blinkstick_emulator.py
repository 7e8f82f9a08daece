"""An emulated BlinkStick for the demo and the tests: a pyusb backend that answers USB
control transfers as the device does, so the real `blinkstick` library (and offsite's LED
code) runs against it. offsite itself knows nothing of it: in the demo's and the tests'
sandboxes, a drop-in starts the agent through this module (`python -m
offsite_lab.blinkstick_emulator --config FILE agent`), which makes this backend pyusb's
default and then runs offsite's own command line in the same process. Its
state lives in the directory OFFSITE_TEST_BLINKSTICK names, shared with the test:
- `present`: exists while the stick is "plugged in" (remove it to pull the stick out);
- `colors.jsonl`: every colour the device was set to, one JSON object per line
  ({"t": unix time, "index": LED, "rgb": [r, g, b]}), appended as the device gets them.
"""

from __future__ import annotations

import array
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import usb.backend
import usb.core

VENDOR_ID, PRODUCT_ID = 0x20A0, 0x41E5
SERIAL = "BS000001-3.0"
STRINGS = {1: "Agile Innovative Ltd", 2: "BlinkStick", 3: SERIAL}
GET_DESCRIPTOR, DESC_STRING = 6, 3
HID_SET_REPORT, HID_GET_REPORT = 0x09, 0x01


def state_dir() -> Path:
    return Path(os.environ.get("OFFSITE_TEST_BLINKSTICK", "/run/offsite-test-blinkstick"))


class _Descriptor:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


DEVICE = _Descriptor(
    bLength=18, bDescriptorType=1, bcdUSB=0x0110, bDeviceClass=0, bDeviceSubClass=0,
    bDeviceProtocol=0, bMaxPacketSize0=8, idVendor=VENDOR_ID, idProduct=PRODUCT_ID,
    bcdDevice=0x0300, iManufacturer=1, iProduct=2, iSerialNumber=3, bNumConfigurations=1,
    address=7, bus=1, port_number=1, port_numbers=(1,), speed=usb.util.SPEED_LOW)


class Backend(usb.backend.IBackend):  # type: ignore[misc]
    """One BlinkStick (8 LEDs) on an emulated bus."""

    def __init__(self) -> None:
        self.leds = [(0, 0, 0)] * 8

    # -- finding and opening ------------------------------------------------------------
    def enumerate_devices(self) -> Any:
        if (state_dir() / "present").exists():
            yield "blinkstick"

    def get_device_descriptor(self, dev: Any) -> Any:
        return DEVICE

    def get_configuration_descriptor(self, dev: Any, config: int) -> Any:
        return _Descriptor(bLength=9, bDescriptorType=2, wTotalLength=34, bNumInterfaces=1,
                           bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80,
                           bMaxPower=50, extra_descriptors=[])

    def open_device(self, dev: Any) -> Any:
        self._check()
        return "handle"

    def close_device(self, dev_handle: Any) -> None:
        pass

    def is_kernel_driver_active(self, dev_handle: Any, intf: int) -> bool:
        return False

    def get_configuration(self, dev_handle: Any) -> int:
        return 1

    def set_configuration(self, dev_handle: Any, config_value: int) -> None:
        pass

    # -- talking to it --------------------------------------------------------------------
    def _check(self) -> None:
        if not (state_dir() / "present").exists():
            raise usb.core.USBError("No such device (it may have been disconnected)",
                                    errno.ENODEV, -4)

    def ctrl_transfer(self, dev_handle: Any, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        self._check()
        if bmRequestType == 0x80 and bRequest == GET_DESCRIPTOR and wValue >> 8 == DESC_STRING:
            index = wValue & 0xFF
            payload = b"\x09\x04" if index == 0 else STRINGS.get(index, "").encode("utf-16-le")
            return _fill(data, bytes([2 + len(payload), DESC_STRING]) + payload)
        if bmRequestType == 0x20 and bRequest == HID_SET_REPORT:
            self._set_report(wValue, bytes(data))
            return len(data)
        if bmRequestType == 0xA0 and bRequest == HID_GET_REPORT:
            r, g, b = self.leds[0]
            return _fill(data, bytes([wValue & 0xFF, r, g, b]))
        raise usb.core.USBError(f"emulated BlinkStick: unexpected request "
                                f"{bmRequestType:#x}/{bRequest:#x}", errno.EPIPE, -9)

    def _set_report(self, report_id: int, data: bytes) -> None:
        if report_id == 1:  # [report id, r, g, b]: the first LED
            index, rgb = 0, tuple(data[1:4])
        elif report_id == 5:  # [report id, channel, index, r, g, b]
            index, rgb = data[2], tuple(data[3:6])
        else:
            return  # modes, LED data arrays: not used by offsite
        self.leds[index] = rgb  # type: ignore[assignment]
        with (state_dir() / "colors.jsonl").open("a") as f:
            f.write(json.dumps({"t": time.time(), "index": index, "rgb": list(rgb)}) + "\n")


def _fill(buffer: Any, payload: bytes) -> int:
    n = min(len(buffer), len(payload))
    if isinstance(buffer, array.array):
        buffer[:n] = array.array("B", payload[:n])
    else:
        buffer[:n] = payload[:n]
    return n


_backend = Backend()


def get_backend() -> Backend:
    return _backend


STATE_INSIDE = "/run/offsite-test-blinkstick"
DROP_IN = "/etc/systemd/system/offsite-agent.service.d/emulated-led.conf"


def plug_into(box: Any, config: str) -> str:
    """Give the agent of a sandbox (offsite_lab.sandbox.Sandbox) this emulated, plugged-in
    BlinkStick: a drop-in that starts offsite-agent.service through this module. config is
    the configuration file inside. Returns the state directory inside (see the module's
    docstring)."""
    box.run(["mkdir", "-p", STATE_INSIDE])
    box.write(f"{STATE_INSIDE}/present", "")
    argv = [sys.executable, "-m", __name__, "--config", config, "agent"]
    box.write(DROP_IN, "\n".join([
        "[Service]", "ExecStart=", "ExecStart=" + " ".join(argv),
        f"Environment=OFFSITE_TEST_BLINKSTICK={STATE_INSIDE}", f"ReadWritePaths={STATE_INSIDE}",
        ""]))
    return STATE_INSIDE


def colors(directory: Path) -> list[dict[str, Any]]:
    """What the emulated device was set to, oldest first (for the test's side)."""
    path = directory / "colors.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    """offsite's command line, with this emulated stick as pyusb's default backend."""
    import usb.backend.libusb1

    from offsite import cli

    usb.backend.libusb1.get_backend = lambda *args, **kwargs: _backend
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
