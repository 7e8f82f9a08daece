"""Where the configured places may be: every path offsite writes into, checked against the
system's directories and against every other such path.

A job's unit makes its repositories writable (ReadWritePaths=), a pull deletes what its
source no longer has (rsync --delete), a drive or a target is mounted over its mount point
and a namespace mount over its place. So no such place may be / or one of the system's own
directories, and none may equal or hold another where one job could then write into, hide
or delete another's data. Pure: the reader collects the places, this says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath, PurePosixPath

from offsite.config.yamlsrc import Loc


class Role(StrEnum):
    REPOSITORY = "repository"
    DRIVE_MOUNT = "drive mount point"
    TARGET_MOUNT = "target mount point"
    HOLDING = "pull holding directory"
    MEMBER = "cloud RAID member folder"
    NAMESPACE_MOUNT = "namespace mount"


@dataclass(frozen=True)
class Place:
    path: PurePath  # normalised (the reader's abspath)
    role: Role
    owner: str  # the drive, repository, job... it belongs to
    key_path: str  # repositories.main.path
    loc: Loc
    share: str = ""  # places with the same non-empty share may be one path (a rotation group)


@dataclass(frozen=True)
class Conflict:
    place: Place
    message: str
    hint: str


P = PurePosixPath
# Never anything of offsite's inside these: the system's own trees, virtual filesystems,
# and where offsite keeps its configuration, keys, state and spool.
SYSTEM_TREES = tuple(P(p) for p in (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/lib/offsite", "/var/spool", "/var/lib/dpkg", "/var/lib/apt",
    "/var/lib/systemd", "/var/log",
))
# Places that may hold offsite's data below them, but are not a place themselves: a pull
# with --delete into /home would empty everyone's home, a repository at /srv would make
# all of /srv writable to its jobs.
SYSTEM_DIRS = frozenset(P(p) for p in (
    "/", "/home", "/root", "/srv", "/mnt", "/media", "/opt", "/tmp", "/var", "/var/tmp",  # noqa: S108
    "/var/cache", "/var/lib", "/var/backups", "/var/mail", "/usr/local",
))
NAMESPACE_RECORD_TREE = P("/run")


def _inside(path: PurePath, tree: PurePath) -> bool:
    return path == tree or path.is_relative_to(tree)


def system_problem(place: Place) -> Conflict | None:
    """Why a place cannot be where it is on any machine, or None."""
    path = place.path
    if place.role is Role.NAMESPACE_MOUNT:
        # a data disk mounted at /srv inside the namespace is what these mounts are for
        if path == P("/"):
            return Conflict(place, "a namespace mount cannot be at /",
                            "mount it at its own directory, e.g. /srv/backup")
    elif path in SYSTEM_DIRS:
        return Conflict(place, f"a {place.role} cannot be {path}, a directory of the system's "
                        "own", f"a directory of its own below it, e.g. {_example(place)}")
    for tree in SYSTEM_TREES:
        if _inside(path, tree):
            return Conflict(place, f"a {place.role} cannot be {'at' if path == tree else 'inside'}"
                            f" {tree}", f"keep it out of {tree}, e.g. {_example(place)}")
    return None


def _example(place: Place) -> str:
    return {
        Role.REPOSITORY: "/srv/borg/" + place.owner,
        Role.DRIVE_MOUNT: "/mnt/offsite",
        Role.TARGET_MOUNT: "/mnt/offsite-" + place.owner,
        Role.HOLDING: "/srv/holding/" + place.owner,
        Role.MEMBER: "/srv/cloud/provider-a",
        Role.NAMESPACE_MOUNT: "/srv/backup",
    }[place.role]


def _describe(place: Place) -> str:
    return f"{place.role} of {place.owner} ({place.key_path}: {place.path})"


def overlaps(places: Iterable[Place]) -> Iterator[Conflict]:
    """Each place that equals or contains another (reported at the later of the two)."""
    seen: list[Place] = []
    for place in places:
        for other in seen:
            conflict = _overlap(place, other)
            if conflict is not None:
                yield conflict
        seen.append(place)


def _overlap(place: Place, other: Place) -> Conflict | None:
    a, b = place.path, other.path
    if a != b and not a.is_relative_to(b) and not b.is_relative_to(a):
        return None
    ns_a, ns_b = place.role is Role.NAMESPACE_MOUNT, other.role is Role.NAMESPACE_MOUNT
    if ns_a and ns_b:
        if a != b:  # nested mounts are fine
            return None
        return Conflict(place, f"two namespace mounts at {a}; the second would hide the first",
                        "one mount per place")
    if ns_a or ns_b:
        mount, data = (place, other) if ns_a else (other, place)
        # data below a namespace mount is what the mount is for; a mount over the data
        # (or at a drive's own mount point) would hide it
        if data.path.is_relative_to(mount.path) and data.path != mount.path:
            return None
        return Conflict(place, f"the {mount.role} at {mount.path} would hide the "
                        f"{_describe(data)}", "mount it somewhere else")
    if a == b and place.share and place.share == other.share:
        return None  # drives of one rotation group: one of them is plugged at a time
    if a == b:
        relation = "is the same place as"
    elif a.is_relative_to(b):
        relation = "is inside"
    else:
        relation = "holds"
    return Conflict(place, f"{place.path} {relation} the {_describe(other)}: one job could "
                    "write into, hide or delete the other's data",
                    "give each its own directory, side by side")


def namespace_record_problem(path: PurePath) -> str | None:
    if path == NAMESPACE_RECORD_TREE or not path.is_relative_to(NAMESPACE_RECORD_TREE):
        return f"the namespace record must be a file under {NAMESPACE_RECORD_TREE}, not {path}"
    return None


def conflicts(places: Iterable[Place]) -> list[Conflict]:
    """Every problem with where the places are: against the system, then against each other
    (a place refused against the system is not compared further)."""
    ok: list[Place] = []
    out: list[Conflict] = []
    for place in places:
        problem = system_problem(place)
        if problem is not None:
            out.append(problem)
        else:
            ok.append(place)
    out += overlaps(ok)
    return out
