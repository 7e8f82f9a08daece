"""Talking to the running systemd over D-Bus (pystemd): reload, start, stop, ask state.

A thin layer on purpose: what to do is decided elsewhere; this only carries it out. The
bus is the system bus, or whatever DBUS_SYSTEM_BUS_ADDRESS names (the test sandbox).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from offsite.errors import Fatal

log = logging.getLogger(__name__)


@contextmanager
def _manager() -> Iterator[Any]:
    try:
        from pystemd.systemd1 import Manager
    except ImportError as exc:  # pragma: no cover - a broken install, not a test case
        raise Fatal("pystemd is not installed", "reinstall offsite with its dependencies") from exc
    try:
        manager = Manager()
        manager.load()
    except Exception as exc:
        raise Fatal(f"cannot reach systemd over D-Bus: {exc}",
                    "is systemd running as PID 1 (and the system bus up)?") from exc
    yield manager.Manager


def _dbus_error(action: str, unit: str, exc: Exception) -> Fatal:
    return Fatal(f"systemd refused to {action} {unit}: {exc}")


def reload() -> None:
    """One daemon-reload; returns when systemd has finished reloading."""
    with _manager() as manager:
        log.debug("daemon-reload")
        try:
            manager.Reload()
        except Exception as exc:
            raise Fatal(f"systemd daemon-reload failed: {exc}") from exc


def start(units: Iterable[str]) -> list[str]:
    """Start units; returns the id of each start job (JOB_ID= in systemd's log lines)."""
    ids = []
    with _manager() as manager:
        for unit in units:
            try:
                path = manager.StartUnit(unit.encode(), b"replace")
            except Exception as exc:
                raise _dbus_error("start", unit, exc) from exc
            text = path.decode() if isinstance(path, bytes) else str(path)
            ids.append(text.rsplit("/", 1)[-1])
    return ids


def stop(units: Iterable[str]) -> None:
    """Stop units that are loaded; units systemd does not know are skipped."""
    with _manager() as manager:
        for unit in units:
            try:
                manager.StopUnit(unit.encode(), b"replace")
            except Exception as exc:
                if "NoSuchUnit" in str(exc) or "not loaded" in str(exc):
                    continue
                raise _dbus_error("stop", unit, exc) from exc


def try_restart(units: Iterable[str]) -> None:
    """Restart units that are running; leave stopped ones stopped."""
    with _manager() as manager:
        for unit in units:
            try:
                manager.TryRestartUnit(unit.encode(), b"replace")
            except Exception as exc:
                raise _dbus_error("restart", unit, exc) from exc
