"""``offsite agent``: the long-running watcher (offsite-agent.service, Type=notify).

systemd starts the jobs; the agent watches and shows (and starts a drive's jobs only where
systemd dropped the start its plug asked for: plugged in again while a unit of its last run
was still stopping). One asyncio loop, no polling:
- udev, through pyudev's monitor socket in the loop: a configured drive appearing sets the
  LED to "working" at once (before its job has started); an unknown LUKS or filesystem
  UUID is logged with what to do about it; a USB device appearing re-finds the LED;
- systemd, over D-Bus (offsite.units.systemd): the ActiveState of offsite's units as it changes; when
  a job unit ends, its result is read from the history its stop hook wrote;
- the watchdog, READY and STATUS through sd_notify (offsite.units.systemd).
A lost bus or a re-executed systemd: reconnect and rebuild the picture from systemd's
current state and the history. SIGHUP: re-read the history and the LED (`offsite led clear`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from offsite import state
from offsite.agent import ledstate
from offsite.agent.ledstate import Phase, Picture
from offsite.agent.stick import PRODUCT_ID, VENDOR_ID, Stick
from offsite.config.model import Config
from offsite.log import fields
from offsite.notify import history, metrics
from offsite.notify.outcome import DRIVE_PULLED
from offsite.targets import eject
from offsite.units import systemd

log = logging.getLogger(__name__)

LED_STATE = state.RUN_DIR / "led.json"  # what the LED shows now, for `offsite status`
LED_CLEARED = state.STATE_DIR / "led.json"  # failures before this are not shown red
# drives ejected and still plugged in (their USB device's sys_path -> drive): kept across
# a restart of the agent, until the next boot
EJECTED = state.RUN_DIR / "ejected.json"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def unknown_drive_hint(uuid: str, fstype: str) -> str:
    """What to do about a drive offsite does not know (uuid: already checked 8-4-4-4-12)."""
    if fstype == "crypto_LUKS":
        return (f"to make it an off-site drive: offsite drive enroll /dev/disk/by-uuid/{uuid} "
                f"--name NAME (it prints the lines for drives:)")
    return f"to make it an off-site drive, add it under drives: with uuid: {uuid} and type: plain"


def replugged_while_ending(states: list[str]) -> bool:
    """A drive plugged in while one of its units (the ActiveStates of its unlock and job
    units) is still stopping from its last run: systemd may drop the start this plug asks
    for, its stop job being in the way."""
    return "deactivating" in states


def start_after_replug(states: list[str], plugged: bool) -> bool:
    """Whether the jobs of a drive plugged in again while its last run was ending are to be
    started now: every unit of it has stopped, none has started again, and the drive is
    still plugged in."""
    return plugged and not any(s in systemd.RUNNING for s in states)


@dataclass
class Units:
    """Which job (and drive) each of offsite's job units runs; which unit unlocks which drive."""

    jobs: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    unlock: dict[str, str] = field(default_factory=dict)

    def jobs_of(self, drive: str) -> list[str]:
        """The job units a plug of drive starts."""
        return [u for u, (_, d) in self.jobs.items() if d == drive]

    def of_drive(self, drive: str) -> list[str]:
        """Every unit of drive: its unlock unit (if LUKS) and its job units."""
        return [*(u for u, d in self.unlock.items() if d == drive), *self.jobs_of(drive)]

    def drive_of(self, unit: str) -> str | None:
        """The drive an unlock or job unit belongs to; None for the others."""
        return self.unlock.get(unit) or (self.jobs[unit][1] if unit in self.jobs else None)

    @classmethod
    def of(cls, cfg: Config) -> Units:
        return cls({u: (ju.job.name, ju.drive) for u, ju in cfg.job_units().items()},
                   cfg.unlock_units())


class Agent:
    def __init__(self, cfg: Config, stick: Stick | None = None) -> None:
        self.cfg = cfg
        self.units = Units.of(cfg)
        self.stick = stick or Stick(cfg.notify.led)
        self.active: dict[str, str | None] = {}  # running job unit -> its drive
        self.drives: dict[str, Phase] = {}  # plugged drive -> phase
        self.devices: dict[str, str] = {}  # udev sys_path of a plugged drive -> its name
        self.unknown: dict[str, str] = {}  # sys_path -> UUID of a drive offsite does not know
        self.unlocked: set[str] = set()
        self.states: dict[str, str] = {}  # offsite's unit -> its ActiveState, as last seen
        # drives plugged in again while a unit of their last run was still stopping: systemd
        # drops the start that plug asks for ("transaction contradicts existing jobs"),
        # so their jobs are started here once that unit has stopped
        self.replugged: set[str] = set()
        self.starting: set[asyncio.Task[None]] = set()
        # a drive offsite ejected (its disk taken out, its USB device still attached): its
        # USB device's sys_path -> the drive, green until that device is pulled out
        self.ejected: dict[str, str] = {}
        self.verdict = ledstate.Verdict("off", "starting")
        self.by_uuid = {d.uuid: d.name for d in cfg.drives}
        self.bus: systemd.Bus | None = None
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()  # connected and the first picture taken
        self.player: asyncio.Task[None] | None = None  # shows frames in turn (a flash)

    # -- the picture and the LED ----------------------------------------------------------
    def failed_jobs(self) -> set[str]:
        """Jobs whose last run failed, or was cut short by its drive being pulled out (the
        copy on it is not the new one: the user must know), since the last `led clear`."""
        cleared = float(state.read(LED_CLEARED).get("cleared", 0.0))
        failed = set()
        for job in self.cfg.jobs:
            for run in history.runs(job.name, limit=20):
                pulled = run.result == "interrupted" and DRIVE_PULLED in (run.detail or "")
                if run.result in (None, "skipped", "interrupted") and not pulled:
                    continue
                if (run.result == "failed" or pulled) and (run.finished or 0) > cleared:
                    failed.add(job.name)
                break
        return failed

    def update(self, why: str = "") -> None:
        picture = Picture(dict(self.active), dict(self.drives), frozenset(self.failed_jobs()),
                          frozenset(self.unlocked))
        verdict = ledstate.resolve(picture)
        led = self.cfg.notify.led
        frames = ledstate.frames(verdict, led.index, led.failure_index)
        if verdict != self.verdict or self.stick.shown not in {f.lights for f in frames}:
            if (verdict.state, verdict.failed) != (self.verdict.state, self.verdict.failed):
                log.info("LED: %s%s (%s)%s", verdict.state, " + failed" if verdict.failed and
                         verdict.state != "failed" else "", verdict.why,
                         f"; {why}" if why else "")
            self.verdict = verdict
            self._play(frames)
            state.write(LED_STATE, {"state": verdict.state, "failed": list(verdict.failed),
                                    "why": verdict.why, "device": self.stick.shown is not None,
                                    "since": time.time()})
            systemd.notify(f"STATUS=LED {verdict.state}: {verdict.why}")

    def _play(self, frames: tuple[ledstate.Frame, ...]) -> None:
        """Show the first frame; more than one (a red flash beside the work's colour) are
        shown in turn by a task until the next verdict. Nothing wakes the agent otherwise."""
        if self.player is not None:
            self.player.cancel()
            self.player = None
        self.stick.show(frames[0].lights)
        if len(frames) > 1:
            with contextlib.suppress(RuntimeError):  # (no event loop: the first frame only)
                self.player = asyncio.get_running_loop().create_task(self._cycle(frames))

    async def _cycle(self, frames: tuple[ledstate.Frame, ...]) -> None:
        await asyncio.sleep(frames[0].seconds or ledstate.FLASH_EVERY)  # (already shown)
        while True:
            for frame in (*frames[1:], frames[0]):
                self.stick.show(frame.lights)
                await asyncio.sleep(frame.seconds or ledstate.FLASH_EVERY)

    # -- udev -------------------------------------------------------------------------------
    def on_block(self, sys_path: str, action: str, uuid: str | None, fstype: str | None) -> None:
        """A block device came, changed or went (a loop device gets a file: "change"). uuid
        and fstype are what udev read from it: never trusted, only compared with the
        configuration; never a name, a path or an argument."""
        if action == "remove" or uuid is None or not _UUID.match(uuid):
            uuid = None
        name = self.by_uuid.get(uuid.lower()) if uuid else None
        if uuid is None:
            self.unknown.pop(sys_path, None)
        elif name is None and fstype in ("crypto_LUKS", "ext4", "xfs", "btrfs") and \
                self.unknown.get(sys_path) != uuid:
            self.unknown[sys_path] = uuid  # said once per appearance
            self._tell_unknown(uuid.lower(), fstype)
        before = self.devices.get(sys_path)
        if name == before:
            return
        if before is not None:
            del self.devices[sys_path]
            usb = eject.chain(sys_path).usb
            if before in self.drives and usb and os.path.isdir(usb):
                # the disk went (ejected, by its unlock unit or its job's last step), the
                # USB device is still plugged in: the drive is there until that goes
                self.ejected[usb] = before
                state.write(EJECTED, self.ejected)
            elif before not in self.devices.values() and before in self.drives:
                del self.drives[before]
                self.update(f"drive {before} removed")
        if name is not None:
            self.devices[sys_path] = name
            if replugged_while_ending(self._states_of(name)):
                self.replugged.add(name)
            if name in self.ejected.values():  # plugged in again
                self.ejected = {u: d for u, d in self.ejected.items() if d != name}
                state.write(EJECTED, self.ejected)
            if name not in self.drives:
                self.drives[name] = Phase.PENDING
                self.update(f"drive {name} plugged in")

    def on_usb(self, sys_path: str, action: str, device_type: str | None,
               product: str | None) -> None:
        """A USB device came or went. An ejected drive's USB device going means it was
        pulled out (its green ends). A BlinkStick going or coming (its ids, as the device
        says them: only compared) makes the next colour look for it again; any device
        coming while no stick answers is a chance the stick is back."""
        if device_type != "usb_device":
            return
        stick = (product or "").startswith(f"{VENDOR_ID:x}/{PRODUCT_ID:x}/")
        if action == "remove":
            name = self.ejected.pop(sys_path, None)
            if name is not None:
                state.write(EJECTED, self.ejected)
            if name is not None and name not in self.devices.values() and name in self.drives:
                del self.drives[name]
                self.update(f"drive {name} pulled out")
            if stick:
                self.stick.forget()
        elif action == "add" and (stick or self.stick.shown is None):
            self.stick.forget()
            self.update("a BlinkStick appeared" if stick else "a USB device appeared")

    @staticmethod
    def _tell_unknown(uuid: str, fstype: str) -> None:
        # the UUID matched the 8-4-4-4-12 hex pattern above; fstype is one of four names
        log.info("a drive offsite does not know appeared (%s, UUID %s); %s", fstype, uuid,
                 unknown_drive_hint(uuid, fstype))

    def drain_udev(self, monitor: Any) -> None:
        while True:
            device = monitor.poll(timeout=0)
            if device is None:
                return
            if device.subsystem == "usb":
                self.on_usb(device.sys_path, device.action or "", device.device_type,
                            device.properties.get("PRODUCT"))
                continue
            if device.subsystem == "block":
                self.on_block(device.sys_path, device.action or "", device.properties.get("ID_FS_UUID"),
                              device.properties.get("ID_FS_TYPE"))

    # -- systemd ----------------------------------------------------------------------------
    def on_unit_state(self, unit: str, active_state: str) -> None:
        self.states[unit] = active_state
        self._on_unit_state(unit, active_state)
        drive = self.units.drive_of(unit)
        if drive is None or drive not in self.replugged:
            return
        if unit in self.units.jobs and active_state in ("activating", "active"):
            self.replugged.discard(drive)  # started after all (systemd queued it)
        elif start_after_replug(self._states_of(drive), drive in self.devices.values()):
            self.replugged.discard(drive)
            self._start_jobs_of(drive)
        elif drive not in self.devices.values():
            self.replugged.discard(drive)  # pulled out again meanwhile

    def _states_of(self, drive: str) -> list[str]:
        return [self.states.get(u, "inactive") for u in self.units.of_drive(drive)]

    def _start_jobs_of(self, drive: str) -> None:
        jobs = self.units.jobs_of(drive)
        log.info("drive %s was plugged in again while its last run was still ending, and "
                 "systemd dropped the start of its jobs; starting %s", drive, ", ".join(jobs))
        with contextlib.suppress(RuntimeError):  # (no event loop: nothing to start with)
            loop = asyncio.get_running_loop()
            for unit in jobs:
                task = loop.create_task(self._start(unit))
                self.starting.add(task)
                task.add_done_callback(self.starting.discard)

    async def _start(self, unit: str) -> None:
        try:
            await self._call("StartUnit", "ss", [unit, "replace"])
        except ConnectionError as exc:
            log.warning("could not start %s: %s", unit, exc)

    def _on_unit_state(self, unit: str, active_state: str) -> None:
        if unit in self.units.unlock:
            luks = self.units.unlock[unit]
            if active_state in systemd.RUNNING:
                self.unlocked.add(luks)
            else:
                self.unlocked.discard(luks)
            self.update()
            return
        if unit not in self.units.jobs:
            return
        job, drive = self.units.jobs[unit]
        if active_state in systemd.RUNNING:
            if unit not in self.active:
                self.active[unit] = drive
                self.update(f"{unit} started")
            return
        if unit in self.active:
            del self.active[unit]
            latest = history.runs(job, limit=1)
            result = latest[0].result if latest else None
            if drive is not None and drive in self.drives:
                self.drives[drive] = Phase.FAILED if result == "failed" else (
                    Phase.DONE if result in ("success", "warning", "skipped") else
                    self.drives[drive])
            metrics.write(self.cfg)
            log.info("%s ended: %s", unit, result or "not recorded", extra=fields(job=job))
            self.update(f"{unit} ended")

    async def rebuild(self) -> None:
        """The picture from systemd's current state (at start, after a reconnect)."""
        reply = await self._call("ListUnitsByPatterns", "asas", [list(systemd.RUNNING), ["offsite-*"]])
        running = {u[0]: u[3] for u in reply[0]}
        self.states = dict(running)
        self.active = {u: d for u, (_, d) in self.units.jobs.items() if u in running}
        self.unlocked = {d for u, d in self.units.unlock.items() if u in running}
        self.drives, self.devices = {}, {}
        for sys_path, name in self.plugged_now():
            self.devices[sys_path] = name
            if any(u in self.active for u in self.units.jobs_of(name)):
                self.drives[name] = Phase.PENDING
            else:
                self.drives[name] = self._phase_at_start(sys_path, name)
        # drives ejected before (this agent's, or the one before a restart), still plugged
        ejected = {**state.read(EJECTED), **self.ejected}
        self.ejected = {u: d for u, d in ejected.items() if isinstance(d, str)
                        and d in self.by_uuid.values() and os.path.isdir(u)}
        for name in self.ejected.values():
            self.drives.setdefault(name, Phase.DONE)
        self.update("picture rebuilt from systemd")

    def _phase_at_start(self, sys_path: str, name: str) -> Phase:
        """A drive plugged in while no job of it runs: its last run failed (red), or it is
        done, unless nothing says so: no run yet, or a drive offsite ejects whose disk is
        still there (its job has not ended since it was plugged). Never a green by guess."""
        runs = [r for r in history.runs(limit=50) if r.drive == name and r.result]
        if runs and runs[0].result == "failed":
            return Phase.FAILED
        links = eject.chain(sys_path)
        if runs and not (self.cfg.drive(name).eject and (links.scsi or links.usb)):
            return Phase.DONE
        return Phase.PENDING

    def plugged_now(self) -> list[tuple[str, str]]:
        """(sys_path, drive) of the configured drives plugged in now, from udev's database."""
        import pyudev

        found = []
        for device in pyudev.Context().list_devices(subsystem="block"):
            uuid = device.properties.get("ID_FS_UUID")
            name = self.by_uuid.get(uuid.lower()) if uuid and _UUID.match(uuid) else None
            if name is not None:
                found.append((device.sys_path, name))
        return found

    async def _call(self, member: str, signature: str = "", body: list[Any] | None = None
                    ) -> list[Any]:
        if self.bus is None:
            raise ConnectionError("not connected to the bus")
        try:
            return await self.bus.call(member, signature, body or [])
        except systemd.BusError as exc:
            raise ConnectionError(str(exc)) from exc

    def on_message(self, message: Any) -> None:
        if message.member == "PropertiesChanged" and message.body and \
                message.body[0] == "org.freedesktop.systemd1.Unit":
            unit = systemd.unit_from_path(message.path or "")
            changed = message.body[1]
            if unit and "ActiveState" in changed:
                self.on_unit_state(unit, changed["ActiveState"].value)
        elif message.member == "NameOwnerChanged" and message.body and message.body[0] == systemd.SYSTEMD:
            log.info("systemd's bus name changed owner (re-executed?); rebuilding")
            asyncio.get_running_loop().create_task(self._resubscribe())

    async def _resubscribe(self) -> None:
        with contextlib.suppress(Exception):
            await self._call("Subscribe")
            await self.rebuild()

    async def connect(self) -> systemd.Bus:
        self.bus = bus = await systemd.Bus.connect()
        bus.on_message(self.on_message)
        await bus.add_match(
            f"type='signal',sender='{systemd.SYSTEMD}',interface='{systemd.PROPERTIES}',"
            f"member='PropertiesChanged',path_namespace='{systemd.UNIT_PATH_PREFIX}'")
        await bus.add_match("type='signal',sender='org.freedesktop.DBus',"
                                 f"member='NameOwnerChanged',arg0='{systemd.SYSTEMD}'")
        await self._call("Subscribe")
        await self.rebuild()
        self.ready.set()
        return bus

    async def bus_loop(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                bus = await self.connect()
                delay = 1.0
                await bus.wait_for_disconnect()
                log.warning("lost the D-Bus connection; reconnecting")
            except Exception as exc:  # any failure of the bus: log it, try again later
                log.warning("cannot talk to systemd over D-Bus (%s: %s); again in %.0f s",
                            type(exc).__name__, exc, delay)
                if self.bus is not None:
                    with contextlib.suppress(Exception):
                        self.bus.disconnect()
                    self.bus = None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 30.0)

    # -- running ----------------------------------------------------------------------------
    async def run(self) -> int:
        import pyudev

        loop = asyncio.get_running_loop()
        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        monitor.filter_by("block")
        monitor.filter_by("usb")
        monitor.start()
        loop.add_reader(monitor.fileno(), self.drain_udev, monitor)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.update("SIGHUP"))
        bus = loop.create_task(self.bus_loop())
        while not self.ready.is_set():  # the first picture before READY
            if bus.done():
                bus.result()
            await asyncio.sleep(0.05)
        metrics.write(self.cfg)
        systemd.notify("READY=1", f"STATUS=LED {self.verdict.state}: {self.verdict.why}")
        log.info("agent ready: watching %d job unit(s) and %d drive(s)", len(self.units.jobs),
                 len(self.cfg.drives))
        watchdog = systemd.watchdog_interval()
        tick = min(watchdog or metrics.HEARTBEAT_EVERY, metrics.HEARTBEAT_EVERY)
        beat = 0.0
        while not self.stopping.is_set():
            if time.monotonic() - beat >= metrics.HEARTBEAT_EVERY - 1:
                metrics.write_heartbeat(time.time())
                beat = time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), tick)
            if watchdog:
                systemd.notify("WATCHDOG=1")
        systemd.notify("STOPPING=1")
        bus.cancel()
        loop.remove_reader(monitor.fileno())
        if self.bus is not None:
            self.bus.disconnect()
        return 0


def main(cfg: Config) -> int:
    return asyncio.run(Agent(cfg).run())
