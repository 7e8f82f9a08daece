"""Targets other than a USB drive, as pure facts: names, member markers and the assembly
plan of a cloud RAID. The commands that act on them are in cloudraid.py and nbd.py.

A cloud RAID is N image files, one per folder that a different sync provider keeps in
sync. Next to each image lies a small JSON marker: which set it belongs to, its member
number, the generation (counted up at every assembly and every clean teardown) and the
machine that last assembled it. Markers are read from folders other parties can write to:
every field is checked, and none of them reaches a command line or a path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offsite import state
from offsite.config.model import CloudRaid, Target


@dataclass(frozen=True)
class UnitNeeds:
    """What a target's kind asks of its unit (offsite-target-NAME.service): rendered by
    units/render.py, declared by each kind's module."""

    what: str  # for the description: "cloud RAID5 over 3 folders"
    modules: tuple[str, ...]  # kernel modules loaded before the assembly
    why_first: tuple[str, ...]  # a comment: why the mounts and units below come first
    requires_mounts: tuple[Path, ...]  # RequiresMountsFor=
    wants: tuple[str, ...]  # units wanted and ordered before it
    writable: tuple[Path, ...]  # ReadWritePaths= beside the sandbox
    network: tuple[str, str, str]  # the one network option (key, value, why)


MAPPER_PREFIX = "offsite-target-"
_SET_ID = re.compile(r"^[0-9a-f]{32}$")
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")


def mapper_name(target: Target) -> str:
    # the name was validated to [a-z0-9_-]{1,24}: safe for device-mapper and md
    return f"{MAPPER_PREFIX}{target.name}"


def filesystem_device(target: Target) -> str:
    """The unlocked device that holds the target's filesystem while it is assembled."""
    return f"/dev/mapper/{mapper_name(target)}"


def md_name(target: Target) -> str:
    return f"offsite-{target.name}"


def image_path(target: Target, folder: Path) -> Path:
    return folder / f"offsite-{target.name}.img"


def marker_path(target: Target, folder: Path) -> Path:
    return folder / f"offsite-{target.name}.marker"


def runtime_file(target: Target, root: Path = state.RUN_DIR) -> Path:
    """What the assembly set up (devices, generation), while it is assembled."""
    return root / "targets" / f"{target.name}.json"


def health_file(target: Target, root: Path = state.STATE_DIR) -> Path:
    """The last assembly's verdict (ok, degraded, refused, failed) and the last copy."""
    return root / "targets" / f"{target.name}.json"


# -- markers -------------------------------------------------------------------------


class MarkerError(ValueError):
    pass


@dataclass(frozen=True)
class Marker:
    set_id: str  # random, fixed at create: tells this set from any other
    member: int  # 0-based position in the config's members list at create (or grow)
    generation: int
    machine: str  # /etc/machine-id of the computer that wrote it
    hostname: str  # for messages only
    state: str  # "assembled" (in use now, or a crash), "clean" (torn down), "blank" (new)
    time: float
    size: int  # how many members the set has (grows with `offsite target grow`)

    def to_json(self) -> str:
        return json.dumps({"set": self.set_id, "member": self.member,
                           "generation": self.generation, "machine": self.machine,
                           "hostname": self.hostname, "state": self.state,
                           "time": self.time, "size": self.size}, indent=1) + "\n"


STATES = ("assembled", "clean", "blank")


def parse_marker(text: str) -> Marker:
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise MarkerError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MarkerError("not a JSON object")

    def field(key: str, kind: type) -> Any:
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MarkerError(f"{key!r} is missing or not a {kind.__name__}")
        return value

    set_id = field("set", str)
    machine = field("machine", str)
    state = field("state", str)
    if not _SET_ID.match(set_id):
        raise MarkerError("'set' is not a set id (32 hexadecimal digits)")
    if not _MACHINE_ID.match(machine):
        raise MarkerError("'machine' is not a machine id (32 hexadecimal digits)")
    if state not in STATES:
        raise MarkerError(f"'state' is not one of {', '.join(STATES)}")
    member = field("member", int)
    generation = field("generation", int)
    size = field("size", int)
    if not 0 <= member < 64 or not 0 <= generation < 2**62 or not 2 <= size <= 64:
        raise MarkerError("'member', 'generation' or 'size' is out of range")
    when = data.get("time")
    hostname = data.get("hostname")
    return Marker(set_id, member, generation, machine,
                  printable(hostname) if isinstance(hostname, str) else "?", state,
                  float(when) if isinstance(when, int | float) else 0.0, size)


def printable(text: str, limit: int = 64) -> str:
    """A string from outside, safe to show in a message: printable ASCII, bounded."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


# -- the assembly plan --------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    index: int
    folder: Path
    image: bool  # the image file exists
    marker: Marker | None
    problem: str | None = None  # the marker could not be read: why


@dataclass(frozen=True)
class Plan:
    assemble: tuple[int, ...]  # members with current md data: given to mdadm --assemble
    add: tuple[int, ...]  # present but stale or blank: added back, md resyncs them
    missing: tuple[int, ...]  # no image (or no readable marker): the array runs without
    set_id: str
    generation: int  # the newest generation among the markers
    refusal: str | None = None  # why it must not be assembled here, if it must not
    new: tuple[int, ...] = ()  # in the config beyond the set's size: for `offsite target grow`
    size: int = 0  # members the set has now

    @property
    def degraded(self) -> bool:
        return bool(self.add or self.missing)


def plan(raid: CloudRaid, members: list[Member], machine: str) -> Plan:
    """Which member files to use, add back or do without; or why not to assemble at all.

    Refused: members of different sets; a set that another computer assembled last (two
    computers writing one set would fork it); more members missing than the level
    survives.
    """
    def refused(why: str) -> Plan:
        return Plan((), (), tuple(m.index for m in members), "", 0, why)

    marked = [m for m in members if m.marker is not None]
    if not marked:
        return refused("no member has a readable marker: was the set created? "
                       "(offsite target create NAME)")
    sets = {m.marker.set_id for m in marked if m.marker}
    if len(sets) > 1:
        listing = "; ".join(f"{m.folder}: set {m.marker.set_id[:8]}" for m in marked if m.marker)
        return refused(f"the members belong to different sets ({listing})")
    set_id = sets.pop()
    foreign = [m for m in marked if m.marker and m.marker.machine != machine]
    if foreign:
        other = foreign[0].marker
        assert other is not None  # noqa: S101 - filtered above
        doing = "has it assembled now" if other.state == "assembled" else "assembled it last"
        return refused(
            f"another computer, {other.hostname} (machine id {other.machine[:12]}), {doing} "
            f"(marker in {foreign[0].folder}, generation {other.generation}); assembling it "
            "here too would fork the set. If that computer no longer uses it, stop offsite "
            "there and run: offsite target take-over NAME")
    newest = max(m.marker.generation for m in marked if m.marker)
    size = max(m.marker.size for m in marked if m.marker)
    if len(members) < size:
        return refused(f"the configuration lists {len(members)} members, but the set has "
                       f"{size}: put the missing folders back under members:")
    assemble, add, missing, new = [], [], [], []
    for m in members:
        if m.index >= size:
            new.append(m.index)  # not part of the array yet, whatever is in the folder
        elif not m.image or m.marker is None:
            missing.append(m.index)
        elif m.marker.state == "blank":
            add.append(m.index)
        elif m.marker.generation < newest - 1:
            # generation - 1: a member dropped during the last run was left at the
            # assembled generation; mdadm tells a stale member by its own event count too
            add.append(m.index)
        else:
            assemble.append(m.index)
    usable = len(assemble)
    needed = size - raid.tolerance(size)
    if usable < needed:
        return Plan(tuple(assemble), tuple(add), tuple(missing), set_id, newest,
                    f"only {usable} of {size} members are current; RAID"
                    f"{raid.level.value} needs {needed} (missing: "
                    f"{', '.join(str(members[i].folder) for i in missing) or 'none'}; stale: "
                    f"{', '.join(str(members[i].folder) for i in add) or 'none'})",
                    tuple(new), size)
    return Plan(tuple(assemble), tuple(add), tuple(missing), set_id, newest, None, tuple(new),
                size)


def describe(plan_: Plan, members: list[Member]) -> str:
    """One line for the journal and the status: what runs without what."""
    parts = []
    if plan_.missing:
        parts.append("missing: " + ", ".join(str(members[i].folder) for i in plan_.missing))
    if plan_.add:
        parts.append("resyncing: " + ", ".join(str(members[i].folder) for i in plan_.add))
    if plan_.new:
        parts.append("not in the set yet (offsite target grow NAME): "
                     + ", ".join(str(members[i].folder) for i in plan_.new))
    return "; ".join(parts) if parts else "all members current"
