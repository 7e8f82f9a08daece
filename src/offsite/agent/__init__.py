"""The long-running agent: udev and systemd in, the LED and the metrics out.

daemon (the asyncio loop) · ledstate (which colour, pure) · stick (the BlinkStick).
May import: base, config, units, notify.
"""
