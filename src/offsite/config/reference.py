"""The configuration reference (docs/config-reference.md), generated from one table.

Every key the parser reads is listed here with its meaning; defaults are read from the
model's dataclasses (model.py) wherever the model has one, so a changed default changes the
reference. tests/unit/test_configref.py parses a file that uses every section and checks
that the keys the parser asks for are exactly the keys listed here, and that the file in
docs/ is what this module generates (`make docs` writes it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from offsite import quantities
from offsite.config import model


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # what is written: text, path, time span, size, ...
    doc: str
    required: str = ""  # "yes", or when it is required ("luks drives")
    default: str = ""  # as written in YAML, when not from the model
    model: str = ""  # "Drive.stale_after": the default is the model's


@dataclass(frozen=True)
class Section:
    path: str  # drives.NAME, notify.email.smtp, namespace.mounts[]
    doc: str
    keys: tuple[Key, ...]


SPAN = "time span (90s, 30min, 6h, 2d)"
NAME_RULE = ("Names become parts of unit names (offsite-NAME.service): letters, digits and "
             "`-_.`, at most 200 bytes.")

SECTIONS: tuple[Section, ...] = (
    Section("drives.NAME", "An external drive that carries the off-site copy. " + NAME_RULE, (
        Key("uuid", "UUID", "The UUID of the filesystem (plain) or of the LUKS container "
            "(luks): `blkid -s UUID -o value /dev/sdX`. Only the UUID selects a drive; its "
            "label, model and serial are never trusted.", required="yes"),
        Key("type", "luks or plain", "`luks`: unlocked with `keyfile` by a generated unit "
            "and locked again when the job ends. `plain`: a filesystem on the drive.",
            required="yes"),
        Key("mount", "absolute path", "Where the drive is mounted inside the backup "
            "namespace during its job (no other process sees it).", required="yes"),
        Key("keyfile", "absolute path", "A root-owned file, mode 0400, that opens the LUKS "
            "container (`offsite drive enroll` makes one).", required="luks drives"),
        Key("rotation", "name", "Drives with the same rotation group take turns holding the "
            "same copy; a job can name the group instead of a drive."),
        Key("description", "text", "Shown in status and unit descriptions.", default='""'),
        Key("stale_after", SPAN, "A last copy older than this is flagged by `offsite drives` "
            "and raises the staleness alert.", model="Drive.stale_after"),
    )),
    Section("repositories.NAME", "A local borg repository. " + NAME_RULE, (
        Key("path", "absolute path", "The repository, as seen inside the backup namespace.",
            required="yes"),
        Key("borgmatic_config", "absolute path", "The borgmatic configuration that writes "
            "it (for borgmatic jobs); default: borgmatic's own search."),
    )),
    Section("targets.NAME", "Somewhere other than a USB drive that a mirror job copies to, "
            "assembled before the job and taken down after it (see README, Other targets). "
            "The name: 1-24 of `a-z 0-9 - _`.", (
        Key("type", "cloud-raid or nbd", "A RAID over image files in sync folders, or a "
            "network block device through an SSH tunnel.", required="yes"),
        Key("keyfile", "absolute path", "Root-owned, mode 0400: the LUKS key of the target.",
            required="yes"),
        Key("mount", "absolute path", "Where it is mounted inside the backup namespace.",
            required="yes"),
        Key("description", "text", "Shown in unit descriptions.", default='""'),
        Key("stale_after", SPAN, "A last copy older than this is flagged.",
            model="Target.stale_after"),
        Key("members", "list of absolute paths", "cloud-raid: one folder per sync provider; "
            "each holds `offsite-NAME.img` and its marker. Append folders to grow the set "
            "(`offsite target grow`).", required="cloud-raid"),
        Key("member_size", "size (512M, 20G, 1T)", "cloud-raid: the size of each image "
            "file, at least 32M.", required="cloud-raid"),
        Key("level", "5, 6 or 1", "cloud-raid: the RAID level (RAID6 needs 4 members).",
            model="CloudRaid.level"),
        Key("host", "host name or address", "nbd: the machine running nbd-server and sshd.",
            required="nbd"),
        Key("export", "text", "nbd: the export's name in nbd-server's configuration.",
            required="nbd"),
        Key("user", "user name", "nbd: the far side's account holding the tunnel's key.",
            model="NbdRemote.user"),
        Key("port", "1-65535", "nbd: the far side's SSH port.", model="NbdRemote.port"),
        Key("nbd_port", "1-65535", "nbd: nbd-server's port on the far side's loopback.",
            model="NbdRemote.nbd_port"),
        Key("host_key", "SSH public key", "nbd: the far side's host key, pinned; without "
            "it the first connection is trusted and later changes are refused."),
    )),
    Section("jobs.NAME", "One job: a unit `offsite-NAME.service`, started by its schedule, "
            "by a drive, or by hand. " + NAME_RULE, (
        Key("kind", "borgmatic, borg-check, mirror, pull or restore-test", "What it does.",
            required="yes"),
        Key("description", "text", "Shown in status and the unit's description.",
            default='""'),
        Key("schedule", "OnCalendar= expression", "When it runs (`systemd-analyze calendar` "
            "accepts it); a run missed while the machine was off runs at the next boot."),
        Key("randomized_delay", SPAN, "Spread the start by up to this (with schedule only).",
            default="0"),
        Key("drive", "drive or rotation group", "Started when that drive is plugged in "
            "(mirror, borg-check, restore-test)."),
        Key("target", "target name", "mirror: copy to this target instead of a drive."),
        Key("repositories", "list of repository names", "What it works on.",
            required="all kinds but pull"),
        Key("timeout", SPAN, "TimeoutStartSec= of its unit: a hung job fails and mails.",
            default="borgmatic 6h, borg-check 12h, mirror 12h, pull 3h, restore-test 2h"),
        Key("verify_data", "true or false", "borg-check: also read and verify every chunk.",
            model="Job.verify_data"),
        Key("sample", "1-100000", "restore-test: how many files to extract and compare.",
            default="20"),
        Key("healthcheck", "http(s) URL", "Ping this URL at start, success and failure "
            "(default: the healthchecks url + /NAME, if set)."),
        Key("on_warning", "warn or fail", "What borg's exit 1 and rsync's vanished files "
            "mean for this job.", model="Job.on_warning"),
        Key("mail_on_success", "true or false", "Mail after every success, not only after "
            "a recovery.", model="Job.mail_on_success"),
        Key("stale_after", SPAN, "No success for longer than this raises an alert."),
        Key("reads", "list of absolute paths", "Paths other jobs write (a pull's holding "
            "directory): locked too, so the two never run at once."),
        Key("source", "mapping", "pull: the remote host and paths (below).", required="pull"),
        Key("destination", "absolute path", "pull: the holding directory, inside the "
            "namespace.", required="pull"),
    )),
    Section("jobs.NAME.source", "pull: what to copy from where. Each path gets its own key, "
            "forced to a read-only rsync of that path (`offsite ssh-key JOB --from ADDR`).", (
        Key("host", "host name or address", "The remote host.", required="yes"),
        Key("paths", "list of absolute paths", "What to copy (letters, digits, `/._+@-` and "
            "spaces).", required="yes"),
        Key("user", "user name", "The remote account.", model="PullSource.user"),
        Key("port", "1-65535", "The remote SSH port.", model="PullSource.port"),
        Key("before", "command", "Run on the far side before the copy (its own key)."),
        Key("after", "command", "Run on the far side after the copy, also when it failed."),
        Key("host_key", "SSH public key", "Pinned host key; without it: trust on first use."),
    )),
    Section("notify", "How offsite tells you what happened.", (
        Key("email", "mapping", "Mail on failure, recovery, staleness (below)."),
        Key("led", "mapping", "The BlinkStick LED (below)."),
        Key("healthchecks", "mapping", "healthchecks-style pings (below)."),
    )),
    Section("notify.email", "Every mail is spooled first and sent by offsite-outbox.service; "
            "what the server does not take is retried.", (
        Key("to", "list of addresses", "Who gets the mail.", required="yes"),
        Key("from", "address", "The sender.", default="offsite@localhost"),
        Key("smtp", "mapping", "Send through this server (below); without it: sendmail."),
        Key("sendmail", "absolute path", "The local sendmail, when there is no smtp.",
            model="Email.sendmail"),
        Key("retry_every", SPAN, "The first retry of a message the server did not take; "
            "then doubling, up to 6h.", model="Email.retry_every"),
    )),
    Section("notify.email.smtp", "The mail server.", (
        Key("host", "host name or address", "The server.", required="yes"),
        Key("port", "1-65535", "The port.", default="587 (starttls), 465 (tls), 25 (none)"),
        Key("security", "starttls, tls or none", "How the connection is protected; none "
            "forbids a login.", model="Smtp.security"),
        Key("username", "text", "Log in as this user."),
        Key("password_file", "absolute path", "The password, in a root-only file (or a "
            "systemd credential named offsite-smtp-password)."),
        Key("verify", "true or false", "Verify the server's certificate.",
            model="Smtp.verify"),
        Key("ca_file", "absolute path", "Also trust this CA (a self-signed server)."),
        Key("timeout", SPAN, "Give up a connection after this.", model="Smtp.timeout"),
    )),
    Section("notify.led", "A BlinkStick: blue/yellow while working, green when a drive is "
            "safe to remove, red on a failure until the next success or `offsite led "
            "clear`. A missing LED is a warning, never a failed backup.", (
        Key("enabled", "true or false", "Drive the LED at all.", model="Led.enabled"),
        Key("index", "0-63", "Which LED of the stick.", model="Led.index"),
        Key("brightness", "1-100", "Percent of full brightness.", model="Led.brightness"),
        Key("colors", "mapping", "The colour of each state (below)."),
    )),
    Section("notify.led.colors", "#rrggbb, or one of: red, green, blue, yellow, orange, "
            "purple, cyan, white, magenta, off.", (
        Key("failed", "colour", "A job failed.", model="Led.colors.failed"),
        Key("working-drive", "colour", "A drive job runs.", model="Led.colors.working-drive"),
        Key("working", "colour", "Another job runs.", model="Led.colors.working"),
        Key("done", "colour", "A drive's copy is done and it is locked: safe to remove.",
            model="Led.colors.done"),
    )),
    Section("notify.healthchecks", "Pings to a healthchecks-style service.", (
        Key("url", "http(s) URL", "Each job pings URL/JOB (/start, success, /fail).",
            required="yes"),
        Key("timeout", SPAN, "Give up a ping after this.", model="Healthchecks.timeout"),
    )),
    Section("namespace", "The private mount namespace jobs run in.", (
        Key("path", "absolute path", "Where the namespace service records its process.",
            model="Namespace.path"),
        Key("mounts", "list of mappings", "Filesystems mounted only inside it (below)."),
    )),
    Section("namespace.mounts[]", "One filesystem mounted only inside the namespace.", (
        Key("what", "device, UUID=..., LABEL=... or directory", "What to mount.",
            required="yes"),
        Key("where", "absolute path", "Where, inside the namespace.", required="yes"),
        Key("type", "filesystem type", "As for mount -t (a directory is bound)."),
        Key("options", "list of text", "Mount options."),
    )),
)


def _format(value: object) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return quantities.format_span(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def model_default(ref: str) -> str:
    """The default of a model field ("Drive.stale_after", "Led.colors.failed")."""
    parts = ref.split(".")
    cls = getattr(model, parts[0])
    field = next(f for f in dataclasses.fields(cls) if f.name == parts[1])
    value = field.default
    if value is dataclasses.MISSING:
        raise KeyError(f"{ref} has no default in the model")
    if len(parts) == 3:  # a tuple of pairs, like Led.colors
        return _format(dict(value)[parts[2]])
    return _format(value)


def default_of(key: Key) -> str:
    return model_default(key.model) if key.model else key.default


def documented_keys() -> set[tuple[str, str]]:
    """(section path, key) for every key listed, including the keys that open a section."""
    out = {(s.path, k.name) for s in SECTIONS for k in s.keys}
    for s in SECTIONS:
        parent, _, last = s.path.rpartition(".")
        if last == "NAME":  # drives.NAME is opened by the top-level key drives
            out.add(("", parent))
        else:
            out.add((parent, last.removesuffix("[]")))
    return out


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/offsite/configref.py` and the defaults in `src/offsite/model.py`",
        "(`make docs`); a test fails when this file, the table or the parser disagree.",
        "The file is `/etc/offsite/offsite.yaml` unless `--config` names another;",
        "`offsite check` reports every problem at once, with its line and key.",
        "`examples/offsite.yaml` and `examples/targets.yaml` are commented examples.",
        "",
    ]
    for s in SECTIONS:
        lines += [f"## `{s.path}`", "", s.doc, "", "| key | value | required | default | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for k in s.keys:
            default = default_of(k)
            lines.append(f"| `{k.name}` | {k.kind} | {k.required or 'no'} | "
                         f"{f'`{default}`' if default else '-'} | {k.doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # make docs
    import sys

    sys.stdout.write(markdown())
