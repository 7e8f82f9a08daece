"""The keys of a pull job, and the authorized_keys lines that limit them on the far side.

One key per capability, each with a forced command, so that a stolen key does exactly one
thing: one key per remote path, forced to a read-only rsync of that path (`rrsync -ro`),
and one each for the "before" and "after" commands, forced to that command. Every line
has `restrict` (no shell, no forwarding, no pty) and `from=` the backup host.

Key files live in /var/lib/offsite/ssh/<job>/ (root only). The job's name was validated by
the config (letters, digits, -_.), the remote paths and commands too (no quotes).
"""

from __future__ import annotations

from pathlib import Path

from offsite.config.model import Job, PullSource
from offsite.errors import Fatal
from offsite.sshkeys import (
    SSH_DIR,
    Capability,
    authorized_lines,
    key_dir,
    key_file,
    known_hosts,
    known_hosts_entry,
    ssh_argv,
)

__all__ = ["Capability", "authorized_keys", "capabilities", "key_dir", "key_file",
           "known_hosts", "known_hosts_line", "ssh_command"]

RRSYNC = "rrsync"  # on the far side's PATH (Debian: /usr/bin/rrsync, from the rsync package)


def capabilities(source: PullSource) -> list[Capability]:
    caps = []
    if source.before:
        caps.append(Capability("before", source.before))
    for i, path in enumerate(source.paths, 1):
        caps.append(Capability(f"path-{i}", f"{RRSYNC} -ro {_quoted(path)}", path))
    if source.after:
        caps.append(Capability("after", source.after))
    return caps


def _quoted(path: str) -> str:
    # the config allows letters, digits, / . _ - + @ and spaces in remote paths
    return f"'{path}'" if " " in path else path


def authorized_keys(job: Job, allowed_from: str, root: Path = SSH_DIR) -> list[str]:
    """The far side's authorized_keys lines for job (creating its keys if needed)."""
    if job.pull is None:
        raise Fatal(f"job {job.name} is a {job.kind} job, not a pull job")
    return authorized_lines(job, "pull", capabilities(job.pull), allowed_from, root)


def ssh_command(job: Job, cap: Capability, root: Path = SSH_DIR) -> list[str]:
    """ssh with this capability's key and nothing else from any configuration file."""
    source = job.pull
    assert source is not None  # noqa: S101 - pull jobs only
    return ssh_argv(key_file(job, cap, root), known_hosts(job, root), source.user, source.port,
                    source.host_key is not None)


def known_hosts_line(source: PullSource) -> str | None:
    if source.host_key is None:
        return None
    return known_hosts_entry(source.host, source.port, source.host_key)
