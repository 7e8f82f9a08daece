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


def _each(method: str, action: str, units: Iterable[str], *, missing_ok: bool = False) -> list[str]:
    """Call a Manager method (StartUnit, StopUnit, ...) with mode "replace" for each unit;
    returns the id of each job systemd queued (JOB_ID= in its log lines)."""
    ids = []
    with _manager() as manager:
        for unit in units:
            try:
                path = getattr(manager, method)(unit.encode(), b"replace")
            except Exception as exc:
                if missing_ok and ("NoSuchUnit" in str(exc) or "not loaded" in str(exc)):
                    continue
                raise Fatal(f"systemd refused to {action} {unit}: {exc}") from exc
            text = path.decode() if isinstance(path, bytes) else str(path)
            ids.append(text.rsplit("/", 1)[-1])
    return ids


def reload() -> None:
    """One daemon-reload; returns when systemd has finished reloading."""
    with _manager() as manager:
        log.debug("daemon-reload")
        try:
            manager.Reload()
        except Exception as exc:
            raise Fatal(f"systemd daemon-reload failed: {exc}") from exc


def start(units: Iterable[str]) -> list[str]:
    """Start units; returns the id of each start job."""
    return _each("StartUnit", "start", units)


def stop(units: Iterable[str]) -> None:
    """Stop units that are loaded; units systemd does not know are skipped."""
    _each("StopUnit", "stop", units, missing_ok=True)


def try_restart(units: Iterable[str]) -> None:
    """Restart units that are running; leave stopped ones stopped."""
    _each("TryRestartUnit", "restart", units)


def signal_main(unit: str, signum: int) -> bool:
    """Send a signal to unit's main process; False if it is not running."""
    with _manager() as manager:
        try:
            manager.KillUnit(unit.encode(), b"main", signum)
        except Exception as exc:  # a unit that is not loaded or not running
            log.debug("no signal to %s: %s", unit, exc)
            return False
    return True
