"""A pull job: copy paths of a remote host into a holding directory, over SSH, with keys
that can do nothing else (see pullkeys), and optional commands on the far side before and
after the copy. "after" runs however the copy ended, so a container stopped for a
consistent copy is started again.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from offsite import durable
from offsite.config.model import Job
from offsite.errors import Fatal
from offsite.jobs import pullkeys
from offsite.log import fields
from offsite.run import CommandError, Stopped, lines

log = logging.getLogger(__name__)

RSYNC_WARNING = 24  # some source files vanished during the copy: a warning, not a failure
# `after` on a stop: within the unit's TimeoutStopSec= (2 min), before systemd's SIGKILL
AFTER_A_STOP = 90.0


def rsync_argv(job: Job, cap: pullkeys.Capability, target: Path) -> list[str]:
    """rsync from the capability's path (the root of what rrsync allows) into target."""
    assert job.pull is not None  # noqa: S101 - pull jobs only
    return ["rsync", "--archive", "--hard-links", "--numeric-ids", "--delete", "--partial",
            "--info=stats1", "--rsh", shlex.join(pullkeys.ssh_command(job, cap)),
            f"{job.pull.host}:/", f"{target}/"]


def target_dir(destination: Path, remote_path: str) -> Path:
    """Where a remote path lands: DEST/srv/app/data for /srv/app/data."""
    return destination / remote_path.strip("/")


def _remote(job: Job, cap: pullkeys.Capability, timeout: float | None = None) -> None:
    assert job.pull is not None  # noqa: S101 - pull jobs only
    log.info("on %s: %s", job.pull.host, cap.command, extra=fields(job=job.name))
    try:
        lines([*pullkeys.ssh_command(job, cap), job.pull.host],
              lambda line: log.info("%s: %s", cap.name, line, extra=fields(job=job.name)),
              timeout=timeout or job.timeout)
    except CommandError as exc:
        raise Fatal(f"the {cap.name!r} command on {job.pull.host} failed: {exc}") from exc


def pull(job: Job) -> bool:
    """Run the pull; True if it ended with a warning (files vanished while copied)."""
    source, destination = job.pull, job.destination
    if source is None or destination is None:
        raise Fatal(f"job {job.name} has no source or destination")
    caps = pullkeys.capabilities(source)
    missing = [c.name for c in caps if not pullkeys.key_file(job, c).exists()]
    if missing:
        raise Fatal(f"job {job.name} has no SSH key for {', '.join(missing)}",
                    f"run `offsite ssh-key {job.name} --from ADDRESS` and add the lines it "
                    f"prints to ~{source.user}/.ssh/authorized_keys on {source.host}")
    pinned = pullkeys.known_hosts_line(source)
    if pinned:
        durable.replace(pullkeys.known_hosts(job), pinned)
    by_name = {c.name: c for c in caps}
    warned = False
    failed: Fatal | None = None
    stopped: Stopped | None = None
    try:
        if "before" in by_name:
            _remote(job, by_name["before"])
        for cap in caps:
            if cap.path is not None:
                warned |= _copy(job, cap, target_dir(destination, cap.path))
    except Fatal as exc:
        failed = exc
    except Stopped as exc:  # (rsync or ssh got the stop and ended)
        stopped = exc
    if "after" in by_name:  # however the copy ended, a stop too
        try:
            _remote(job, by_name["after"], AFTER_A_STOP if stopped else job.timeout)
        except Fatal as exc:
            if failed is None and stopped is None:
                failed = exc
            else:
                log.error("%s", exc, extra=fields(job=job.name))
    if stopped is not None:
        raise stopped
    if failed is not None:
        raise failed
    return warned


def _copy(job: Job, cap: pullkeys.Capability, target: Path) -> bool:
    assert job.pull is not None and cap.path is not None  # noqa: S101 - path capabilities
    host = job.pull.host
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.info("pulling %s:%s into %s", host, cap.path, target, extra=fields(job=job.name))
    try:
        result = lines(rsync_argv(job, cap, target),
                       lambda line: log.info("rsync: %s", line, extra=fields(job=job.name)),
                       ok_codes=(0, RSYNC_WARNING), timeout=job.timeout)
    except CommandError as exc:
        raise Fatal(f"pulling {host}:{cap.path} failed: {exc}") from exc
    if result.returncode == RSYNC_WARNING:
        log.warning("some files of %s:%s vanished while they were copied", host, cap.path,
                    extra=fields(job=job.name))
        return True
    return False
