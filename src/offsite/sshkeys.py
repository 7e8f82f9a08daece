"""SSH keys offsite makes for itself (pull jobs, the NBD tunnel): the parts every use
shares. Each key has one job on the far side, pinned there by its authorized_keys line.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from offsite import state
from offsite.errors import Fatal
from offsite.run import run

SSH_DIR = state.STATE_DIR / "ssh"  # <job>/<capability> (and .pub), <job>/known_hosts
_FROM = re.compile(r"^[A-Za-z0-9.:*?/!-]+(,[A-Za-z0-9.:*?/!-]+)*$")


def check_from(allowed_from: str) -> str:
    """An address pattern safe to put into from="..." (refused with a hint otherwise)."""
    if not _FROM.match(allowed_from):
        raise Fatal(f"{allowed_from!r} is not an address pattern for from=",
                    "e.g. 192.0.2.10 or 2001:db8::10 or 192.0.2.0/24")
    return allowed_from


def make_key(path: Path, comment: str) -> None:
    """A new ed25519 key pair at path (and path.pub), without a passphrase."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])


def ssh_argv(key: Path, known_hosts: Path, user: str, port: int, pinned: bool) -> list[str]:
    """ssh with this key and nothing else from any configuration file; the host pinned in
    known_hosts (pinned) or trusted on first use and held to it after."""
    return ["ssh", "-F", "none", "-i", str(key), "-p", str(port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30",
            "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=" + ("yes" if pinned else "accept-new"),
            "-o", "LogLevel=ERROR", "-l", user]


def known_hosts_entry(host: str, port: int, host_key: str) -> str:
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {host_key}\n"


class Job(Protocol):
    """What the keys need of a job: its name (a pull or push job of the config)."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Capability:
    """One key of a job, and the one command the far side lets it run."""

    name: str  # path-1, before, push, read, ...: the key file's name
    command: str  # the forced command on the far side
    path: str | None = None  # for a pull's path capability: the remote path it reads


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


def ensure_keys(job: Job, what: str, caps: list[Capability],
                root: Path = SSH_DIR) -> dict[str, Path]:
    """Create the key pairs of job's capabilities that do not exist yet; every key file."""
    directory = key_dir(job, root)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    files = {}
    for cap in caps:
        path = key_file(job, cap, root)
        if not path.exists():
            make_key(path, f"offsite {what} {job.name} {cap.name} on {socket.gethostname()}")
        files[cap.name] = path
    return files


def authorized_lines(job: Job, what: str, caps: list[Capability], allowed_from: str,
                     root: Path = SSH_DIR) -> list[str]:
    """The far side's authorized_keys lines for job's keys (made if needed)."""
    check_from(allowed_from)
    files = ensure_keys(job, what, caps, root)
    return [authorized_line(cap, Path(f"{files[cap.name]}.pub").read_text(), allowed_from)
            for cap in caps]
