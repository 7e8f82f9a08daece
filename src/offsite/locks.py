"""Jobs that touch the same repository or path never run at the same time.

``offsite exec`` takes one lock per resource (a repository, a destination directory)
before it starts, in a fixed order so that two jobs can never wait for each other. A job
that finds a lock taken says so in the journal and waits, up to a bound; it never stops
the other job (which is what ``Conflicts=`` would do).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from offsite.errors import Fatal
from offsite.log import fields
from offsite.state import RUN_DIR

log = logging.getLogger(__name__)

LOCK_DIR = RUN_DIR / "locks"
POLL = 0.2  # seconds between tries while waiting for a lock


def lock_name(resource: str) -> str:
    """A file name for a resource path: stable, short, and free of anything from the path."""
    return hashlib.sha256(resource.encode()).hexdigest()[:24] + ".lock"


@contextlib.contextmanager
def file_lock(path: Path, wait: float | None = None, holder: str | None = None,
              on_busy: Callable[[str], None] | None = None) -> Iterator[bool]:
    """The one file lock of offsite (and its lab): flock() on path, created 0600, held for
    the block. Yields whether it is held. wait: None waits as long as it takes; a number
    gives up after that many seconds (0: at once) and yields False. holder: written into the
    file for whoever finds it taken; on_busy is told what the file says when it is."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        got = _try(fd)
        if not got and on_busy is not None:
            on_busy(os.pread(fd, 512, 0).decode(errors="replace").strip())
        if not got and wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            got = True
        elif not got and wait:
            deadline = time.monotonic() + wait
            while not got and time.monotonic() < deadline:
                time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
                got = _try(fd)
        if got and holder is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
        yield got
    finally:
        os.close(fd)  # closing drops the flock


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def held(resources: Iterable[str], job: str, wait: float, lock_dir: Path = LOCK_DIR) -> Iterator[None]:
    """Hold the locks of all resources for the duration of the block."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.ExitStack() as stack:
        for resource in sorted(set(resources)):
            holders: list[str] = []

            def busy(holder: str, resource: str = resource, holders: list[str] = holders) -> None:
                holders.append(holder or "another job")
                log.warning("waiting for %s: it is in use by %s", resource, holders[0],
                            extra=fields(job=job, resource=resource))

            started = time.monotonic()
            if not stack.enter_context(file_lock(lock_dir / lock_name(resource), wait,
                                                 f"job {job}", busy)):
                raise Fatal(f"gave up after waiting {wait:g} s for {resource}, in use by "
                            f"{holders[0]}", "see what that job is doing: systemctl status "
                            "'offsite-*'")
            if holders:
                log.info("got %s after waiting %.1f s", resource, time.monotonic() - started,
                         extra=fields(job=job, resource=resource))
        yield


@contextlib.contextmanager
def try_held(resource: str, who: str, lock_dir: Path = LOCK_DIR) -> Iterator[bool]:
    """Hold one resource if it is free right now; yields False (and holds nothing) if not."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock(lock_dir / lock_name(resource), 0, who) as got:
        yield got
