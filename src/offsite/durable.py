"""Writing files so that a crash or a pulled drive leaves the old content or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (a rename, a new file) reach the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, content: str, mode: int = 0o644) -> None:
    """Write and fsync a file in place (under a name nothing reads yet). It has its mode
    from the start: a secret is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode & 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
        f.flush()
        os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())


def replace(path: Path, content: str, mode: int = 0o600) -> None:
    """Atomically replace path: a temporary file of its own beside it (two writers at once,
    say the agent and a job's hook, each rename a whole file), fsync, rename, fsync the dir."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write_file(tmp, content, mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
