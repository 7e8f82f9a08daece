"""Reading and validating offsite.yaml into the frozen model.

Every problem in a file is collected and reported together, each with file:line:column,
the key path (``jobs.nightly.schedule``) and, where there is one, a hint. Checks that look
at the host (does systemd accept this OnCalendar expression? is the keyfile private?) go
through a HostChecks object so that the rest stays pure.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from offsite import escape, quantities
from offsite.config.model import (
    CloudRaid,
    Config,
    Drive,
    DriveTrigger,
    DriveType,
    Email,
    Healthchecks,
    Job,
    JobKind,
    Led,
    Namespace,
    NamespaceMount,
    NbdRemote,
    Notify,
    OnWarning,
    PullSource,
    RaidLevel,
    Repository,
    Schedule,
    Smtp,
    SmtpSecurity,
    Target,
)
from offsite.config.yamlsrc import Loc, MapNode, Node, ScalarNode, SeqNode, YamlError, parse

DEFAULT_PATH = Path("/etc/offsite/offsite.yaml")
NAME_MAX_BYTES = 200
# The longest unit name offsite derives from a user's name (drive names go here).
_LONGEST_UNIT_FORM = "offsite-unlock-{}.service"

DEFAULT_TIMEOUTS = {
    JobKind.BORGMATIC: 6 * 3600.0,
    JobKind.BORG_CHECK: 12 * 3600.0,
    JobKind.MIRROR: 12 * 3600.0,
    JobKind.PULL: 3 * 3600.0,
    JobKind.RESTORE_TEST: 2 * 3600.0,
}

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_NAMED_COLORS = {
    "red": "#ff0000", "green": "#00ff00", "blue": "#0000ff", "yellow": "#ffff00",
    "orange": "#ff8000", "purple": "#8000ff", "cyan": "#00ffff", "white": "#ffffff",
    "magenta": "#ff00ff", "off": "#000000",
}
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^\[?[0-9A-Fa-f:.]+\]?$")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9/._+@ -]*$")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}$")
_SIZE = re.compile(r"^([0-9]{1,12})\s*([KMGTkmgt])?(?:i?B)?$")
# a target's name becomes an md array name, a device-mapper name and file names
_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")
_EXPORT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class Problem:
    file: Path
    loc: Loc | None
    path: str  # key path, e.g. jobs.nightly.schedule ("" for the whole file)
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.loc}" if self.loc else f"{self.file}"
        key = f" {self.path}:" if self.path else ""
        text = f"{where}:{key} {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class ConfigError(Exception):
    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(
            problems, key=lambda p: (p.loc.line, p.loc.column) if p.loc else (0, 0)
        )
        super().__init__("\n".join(str(p) for p in self.problems))


class HostChecks(Protocol):
    """What validation asks of the machine it runs on."""

    def calendar_errors(self, expressions: Sequence[str]) -> dict[str, str]:
        """Why systemd rejects each rejected OnCalendar expression (accepted ones left out)."""
        ...

    def keyfile_error(self, path: Path) -> str | None: ...


def keyfile_problem(path: Path) -> str | None:
    """Why a LUKS keyfile is unusable or unsafe, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"keyfile {path} does not exist"
    except OSError as exc:
        return f"keyfile {path} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"keyfile {path} is not a regular file"
    if st.st_mode & 0o077:
        return f"keyfile {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def name_problem(name: str) -> str | None:
    """Why a job, drive or repository name cannot safely become part of a unit name."""
    if not name:
        return "a name must not be empty"
    if "/" in name:
        return "a name must not contain '/'"
    if _has_control(name):
        return "a name must not contain control characters (newline, tab, ...)"
    if len(name.encode("utf-8")) > NAME_MAX_BYTES:
        return f"a name must be at most {NAME_MAX_BYTES} bytes long"
    unit = _LONGEST_UNIT_FORM.format(escape.escape_name(name))
    if len(unit.encode()) > escape.UNIT_NAME_MAX:
        return f"escaped for systemd the name becomes {len(unit)} bytes, over the limit of 255"
    return None


T = TypeVar("T")


@dataclass
class _Reader:
    """Collects problems while reading one file."""

    file: Path
    problems: list[Problem] = field(default_factory=list)

    def problem(self, node_loc: Loc | None, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.file, node_loc, path, message, hint))


def _type_name(node: Node) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, SeqNode):
        return "a list"
    if not isinstance(node, ScalarNode):
        return "an unknown value"
    v = node.value
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({node.text})"
    if isinstance(v, int | float):
        return f"a number ({node.text})"
    return f"the text {node.text!r}"


class _Map:
    """One mapping of the file, read key by key; unread keys are reported as unknown."""

    def __init__(self, reader: _Reader, node: MapNode, path: str) -> None:
        self.r = reader
        self.node = node
        self.path = path
        self.known: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def loc(self, key: str) -> Loc:
        entry = self.node.entries.get(key)
        return entry.value.loc if entry else self.node.loc

    def get(self, key: str) -> Node | None:
        self.known.add(key)
        entry = self.node.entries.get(key)
        if entry is None:
            return None
        if isinstance(entry.value, ScalarNode) and entry.value.value is None:
            return None
        return entry.value

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def fail(self, key: str, message: str, hint: str = "") -> None:
        self.r.problem(self.loc(key), self.key_path(key), message, hint)

    def _scalar(self, key: str, kinds: tuple[type, ...], want: str, required: bool) -> object:
        node = self.get(key)
        if node is None:
            if required:
                self.r.problem(self.node.loc, self.key_path(key), f"{key} is required")
            return None
        if not isinstance(node, ScalarNode) or not isinstance(node.value, kinds) or (
            bool not in kinds and isinstance(node.value, bool)
        ):
            self.fail(key, f"expected {want}, got {_type_name(node)}")
            return None
        return node.value

    def text(self, key: str, required: bool = False) -> str | None:
        # A number where text is expected ("port: 22" style) is fine as text.
        node = self.get(key)
        if isinstance(node, ScalarNode) and isinstance(node.value, int | float) and not isinstance(
            node.value, bool
        ):
            return node.text
        value = self._scalar(key, (str,), "text", required)
        if isinstance(value, str) and _has_control(value):
            # Values reach unit files and command lines, where a newline starts a new setting.
            self.fail(key, "must not contain control characters (a newline, tab, ...)",
                      "write it on one line")
            return None
        return value if isinstance(value, str) else None

    def integer(self, key: str, low: int, high: int, default: int) -> int:
        value = self._scalar(key, (int,), "a whole number", False)
        if not isinstance(value, int):
            return default
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._scalar(key, (bool,), "true or false", False)
        return value if isinstance(value, bool) else default

    def choice(self, key: str, options: type[T], required: bool = False) -> T | None:
        text = self.text(key, required)
        if text is None:
            return None
        values = [str(o) for o in options]  # type: ignore[attr-defined]
        if text not in values:
            close = difflib.get_close_matches(text, values, n=1)
            hint = f"did you mean {close[0]!r}?" if close else ""
            self.fail(key, f"must be one of {', '.join(values)}; got {text!r}", hint)
            return None
        return options(text)  # type: ignore[call-arg]

    def abspath(self, key: str, required: bool = False) -> Path | None:
        text = self.text(key, required)
        if text is None:
            return None
        if not text.startswith("/"):
            self.fail(key, f"must be an absolute path, got {text!r}", f"write it as /{text}?")
            return None
        return Path(os.path.normpath(text))

    def span(self, key: str, default: float) -> float:
        text = self.text(key)
        if text is None:
            return default
        try:
            return quantities.parse(text)
        except quantities.TimeSpanError as exc:
            self.fail(key, str(exc), "write a systemd time span such as 90min, 6h or 1d")
            return default

    def size(self, key: str, required: bool = False) -> int | None:
        """A size in bytes, written like 512M, 20G or 1T (powers of 1024)."""
        text = self.text(key, required)
        if text is None:
            return None
        match = _SIZE.match(text.strip())
        if not match:
            self.fail(key, f"{text!r} is not a size", "write it like 512M, 20G or 1T")
            return None
        unit: str = match[2] or " "
        factor: int = 1024 ** " KMGT".index(unit.upper())
        return int(match[1]) * factor

    def text_list(self, key: str, required: bool = False) -> tuple[str, ...]:
        node = self.get(key)
        if node is None:
            if required:
                self.r.problem(self.node.loc, self.key_path(key), f"{key} is required")
            return ()
        if isinstance(node, ScalarNode) and isinstance(node.value, str):
            if _has_control(node.value):
                self.fail(key, "must not contain control characters (a newline, tab, ...)")
                return ()
            return (node.value,)
        if not isinstance(node, SeqNode):
            self.fail(key, f"expected a list of text, got {_type_name(node)}")
            return ()
        out = []
        for i, item in enumerate(node.items):
            if isinstance(item, ScalarNode) and isinstance(item.value, str):
                if _has_control(item.value):
                    self.r.problem(item.loc, f"{self.key_path(key)}[{i}]",
                                   "must not contain control characters (a newline, tab, ...)")
                    continue
                out.append(item.value)
            else:
                self.r.problem(item.loc, f"{self.key_path(key)}[{i}]",
                               f"expected text, got {_type_name(item)}")
        return tuple(out)

    def mapping(self, key: str) -> _Map | None:
        node = self.get(key)
        if node is None:
            return None
        if not isinstance(node, MapNode):
            self.fail(key, f"expected a mapping, got {_type_name(node)}")
            return None
        return _Map(self.r, node, self.key_path(key))

    def declared(self, key: str) -> set[str] | None:
        """Every name under a section (valid or not); None when the section is unusable.

        References are checked against this, so one bad drive is one problem, not one
        more for every job that names it.
        """
        entry = self.node.entries.get(key)
        if entry is None:
            return set()
        if not isinstance(entry.value, MapNode):
            return None
        return set(entry.value.entries)

    def named_mappings(self, key: str) -> list[tuple[str, Loc, _Map]]:
        """A mapping of name -> settings (drives, repositories, jobs)."""
        section = self.mapping(key)
        if section is None:
            return []
        out = []
        for name, entry in section.node.entries.items():
            section.known.add(name)
            path = section.key_path(name)
            problem = name_problem(name)
            if problem:
                self.r.problem(entry.key_loc, path, problem,
                               "names become parts of systemd unit names; use letters, digits, -_.")
                continue
            if not isinstance(entry.value, MapNode):
                self.r.problem(entry.value.loc, path,
                               f"expected the settings of {name!r}, got {_type_name(entry.value)}")
                continue
            out.append((name, entry.key_loc, _Map(self.r, entry.value, path)))
        return out

    def done(self) -> None:
        """Report every key nobody asked for, with the nearest known key as a hint."""
        for key, entry in self.node.entries.items():
            if key in self.known:
                continue
            close = difflib.get_close_matches(key, sorted(self.known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else (
                "known keys here: " + ", ".join(sorted(self.known)) if self.known else ""
            )
            self.r.problem(entry.key_loc, self.key_path(key), f"unknown key {key!r}", hint)


class SystemHostChecks:
    """HostChecks against this machine: systemd-analyze for calendars, stat for keyfiles."""

    def calendar_errors(self, expressions: Sequence[str]) -> dict[str, str]:
        """One systemd-analyze call for all expressions; one per expression only if some fail."""
        from offsite import run  # deferred: keeps config importable without a process

        unique = sorted(set(expressions))
        if not unique:
            return {}
        argv = ["systemd-analyze", "calendar", "--iterations=1", "--"]
        if run.run([*argv, *unique], check=False).returncode == 0:
            return {}
        errors = {}
        for expression in unique:
            result = run.run([*argv, expression], check=False)
            if result.returncode != 0:
                lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
                errors[expression] = lines[-1] if lines else f"exit code {result.returncode}"
        return errors

    def keyfile_error(self, path: Path) -> str | None:
        return keyfile_problem(path)


def _read_drive(m: _Map, name: str, host: HostChecks) -> Drive | None:
    uuid = m.text("uuid", required=True)
    if uuid is not None and not _UUID.match(uuid):
        m.fail("uuid", f"{uuid!r} is not a UUID (8-4-4-4-12 hexadecimal digits)",
               "find it with: blkid -s UUID -o value /dev/sdX")
        uuid = None
    dtype = m.choice("type", DriveType, required=True)
    mount = m.abspath("mount", required=True)
    keyfile = m.abspath("keyfile")
    rotation = m.text("rotation")
    description = m.text("description") or ""
    stale_after = m.span("stale_after", 62 * 86400.0)
    if dtype is DriveType.LUKS and keyfile is None and not m.has("keyfile"):
        m.r.problem(m.node.loc, m.key_path("keyfile"), "a LUKS drive needs a keyfile",
                    "create one with: offsite drive enroll (or dd if=/dev/urandom bs=64 count=1)")
    if dtype is DriveType.PLAIN and keyfile is not None:
        m.fail("keyfile", "a plain drive has no keyfile", "set type: luks, or remove keyfile")
    if keyfile is not None and dtype is DriveType.LUKS:
        error = host.keyfile_error(keyfile)
        if error:
            m.fail("keyfile", error, f"chmod 0400 {keyfile}; chown root: {keyfile}")
    if rotation is not None and name_problem(rotation):
        m.fail("rotation", f"rotation group: {name_problem(rotation)}")
        rotation = None
    m.done()
    if uuid is None or dtype is None or mount is None:
        return None
    return Drive(name, uuid.lower(), dtype, mount, keyfile, rotation, description, stale_after)


def _read_target(m: _Map, name: str, host: HostChecks) -> Target | None:
    ok = True
    if not _TARGET_NAME.match(name):
        m.r.problem(m.node.loc, m.path, f"target name {name!r} must be 1-24 lower-case letters, "
                    "digits, - or _ (it names an md array and a device-mapper device)")
        ok = False
    kind = m.text("type", required=True)
    keyfile = m.abspath("keyfile", required=True)
    mount = m.abspath("mount", required=True)
    description = m.text("description") or ""
    stale_after = m.span("stale_after", 8 * 86400.0)
    if keyfile is not None:
        error = host.keyfile_error(keyfile)
        if error:
            m.fail("keyfile", error, f"chmod 0400 {keyfile}; chown root: {keyfile}")
    raid: CloudRaid | None = None
    nbd: NbdRemote | None = None
    raid_keys = ("members", "member_size", "level")
    nbd_keys = ("host", "export", "user", "port", "nbd_port", "host_key")
    if kind == "cloud-raid":
        for key in nbd_keys:
            if m.has(key):
                m.fail(key, f"{key} applies only to nbd targets")
        raid = _read_raid(m)
        ok = ok and raid is not None
    elif kind == "nbd":
        for key in raid_keys:
            if m.has(key):
                m.fail(key, f"{key} applies only to cloud-raid targets")
        nbd = _read_nbd(m)
        ok = ok and nbd is not None
    elif kind is not None:
        m.fail("type", f"{kind!r} is not a target type", "one of: cloud-raid, nbd")
    m.done()
    if not ok or keyfile is None or mount is None or (raid is None and nbd is None):
        return None
    return Target(name, keyfile, mount, raid, nbd, description, stale_after)


def _read_raid(m: _Map) -> CloudRaid | None:
    members = tuple(Path(p) for p in m.text_list("members", required=True))
    size = m.size("member_size", required=True)
    level_value = m.integer("level", 1, 6, 5)
    level = next((lv for lv in RaidLevel if lv.value == str(level_value)), None)
    if level is None:
        m.fail("level", f"RAID level {level_value} is not offered", "one of: 5, 6, 1")
        return None
    for p in members:
        if not p.is_absolute():
            m.fail("members", f"{str(p)!r} must be an absolute path (a sync folder)")
            return None
    if len(set(members)) != len(members):
        m.fail("members", "a folder is listed twice; each member needs its own provider")
        return None
    if members and len(members) < level.minimum:
        m.fail("members", f"RAID{level.value} needs at least {level.minimum} members, "
               f"got {len(members)}", "add a folder kept by another provider")
        return None
    if size is not None and size < 32 * 1024**2:
        m.fail("member_size", "must be at least 32M (LUKS2 alone takes 16M)")
        return None
    if not members or size is None:
        return None
    return CloudRaid(members, size, level)


def _read_nbd(m: _Map) -> NbdRemote | None:
    host = m.text("host", required=True)
    if host is not None and not _HOST.match(host):
        m.fail("host", f"{host!r} is not a host name or address")
        host = None
    export = m.text("export", required=True)
    if export is not None and not _EXPORT.match(export):
        m.fail("export", f"{export!r} is not an export name offsite accepts",
               "letters, digits, . _ - (at most 64)")
        export = None
    user = m.text("user") or "offsite"
    if not _USER.match(user):
        m.fail("user", f"{user!r} is not a valid user name")
    port = m.integer("port", 1, 65535, 22)
    nbd_port = m.integer("nbd_port", 1, 65535, 10809)
    host_key = m.text("host_key")
    if host_key is not None and not _HOST_KEY.match(host_key):
        m.fail("host_key", f"{host_key!r} is not an SSH public key (type and base64)",
               "take it from the far side: cat /etc/ssh/ssh_host_ed25519_key.pub")
        host_key = None
    if host is None or export is None:
        return None
    return NbdRemote(host, export, user, port, nbd_port, host_key)


def _read_repository(m: _Map, name: str) -> Repository | None:
    path = m.abspath("path", required=True)
    borgmatic = m.abspath("borgmatic_config")
    m.done()
    return Repository(name, path, borgmatic) if path is not None else None


_KIND_ONLY = {
    "verify_data": {JobKind.BORG_CHECK},
    "sample": {JobKind.RESTORE_TEST},
    "source": {JobKind.PULL},
    "destination": {JobKind.PULL},
    "target": {JobKind.MIRROR},
}


def _read_pull(m: _Map) -> PullSource | None:
    host = m.text("host", required=True)
    if host is not None and not _HOST.match(host):
        m.fail("host", f"{host!r} is not a host name or address")
        host = None
    user = m.text("user") or "root"
    if not _USER.match(user):
        m.fail("user", f"{user!r} is not a valid user name")
    port = m.integer("port", 1, 65535, 22)
    paths = m.text_list("paths", required=True)
    for p in paths:
        if not p.startswith("/"):
            m.fail("paths", f"remote path {p!r} must be absolute")
        elif not _REMOTE_PATH.match(p) or "/../" in p + "/":
            m.fail("paths", f"remote path {p!r} has characters offsite will not put into an "
                   "authorized_keys line", "letters, digits, / . _ - + @ and spaces")
    before = m.text("before")
    after = m.text("after")
    for key, command in (("before", before), ("after", after)):
        if command is not None and '"' in command:
            m.fail(key, "a double quote cannot go into an authorized_keys command=\"...\"",
                   "put the command into a script on the far side and name the script")
    host_key = m.text("host_key")
    if host_key is not None and not _HOST_KEY.match(host_key):
        m.fail("host_key", f"{host_key!r} is not an SSH public key (type and base64)",
               "take it from the far side: cat /etc/ssh/ssh_host_ed25519_key.pub")
        host_key = None
    m.done()
    if host is None or not paths:
        return None
    return PullSource(host, paths, user, port, before, after, host_key)


def _read_job(
    m: _Map, name: str, drives: dict[str, Drive], groups: dict[str, tuple[str, ...]],
    declared_drives: set[str] | None, repositories: set[str] | None,
    calendars: list[tuple[str, _Map]], targets: set[str] | None = None,
) -> Job | None:
    kind = m.choice("kind", JobKind, required=True)
    description = m.text("description") or ""
    calendar = m.text("schedule")
    delay = m.span("randomized_delay", 0.0)
    drive = m.text("drive")
    target = m.text("target")
    if target is not None and drive is not None:
        m.fail("target", "a mirror job copies to a drive or to a target, not both",
               "split it into two jobs")
    elif target is not None and targets is not None and target not in targets:
        close = difflib.get_close_matches(target, sorted(targets), n=1)
        m.fail("target", f"no target named {target!r}",
               f"did you mean {close[0]!r}?" if close else "define it under targets:")
    trigger: Schedule | DriveTrigger | None = None
    if calendar is not None and drive is not None:
        m.fail("drive", "a job is started either by a schedule or by a drive, not both",
               "split it into two jobs")
    elif calendar is not None:
        calendars.append((calendar, m))  # checked together, by systemd, after all jobs
        trigger = Schedule(calendar, delay)
    elif drive is not None:
        if drive in drives:
            trigger = DriveTrigger((drive,))
        elif drive in groups:
            trigger = DriveTrigger(groups[drive])
        elif declared_drives is not None and drive not in declared_drives:
            close = difflib.get_close_matches(drive, [*declared_drives, *groups], n=1)
            m.fail("drive", f"no drive or rotation group named {drive!r}",
                   f"did you mean {close[0]!r}?" if close else "define it under drives:")
    if m.has("randomized_delay") and calendar is None:
        m.fail("randomized_delay", "randomized_delay applies only to a job with a schedule")

    repos = m.text_list("repositories")
    for repo in repos:
        if repositories is not None and repo not in repositories:
            close = difflib.get_close_matches(repo, sorted(repositories), n=1)
            m.fail("repositories", f"no repository named {repo!r}",
                   f"did you mean {close[0]!r}?" if close else "define it under repositories:")
    timeout = m.span("timeout", DEFAULT_TIMEOUTS.get(kind, 3600.0) if kind else 3600.0)
    if timeout <= 0:
        m.fail("timeout", "must be longer than 0", "use infinity for no limit (not advised)")
    verify_data = m.boolean("verify_data", False)
    sample = m.integer("sample", 1, 100_000, 20)
    healthcheck = m.text("healthcheck")
    if healthcheck is not None and not healthcheck.startswith(("https://", "http://")):
        m.fail("healthcheck", f"{healthcheck!r} is not an http(s) URL")
    on_warning = m.choice("on_warning", OnWarning) or OnWarning.WARN
    mail_on_success = m.boolean("mail_on_success", False)
    stale_after = m.span("stale_after", 0.0) if m.has("stale_after") else None
    if stale_after is not None and stale_after <= 0:
        m.fail("stale_after", "must be longer than 0", "e.g. 2d for a nightly job")
    reads = tuple(Path(p) for p in m.text_list("reads"))
    for p in reads:
        if not p.is_absolute():
            m.fail("reads", f"{str(p)!r} must be an absolute path (as seen in the namespace)")
    source_map = m.mapping("source")
    pull = _read_pull(source_map) if source_map is not None else None
    destination = m.abspath("destination")

    if kind is not None:
        for key, kinds in _KIND_ONLY.items():
            if m.has(key) and kind not in kinds:
                allowed = " and ".join(sorted(kinds))
                m.fail(key, f"{key} applies only to {allowed} jobs, not to {kind} jobs")
        if kind is JobKind.MIRROR and drive is None and target is None:
            m.r.problem(m.node.loc, m.key_path("drive"),
                        "a mirror job needs the drive (or rotation group) it copies to",
                        "or a target: (cloud RAID, NBD) with a schedule")
        if kind in (JobKind.MIRROR, JobKind.BORG_CHECK, JobKind.RESTORE_TEST, JobKind.BORGMATIC) \
                and not repos and not m.has("repositories"):
            m.r.problem(m.node.loc, m.key_path("repositories"),
                        f"a {kind} job needs at least one repository")
        if kind is JobKind.PULL:
            if source_map is None:
                m.r.problem(m.node.loc, m.key_path("source"),
                            "a pull job needs a source (host, paths)")
            if destination is None and not m.has("destination"):
                m.r.problem(m.node.loc, m.key_path("destination"),
                            "a pull job needs a destination directory")
            if repos:
                m.fail("repositories", "a pull job copies into a directory, not a repository")
        if drive is not None and kind is JobKind.PULL:
            m.fail("drive", "a pull job is not started by a drive", "give it a schedule instead")
    m.done()
    if kind is None:
        return None
    return Job(
        name=name, kind=kind, timeout=timeout, trigger=trigger, repositories=repos,
        description=description, pull=pull, destination=destination, verify_data=verify_data,
        sample=sample if kind is JobKind.RESTORE_TEST else 0, healthcheck=healthcheck,
        on_warning=on_warning, mail_on_success=mail_on_success, stale_after=stale_after,
        reads=reads, target=target if kind is JobKind.MIRROR else None,
    )


def _read_color(m: _Map, key: str, default: str) -> str:
    text = m.text(key)
    if text is None:
        return default
    value = _NAMED_COLORS.get(text.lower(), text)
    if not _COLOR.match(value):
        m.fail(key, f"{text!r} is not a colour", "use #rrggbb or one of " + ", ".join(_NAMED_COLORS))
        return default
    return value.lower()


def _read_notify(m: _Map) -> Notify:
    email: Email | None = None
    em = m.mapping("email")
    if em is not None:
        to = em.text_list("to", required=True)
        for address in to:
            if not _EMAIL.match(address):
                em.fail("to", f"{address!r} is not an email address")
        sender = em.text("from") or "offsite@localhost"
        if not _EMAIL.match(sender):
            em.fail("from", f"{sender!r} is not an email address")
        smtp: Smtp | None = None
        sm = em.mapping("smtp")
        if sm is not None:
            host = sm.text("host", required=True)
            security = sm.choice("security", SmtpSecurity) or SmtpSecurity.STARTTLS
            default_port = {SmtpSecurity.TLS: 465, SmtpSecurity.STARTTLS: 587}.get(security, 25)
            port = sm.integer("port", 1, 65535, default_port)
            username = sm.text("username")
            password_file = sm.abspath("password_file")
            verify = sm.boolean("verify", True)
            ca_file = sm.abspath("ca_file")
            timeout = sm.span("timeout", 30.0)
            if password_file is not None and not username:
                sm.fail("password_file", "a password_file needs a username")
            if ca_file is not None and not verify:
                sm.fail("ca_file", "ca_file is for verifying the server; verify is off")
            if security is SmtpSecurity.NONE and username:
                sm.fail("username", "a login over an unencrypted connection would send the "
                        "password in the clear", "use security: starttls or tls")
            sm.done()
            if host is not None:
                smtp = Smtp(host, port, security, username, password_file, verify, ca_file,
                            timeout)
        sendmail = em.abspath("sendmail") or Path("/usr/sbin/sendmail")
        if smtp is not None and em.has("sendmail"):
            em.fail("sendmail", "choose smtp or sendmail, not both")
        retry_every = em.span("retry_every", 300.0)
        if retry_every < 1:
            em.fail("retry_every", "must be at least 1s")
        em.done()
        email = Email(to, sender, smtp, sendmail, max(retry_every, 1.0))
    led = Led()
    lm = m.mapping("led")
    if lm is not None:
        enabled = lm.boolean("enabled", True)
        index = lm.integer("index", 0, 63, 0)
        brightness = lm.integer("brightness", 1, 100, led.brightness)
        colors = dict(led.colors)
        cm = lm.mapping("colors")
        if cm is not None:
            for state in list(colors):
                colors[state] = _read_color(cm, state, colors[state])
            cm.done()
        lm.done()
        led = Led(enabled, index, brightness, tuple(colors.items()))
    healthchecks: Healthchecks | None = None
    hm = m.mapping("healthchecks")
    if hm is not None:
        url = hm.text("url", required=True)
        if url is not None and not url.startswith(("https://", "http://")):
            hm.fail("url", f"{url!r} is not an http(s) URL")
            url = None
        timeout = hm.span("timeout", 10.0)
        hm.done()
        if url is not None:
            healthchecks = Healthchecks(url.rstrip("/"), timeout)
    m.done()
    return Notify(email, led, healthchecks)


def _read_namespace(m: _Map) -> Namespace:
    path = m.abspath("path") or Namespace().path
    mounts: list[NamespaceMount] = []
    node = m.get("mounts")
    if node is not None and not isinstance(node, SeqNode):
        m.fail("mounts", f"expected a list of mounts, got {_type_name(node)}")
    elif isinstance(node, SeqNode):
        for i, item in enumerate(node.items):
            path_i = f"{m.key_path('mounts')}[{i}]"
            if not isinstance(item, MapNode):
                m.r.problem(item.loc, path_i, f"expected a mount (what, where), got {_type_name(item)}")
                continue
            mm = _Map(m.r, item, path_i)
            what = mm.text("what", required=True)
            where = mm.abspath("where", required=True)
            fstype = mm.text("type")
            options = mm.text_list("options")
            mm.done()
            if what is not None and where is not None:
                mounts.append(NamespaceMount(what, where, fstype, options))
    m.done()
    return Namespace(path, tuple(mounts))


def validate(text: str, source: Path, host: HostChecks) -> Config:
    """Read the text of a config file. Raises ConfigError listing every problem."""
    reader = _Reader(source)
    try:
        doc = parse(text)
    except YamlError as exc:
        raise ConfigError([Problem(source, exc.loc, "", str(exc), exc.hint)]) from exc
    for key_path, first, again in doc.duplicates:
        key = key_path.rsplit(".", 1)[-1]
        reader.problem(again, key_path, f"{key!r} is defined twice (first at line {first.line})",
                       "names of drives, repositories and jobs must be unique")
    for message, loc in doc.bad_keys:
        reader.problem(loc, "", message)
    if not isinstance(doc.root, MapNode):
        raise ConfigError([Problem(source, doc.root.loc, "",
                                   f"expected a mapping of settings, got {_type_name(doc.root)}",
                                   "start from examples/offsite.yaml in the offsite sources")])
    top = _Map(reader, doc.root, "")

    drives: dict[str, Drive] = {}
    drive_maps: dict[str, _Map] = {}
    for name, _loc, m in top.named_mappings("drives"):
        drive = _read_drive(m, name, host)
        if drive is not None:
            drives[name] = drive
            drive_maps[name] = m
    groups: dict[str, tuple[str, ...]] = {}
    for drive in drives.values():
        if drive.rotation:
            groups[drive.rotation] = (*groups.get(drive.rotation, ()), drive.name)
    for group in groups:
        if group in drives:
            reader.problem(top.loc("drives"), "drives",
                           f"{group!r} names both a drive and a rotation group")
    _check_unique(drive_maps, drives.values(), lambda d: d.uuid, "uuid")

    repositories: dict[str, Repository] = {}
    for name, _loc, m in top.named_mappings("repositories"):
        repo = _read_repository(m, name)
        if repo is not None:
            repositories[name] = repo

    targets: dict[str, Target] = {}
    for name, _loc, m in top.named_mappings("targets"):
        target = _read_target(m, name, host)
        if target is not None:
            targets[name] = target
    mounts = [(d.name, d.mount) for d in drives.values() if d.rotation is None] + \
        [(t.name, t.mount) for t in targets.values()]
    seen_mounts: dict[Path, str] = {}
    for owner, mount in mounts:
        if mount in seen_mounts:
            reader.problem(top.loc("targets"), "targets", f"{owner!r} and {seen_mounts[mount]!r} "
                           f"use the same mount point {mount}", "give each its own")
        seen_mounts[mount] = owner

    jobs: list[Job] = []
    calendars: list[tuple[str, _Map]] = []
    for name, _loc, m in top.named_mappings("jobs"):
        job = _read_job(m, name, drives, groups, top.declared("drives"),
                        top.declared("repositories"), calendars, top.declared("targets"))
        if job is not None:
            jobs.append(job)
    rejected = host.calendar_errors([expression for expression, _ in calendars])
    for expression, m in calendars:
        if expression in rejected:
            m.fail("schedule", f"systemd does not accept {expression!r} as OnCalendar: "
                   f"{rejected[expression]}",
                   "test it with: systemd-analyze calendar '...'; e.g. daily, *-*-* 02:30")
    if not top.has("jobs") and not reader.problems:
        reader.problem(doc.root.loc, "jobs", "no jobs are defined", "add a jobs: section")

    nm = top.mapping("notify")
    notify = _read_notify(nm) if nm is not None else Notify()
    sm = top.mapping("namespace")
    namespace = _read_namespace(sm) if sm is not None else Namespace()
    top.done()

    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(source, tuple(drives.values()), tuple(repositories.values()), tuple(jobs),
                  notify, namespace, tuple(targets.values()))


def _check_unique(
    maps: dict[str, _Map], drives: Iterable[Drive], key: Callable[[Drive], str], what: str,
) -> None:
    seen: dict[str, str] = {}
    for drive in drives:
        value = key(drive)
        if value in seen:
            maps[drive.name].fail(what, f"{drive.name!r} has the same {what} as {seen[value]!r}",
                                  "each drive must be told apart by its own UUID")
        seen[value] = drive.name


def load(path: Path, host: HostChecks | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError (also for an unreadable file)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read the file: {exc.strerror}",
                                   f"write one at {DEFAULT_PATH} or pass -c FILE")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(path, None, "", f"not UTF-8 text (byte {exc.start})")]) from exc
    return validate(text, path, host or SystemHostChecks())

