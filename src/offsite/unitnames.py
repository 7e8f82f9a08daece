"""Every name offsite gives a systemd unit, in one place.

Used by the renderer (what it writes) and at run time (the agent, the hooks, the notices,
status): a unit name is always made from a configured name, never parsed back into one.
Names from the configuration are escaped as ``systemd-escape`` does. Which unit runs which
job for which drive is Config.job_units(), built from these.
"""

from __future__ import annotations

import hashlib
import re

from offsite import escape

PREFIX = "offsite-"
AGENT_UNIT = "offsite-agent.service"
NAMESPACE_UNIT = "offsite-namespace.service"
NOTIFY_TEMPLATE = "offsite-notify@.service"  # OnFailure= of every job unit
OUTBOX_SERVICE = "offsite-outbox.service"
OUTBOX_TIMER = "offsite-outbox.timer"
STALE_SERVICE = "offsite-stale.service"
STALE_TIMER = "offsite-stale.timer"
# Debian's borgmatic package enables a timer of its own that runs borgmatic nightly: with
# an offsite borgmatic job it would run twice, so offsite masks it while it is installed
BORGMATIC_TIMER = "borgmatic.timer"
MASK = "/dev/null"  # a unit file that is a symlink to it is masked


def job_unit(job: str, drive: str | None = None) -> str:
    """offsite-<job>.service, or offsite-<job>@<drive>.service for a drive-started job."""
    if drive is None:
        return f"{PREFIX}{escape.escape_name(job)}.service"
    return f"{PREFIX}{escape.escape_name(job)}@{escape.escape_name(drive)}.service"


def timer_unit(job: str) -> str:
    return f"{PREFIX}{escape.escape_name(job)}.timer"


def unlock_unit(drive: str) -> str:
    return f"{PREFIX}unlock-{escape.escape_name(drive)}.service"


def notify_unit(failed: str) -> str:
    """The instance of offsite-notify@.service that OnFailure= starts for a failed unit."""
    return NOTIFY_TEMPLATE.replace("@.", f"@{failed}.")


def target_unit(target: str) -> str:
    """Assembles a target (cloud RAID, NBD) before its job; target names are [a-z0-9_-]."""
    return f"{PREFIX}target-{target}.service"


def tunnel_unit(target: str) -> str:
    return f"{PREFIX}tunnel-{target}.service"


def credential(repository: str) -> str:
    """The name of the systemd credential that carries a repository's passphrase: the
    repository's name when it is plain (letters, digits, -_.), else a digest of it."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", repository) and repository not in (".", ".."):
        return f"{PREFIX}borg-{repository}"
    return f"{PREFIX}borg-{hashlib.sha256(repository.encode()).hexdigest()[:16]}"


def drive_device_unit(uuid: str) -> str:
    """dev-disk-by\\x2duuid-....device: systemd's unit for a drive's filesystem or LUKS UUID."""
    return escape.uuid_device_unit(uuid)


# SyslogIdentifier= of the units that run offsite, by the command they run. The command
# logs its journal entries under the same identifier, so `journalctl -t offsite-agent`
# finds the agent's own lines as well as what it printed.
IDENTIFIER = "offsite"
IDENTIFIERS: dict[tuple[str, ...], str] = {
    ("agent",): "offsite-agent",
    ("notify", "failure"): "offsite-notify",
    ("notify", "flush"): "offsite-outbox",
    ("notify", "stale"): "offsite-stale",
}


def identifier(command: str, action: str | None = None) -> str:
    """The SyslogIdentifier= of the unit that runs `offsite COMMAND [ACTION]`."""
    return IDENTIFIERS.get((command, action) if action else (command,),
                           IDENTIFIERS.get((command,), IDENTIFIER))
