"""The keys of a pull job, and the authorized_keys lines that limit them on the far side.

One key per capability, each with a forced command, so that a stolen key does exactly one
thing: one key per remote path, forced to a read-only rsync of that path (`rrsync -ro`),
and one each for the "before" and "after" commands, forced to that command. Every line
has `restrict` (no shell, no forwarding, no pty) and `from=` the backup host.

Key files live in /var/lib/offsite/ssh/<job>/ (root only). The job's name was validated by
the config (letters, digits, -_.), the remote paths and commands too (no quotes).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from offsite.config.model import Job, PullSource
from offsite.errors import Fatal
from offsite.sshkeys import SSH_DIR, check_from, known_hosts_entry, make_key

RRSYNC = "rrsync"  # on the far side's PATH (Debian: /usr/bin/rrsync, from the rsync package)


@dataclass(frozen=True)
class Capability:
    name: str  # path-1, path-2, ..., before, after: the key file's name
    command: str  # the forced command on the far side
    path: str | None = None  # for a path capability: the remote path it reads


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


def key_dir(job: Job, root: Path = SSH_DIR) -> Path:
    return root / job.name


def key_file(job: Job, cap: Capability, root: Path = SSH_DIR) -> Path:
    return key_dir(job, root) / cap.name


def known_hosts(job: Job, root: Path = SSH_DIR) -> Path:
    return key_dir(job, root) / "known_hosts"








def authorized_line(cap: Capability, public_key: str, allowed_from: str) -> str:
    """One authorized_keys line: the key may run cap.command only, only from there."""
    check_from(allowed_from)
    if '"' in cap.command:
        raise Fatal(f"the command {cap.command!r} contains a double quote")
    return f'restrict,from="{allowed_from}",command="{cap.command}" {public_key.strip()}'


def ensure_keys(job: Job, root: Path = SSH_DIR) -> dict[str, Path]:
    """Create the key pairs of a pull job that do not exist yet; return every key file."""
    if job.pull is None:
        raise Fatal(f"job {job.name} is a {job.kind} job; only pull jobs have SSH keys")
    directory = key_dir(job, root)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    files = {}
    for cap in capabilities(job.pull):
        path = key_file(job, cap, root)
        if not path.exists():
            comment = f"offsite pull {job.name} {cap.name} on {socket.gethostname()}"
            make_key(path, comment)
        files[cap.name] = path
    return files


def authorized_keys(job: Job, allowed_from: str, root: Path = SSH_DIR) -> list[str]:
    """The far side's authorized_keys lines for job (creating its keys if needed)."""
    files = ensure_keys(job, root)
    assert job.pull is not None  # noqa: S101 - ensure_keys checked
    return [authorized_line(cap, Path(f"{files[cap.name]}.pub").read_text(), allowed_from)
            for cap in capabilities(job.pull)]


def ssh_command(job: Job, cap: Capability, root: Path = SSH_DIR) -> list[str]:
    """ssh with this capability's key and nothing else from any configuration file."""
    source = job.pull
    assert source is not None  # noqa: S101 - pull jobs only
    pinned = source.host_key is not None
    return ["ssh", "-F", "none", "-i", str(key_file(job, cap, root)), "-p", str(source.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30",
            "-o", "ServerAliveInterval=30", "-o", f"UserKnownHostsFile={known_hosts(job, root)}",
            "-o", "StrictHostKeyChecking=" + ("yes" if pinned else "accept-new"),
            "-o", "LogLevel=ERROR", "-l", source.user]


def known_hosts_line(source: PullSource) -> str | None:
    if source.host_key is None:
        return None
    return known_hosts_entry(source.host, source.port, source.host_key)
