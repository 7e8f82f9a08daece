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
from pathlib import Path
from typing import Protocol

from offsite import escape, unitnames
from offsite.config import paths, schema
from offsite.config.fields import (
    NAME_HINT,
    ConfigError,
    FieldMap,
    Problem,
    Reader,
    Values,
    name_problem,
    read_section,
    type_name,
)
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
    Passphrase,
    PullSource,
    PushTarget,
    RaidLevel,
    Repository,
    Schedule,
    SecretSource,
    Smtp,
    SmtpSecurity,
    Target,
    TargetType,
)
from offsite.config.paths import Place, Role
from offsite.config.yamlsrc import MAX_BYTES, MapNode, SeqNode, YamlError, parse

__all__ = ["ConfigError", "Problem", "load", "validate"]

DEFAULT_PATH = Path("/etc/offsite/offsite.yaml")


_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9/._+@ -]*$")
# a target's name becomes an md array name, a device-mapper name and file names
_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")


class HostChecks(Protocol):
    """What validation asks of the machine it runs on."""

    def calendar_errors(self, expressions: Sequence[str]) -> dict[str, str]:
        """Why systemd rejects each rejected OnCalendar expression (accepted ones left out)."""
        ...

    def keyfile_error(self, path: Path) -> str | None: ...

    def secret_error(self, path: Path, what: str) -> str | None:
        """Why a file holding a passphrase is unusable or unsafe, or None."""
        ...

    def command_file_error(self, path: Path, what: str) -> str | None:
        """Why a file root runs commands from (borgmatic's) is unsafe, or None; a file not
        there yet is borgmatic's to complain about."""
        ...


def keyfile_problem(path: Path, what: str = "keyfile") -> str | None:
    """Why a keyfile (or a passphrase file) is unusable or unsafe, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{what} {path} does not exist"
    except OSError as exc:
        return f"{what} {path} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {path} is not a regular file"
    if st.st_mode & 0o077:
        return f"{what} {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_uid != 0 and os.geteuid() == 0:
        return f"{what} {path} belongs to uid {st.st_uid}, not to root"
    return None


def writable_problem(st: os.stat_result, path: Path, what: str) -> str | None:
    """Why a file whose contents root acts on (runs commands from) could be changed by
    someone other than root, or None. Only asked when offsite runs as root."""
    if st.st_uid != 0:
        return f"{what} {path} belongs to uid {st.st_uid}: whoever that is could make root " \
            "run any command through it"
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0):
        return f"{what} {path} is writable by {'others' if st.st_mode & 0o002 else 'its group'}" \
            f" (mode {stat.S_IMODE(st.st_mode):04o}): they could make root run any command " \
            "through it"
    return None


def secret_hint(path: Path, error: str) -> str:
    """What to do about a keyfile_problem."""
    if "readable by" in error or "belongs to" in error or "writable by" in error:
        return f"chmod 0400 {path}; chown root: {path}"
    return "name the file that holds it (a regular file, root's own, mode 0400)"


class SystemHostChecks:
    """HostChecks against this machine: systemd-analyze for calendars, stat for keyfiles."""

    def calendar_errors(self, expressions: Sequence[str]) -> dict[str, str]:
        """One systemd-analyze call for all expressions, however many fail: it goes on past
        a bad one, printing "Original form: X" for each it accepts and one line on stderr
        naming each it refuses."""
        from offsite import run  # deferred: keeps config importable without a process

        unique = sorted(set(expressions))
        if not unique:
            return {}
        result = run.run(["systemd-analyze", "calendar", "--iterations=1", "--", *unique],
                         check=False)
        if result.returncode == 0:
            return {}
        return calendar_refusals(unique, result.stdout, result.stderr)

    def keyfile_error(self, path: Path) -> str | None:
        return keyfile_problem(path)

    def secret_error(self, path: Path, what: str) -> str | None:
        return keyfile_problem(path, what)

    def command_file_error(self, path: Path, what: str) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            return writable_problem(os.stat(path), path, what)
        except OSError:
            return None


def calendar_refusals(expressions: Sequence[str], stdout: str, stderr: str) -> dict[str, str]:
    """The expressions `systemd-analyze calendar` did not accept, each with its reason."""
    accepted = {line.split("Original form: ", 1)[1] for line in stdout.splitlines()
                if line.lstrip().startswith("Original form: ")}
    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
    out = {}
    for expression in expressions:
        if expression in accepted:
            continue
        said = [e for e in errors if f"'{expression}'" in e]
        out[expression] = said[0] if said else "not a calendar expression systemd accepts"
    return out


def _read_drive(m: FieldMap, name: str, host: HostChecks) -> Drive | None:
    v = read_section(m, schema.DRIVES)
    uuid, dtype, mount = v.text("uuid"), v.choice("type", DriveType), v.path("mount")
    keyfile = v.path("keyfile")
    rotation = v.text("rotation")
    if keyfile is not None and dtype is DriveType.LUKS:
        error = host.keyfile_error(keyfile)
        if error:
            m.fail("keyfile", error, secret_hint(keyfile, error))
    if rotation is not None and name_problem(rotation):
        m.fail("rotation", f"rotation group: {name_problem(rotation)}", NAME_HINT)
        rotation = None
    m.done()
    if uuid is None or dtype is None or mount is None:
        return None
    return Drive(name, uuid.lower(), dtype, mount, keyfile, rotation, v.text("description") or "",
                 v.span("stale_after") or 0.0, v.span("check_every") or 0.0, v.flag("eject"))


def _read_target(m: FieldMap, name: str, host: HostChecks) -> Target | None:
    ok = True
    if not _TARGET_NAME.match(name):
        m.r.problem(m.node.loc, m.path, f"target name {name!r} must be 1-24 lower-case letters, "
                    "digits, - or _ (it names an md array and a device-mapper device)")
        ok = False
    v = read_section(m, schema.TARGETS)
    kind, keyfile, mount = v.choice("type", TargetType), v.path("keyfile"), v.path("mount")
    if keyfile is not None:
        error = host.keyfile_error(keyfile)
        if error:
            m.fail("keyfile", error, secret_hint(keyfile, error))
    raid: CloudRaid | None = None
    nbd: NbdRemote | None = None
    if kind is TargetType.CLOUD_RAID:
        raid = _cloud_raid(m, v)
        ok = ok and raid is not None
    elif kind is TargetType.NBD:
        host_name, export = v.text("host"), v.text("export")
        if host_name is not None and export is not None:
            nbd = NbdRemote(host_name, export, v.text("user") or "offsite", v.integer("port"),
                            v.integer("nbd_port"), v.text("host_key"))
        ok = ok and nbd is not None
    m.done()
    if not ok or keyfile is None or mount is None or (raid is None and nbd is None):
        return None
    return Target(name, keyfile, mount, raid, nbd, v.text("description") or "",
                  v.span("stale_after") or 0.0)


def _cloud_raid(m: FieldMap, v: Values) -> CloudRaid | None:
    members, size = v.paths("members"), v.get("member_size")
    level = v.choice("level", RaidLevel)
    if level is None or not isinstance(size, int) or not members or m.failed("members"):
        return None
    if len(set(members)) != len(members):
        m.fail("members", "a folder is listed twice; each member needs its own provider")
        return None
    if len(members) < level.minimum:
        m.fail("members", f"RAID{level.value} needs at least {level.minimum} members, "
               f"got {len(members)}", "add a folder kept by another provider")
        return None
    return CloudRaid(members, size, level)


def _read_repository(m: FieldMap, name: str, host: HostChecks) -> Repository | None:
    v = read_section(m, schema.REPOSITORIES)
    path, borgmatic = v.path("path"), v.path("borgmatic_config")
    given = [(key, source) for key, source in (("passphrase_file", SecretSource.FILE),
                                               ("passphrase_credential", SecretSource.CREDENTIAL),
                                               ("passcommand", SecretSource.COMMAND))
             if v.get(key) is not None]
    passphrase: Passphrase | None = None
    if len(given) > 1:
        m.fail(given[1][0], f"the passphrase comes from one place; {given[0][0]} is set too",
               "keep one of passphrase_file, passphrase_credential, passcommand")
    elif given:
        key, source = given[0]
        where = str(v.get(key))
        if source is not SecretSource.COMMAND:
            error = host.secret_error(Path(where), "passphrase file" if source is
                                      SecretSource.FILE else "credential")
            if error:
                m.fail(key, error, secret_hint(Path(where), error))
        passphrase = Passphrase(source, where)
    elif borgmatic is not None:
        passphrase = Passphrase(SecretSource.BORGMATIC, str(borgmatic))
    if borgmatic is not None:
        error = host.command_file_error(borgmatic, "borgmatic configuration")
        if error:
            m.fail("borgmatic_config", error, secret_hint(borgmatic, error).replace("0400",
                                                                                  "0600"))
    m.done()
    return Repository(name, path, borgmatic, passphrase) if path is not None else None


def _read_pull(m: FieldMap) -> PullSource | None:
    v = read_section(m, schema.PULL_SOURCE)
    host, paths = v.text("host"), v.texts("paths")
    for p in paths:
        if not p.startswith("/"):
            m.fail("paths", f"remote path {p!r} must be absolute")
        elif not _REMOTE_PATH.match(p) or "/../" in p + "/":
            m.fail("paths", f"remote path {p!r} has characters offsite will not put into an "
                   "authorized_keys line", "letters, digits, / . _ - + @ and spaces")
    for key in ("before", "after"):
        command = v.text(key)
        if command is not None and '"' in command:
            m.fail(key, "a double quote cannot go into an authorized_keys command=\"...\"",
                   "put the command into a script on the far side and name the script")
    m.done()
    if host is None or not paths:
        return None
    return PullSource(host, paths, v.text("user") or "root", v.integer("port"), v.text("before"),
                      v.text("after"), v.text("host_key"))


def _read_push_target(m: FieldMap) -> PushTarget | None:
    v = read_section(m, schema.PUSH_TARGET)
    host, path = v.text("host"), v.text("path")
    if path is not None and ("/../" in path + "/" or "/./" in path + "/" or path == "/"):
        m.fail("path", f"{path!r} must name a directory below / without . or .. in it",
               "e.g. /srv/offsite/server1")
    m.done()
    if host is None or path is None:
        return None
    return PushTarget(host, path.rstrip("/"), v.text("user") or "offsite", v.integer("port"),
                      v.text("host_key"), v.size("bandwidth"), v.flag("compress"))


def _read_job(
    m: FieldMap, name: str, drives: dict[str, Drive], groups: dict[str, tuple[str, ...]],
    declared_drives: set[str] | None, repositories: set[str] | None,
    calendars: list[tuple[str, FieldMap]], targets: set[str] | None = None,
) -> Job | None:
    v = read_section(m, schema.JOBS)
    kind = v.choice("kind", JobKind)
    calendar, drive, target = v.text("schedule"), v.text("drive"), v.text("target")
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
        trigger = Schedule(calendar, v.span("randomized_delay") or 0.0)
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
    repos = v.texts("repositories")
    for repo in repos:
        if repositories is not None and repo not in repositories:
            close = difflib.get_close_matches(repo, sorted(repositories), n=1)
            m.fail("repositories", f"no repository named {repo!r}",
                   f"did you mean {close[0]!r}?" if close else "define it under repositories:")
    source_map = m.mapping("source") if kind is None or kind is JobKind.PULL else None
    pull = _read_pull(source_map) if source_map is not None else None
    to_map = m.mapping("to") if kind is JobKind.PUSH else None
    to = _read_push_target(to_map) if to_map is not None else None
    pushed = v.paths("paths")
    if kind is JobKind.PUSH and not repos and not pushed and not m.has("repositories"):
        m.r.problem(m.node.loc, m.key_path("repositories"),
                    "a push job sends repositories, paths, or both: it names neither",
                    "add repositories: [NAME] or paths: [/srv/backups]")
    if kind is JobKind.PUSH and schema.PUSH_FILES in repos:
        m.fail("repositories", f"a repository named {schema.PUSH_FILES!r} would collide on the far "
               "side with the plain directories a push keeps there", "rename the repository")
    if kind is JobKind.MIRROR and drive is None and target is None:
        m.r.problem(m.node.loc, m.key_path("drive"),
                    "a mirror job needs the drive (or rotation group) it copies to",
                    "or a target: (cloud RAID, NBD) with a schedule")
    m.done()
    if kind is None:
        return None
    return Job(
        name=name, kind=kind, timeout=v.span("timeout") or 0.0, trigger=trigger,
        repositories=repos, description=v.text("description") or "", pull=pull,
        destination=v.path("destination"), verify_data=v.flag("verify_data"),
        sample=v.integer("sample") if kind is JobKind.RESTORE_TEST else 0,
        healthcheck=v.text("healthcheck"),
        on_warning=v.choice("on_warning", OnWarning) or OnWarning.WARN,
        mail_on_success=v.flag("mail_on_success"), stale_after=v.span("stale_after"),
        reads=v.paths("reads"), target=target if kind is JobKind.MIRROR else None,
        to=to, paths=pushed, of_push=v.text("push"),
    )


def _read_colors(m: FieldMap) -> tuple[tuple[str, str], ...]:
    colors = []
    for setting in schema.LED_COLORS.settings:
        default = str(setting.default)
        text = m.text(setting.key)
        value = schema.NAMED_COLORS.get(text.lower(), text) if text is not None else default
        if not _COLOR.match(value):
            m.fail(setting.key, f"{text!r} is not a colour",
                   "use #rrggbb or one of " + ", ".join(schema.NAMED_COLORS))
            value = default
        colors.append((setting.key, value.lower()))
    m.done()
    return tuple(colors)


def _read_smtp(m: FieldMap, host_checks: HostChecks) -> Smtp | None:
    v = read_section(m, schema.SMTP)
    security = v.choice("security", SmtpSecurity) or SmtpSecurity.STARTTLS
    host, username = v.text("host"), v.text("username")
    password_file, ca_file, verify = v.path("password_file"), v.path("ca_file"), v.flag("verify")
    if password_file is not None and not username:
        m.fail("password_file", "a password_file needs a username")
    elif password_file is not None:
        error = host_checks.secret_error(password_file, "password file")
        if error:
            m.fail("password_file", error, secret_hint(password_file, error))
    if ca_file is not None and not verify:
        m.fail("ca_file", "ca_file is for verifying the server; verify is off")
    if security is SmtpSecurity.NONE and username:
        m.fail("username", "a login over an unencrypted connection would send the password "
               "in the clear", "use security: starttls or tls")
    m.done()
    if host is None:
        return None
    return Smtp(host, v.integer("port"), security, username, password_file, verify, ca_file,
                v.span("timeout") or 0.0)


def _read_email(m: FieldMap, host: HostChecks) -> Email:
    v = read_section(m, schema.EMAIL)
    to, sender = v.texts("to"), v.text("from") or ""
    for address in to:
        if not schema.EMAIL_PATTERN.match(address):
            m.fail("to", f"{address!r} is not an email address")
    if not schema.EMAIL_PATTERN.match(sender):
        m.fail("from", f"{sender!r} is not an email address")
    sm = m.mapping("smtp")
    smtp = _read_smtp(sm, host) if sm is not None else None
    if sm is not None and m.has("sendmail"):
        m.fail("sendmail", "choose smtp or sendmail, not both")
    m.done()
    return Email(to, sender, smtp, v.path("sendmail") or Path("/usr/sbin/sendmail"),
                 v.span("retry_every") or 0.0)


def _read_notify(m: FieldMap, host: HostChecks) -> Notify:
    em = m.mapping("email")
    email = _read_email(em, host) if em is not None else None
    led = Led()
    lm = m.mapping("led")
    if lm is not None:
        v = read_section(lm, schema.LED)
        cm = lm.mapping("colors")
        lm.done()
        failure_index = v.get("failure_index")
        if failure_index is not None and failure_index == v.integer("index"):
            lm.fail("failure_index", f"LED {failure_index} is already the one for the work "
                    "(index)", "the other LED of the stick, e.g. 1 on a BlinkStick Nano")
        led = Led(enabled=v.flag("enabled"), index=v.integer("index"),
                  brightness=v.integer("brightness"),
                  failure_index=failure_index if isinstance(failure_index, int) else None,
                  colors=_read_colors(cm) if cm is not None else led.colors)
    healthchecks: Healthchecks | None = None
    hm = m.mapping("healthchecks")
    if hm is not None:
        v = read_section(hm, schema.HEALTHCHECKS)
        hm.done()
        url = v.text("url")
        if url is not None:
            healthchecks = Healthchecks(url.rstrip("/"), v.span("timeout") or 0.0)
    m.done()
    return Notify(email, led, healthchecks)


def _read_namespace(m: FieldMap, places: list[Place]) -> Namespace:
    v = read_section(m, schema.NAMESPACE)
    record = v.path("path")
    if record is not None and paths.namespace_record_problem(record):
        m.fail("path", str(paths.namespace_record_problem(record)),
               f"the default is {Namespace().path}")
    mounts: list[NamespaceMount] = []
    node = m.get("mounts")
    if node is not None and not isinstance(node, SeqNode):
        m.fail("mounts", f"expected a list of mounts, got {type_name(node)}")
    elif isinstance(node, SeqNode):
        for i, item in enumerate(node.items):
            path_i = f"{m.key_path('mounts')}[{i}]"
            if not isinstance(item, MapNode):
                m.r.problem(item.loc, path_i, f"expected a mount (what, where), got {type_name(item)}")
                continue
            mm = FieldMap(m.r, item, path_i)
            mv = read_section(mm, schema.NAMESPACE_MOUNT)
            mm.done()
            what, where = mv.text("what"), mv.path("where")
            if where is not None:
                places.append(Place(where, Role.NAMESPACE_MOUNT, f"namespace.mounts[{i}]",
                                    mm.key_path("where"), mm.loc("where")))
            if what is not None and where is not None:
                mounts.append(NamespaceMount(what, where, mv.text("type"), mv.texts("options")))
    m.done()
    return Namespace(v.path("path") or Namespace().path, tuple(mounts))


def validate(text: str, source: Path, host: HostChecks) -> Config:
    """Read the text of a config file. Raises ConfigError listing every problem."""
    reader = Reader(source)
    try:
        doc = parse(text)
    except YamlError as exc:
        raise ConfigError([Problem(source, exc.loc, exc.path, str(exc), exc.hint)]) from exc
    for key_path, first, again in doc.duplicates:
        key = key_path.rsplit(".", 1)[-1]
        reader.problem(again, key_path, f"{key!r} is defined twice (first at line {first.line})",
                       "names of drives, repositories and jobs must be unique")
    for message, loc in doc.bad_keys:
        reader.problem(loc, "", message)
    if not isinstance(doc.root, MapNode):
        raise ConfigError([Problem(source, doc.root.loc, "",
                                   f"expected a mapping of settings, got {type_name(doc.root)}",
                                   "start from examples/offsite.yaml in the offsite sources")])
    top = FieldMap(reader, doc.root, "")

    drives: dict[str, Drive] = {}
    drive_maps: dict[str, FieldMap] = {}
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
    places = [Place(d.mount, Role.DRIVE_MOUNT, d.name, drive_maps[d.name].key_path("mount"),
                    drive_maps[d.name].loc("mount"), share=d.rotation or "")
              for d in drives.values()]

    repositories: dict[str, Repository] = {}
    for name, _loc, m in top.named_mappings("repositories"):
        repo = _read_repository(m, name, host)
        if name in RESERVED_ON_DRIVE or name.endswith(".offsite"):
            m.r.problem(m.node.loc, m.path, f"a repository named {name!r} would collide on the "
                        "drive with what offsite keeps beside the copies",
                        "give it another name (not ending in .offsite, not offsite-recovery)")
        elif repo is not None:
            repositories[name] = repo
            places.append(Place(repo.path, Role.REPOSITORY, name, m.key_path("path"),
                                m.loc("path")))

    targets: dict[str, Target] = {}
    for name, _loc, m in top.named_mappings("targets"):
        target = _read_target(m, name, host)
        if target is not None:
            targets[name] = target
            places.append(Place(target.mount, Role.TARGET_MOUNT, name, m.key_path("mount"),
                                m.loc("mount")))
            places += [Place(member, Role.MEMBER, name, m.key_path("members"), m.loc("members"))
                       for member in (target.raid.members if target.raid else ())]

    jobs: list[Job] = []
    job_maps: dict[str, FieldMap] = {}
    calendars: list[tuple[str, FieldMap]] = []
    for name, _loc, m in top.named_mappings("jobs"):
        job = _read_job(m, name, drives, groups, top.declared("drives"),
                        top.declared("repositories"), calendars, top.declared("targets"))
        if job is not None:
            jobs.append(job)
            job_maps[name] = m
            if job.destination is not None:
                places.append(Place(job.destination, Role.HOLDING, name,
                                    m.key_path("destination"), m.loc("destination")))
            _check_unit_names(m, job)
            _check_not_taken(m, job)
    _check_tested_pushes(jobs, job_maps)
    rejected = host.calendar_errors([expression for expression, _ in calendars])
    for expression, m in calendars:
        if expression in rejected:
            m.fail("schedule", f"systemd does not accept {expression!r} as OnCalendar: "
                   f"{rejected[expression]}",
                   "test it with: systemd-analyze calendar '...'; e.g. daily, *-*-* 02:30")
    if not top.has("jobs") and not reader.problems:
        reader.problem(doc.root.loc, "jobs", "no jobs are defined", "add a jobs: section")

    nm = top.mapping("notify")
    notify = _read_notify(nm, host) if nm is not None else Notify()
    sm = top.mapping("namespace")
    namespace = _read_namespace(sm, places) if sm is not None else Namespace()
    top.done()
    for conflict in paths.conflicts(places):
        reader.problem(conflict.place.loc, conflict.place.key_path, conflict.message,
                       conflict.hint)

    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(source, tuple(drives.values()), tuple(repositories.values()), tuple(jobs),
                  notify, namespace, tuple(targets.values()))


def _check_tested_pushes(jobs: list[Job], maps: dict[str, FieldMap]) -> None:
    """A restore-test of a pushed copy names a push job that sends its repositories."""
    pushes = {j.name: j for j in jobs if j.kind is JobKind.PUSH}
    for job in jobs:
        if job.of_push is None:
            continue
        m = maps[job.name]
        push = pushes.get(job.of_push)
        if push is None:
            close = difflib.get_close_matches(job.of_push, sorted(pushes), n=1)
            m.fail("push", f"no push job named {job.of_push!r}",
                   f"did you mean {close[0]!r}?" if close else "name a job of kind push")
            continue
        unsent = [r for r in job.repositories if r not in push.repositories]
        if unsent:
            m.fail("repositories", f"push job {push.name!r} does not send "
                   f"{', '.join(map(repr, unsent))}",
                   f"it sends: {', '.join(push.repositories) or 'no repositories'}")


def _check_unit_names(m: FieldMap, job: Job) -> None:
    """Names that pass one by one can still compose unit names past systemd's limit: the
    job's unit for each drive, and the failure-mail unit named after it (OnFailure=)."""
    for drive in job.drives or (None,):
        unit = unitnames.job_unit(job.name, drive)
        for name in (unit, unitnames.notify_unit(unit)):
            if len(name.encode()) > escape.UNIT_NAME_MAX:
                with_drive = f" and drive {drive!r}" if drive else ""
                m.r.problem(m.node.loc, m.path, f"job {job.name!r}{with_drive} make a unit name "
                            f"of {len(name.encode())} bytes; systemd allows "
                            f"{escape.UNIT_NAME_MAX}: {name}",
                            "shorten the job's or the drive's name (a '-' takes 4 bytes: \\x2d)")
                return


# On a drive, beside each copy DIR: DIR.offsite/ (its trees) and offsite-recovery/
RESERVED_ON_DRIVE = ("offsite-recovery", "lost+found")


def _check_not_taken(m: FieldMap, job: Job) -> None:
    """A job whose unit would be one of offsite's own (a job named agent) would be silently
    replaced by it and never run. (Names with '-' cannot collide: systemd-escape makes the
    job unlock-d1 offsite-unlock\\x2dd1.service.)"""
    own = {unitnames.AGENT_UNIT, unitnames.NAMESPACE_UNIT, unitnames.OUTBOX_SERVICE,
           unitnames.OUTBOX_TIMER, unitnames.STALE_SERVICE, unitnames.STALE_TIMER,
           unitnames.NOTIFY_TEMPLATE}
    mine = {unitnames.job_unit(job.name, d) for d in job.drives or (None,)}
    mine.add(unitnames.timer_unit(job.name))
    taken = sorted(mine & own)
    if taken:
        m.r.problem(m.node.loc, m.path, f"job {job.name!r} would be {taken[0]}, a unit "
                    "offsite writes for itself", "give the job another name")


def _check_unique(
    maps: dict[str, FieldMap], drives: Iterable[Drive], key: Callable[[Drive], str], what: str,
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
    too_big = ConfigError([Problem(path, None, "", f"larger than {MAX_BYTES // 1024} KiB; a "
                                   "configuration is a few kilobytes", "is this the right file?")])
    try:
        # opened without blocking and checked before a byte is read: a FIFO would hang the
        # read, a device would never end, a huge file would be held in memory whole
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError([Problem(path, None, "", "not a regular file",
                                           "give the path of the YAML file itself")])
            if st.st_size > MAX_BYTES:
                raise too_big
            unsafe = writable_problem(st, path, "the configuration") if os.geteuid() == 0 \
                else None
            if unsafe:  # it names commands root runs (passcommand, a pull's before/after)
                raise ConfigError([Problem(path, None, "", unsafe,
                                           f"chown root: {path}; chmod go-w {path}")])
            raw = os.read(fd, MAX_BYTES + 1)  # at most this, even if the file grows meanwhile
            if len(raw) > MAX_BYTES:
                raise too_big
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read the file: {exc.strerror}",
                                   f"write one at {DEFAULT_PATH} or pass -c FILE")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(path, None, "", f"not UTF-8 text (byte {exc.start})")]) from exc
    return validate(text, path, host or SystemHostChecks())

