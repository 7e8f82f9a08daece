"""sd_notify(3) without libsystemd: readiness, status and watchdog for Type=notify units."""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send KEY=VALUE lines to systemd; False when not run by systemd (no NOTIFY_SOCKET)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall("\n".join(lines).encode())
    return True


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec=), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
