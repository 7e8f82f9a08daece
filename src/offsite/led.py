"""The BlinkStick, through the real `blinkstick` library and pyusb.

A missing, unplugged or failing LED is a warning in the journal, once per episode; the
caller keeps working, and the next show() (or reconnect()) finds the stick again.
OFFSITE_USB_BACKEND may name a Python file whose get_backend() returns a pyusb backend to
use instead of libusb: the tests' emulated BlinkStick.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from offsite.ledstate import rgb
from offsite.model import Led

log = logging.getLogger(__name__)

VENDOR_ID, PRODUCT_ID = 0x20A0, 0x41E5


def _backend() -> Any:
    path = os.environ.get("OFFSITE_USB_BACKEND")
    if not path:
        return None  # pyusb's own choice: libusb-1.0
    spec = importlib.util.spec_from_file_location("offsite_usb_backend", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a USB backend from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_backend()


class Stick:
    """One BlinkStick LED, shown a state by name (ledstate.STATES)."""

    def __init__(self, cfg: Led) -> None:
        self.cfg = cfg
        self.device: Any = None
        self.shown: str | None = None  # what the device was last set to
        self.warned = False
        self._usb_backend: Any = None

    def _find(self) -> Any:
        import usb.core
        from blinkstick import blinkstick

        if self._usb_backend is None:
            self._usb_backend = _backend()
        found = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID,
                              backend=self._usb_backend)
        return blinkstick.BlinkStick(device=found) if found is not None else None

    def _warn(self, message: str, *args: object) -> None:
        if not self.warned:
            log.warning("LED: " + message + "; offsite works on without it", *args)
            self.warned = True

    def show(self, state: str) -> bool:
        """Set the LED to state's colour; True if the device took it."""
        if not self.cfg.enabled:
            return False
        color = (0, 0, 0) if state == "off" else rgb(self.cfg.color(state), self.cfg.brightness)
        try:
            if self.device is None:
                self.device = self._find()
                if self.device is None:
                    self._warn("no BlinkStick found (plugged in? may this user use it? see "
                               "the udev rule in offsite's packaging)")
                    self.shown = None
                    return False
                log.info("LED: BlinkStick %s found", self.device.get_serial())
            self.device.set_color(channel=0, index=self.cfg.index, red=color[0],
                                  green=color[1], blue=color[2])
        except Exception as exc:  # any failure of the device is a warning
            self.device = None
            self.shown = None
            if type(exc).__name__ == "NoBackendError":
                self._warn("no USB library to reach it (install libusb-1.0-0)")
            else:
                self._warn("the BlinkStick stopped answering (%s)", exc)
            return False
        if self.warned:
            log.info("LED: the BlinkStick answers again")
        self.warned = False
        self.shown = state
        return True
