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
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

from offsite.errors import Fatal
from offsite.log import fields
from offsite.state import RUN_DIR

log = logging.getLogger(__name__)

LOCK_DIR = RUN_DIR / "locks"


def lock_name(resource: str) -> str:
    """A file name for a resource path: stable, short, and free of anything from the path."""
    return hashlib.sha256(resource.encode()).hexdigest()[:24] + ".lock"


class _Timeout(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def _wait_for(fd: int, seconds: float) -> None:
    """Block in flock() for at most `seconds` (an interval timer breaks the wait)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def held(resources: Iterable[str], job: str, wait: float, lock_dir: Path = LOCK_DIR) -> Iterator[None]:
    """Hold the locks of all resources for the duration of the block."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fds: list[int] = []
    try:
        for resource in sorted(set(resources)):
            path = lock_dir / lock_name(resource)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another job"
                log.warning("waiting for %s: it is in use by %s", resource, holder,
                            extra=fields(job=job, resource=resource))
                started = time.monotonic()
                try:
                    _wait_for(fd, wait)
                except _Timeout:
                    raise Fatal(f"gave up after waiting {wait:g} s for {resource}, in use by {holder}",
                                "see what that job is doing: systemctl status 'offsite-*'") from None
                log.info("got %s after waiting %.1f s", resource, time.monotonic() - started,
                         extra=fields(job=job, resource=resource))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"job {job} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def try_held(resource: str, who: str, lock_dir: Path = LOCK_DIR) -> Iterator[bool]:
    """Hold one resource if it is free right now; yields False (and holds nothing) if not."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_dir / lock_name(resource), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{who} (pid {os.getpid()})\n".encode(), 0)
        yield True
    finally:
        os.close(fd)
