"""The one binding to the running systemd: D-Bus through dbus-fast, sd_notify through
libsystemd (pystemd).

D-Bus: the agent keeps one asyncio connection (Bus) for the length of its life; the
command line's short calls (reload, start, stop, unit properties) open one for each call
through the same class. Why dbus-fast and not pystemd for D-Bus: pystemd's DBus.process()
hides sd_bus_process()'s return value, so an event loop cannot tell when the messages
sd-bus has already read are all dispatched: a signal could sit in its buffer until the
next one arrives. dbus-fast is built on asyncio. pystemd stays for what is libsystemd's own:
sd_notify (here), the journal (offsite.log) and decoding unit object paths.

A thin layer on purpose: what to do is decided elsewhere; this only carries it out. The
bus is the system bus, or whatever DBUS_SYSTEM_BUS_ADDRESS names (the test sandbox).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from offsite.errors import Fatal

log = logging.getLogger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
RUNNING = ("activating", "active", "deactivating", "reloading")
T = TypeVar("T")


class BusError(Exception):
    """systemd (or the bus) answered a call with an error."""

    def __init__(self, member: str, name: str, text: str) -> None:
        super().__init__(f"{member}: {name}: {text}")
        self.name = name


class Bus:
    """One connection to the system bus."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls) -> Bus:
        from dbus_fast import BusType
        from dbus_fast.aio import MessageBus

        return cls(await MessageBus(bus_type=BusType.SYSTEM).connect())

    async def call(self, member: str, signature: str = "", body: Sequence[Any] = (),
                   destination: str = SYSTEMD, path: str = MANAGER_PATH,
                   interface: str = MANAGER) -> list[Any]:
        from dbus_fast import Message, MessageType

        reply = await self.connection.call(Message(
            destination=destination, path=path, interface=interface, member=member,
            signature=signature, body=list(body)))
        if reply.message_type == MessageType.ERROR:
            raise BusError(member, reply.error_name or "", str(reply.body[0] if reply.body else ""))
        return list(reply.body)

    async def add_match(self, rule: str) -> None:
        await self.call("AddMatch", "s", [rule], destination="org.freedesktop.DBus",
                        path="/org/freedesktop/DBus", interface="org.freedesktop.DBus")

    def on_message(self, handler: Callable[[Any], None]) -> None:
        self.connection.add_message_handler(handler)

    async def wait_for_disconnect(self) -> None:
        await self.connection.wait_for_disconnect()

    def disconnect(self) -> None:
        self.connection.disconnect()

    async def unit_properties(self, unit: str, interface: str) -> dict[str, Any]:
        """Every property of unit on interface (…systemd1.Unit, .Service, .Timer), plain
        values; LoadUnit, so a unit systemd has not loaded yet answers too."""
        (path,) = await self.call("LoadUnit", "s", [unit])
        (values,) = await self.call("GetAll", "s", [interface], path=path, interface=PROPERTIES)
        return {k: v.value for k, v in values.items()}


def _sync(work: Callable[[Bus], Awaitable[T]]) -> T:
    """Run one piece of bus work from synchronous code, on its own connection."""
    async def main() -> T:
        try:
            bus = await Bus.connect()
        except Exception as exc:
            raise Fatal(f"cannot reach systemd over D-Bus: {exc}",
                        "is systemd running as PID 1 (and the system bus up)?") from exc
        try:
            return await work(bus)
        finally:
            bus.disconnect()

    return asyncio.run(main())


def unit_from_path(path: str) -> str | None:
    """systemd's object path of a unit back to its name (_2d -> '-', ...)."""
    if not path.startswith(UNIT_PATH_PREFIX + "/"):
        return None
    from pystemd.dbuslib import path_decode

    return bytes(path_decode(path.encode(), UNIT_PATH_PREFIX.encode())).decode()


def _each(method: str, action: str, units: Iterable[str], *, missing_ok: bool = False) -> list[str]:
    """Call a Manager method (StartUnit, StopUnit, ...) with mode "replace" for each unit;
    returns the id of each job systemd queued (JOB_ID= in its log lines)."""
    async def work(bus: Bus) -> list[str]:
        ids = []
        for unit in units:
            try:
                (path,) = await bus.call(method, "ss", [unit, "replace"])
            except BusError as exc:
                if missing_ok and exc.name.endswith(("NoSuchUnit", "LoadFailed")):
                    continue
                raise Fatal(f"systemd refused to {action} {unit}: {exc}") from exc
            ids.append(str(path).rsplit("/", 1)[-1])
        return ids

    return _sync(work)


def reload() -> None:
    """One daemon-reload; returns when systemd has finished reloading."""
    async def work(bus: Bus) -> None:
        log.debug("daemon-reload")
        try:
            await bus.call("Reload")
        except BusError as exc:
            raise Fatal(f"systemd daemon-reload failed: {exc}") from exc

    _sync(work)


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
    async def work(bus: Bus) -> bool:
        try:
            await bus.call("KillUnit", "ssi", [unit, "main", signum])
        except BusError as exc:  # a unit that is not loaded or not running
            log.debug("no signal to %s: %s", unit, exc)
            return False
        return True

    return _sync(work)


def properties(unit: str, interface: str = "Unit") -> dict[str, Any]:
    """The properties of one unit on org.freedesktop.systemd1.<interface>."""
    return _sync(lambda bus: bus.unit_properties(unit, f"{SYSTEMD}.{interface}"))


def system_state() -> str:
    """The manager's SystemState: running, degraded, stopping (shutting down), ..."""
    async def work(bus: Bus) -> str:
        (value,) = await bus.call("Get", "ss", [MANAGER, "SystemState"], interface=PROPERTIES)
        return str(value.value)

    return _sync(work)


def active_states(units: Sequence[str]) -> dict[str, str]:
    """ActiveState of each unit ("inactive" for a unit systemd does not have loaded)."""
    async def work(bus: Bus) -> dict[str, str]:
        if not units:
            return {}
        (listed,) = await bus.call("ListUnitsByNames", "as", [list(units)])
        return {u[0]: u[3] for u in listed}

    states = _sync(work)
    return {u: states.get(u, "inactive") for u in units}


def timestamp(usec: object) -> float | None:
    """A systemd timestamp property (µs since the epoch; 0: never) in seconds."""
    return usec / 1e6 if isinstance(usec, int) and usec > 0 else None


# -- sd_notify(3), for Type=notify units ------------------------------------------------


def notify(*states: str) -> bool:
    """Send KEY=VALUE states to systemd; False when not run by systemd (no NOTIFY_SOCKET)."""
    from pystemd import daemon

    return bool(daemon.notify(False, *states) > 0)


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec=), or None without a watchdog."""
    from pystemd import daemon

    usec = daemon.watchdog_enabled(False)
    return usec / 2e6 if usec and usec > 0 else None
