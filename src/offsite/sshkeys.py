"""SSH keys offsite makes for itself (pull jobs, the NBD tunnel): the parts every use
shares. Each key has one job on the far side, pinned there by its authorized_keys line.
"""

from __future__ import annotations

import re
from pathlib import Path

from offsite import state
from offsite.errors import Fatal
from offsite.run import run

SSH_DIR = state.STATE_DIR / "ssh"
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


def known_hosts_entry(host: str, port: int, host_key: str) -> str:
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {host_key}\n"
