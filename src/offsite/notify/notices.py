"""Notifications: the failure mail (run by offsite-notify@.service, OnFailure= of every job,
so it works with the agent down), recovery and success mails, staleness alerts, and the
spool flush that offsite-outbox.service runs.

Every mail goes through the spool. Only offsite-outbox.service talks to the mail server:
one unit with network access and the SMTP credential; the others write the spool and ask
systemd to start it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from offsite import quantities, state, unitnames
from offsite.config.model import Config, Job
from offsite.errors import Fatal
from offsite.log import fields
from offsite.notify import history, mailtext, pings, spool, staleness, transport
from offsite.notify.outcome import Outcome, from_service
from offsite.run import run
from offsite.units import systemd

log = logging.getLogger(__name__)

OUTBOX_UNIT = unitnames.OUTBOX_SERVICE
STALE_FILE = state.STATE_DIR / "stale.json"
_INVOCATION = re.compile(r"^[0-9a-f]{32}$")


def host() -> str:
    return socket.gethostname()


def locate(cfg: Config, unit: str) -> tuple[Job, str | None]:
    """The job (and drive) a unit of ours runs (a unit name is never parsed back)."""
    found = cfg.job_units().get(unit)
    if found is None:
        raise Fatal(f"{unit} is not a job unit of {cfg.source}",
                    "was the configuration changed without `offsite install`?")
    return found.job, found.drive


def invocation_id(value: str | None) -> str | None:
    return value if value and _INVOCATION.match(value) else None


# -- the spool --------------------------------------------------------------------------


def _kick() -> None:
    try:
        systemd.start([OUTBOX_UNIT])
    except Fatal as exc:
        log.warning("spooled, but %s could not be started now (%s); offsite-outbox.timer "
                    "sends it", OUTBOX_UNIT, exc)


def queue(cfg: Config, message: EmailMessage) -> Path | None:
    """Spool message for the configured recipients and ask offsite-outbox.service to send
    it. None when no mail is configured (the journal has the news either way)."""
    email = cfg.notify.email
    if email is None:
        log.info("no mail configured (notify.email): %r not sent", str(message["Subject"]))
        return None
    path = spool.add(message, email.to)
    log.info("mail %r spooled as %s", str(message["Subject"]), path.name)
    _kick()
    return path


def queue_ping(cfg: Config, job: Job, event: str, body: str = "") -> Path | None:
    url = pings.url_for(cfg, job, event)
    if url is None:
        return None
    path = spool.add_ping(url, body)
    _kick()
    return path


def flush(cfg: Config, force: bool = False) -> spool.Flushed:
    """Send what is due in the spool: mail to the configured server, pings to their URLs."""
    email = cfg.notify.email
    timeout = cfg.notify.healthchecks.timeout if cfg.notify.healthchecks else 10.0

    def deliver(entry: spool.Entry) -> None:
        if entry.kind == "ping":
            pings.send(str(entry.data["url"]), str(entry.data.get("body", "")), timeout,
                       entry.created)
        elif email is None:
            raise transport.DeliveryError("no mail is configured (notify.email)")
        else:
            transport.send(email, entry.recipients, str(entry.data["message"]).encode())

    return spool.flush(deliver, email.retry_every if email else 300.0, force=force)


# -- the failure mail -------------------------------------------------------------------

_EXEC_CODES = {1: "exited", 2: "killed", 3: "dumped"}  # ExecMainCode (CLD_*)


def _show(unit: str) -> dict[str, Any]:
    """What systemd knows of the unit's last run (Unit and Service properties)."""
    try:
        return {**systemd.properties(unit, "Unit"), **systemd.properties(unit, "Service")}
    except Exception as exc:  # the mail goes out with less, rather than not at all
        log.warning("cannot read the properties of %s from systemd: %s", unit, exc)
        return {}


def journal_lines(invocation: str) -> list[str]:
    """This run's lines only: its processes' (_SYSTEMD_INVOCATION_ID) and systemd's own
    about it (INVOCATION_ID), as 'HH:MM:SS identifier: message'."""
    result = run(["journalctl", "--no-pager", "--output=json",
                  f"_SYSTEMD_INVOCATION_ID={invocation}", "+", f"INVOCATION_ID={invocation}"],
                 check=False)
    lines = []
    for raw in result.stdout.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # not UTF-8: journalctl gives the bytes
            message = bytes(message).decode(errors="replace")
        if not isinstance(message, str):
            continue
        stamp = time.strftime("%H:%M:%S", time.localtime(
            int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6))
        ident = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "?"
        lines.append(f"{stamp} {ident}: {message}")
    return lines


def failure(cfg: Config, unit: str) -> EmailMessage:
    """Record (if its stop hook did not) and report one failed run of unit."""
    job, drive = locate(cfg, unit)
    env = os.environ
    shown = _show(unit)
    invocation = invocation_id(env.get("MONITOR_INVOCATION_ID")) or invocation_id(
        bytes(shown.get("InvocationID", b"")).hex()) or "unknown"
    if env.get("MONITOR_SERVICE_RESULT"):
        outcome = from_service(env["MONITOR_SERVICE_RESULT"], env.get("MONITOR_EXIT_CODE", ""),
                               env.get("MONITOR_EXIT_STATUS", ""))
    else:
        outcome = from_service(str(shown.get("Result", "")),
                               _EXEC_CODES.get(shown.get("ExecMainCode", 0), ""),
                               str(shown.get("ExecMainStatus", "")))
    if not outcome.failed:  # started by hand, or the unit has run again since
        outcome = Outcome("failed", outcome.detail or "failed")
    end = systemd.timestamp(shown.get("ExecMainExitTimestamp")) or time.time()
    recorded = history.find(invocation)
    if invocation != "unknown" and (recorded is None or recorded.result is None):
        # its stop hook did not get to record it (it is not run when a start fails early);
        # a run it cannot name (no MONITOR_INVOCATION_ID: systemd merged the reports of
        # two failures into one; the unit since unloaded) is reported, not recorded again
        recorded = history.finished(invocation, unit, job.name, drive, end, "failed",
                                    outcome.detail, None)
    started = recorded.started if recorded else systemd.timestamp(
        shown.get("ExecMainStartTimestamp"))
    status = run(["systemctl", "status", "--full", "--no-pager", "--lines=0", "--", unit],
                 check=False).stdout
    report = mailtext.Failure(
        host=host(), job=job, unit=unit, invocation=invocation, outcome=outcome,
        why=_why(recorded.detail if recorded else None, outcome),
        started=started, finished=recorded.finished if recorded else end,
        streak=history.streak(job.name),
        journal=journal_lines(invocation) if invocation != "unknown" else [], status=status)
    log.warning("job %s failed (%s); reporting it", job.name, outcome.detail,
                extra=fields(job=job.name, drive=drive))
    email = cfg.notify.email
    message = mailtext.failure(email, report) if email else _unsent(report)
    queue(cfg, message)
    return message


def _why(detail: str | None, outcome: Outcome) -> str | None:
    """The job's own reason, as the stop hook recorded it after the exit status."""
    prefix = f"{outcome.detail}: "
    return detail[len(prefix):] if detail and detail.startswith(prefix) else None


def _unsent(report: mailtext.Failure) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = mailtext.failure_subject(report)
    return message


# -- after a run: recovery and success mails --------------------------------------------


def after_success(cfg: Config, job: Job, finished: history.Run) -> None:
    """A run of job succeeded: a recovery mail if the runs before it failed, and a
    success mail if the job asks for one."""
    email = cfg.notify.email
    before = history.streak(job.name, before=finished.invocation)
    if before.failures:
        log.info("job %s recovered after %d failed run(s)", job.name, before.failures,
                 extra=fields(job=job.name))
        if email:
            queue(cfg, mailtext.recovery(email, host(), job, finished, before))
    if job.mail_on_success and email:
        queue(cfg, mailtext.success(email, host(), job, finished))


# -- staleness --------------------------------------------------------------------------


def check_stale(cfg: Config, now: float | None = None) -> list[mailtext.Stale]:
    """Alert about drives without a recent copy and jobs without a recent success. Every
    stale item is a warning in the journal each time; the mail goes out when it becomes
    stale, and again every 7 days while it stays so."""
    now = time.time() if now is None else now
    copies = {d.uuid: state.read(state.drive_file(d.uuid)).get("last_copy") for d in cfg.drives}
    successes: dict[str, float | None] = {}
    for job in cfg.jobs:
        last = history.streak(job.name).last_success
        successes[job.name] = last.finished if last else None
    items = staleness.watched(cfg, copies, successes)
    record = state.read(STALE_FILE)
    since: dict[str, float] = {**{i.key: now for i in items}, **record.get("since", {})}
    current = staleness.stale(items, since, now)
    for _key, item in current:
        log.warning("%s: last %s %s; allowed %s", item.what,
                    "copy" if item.what.startswith("drive") else "success",
                    mailtext.when(item.last) if item.last else "never",
                    quantities.duration(item.limit))
    alerted: dict[str, float] = {k: v for k, v in record.get("alerted", {}).items()
                                 if k in dict(current)}
    due = staleness.to_alert(current, alerted, now)
    if due and cfg.notify.email:
        queue(cfg, mailtext.stale(cfg.notify.email, host(), [i for _, i in due], now))
    alerted.update({key: now for key, _ in due})
    state.write(STALE_FILE, {"since": {k: v for k, v in since.items()
                                       if k in {i.key for i in items}},
                             "alerted": alerted})
    return [item for _, item in current]


def test_mail(cfg: Config, through_unit: bool) -> str | None:
    """Spool a test mail and have it sent now; None once it has gone, else why not (it
    stays in the spool). through_unit: by offsite-outbox.service, as every other mail is
    (its sandbox, its credentials, the MTA as that unit sees it), else from here."""
    if cfg.notify.email is None:
        raise Fatal(f"no mail is configured in {cfg.source}", "add a notify.email section")
    path = spool.add(mailtext.test(cfg.notify.email, host()), cfg.notify.email.to)
    if not through_unit:
        flush(cfg)
    else:
        systemd.start([unitnames.OUTBOX_SERVICE])
        began = time.monotonic()
        said = began
        while _untried(path) and time.monotonic() < began + TEST_MAIL_WAIT:
            time.sleep(0.2)
            if time.monotonic() - said >= TEST_MAIL_SAY_EVERY:  # not silent for two minutes
                said = time.monotonic()
                log.info("waiting for %s to try the test mail (%.0f s of at most %.0f s; "
                         "its log: journalctl -u %s)", unitnames.OUTBOX_SERVICE, said - began,
                         TEST_MAIL_WAIT, unitnames.OUTBOX_SERVICE)
        if _untried(path):
            return f"{unitnames.OUTBOX_SERVICE} did not try it within {TEST_MAIL_WAIT:.0f} s"
    if not path.exists():
        return None
    return str(state.read(path).get("last_error") or "not sent")


TEST_MAIL_WAIT = 120.0
TEST_MAIL_SAY_EVERY = 10.0


def _untried(path: Path) -> bool:
    return path.exists() and not state.read(path).get("attempts")
