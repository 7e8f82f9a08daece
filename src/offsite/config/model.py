"""The validated configuration: frozen, typed, and free of anything YAML-shaped.

Defaults are the schema's (config/schema.py), where each key is declared once; the value
domains (DriveType, JobKind, ...) are the schema's too, and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offsite import unitnames
from offsite.config import schema
from offsite.config.schema import (
    DriveType,
    JobKind,
    OnWarning,
    RaidLevel,
    SecretSource,
    SmtpSecurity,
    TargetType,
)

__all__ = ["DriveType", "JobKind", "OnWarning", "RaidLevel", "SecretSource", "SmtpSecurity",
           "TargetType"]
D, T, J, S, E, L, H, N, P = (schema.DRIVES, schema.TARGETS, schema.JOBS, schema.SMTP, schema.EMAIL,
                             schema.LED, schema.HEALTHCHECKS, schema.NAMESPACE, schema.PULL_SOURCE)
PT = schema.PUSH_TARGET


def _d(section: schema.Section, key: str) -> Any:
    """A field's default, as the schema declares it."""
    return section.default(key)


@dataclass(frozen=True)
class Drive:
    name: str
    uuid: str  # lower case, canonical 8-4-4-4-12 form
    type: DriveType
    mount: Path  # inside the backup namespace
    keyfile: Path | None = None  # required for LUKS
    rotation: str | None = None  # drives in one group take turns holding the same copy
    description: str = _d(D, "description")
    stale_after: float = _d(D, "stale_after")  # seconds; an older last copy is reported
    check_every: float = _d(D, "check_every")  # seconds between borg checks of the drive's copy
    eject: bool = _d(D, "eject")  # flushed, stopped and taken out once offsite is done with it


@dataclass(frozen=True)
class CloudRaid:
    """Image files, one per folder that a different sync provider keeps in sync."""

    members: tuple[Path, ...]  # the folders; each holds offsite-<target>.img and .marker
    member_size: int  # bytes, of each image file
    level: RaidLevel = _d(T, "level")

    def tolerance(self, size: int | None = None) -> int:
        """Members of a set of size (default: all in the config) that may be missing or
        stale while every block is still there."""
        n = len(self.members) if size is None else size
        return n - 1 if self.level is RaidLevel.RAID1 else self.level.tolerance


@dataclass(frozen=True)
class NbdRemote:
    """A disk served by nbd-server on the far side's loopback, reached through SSH."""

    host: str
    export: str
    user: str = _d(T, "user")
    port: int = _d(T, "port")  # SSH
    nbd_port: int = _d(T, "nbd_port")  # nbd-server, on the far side's 127.0.0.1
    host_key: str | None = None  # "ssh-ed25519 AAAA...": pinned; else trusted on first use


@dataclass(frozen=True)
class Target:
    """Somewhere other than a USB drive that a mirror job copies to: assembled by the
    target unit before the job, torn down after it. Always LUKS with a keyfile."""

    name: str
    keyfile: Path
    mount: Path  # inside the backup namespace
    raid: CloudRaid | None = None
    nbd: NbdRemote | None = None
    description: str = _d(T, "description")
    stale_after: float = _d(T, "stale_after")

    @property
    def kind(self) -> TargetType:
        return TargetType.CLOUD_RAID if self.raid is not None else TargetType.NBD


@dataclass(frozen=True)
class Passphrase:
    """Where an encrypted repository's passphrase comes from (never the passphrase)."""

    source: SecretSource
    where: str  # the file, the credential, the command, or the borgmatic configuration

    @property
    def loaded_by_systemd(self) -> bool:
        """Handed to the job unit as a credential (LoadCredential=, ...Encrypted=)."""
        return self.source in (SecretSource.FILE, SecretSource.CREDENTIAL)


@dataclass(frozen=True)
class Repository:
    name: str
    path: Path  # the borg repository, as seen inside the backup namespace
    borgmatic_config: Path | None = None
    passphrase: Passphrase | None = None  # None: not encrypted, or no passphrase

    @property
    def credential(self) -> str:
        """The systemd credential that carries the passphrase into a job unit."""
        return unitnames.credential(self.name)


@dataclass(frozen=True)
class Schedule:
    calendar: str  # an OnCalendar= expression systemd accepts
    randomized_delay: float = _d(J, "randomized_delay")  # seconds


@dataclass(frozen=True)
class DriveTrigger:
    drives: tuple[str, ...]  # drive names (a rotation group expands to its members)


@dataclass(frozen=True)
class PullSource:
    host: str
    paths: tuple[str, ...]
    user: str = _d(P, "user")
    port: int = _d(P, "port")
    before: str | None = None  # command run on the far side before the copy
    after: str | None = None  # run on the far side after the copy, even when it failed
    host_key: str | None = None  # "ssh-ed25519 AAAA...": pinned; else trusted on first use


@dataclass(frozen=True)
class PushTarget:
    host: str
    path: str  # the far side's directory (rrsync's root for the job's keys)
    user: str = _d(PT, "user")
    port: int = _d(PT, "port")
    host_key: str | None = None  # "ssh-ed25519 AAAA...": pinned; else trusted on first use
    bandwidth: int | None = None  # bytes a second
    compress: bool = _d(PT, "compress")


@dataclass(frozen=True)
class Job:
    name: str
    kind: JobKind
    timeout: float  # seconds; TimeoutStartSec= of the job unit
    trigger: Schedule | DriveTrigger | None = None  # None: started by hand only
    repositories: tuple[str, ...] = ()
    description: str = _d(J, "description")
    pull: PullSource | None = None
    destination: Path | None = None  # pull: the holding directory inside the namespace
    verify_data: bool = _d(J, "verify_data")  # borg-check: also read and verify every chunk
    sample: int = 0  # restore-test: files to extract and compare
    healthcheck: str | None = None  # a healthchecks-style ping URL for this job
    on_warning: OnWarning = _d(J, "on_warning")  # borg's exit 1, rsync's 24 (vanished files)
    mail_on_success: bool = _d(J, "mail_on_success")  # a mail after every successful run, not only recovery
    stale_after: float | None = None  # seconds; no success for longer raises an alert
    reads: tuple[Path, ...] = ()  # paths others write (a pull's holding directory): locked too
    target: str | None = None  # mirror: a target (cloud RAID, NBD) instead of a drive
    to: PushTarget | None = None  # push: the far side
    paths: tuple[Path, ...] = ()  # push: plain directories sent besides the repositories
    of_push: str | None = None  # restore-test: test the copy this push job sent

    @property
    def opens(self) -> tuple[str, ...]:
        """The repositories whose archives the job reads, and so whose passphrases it
        needs (a mirror names each copy's latest archive in the drive's RECOVERY.txt); a
        borgmatic job has borgmatic's own settings."""
        opening = (JobKind.BORG_CHECK, JobKind.RESTORE_TEST, JobKind.MIRROR, JobKind.PUSH)
        return self.repositories if self.kind in opening else ()

    @property
    def drives(self) -> tuple[str, ...]:
        """The drives whose plug starts this job (none for a scheduled or manual job)."""
        return self.trigger.drives if isinstance(self.trigger, DriveTrigger) else ()


@dataclass(frozen=True)
class NamespaceMount:
    what: str  # a device path, UUID=..., LABEL=... or a directory to bind
    where: Path
    type: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    path: Path = _d(N, "path")  # which process holds the namespace
    mounts: tuple[NamespaceMount, ...] = ()


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    security: SmtpSecurity = _d(S, "security")
    username: str | None = None
    password_file: Path | None = None
    verify: bool = _d(S, "verify")
    ca_file: Path | None = None  # trust this CA (a self-signed server) besides the system's
    timeout: float = _d(S, "timeout")


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]
    sender: str
    smtp: Smtp | None = None  # None: hand the message to the local sendmail
    sendmail: Path = _d(E, "sendmail")
    retry_every: float = _d(E, "retry_every")  # seconds; the first retry of a spooled mail, then doubling


@dataclass(frozen=True)
class Led:
    enabled: bool = _d(L, "enabled")
    index: int = _d(L, "index")
    brightness: int = _d(L, "brightness")  # percent of full
    failure_index: int | None = None  # a second LED for failures alone
    colors: tuple[tuple[str, str], ...] = tuple(
        (s.key, str(s.default)) for s in schema.LED_COLORS.settings)

    def color(self, state: str) -> str:
        return dict(self.colors)[state]


@dataclass(frozen=True)
class Healthchecks:
    url: str  # pings go to URL/<job> unless a job names its own URL
    timeout: float = _d(H, "timeout")


@dataclass(frozen=True)
class Notify:
    email: Email | None = None
    led: Led = Led()
    healthchecks: Healthchecks | None = None


@dataclass(frozen=True)
class Config:
    source: Path
    drives: tuple[Drive, ...]
    repositories: tuple[Repository, ...]
    jobs: tuple[Job, ...]
    notify: Notify = Notify()
    namespace: Namespace = Namespace()
    targets: tuple[Target, ...] = ()

    def drive(self, name: str) -> Drive:
        return next(d for d in self.drives if d.name == name)

    def target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)

    def repository(self, name: str) -> Repository:
        return next(r for r in self.repositories if r.name == name)

    def job(self, name: str) -> Job:
        return next(j for j in self.jobs if j.name == name)

    def job_units(self) -> dict[str, JobUnit]:
        """Every job unit offsite writes for this configuration: the one place that says
        which unit runs which job (and for which drive)."""
        out: dict[str, JobUnit] = {}
        for job in self.jobs:
            for drive in job.drives or (None,):
                unit = unitnames.job_unit(job.name, drive)
                out[unit] = JobUnit(unit, job, drive)
        return out

    def unlock_units(self) -> dict[str, str]:
        """offsite-unlock-<drive>.service -> drive, for every LUKS drive."""
        return {unitnames.unlock_unit(d.name): d.name for d in self.drives
                if d.type is DriveType.LUKS}


@dataclass(frozen=True)
class JobUnit:
    unit: str
    job: Job
    drive: str | None  # the drive whose plug starts it
