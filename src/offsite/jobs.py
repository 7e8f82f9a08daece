"""``offsite exec JOB``: what a job unit runs. Takes the job's locks, then does its work.

Each kind's work is a function from the model to argv lists run through offsite.run;
borg's exit code 1 (warning) is a warning, not a failure. Kinds whose work belongs to a
later part of offsite say so and fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from offsite import locks
from offsite.errors import Fatal
from offsite.log import fields
from offsite.model import Config, Job, JobKind
from offsite.run import CommandError, run

log = logging.getLogger(__name__)

BORG_WARNING = 1


def resources(cfg: Config, job: Job) -> list[str]:
    """What a job touches: no two jobs sharing any of these run at once."""
    touched = [str(cfg.repository(name).path) for name in job.repositories]
    if job.destination is not None:
        touched.append(str(job.destination))
    return touched


def borg_check_argv(repository: Path, verify_data: bool) -> list[str]:
    return ["borg", "check", *(["--verify-data"] if verify_data else []), "--", str(repository)]


def borgmatic_argv(config: Path | None) -> list[str]:
    # check is its own job (with several configurations borgmatic would check each one)
    return ["borgmatic", *(["--config", str(config)] if config else []), "create", "prune"]


def _run_borg(job: Job, argv: list[str]) -> bool:
    """Run a borg-style command; True if it ended with a warning."""
    try:
        result = run(argv, ok_codes=(0, BORG_WARNING), timeout=job.timeout)
    except CommandError as exc:
        raise Fatal(str(exc)) from exc
    for line in result.stderr.splitlines()[-20:]:
        log.info("%s", line, extra=fields(job=job.name))
    return result.returncode == BORG_WARNING


def _borg_check(cfg: Config, job: Job, drive: str | None) -> bool:
    warned = False
    for name in job.repositories:
        repo = cfg.repository(name)
        log.info("checking repository %s (%s)", name, repo.path, extra=fields(job=job.name))
        warned |= _run_borg(job, borg_check_argv(repo.path, job.verify_data))
    return warned


def _borgmatic(cfg: Config, job: Job, drive: str | None) -> bool:
    warned = False
    for name in job.repositories:
        repo = cfg.repository(name)
        warned |= _run_borg(job, borgmatic_argv(repo.borgmatic_config))
    return warned


def _later(owner: str) -> Callable[[Config, Job, str | None], bool]:
    def work(cfg: Config, job: Job, drive: str | None) -> bool:
        raise Fatal(f"{job.kind} jobs are not implemented yet (belongs to {owner})")

    return work


WORK: dict[JobKind, Callable[[Config, Job, str | None], bool]] = {
    JobKind.BORG_CHECK: _borg_check,
    JobKind.BORGMATIC: _borgmatic,
    JobKind.MIRROR: _later("the off-site copy, #4"),
    JobKind.PULL: _later("scheduled jobs, #7"),
    JobKind.RESTORE_TEST: _later("scheduled jobs, #7"),
}


def execute(cfg: Config, name: str, drive: str | None = None,
            lock_dir: Path = locks.LOCK_DIR) -> int:
    try:
        job = cfg.job(name)
    except StopIteration:
        known = ", ".join(j.name for j in cfg.jobs)
        raise Fatal(f"no job named {name!r} in {cfg.source}", f"known jobs: {known}") from None
    started = time.monotonic()
    with locks.held(resources(cfg, job), job.name, job.timeout, lock_dir):
        log.info("job %s (%s) started", job.name, job.kind, extra=fields(job=job.name, drive=drive))
        warned = WORK[job.kind](cfg, job, drive)
    elapsed = time.monotonic() - started
    outcome = "finished with warnings" if warned else "succeeded"
    log.info("job %s %s in %.1f s", job.name, outcome, elapsed, extra=fields(job=job.name))
    return 0
