"""Writing files so that a crash or a pulled drive leaves the old content or the new one."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (a rename, a new file) reach the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, content: str, mode: int = 0o644) -> None:
    """Write and fsync a file in place (under a name nothing reads yet)."""
    with path.open("w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    path.chmod(mode)


def replace(path: Path, content: str, mode: int = 0o600) -> None:
    """Atomically replace path: a temporary file beside it, fsync, rename, fsync the dir."""
    tmp = path.with_name(path.name + ".tmp")
    write_file(tmp, content, mode)
    tmp.replace(path)
    fsync_dir(path.parent)
