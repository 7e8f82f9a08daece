"""Every key of offsite.yaml, declared once.

Each Setting says how its value is written (its Type: what the reader accepts, its bounds),
its default, whether it is required, which variants of its section it applies to (the job
kinds, the target or drive types) and what it means. From this one table come:
- the reader's checks (config/reader.py reads each declared key through its Type, applies
  the default, refuses a key of another variant, and names the declared keys in its "did
  you mean" hints);
- the model's defaults (config/model.py takes them from here);
- the reference, docs/config-reference.md (config/reference.py).
What a table cannot say (a job names a drive that exists, two mounts overlap) the reader
checks in code, after every key has been read.

The value domains (JobKind, DriveType, ...) live here too: they are part of what may be
written, and the model re-exports them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from offsite import quantities


class DriveType(StrEnum):
    LUKS = "luks"
    PLAIN = "plain"


class JobKind(StrEnum):
    BORGMATIC = "borgmatic"
    BORG_CHECK = "borg-check"
    MIRROR = "mirror"
    PULL = "pull"
    PUSH = "push"
    RESTORE_TEST = "restore-test"


class OnWarning(StrEnum):
    WARN = "warn"  # the job succeeds; status and mail subject say "with warnings"
    FAIL = "fail"  # a warning fails the job like an error


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"
    TLS = "tls"
    NONE = "none"


class RaidLevel(StrEnum):
    RAID5 = "5"
    RAID6 = "6"
    RAID1 = "1"

    @property
    def tolerance(self) -> int:
        """How many members may be missing while the data is still complete (3+ members)."""
        return {"5": 1, "6": 2, "1": -1}[self.value]

    @property
    def minimum(self) -> int:
        return {"5": 3, "6": 4, "1": 2}[self.value]


class SecretSource(StrEnum):
    FILE = "file"  # passphrase_file: a root-only file, handed over as a systemd credential
    CREDENTIAL = "credential"  # passphrase_credential: an encrypted systemd credential
    COMMAND = "command"  # passcommand: borg runs it (BORG_PASSCOMMAND)
    BORGMATIC = "borgmatic"  # the borgmatic configuration's encryption_* settings


class TargetType(StrEnum):
    CLOUD_RAID = "cloud-raid"
    NBD = "nbd"


# -- how values are written --------------------------------------------------------------


class Read(Enum):
    """Which reader a Type uses (the reader's _Map method of the same name)."""

    TEXT = "text"
    ABSPATH = "abspath"
    SPAN = "span"
    SIZE = "size"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    TEXTS = "texts"  # a list of text (one text alone is a list of one)
    PATHS = "paths"  # a list of absolute paths
    MAPPING = "mapping"  # a section of its own, read by its own Section
    MAPPINGS = "mappings"  # a list of such sections


@dataclass(frozen=True)
class Type:
    doc: str  # how it is written, for the reference
    read: Read
    low: float | None = None  # integer, span (seconds), size (bytes): the least accepted
    high: float | None = None
    choices: type[StrEnum] | None = None
    pattern: re.Pattern[str] | None = None  # text: must match, else `bad` (and `hint`)
    bad: str = ""  # "{value!r} is not ..." with {value}
    hint: str = ""
    min_items: int = 0  # lists: at least this many


SPAN_DOC = "time span (90s, 30min, 6h, 2d)"
TEXT = Type("text", Read.TEXT)
ABSPATH = Type("absolute path", Read.ABSPATH)
BOOLEAN = Type("true or false", Read.BOOLEAN)
PORT = Type("1-65535", Read.INTEGER, 1, 65535)
MAPPING = Type("mapping", Read.MAPPING)
HOST = Type("host name or address", Read.TEXT,
            pattern=re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^\[?[0-9A-Fa-f:.]+\]?$"),
            bad="{value!r} is not a host name or address")
USER = Type("user name", Read.TEXT, pattern=re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$"),
            bad="{value!r} is not a valid user name")
HOST_KEY = Type("SSH public key", Read.TEXT, pattern=re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}$"),
    bad="{value!r} is not an SSH public key (type and base64)",
    hint="take it from the far side: cat /etc/ssh/ssh_host_ed25519_key.pub")
# printable ASCII only: a space ends the URL, and urllib cannot send other characters
URL = Type("http(s) URL", Read.TEXT, pattern=re.compile(r"^https?://[!-~]+$"),
           bad="{value!r} is not an http(s) URL of printable ASCII",
           hint="write the whole URL, e.g. https://hc-ping.com/UUID; no spaces; "
                "percent-encode anything else (%C3%A9 for é)")
EMAIL_PATTERN = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
COLOR = Type("colour", Read.TEXT)  # #rrggbb or a name: checked by the reader (NAMED_COLORS)
NAMED_COLORS = {
    "red": "#ff0000", "green": "#00ff00", "blue": "#0000ff", "yellow": "#ffff00",
    "orange": "#ff8000", "purple": "#8000ff", "cyan": "#00ffff", "white": "#ffffff",
    "magenta": "#ff00ff", "off": "#000000",
}


def span(low: float = 0.0, high: float = math.inf) -> Type:
    return Type(SPAN_DOC, Read.SPAN, low, high)


def integer(low: int, high: int) -> Type:
    return Type(f"{low}-{high}", Read.INTEGER, low, high)


def choice(of: type[StrEnum], doc: str = "") -> Type:
    values = [str(v) for v in of]
    text = doc or (", ".join(values[:-1]) + " or " + values[-1])
    return Type(text, Read.CHOICE, choices=of)


@dataclass(frozen=True)
class Setting:
    key: str
    type: Type
    doc: str
    default: object = None  # what the model holds when the key is absent (None: nothing)
    required: bool = False  # (within the variants it applies to)
    optional_for: tuple[str, ...] = ()  # variants it applies to without being required
    only: tuple[str, ...] = ()  # the section's variants it applies to; () for all
    defaults: Mapping[str, object] = field(default_factory=dict)  # by variant
    default_doc: str = ""  # the reference's text when the default is not one value
    hint: str = ""  # what to do when a required key is missing

    def default_for(self, variant: str | None) -> object:
        if variant is not None and variant in self.defaults:
            return self.defaults[variant]
        return self.default


@dataclass(frozen=True)
class Section:
    path: str  # drives.NAME, notify.email.smtp, namespace.mounts[]
    doc: str
    settings: tuple[Setting, ...]
    variant: str = ""  # the key whose value selects the variant (jobs: kind)
    noun: str = ""  # what the section's entries are called, for messages ("jobs")

    def __getitem__(self, key: str) -> Setting:
        return next(s for s in self.settings if s.key == key)

    def default(self, key: str, variant: str | None = None) -> object:
        return self[key].default_for(variant)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings)


NAME_RULE = ("Names become parts of unit names (offsite-NAME.service), paths and URLs: ASCII "
             "letters and digits, then also `-`, `_` and `.`; at most 64 characters.")

DRIVES = Section("drives.NAME", "An external drive that carries the off-site copy. " + NAME_RULE, (
    Setting("uuid", Type("UUID", Read.TEXT, pattern=re.compile(
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        bad="{value!r} is not a UUID (8-4-4-4-12 hexadecimal digits)",
        hint="find it with: blkid -s UUID -o value /dev/sdX"),
        "The UUID of the filesystem (plain) or of the LUKS container (luks): `blkid -s UUID "
        "-o value /dev/sdX`. Only the UUID selects a drive; its label, model and serial are "
        "never trusted.", required=True),
    Setting("type", choice(DriveType), "`luks`: unlocked with `keyfile` by a generated unit "
            "and locked again when the job ends. `plain`: a filesystem on the drive.",
            required=True),
    Setting("mount", ABSPATH, "Where the drive is mounted inside the backup namespace during "
            "its job (no other process sees it).", required=True),
    Setting("keyfile", ABSPATH, "A root-owned file, mode 0400, that opens the LUKS container "
            "(`offsite drive enroll` makes one).", required=True, only=("luks",),
            hint="create one with: offsite drive enroll (or dd if=/dev/urandom bs=64 count=1)"),
    Setting("rotation", TEXT, "Drives with the same rotation group take turns holding the "
            "same copy; a job can name the group instead of a drive."),
    Setting("description", TEXT, "Shown in status and unit descriptions.", default=""),
    Setting("stale_after", span(1.0, 10 * 365 * 86400.0), "A last copy older than this is "
            "flagged by `offsite drives` and raises the staleness alert.", default=62 * 86400.0),
    Setting("check_every", span(0.0, 10 * 365 * 86400.0), "After a copy, `borg check` of the "
            "copies on the drive itself (every byte read, with a borg of its own, never the "
            "source's cache) when the last such check is older than this; 0: after every "
            "copy.", default=30 * 86400.0),
    Setting("eject", BOOLEAN, "When offsite is done with the drive (its job ended, the "
            "drive unmounted and locked), tell the disk to stop, as `udisksctl power-off` "
            "does: its cache flushed, a USB or SCSI disk stopped and taken out of the "
            "system; the LED turns green only then, and off when the drive is pulled out. "
            "false: the drive stays attached (one that is left plugged in).", default=True),
), variant="type", noun="drives")

SECRET_PATH = Type("absolute path", Read.ABSPATH, pattern=re.compile(r"^/[^\s:]+$"),
                   bad="{value!r}: a path with a space or ':' cannot be handed to systemd's "
                       "LoadCredential=", hint="move the file to a path without them")
REPOSITORIES = Section(
    "repositories.NAME", "A local borg repository. " + NAME_RULE + " An encrypted one "
    "names where its passphrase comes from, with at most one of passphrase_file, "
    "passphrase_credential and passcommand; without them, a repository with a "
    "borgmatic_config uses that configuration's encryption_passcommand or "
    "encryption_passphrase. The passphrase never reaches a unit file, the journal, a mail, "
    "a command line or an environment: borg reads it from a pipe.", (
        Setting("path", ABSPATH, "The repository, as seen inside the backup namespace.",
                required=True),
        Setting("borgmatic_config", ABSPATH, "The borgmatic configuration that writes it (for "
                "borgmatic jobs); default: borgmatic's own search."),
        Setting("passphrase_file", SECRET_PATH, "A root-only file (mode 0400) holding the "
                "passphrase; each job gets it as a systemd credential (LoadCredential=)."),
        Setting("passphrase_credential", SECRET_PATH, "An encrypted systemd credential holding "
                "the passphrase (LoadCredentialEncrypted=), made with `systemd-creds encrypt "
                "--name=offsite-borg-NAME - PATH` (`offsite repo test NAME` checks it)."),
        Setting("passcommand", Type("command", Read.TEXT), "A command that prints the "
                "passphrase (borg's BORG_PASSCOMMAND), run as root inside the backup "
                "namespace."),
    ))

TARGETS = Section(
    "targets.NAME", "Somewhere other than a USB drive that a mirror job copies to, assembled "
    "before the job and taken down after it (see README, Other targets). The name: 1-24 of "
    "`a-z 0-9 - _`.", (
        Setting("type", choice(TargetType), "A RAID over image files in sync folders, or a "
                "network block device through an SSH tunnel.", required=True),
        Setting("keyfile", ABSPATH, "Root-owned, mode 0400: the LUKS key of the target.",
                required=True),
        Setting("mount", ABSPATH, "Where it is mounted inside the backup namespace.",
                required=True),
        Setting("description", TEXT, "Shown in unit descriptions.", default=""),
        Setting("stale_after", span(1.0, 10 * 365 * 86400.0), "A last copy older than this is "
                "flagged.", default=8 * 86400.0),
        Setting("members", Type("list of absolute paths", Read.PATHS), "cloud-raid: one "
                "folder per sync provider; each holds `offsite-NAME.img` and its marker. "
                "Append folders to grow the set (`offsite target grow`).", required=True,
                only=("cloud-raid",)),
        Setting("member_size", Type("size (512M, 20G, 1T)", Read.SIZE, low=32 * 1024**2,
                                     high=64 * 1024**4),
                "cloud-raid: the size of each image file, at least 32M (LUKS2 alone takes "
                "16M).", required=True, only=("cloud-raid",)),
        Setting("level", choice(RaidLevel, "5, 6 or 1"), "cloud-raid: the RAID level (RAID6 "
                "needs 4 members).", default=RaidLevel.RAID5, only=("cloud-raid",)),
        Setting("host", HOST, "nbd: the machine running nbd-server and sshd.", required=True,
                only=("nbd",)),
        Setting("export", Type("text", Read.TEXT, pattern=re.compile(r"^[A-Za-z0-9._-]{1,64}$"),
                               bad="{value!r} is not an export name offsite accepts",
                               hint="letters, digits, . _ - (at most 64)"),
                "nbd: the export's name in nbd-server's configuration.", required=True,
                only=("nbd",)),
        Setting("user", USER, "nbd: the far side's account holding the tunnel's key.",
                default="offsite", only=("nbd",)),
        Setting("port", PORT, "nbd: the far side's SSH port.", default=22, only=("nbd",)),
        Setting("nbd_port", PORT, "nbd: nbd-server's port on the far side's loopback.",
                default=10809, only=("nbd",)),
        Setting("host_key", HOST_KEY, "nbd: the far side's host key, pinned; without it the "
                "first connection is trusted and later changes are refused.", only=("nbd",)),
    ), variant="type", noun="targets")

_ALL_BUT_PULL = ("borgmatic", "borg-check", "mirror", "restore-test")
# the far side's directory: what rrsync confines a push job's keys to, written into their
# authorized_keys lines (so: no quotes, no spaces)
FAR_PATH = Type("absolute path", Read.TEXT, pattern=re.compile(r"^/[A-Za-z0-9._+@/-]*$"),
                bad="{value!r} is not an absolute path of letters, digits and /._+@-",
                hint="it goes into an authorized_keys line: e.g. /srv/offsite/server1")
JOBS = Section(
    "jobs.NAME", "One job: a unit `offsite-NAME.service`, started by its schedule, by a "
    "drive, or by hand. " + NAME_RULE, (
        Setting("kind", choice(JobKind, "borgmatic, borg-check, mirror, pull, push or "
                                      "restore-test"),
                "What it does.", required=True),
        Setting("description", TEXT, "Shown in status and the unit's description.", default=""),
        Setting("schedule", Type("OnCalendar= expression", Read.TEXT), "When it runs "
                "(`systemd-analyze calendar` accepts it); a run missed while the machine was "
                "off runs at the next boot."),
        Setting("randomized_delay", span(0.0, 7 * 86400.0), "Spread the start by up to this (with schedule "
                "only).", default=0.0),
        Setting("drive", TEXT, "Started when that drive (or a drive of that rotation group) "
                "is plugged in.", only=("mirror", "borg-check", "restore-test", "borgmatic")),
        Setting("target", TEXT, "mirror: copy to this target instead of a drive.",
                only=("mirror",)),
        Setting("repositories", Type("list of repository names", Read.TEXTS, min_items=1),
                "What it works on (push: the borg repositories it sends, each swapped in "
                "whole on the far side; a push needs these, `paths`, or both).", required=True,
                only=(*_ALL_BUT_PULL, "push"), optional_for=("push",)),
        Setting("timeout", span(1.0, 30 * 86400.0), "TimeoutStartSec= of its unit: a hung job "
                "fails and mails. From 1s (systemd reads 0 as no limit at all) to 30d.",
                default=3600.0,
                defaults={"borgmatic": 6 * 3600.0, "borg-check": 12 * 3600.0,
                          "mirror": 12 * 3600.0, "pull": 3 * 3600.0, "push": 12 * 3600.0,
                          "restore-test": 2 * 3600.0},
                default_doc="borgmatic 6h, borg-check 12h, mirror 12h, pull 3h, push 12h, "
                            "restore-test 2h"),
        Setting("verify_data", BOOLEAN, "borg-check: also read and verify every chunk.",
                default=False, only=("borg-check",)),
        Setting("sample", integer(1, 100_000), "restore-test: how many files to extract and "
                "compare.", default=20, only=("restore-test",)),
        Setting("healthcheck", URL, "Ping this URL at start, success and failure (default: "
                "the healthchecks url + /NAME, if set)."),
        Setting("on_warning", choice(OnWarning), "What borg's exit 1 and rsync's vanished "
                "files mean for this job.", default=OnWarning.WARN),
        Setting("mail_on_success", BOOLEAN, "Mail after every success, not only after a "
                "recovery.", default=False),
        Setting("stale_after", span(1.0, 10 * 365 * 86400.0), "No success for longer than this "
                "raises an alert (and `offsite drives` flags a push's far side).",
                defaults={"push": 3 * 86400.0}, default_doc="push 3d; others none"),
        Setting("reads", Type("list of absolute paths", Read.PATHS), "Paths other jobs write "
                "(a pull's holding directory): locked too, so the two never run at once."),
        Setting("source", MAPPING, "pull: the remote host and paths (below).", required=True,
                only=("pull",)),
        Setting("destination", ABSPATH, "pull: the holding directory, inside the namespace.",
                required=True, only=("pull",)),
        Setting("paths", Type("list of absolute paths", Read.PATHS), "push: plain directories "
                "to send as well (tarballs, dumps), each to `files/PATH` on the far side, "
                "files deleted there only after every new one arrived.", only=("push",)),
        Setting("to", MAPPING, "push: the far side (below).", required=True, only=("push",)),
        Setting("push", TEXT, "restore-test: test the copy that this push job sent, fetched "
                "back over SSH with a read-only key, instead of the local repositories.",
                only=("restore-test",)),
    ), variant="kind", noun="jobs")

PULL_SOURCE = Section(
    "jobs.NAME.source", "pull: what to copy from where. Each path gets its own key, forced to "
    "a read-only rsync of that path (`offsite ssh-key JOB --from ADDR`).", (
        Setting("host", HOST, "The remote host.", required=True),
        Setting("paths", Type("list of absolute paths", Read.TEXTS, min_items=1), "What to "
                "copy (letters, digits, `/._+@-` and spaces).", required=True),
        Setting("user", USER, "The remote account.", default="root"),
        Setting("port", PORT, "The remote SSH port.", default=22),
        Setting("before", Type("command", Read.TEXT), "Run on the far side before the copy "
                "(its own key)."),
        Setting("after", Type("command", Read.TEXT), "Run on the far side after the copy, also "
                "when it failed."),
        Setting("host_key", HOST_KEY, "Pinned host key; without it: trust on first use."),
    ))

# On the far side of a push, beside each repository NAME (a symlink) and its trees
# (NAME.offsite/): the plain directories, and the recovery notes (offsite-recovery/)
PUSH_FILES = "files"
PUSH_TARGET = Section(
    "jobs.NAME.to", "push: where the copy goes. One key, forced to a write-only rsync into "
    "`path` (`rrsync -wo`), sends everything; a restore-test of the pushed copy uses a second "
    "key, forced to a read-only rsync of it (`offsite ssh-key JOB --from ADDR`).", (
        Setting("host", HOST, "The far side.", required=True),
        Setting("path", FAR_PATH, "The directory on the far side that receives the copies; the "
                "keys can touch nothing outside it.", required=True),
        Setting("user", USER, "The far side's account (its own, not root's).",
                default="offsite"),
        Setting("port", PORT, "The far side's SSH port.", default=22),
        Setting("host_key", HOST_KEY, "Pinned host key; without it: trust on first use."),
        Setting("bandwidth", Type("size per second (500K, 2M)", Read.SIZE, low=1024,
                                  high=1024**4),
                "At most this many bytes a second (rsync --bwlimit); default: no limit."),
        Setting("compress", BOOLEAN, "Compress on the wire (borg's segments are compressed "
                "already: worth it for plain directories on a slow line).", default=False),
    ))

NOTIFY = Section("notify", "How offsite tells you what happened.", (
    Setting("email", MAPPING, "Mail on failure, recovery, staleness (below)."),
    Setting("led", MAPPING, "The BlinkStick LED (below)."),
    Setting("healthchecks", MAPPING, "healthchecks-style pings (below)."),
))

EMAIL = Section(
    "notify.email", "Every mail is spooled first and sent by offsite-outbox.service; what the "
    "server does not take is retried.", (
        Setting("to", Type("list of addresses", Read.TEXTS, min_items=1), "Who gets the mail.",
                required=True),
        Setting("from", Type("address", Read.TEXT), "The sender.", default="offsite@localhost"),
        Setting("smtp", MAPPING, "Send through this server (below); without it: sendmail."),
        Setting("sendmail", ABSPATH, "The local sendmail, when there is no smtp.",
                default=Path("/usr/sbin/sendmail")),
        Setting("retry_every", span(1.0, 6 * 3600.0), "The first retry of a message the server did not "
                "take; then doubling, up to 6h.", default=300.0),
    ))

SMTP = Section("notify.email.smtp", "The mail server.", (
    Setting("host", HOST, "The server.", required=True),
    Setting("port", PORT, "The port.", default=25,
            defaults={"starttls": 587, "tls": 465, "none": 25},
            default_doc="587 (starttls), 465 (tls), 25 (none)"),
    Setting("security", choice(SmtpSecurity), "How the connection is protected; none forbids "
            "a login.", default=SmtpSecurity.STARTTLS),
    Setting("username", TEXT, "Log in as this user."),
    Setting("password_file", ABSPATH, "The password, in a root-only file (or a systemd "
            "credential named offsite-smtp-password)."),
    Setting("verify", BOOLEAN, "Verify the server's certificate.", default=True),
    Setting("ca_file", ABSPATH, "Also trust this CA (a self-signed server)."),
    Setting("timeout", span(1.0, 3600.0), "Give up a connection after this.", default=30.0),
), variant="security")

LED_COLORS = Section(
    "notify.led.colors", "#rrggbb, or one of: " + ", ".join(NAMED_COLORS) + ".", (
        Setting("failed", COLOR, "A job failed.", default="#ff0000"),
        Setting("working-drive", COLOR, "A drive job runs.", default="#0000ff"),
        Setting("working", COLOR, "Another job runs.", default="#ffff00"),
        Setting("done", COLOR, "A drive's copy is done and it is locked: safe to remove.",
                default="#00ff00"),
    ))

LED = Section(
    "notify.led", "A BlinkStick: blue/yellow while working, green when a drive is safe to "
    "remove, red on a failure until the next success or `offsite led clear`, never hiding "
    "one another (README, The LED). A missing LED is a warning, never a failed backup.", (
        Setting("enabled", BOOLEAN, "Drive the LED at all.", default=True),
        Setting("index", integer(0, 63), "Which LED of the stick.", default=0),
        Setting("failure_index", integer(0, 63), "A second LED for failures alone (1 on a "
                "BlinkStick Nano); without it a failure is a red flash beside the work's "
                "colour, or steady red when nothing else is going on.",
                default_doc="none: one LED says both"),
        Setting("brightness", integer(1, 100), "Percent of full brightness (a BlinkStick at "
                "full power lights a room).", default=40),
        Setting("colors", MAPPING, "The colour of each state (below)."),
    ))

HEALTHCHECKS = Section("notify.healthchecks", "Pings to a healthchecks-style service.", (
    Setting("url", URL, "Each job pings URL/JOB (/start, success, /fail).", required=True),
    Setting("timeout", span(1.0, 3600.0), "Give up a ping after this.", default=10.0),
))

NAMESPACE = Section("namespace", "The private mount namespace jobs run in.", (
    Setting("path", ABSPATH, "Where the namespace service records its process.",
            default=Path("/run/offsite/namespace.json")),
    Setting("mounts", Type("list of mappings", Read.MAPPINGS), "Filesystems mounted only "
            "inside it (below)."),
))

NAMESPACE_MOUNT = Section("namespace.mounts[]", "One filesystem mounted only inside the "
                          "namespace.", (
    Setting("what", Type("device, UUID=..., LABEL=... or directory", Read.TEXT), "What to "
            "mount.", required=True),
    Setting("where", ABSPATH, "Where, inside the namespace.", required=True),
    Setting("type", Type("filesystem type", Read.TEXT), "As for mount -t (a directory is "
            "bound)."),
    Setting("options", Type("list of text", Read.TEXTS), "Mount options."),
))

SECTIONS: tuple[Section, ...] = (
    DRIVES, REPOSITORIES, TARGETS, JOBS, PULL_SOURCE, PUSH_TARGET, NOTIFY, EMAIL, SMTP, LED, LED_COLORS,
    HEALTHCHECKS, NAMESPACE, NAMESPACE_MOUNT,
)
TOP_LEVEL = ("drives", "repositories", "targets", "jobs", "notify", "namespace")


def format_default(value: object) -> str:
    """A default as it would be written in the YAML file."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return quantities.format_span(value)
    if value == "":
        return '""'
    return str(value)
