"""The keys of a push job, and the authorized_keys lines that limit them on the far side.

Two keys, each forced to one rsync server confined to the job's directory there by rrsync
(Debian's rsync package has it in /usr/bin):

- `push`: `rrsync -wo DIR`, write-only. It delivers files, hard links and the one symlink
  per repository that the swap replaces; it cannot read a byte back (rrsync refuses a
  sender), cannot name a path outside DIR (rrsync refuses `..`, absolute paths outside and
  paths through symlinks that leave DIR), and cannot run anything but that rsync.
- `read`: `rrsync -ro DIR`, read-only: what a restore-test of the pushed copy fetches.

Every line has `restrict` (no shell, pty or forwarding) and `from=` the sending host.
"""

from __future__ import annotations

from pathlib import Path

from offsite.config.model import Job, PushTarget
from offsite.errors import Fatal
from offsite.sshkeys import (
    SSH_DIR,
    Capability,
    authorized_lines,
    key_file,
    known_hosts,
    known_hosts_entry,
    ssh_argv,
)

RRSYNC = "rrsync"
PUSH = "push"
READ = "read"


def capabilities(to: PushTarget) -> list[Capability]:
    # to.path: letters, digits and /._+@- only (the config checked): safe in command="..."
    return [Capability(PUSH, f"{RRSYNC} -wo {to.path}"),
            Capability(READ, f"{RRSYNC} -ro {to.path}")]


def _target(job: Job) -> PushTarget:
    if job.to is None:
        raise Fatal(f"job {job.name} is a {job.kind} job, not a push job")
    return job.to


def authorized_keys(job: Job, allowed_from: str, root: Path = SSH_DIR) -> list[str]:
    """The far side's authorized_keys lines for job (creating its keys if needed)."""
    return authorized_lines(job, "push", capabilities(_target(job)), allowed_from, root)


def capability(job: Job, name: str) -> Capability:
    return next(c for c in capabilities(_target(job)) if c.name == name)


def ssh_command(job: Job, name: str, root: Path = SSH_DIR) -> list[str]:
    """ssh with the push (or read) key of job and nothing else."""
    to = _target(job)
    return ssh_argv(key_file(job, capability(job, name), root), known_hosts(job, root),
                    to.user, to.port, to.host_key is not None)


def key_path(job: Job, name: str, root: Path = SSH_DIR) -> Path:
    return key_file(job, capability(job, name), root)


def known_hosts_line(to: PushTarget) -> str | None:
    return known_hosts_entry(to.host, to.port, to.host_key) if to.host_key else None
