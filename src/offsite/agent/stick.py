"""The BlinkStick, through the real `blinkstick` library and pyusb.

A missing, unplugged or failing LED is a warning in the journal, once per episode; the
caller keeps working, and the next show() (or reconnect()) finds the stick again.
"""

from __future__ import annotations

import logging
from typing import Any

from offsite.agent.ledstate import rgb
from offsite.config.model import Led

log = logging.getLogger(__name__)

VENDOR_ID, PRODUCT_ID = 0x20A0, 0x41E5


Lights = tuple[tuple[int, str], ...]  # (LED index, state whose colour) for each LED set


class Stick:
    """A BlinkStick, shown states by name (ledstate.STATES) on one LED or two."""

    def __init__(self, cfg: Led) -> None:
        self.cfg = cfg
        self.device: Any = None
        self.shown: Lights | None = None  # what the device was last set to
        self.warned = False

    def _find(self) -> Any:
        import usb.core
        from blinkstick import blinkstick

        found = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID)
        return blinkstick.BlinkStick(device=found) if found is not None else None

    def _warn(self, message: str, *args: object) -> None:
        if not self.warned:
            log.warning("LED: " + message + "; offsite works on without it", *args)
            self.warned = True

    def forget(self) -> None:
        """The stick was pulled out (or another came): look for it again at the next show."""
        if self.device is not None:
            log.info("LED: the BlinkStick was unplugged")
        self.device = None
        self.shown = None

    def show(self, lights: Lights) -> bool:
        """Set each LED to its state's colour; True if the device took them all."""
        if not self.cfg.enabled:
            return False
        try:
            if self.device is None:
                self.device = self._find()
                if self.device is None:
                    self._warn("no BlinkStick found (plugged in? may this user use it? see "
                               "the udev rule in offsite's packaging)")
                    self.shown = None
                    return False
                log.info("LED: BlinkStick %s found", self.device.get_serial())
            for index, state in lights:
                color = (0, 0, 0) if state == "off" else rgb(self.cfg.color(state),
                                                             self.cfg.brightness)
                self.device.set_color(channel=0, index=index, red=color[0], green=color[1],
                                      blue=color[2])
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
        self.shown = lights
        return True
