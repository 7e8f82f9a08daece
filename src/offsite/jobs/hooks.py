"""What a job unit runs before and after its job (ExecStartPre=, ExecStopPost=, both with
'+': outside the job's sandbox): record the run in the history, ping the job's health URL,
and after a success send the recovery (or success) mail.

systemd tells the stop hook how the run ended (SERVICE_RESULT, EXIT_CODE, EXIT_STATUS);
it runs however the job ended (killed, timed out, drive pulled), before OnFailure= starts
the failure mail, so that mail can count the failures in a row. Nothing here fails the
job: every error is a warning in the journal.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from offsite import quantities, state, unitnames
from offsite.config.model import Config, Job
from offsite.errors import Fatal
from offsite.log import fields
from offsite.notify import history, metrics, notices
from offsite.notify import outcome as outcome_mod
from offsite.notify.outcome import from_service
from offsite.targets import devices
from offsite.units import systemd

log = logging.getLogger(__name__)


def _invocation() -> str | None:
    return notices.invocation_id(os.environ.get("INVOCATION_ID"))


def start(cfg: Config, job: Job, drive: str | None) -> None:
    invocation = _invocation()
    if invocation is not None:
        history.started(invocation, unitnames.job_unit(job.name, drive), job.name, drive, time.time())
    notices.queue_ping(cfg, job, "start")


def _shutting_down() -> bool:
    try:
        return systemd.system_state() == "stopping"
    except Fatal as exc:
        log.warning("cannot ask systemd whether the machine is shutting down: %s", exc)
        return False


def _stop_reason(cfg: Config, job: Job, drive: str | None, service_result: str) -> str:
    gone = drive is not None and not Path(devices.drive_device(cfg.drive(drive))).exists()
    return outcome_mod.stop_reason(service_result, gone, not gone and _shutting_down(),
                                   quantities.format_span(job.timeout))


def finish(cfg: Config, job: Job, drive: str | None) -> history.Run | None:
    service_result = os.environ.get("SERVICE_RESULT", "")
    outcome = from_service(service_result, os.environ.get("EXIT_CODE", ""),
                           os.environ.get("EXIT_STATUS", ""))
    invocation = _invocation()
    summary = state.read(state.run_summary_file(invocation)) if invocation else {}
    if outcome.result == "interrupted" or service_result == "timeout":
        outcome = outcome_mod.stopped(outcome, _stop_reason(cfg, job, drive, service_result),
                                      clean="stopped" in summary)
    nbytes = summary.get("bytes")
    error = summary.get("error")
    detail = f"{outcome.detail}: {error}" if outcome.failed and error else outcome.detail
    notices.queue_ping(cfg, job, outcome.result, detail or "")
    if invocation is None:
        log.warning("no INVOCATION_ID: this run of %s is not recorded (run outside systemd?)",
                    job.name, extra=fields(job=job.name))
        return None
    recorded = history.finished(invocation, unitnames.job_unit(job.name, drive), job.name, drive,
                                time.time(), outcome.result, detail,
                                nbytes if isinstance(nbytes, int) else None)
    state.run_summary_file(invocation).unlink(missing_ok=True)
    metrics.write(cfg)  # right even while the agent is down
    log.info("run of %s recorded: %s%s", job.name, outcome.result,
             f" ({outcome.detail})" if outcome.detail else "", extra=fields(job=job.name, drive=drive))
    if recorded.succeeded:
        notices.after_success(cfg, job, recorded)
    return recorded
