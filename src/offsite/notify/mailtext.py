"""The text of every mail offsite sends: pure functions from facts to an EmailMessage.

Written for a phone's mail client: the subject says host, job and what happened; the
first lines of the body say what to do; the long parts (journal, systemctl status) come
last, as plain text.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from offsite import quantities
from offsite.config.model import Email, Job
from offsite.notify.history import Run, Streak
from offsite.notify.outcome import Outcome

JOURNAL_LINES = 300  # the last lines of a run's journal that go into the mail


def when(t: float | None) -> str:
    if t is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _message(cfg: Email, host: str, subject: str, body: str, job: str | None,
             kind: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("offsite", domain=host or None)
    msg["Auto-Submitted"] = "auto-generated"  # no vacation replies to a machine
    msg["X-Offsite-Kind"] = kind
    if job is not None:
        msg["X-Offsite-Job"] = job
    msg.set_content(body, cte="quoted-printable")
    return msg


@dataclass(frozen=True)
class Failure:
    host: str
    job: Job
    unit: str
    invocation: str
    outcome: Outcome
    why: str | None  # the job's own words on why it failed, when it said
    started: float | None
    finished: float | None
    streak: Streak  # including this failure
    journal: Sequence[str]  # this run's lines only
    status: str  # systemctl status --full


def failure_subject(f: Failure) -> str:
    subject = f"[offsite] {f.host}: {f.job.name} FAILED ({f.outcome.detail})"
    if f.streak.failures > 1:
        subject += f", {ordinal(f.streak.failures)} failure in a row"
    return subject


def failure(cfg: Email, f: Failure) -> EmailMessage:
    job = f.job
    duration = None if f.started is None or f.finished is None else f.finished - f.started
    lines = [
        f'The offsite job "{job.name}" failed on {f.host} ({f.outcome.detail}).',
        *([f"Why: {f.why}"] if f.why else []),
        "",
        f"What:      {job.description or job.kind.value} ({job.kind.value})",
        f"Unit:      {f.unit}",
        f"Started:   {when(f.started)}",
        f"Ended:     {when(f.finished)}",
        f"Ran for:   {quantities.duration(duration)}",
    ]
    if f.streak.failures > 1 and f.streak.first_failure is not None:
        lines.append(f"Failing:   {f.streak.failures} runs in a row, since "
                     f"{when(f.streak.first_failure.started)}")
    last = f.streak.last_success
    lines.append(f"Last good: {when(last.finished) if last else 'never (no successful run yet)'}")
    lines += [
        "",
        "What to do next",
        "- Read why below (the journal of this run), or in full on the machine:",
        f"    journalctl _SYSTEMD_INVOCATION_ID={f.invocation}",
        "- Fix the cause, then run it again and watch it:",
        f"    offsite run {job.name}",
        "- The state of every job and drive:",
        "    offsite status",
        "You get one mail per failed run, and one when the job succeeds again.",
        "",
        f"Journal of this run (last {JOURNAL_LINES} lines)",
        "-" * 40,
        *(list(f.journal)[-JOURNAL_LINES:] or ["(the journal has no lines for this run)"]),
        "",
        "systemctl status",
        "-" * 40,
        f.status.rstrip() or "(not available)",
        "",
    ]
    return _message(cfg, f.host, failure_subject(f), "\n".join(lines), job.name, "failure")


def recovery(cfg: Email, host: str, job: Job, run: Run, before: Streak) -> EmailMessage:
    n = before.failures
    subject = f"[offsite] {host}: {job.name} recovered after {n} failure{'s' if n != 1 else ''}"
    if run.result == "warning":
        subject += " (with warnings)"
    lines = [
        f'The offsite job "{job.name}" on {host} succeeded again.',
        "",
        f"Succeeded: {when(run.finished)} (ran for {quantities.duration(run.duration)})",
        f"Failed:    {n} run{'s' if n != 1 else ''} in a row before it"
        + (f", since {when(before.first_failure.started)}" if before.first_failure else ""),
        f"Last good before that: {when(before.last_success.finished) if before.last_success else 'never'}",
        "",
        "Nothing to do. The LED goes back to normal by itself.",
        "",
    ]
    return _message(cfg, host, subject, "\n".join(lines), job.name, "recovery")


def success(cfg: Email, host: str, job: Job, run: Run) -> EmailMessage:
    how = "succeeded with warnings" if run.result == "warning" else "succeeded"
    subject = f"[offsite] {host}: {job.name} {how}"
    lines = [
        f'The offsite job "{job.name}" on {host} {how}.',
        "",
        f"What:      {job.description or job.kind.value} ({job.kind.value})",
        f"Finished:  {when(run.finished)} (ran for {quantities.duration(run.duration)})",
    ]
    if run.bytes is not None:
        lines.append(f"Copied:    {run.bytes} bytes")
    if run.result == "warning":
        lines += ["", "Warnings (borg's exit 1, rsync's vanished files) do not fail a job; read",
                  f"them with: journalctl _SYSTEMD_INVOCATION_ID={run.invocation}"]
    lines += ["", "You get this mail because the job has mail_on_success: true.", ""]
    return _message(cfg, host, subject, "\n".join(lines), job.name, "success")


@dataclass(frozen=True)
class Stale:
    what: str  # "drive offsite-a" or "job nightly"
    last: float | None  # last copy or success; None: never
    since: float  # when offsite started watching it (for "never")
    limit: float  # seconds


def stale(cfg: Email, host: str, items: Sequence[Stale], now: float) -> EmailMessage:
    def age(item: Stale) -> str:
        if item.last is None:
            return f"never, in the {quantities.duration(now - item.since)} offsite has watched it"
        return f"{quantities.duration(now - item.last)} ago ({when(item.last)})"

    first = items[0]
    noun = "off-site copy" if first.what.startswith("drive") else "successful run"
    quiet = quantities.duration(now - (first.last or first.since))
    subject = f"[offsite] {host}: no {noun} of {first.what} for {quiet}"
    if len(items) > 1:
        subject += f" (+{len(items) - 1} more)"
    lines = [f"On {host}, these have not had what they need for longer than allowed:", ""]
    for item in items:
        lines.append(f"- {item.what}: last {'copy' if item.what.startswith('drive') else 'success'} "
                     f"{age(item)}; allowed: {quantities.duration(item.limit)}")
    lines += [
        "",
        "What to do next",
        "- A drive: plug it in; the copy runs by itself (offsite drives shows which is due).",
        "- A job: offsite status shows its last result; offsite run JOB runs it now.",
        "This alert repeats every 7 days while it holds, and stops once it is fixed.",
        "",
    ]
    return _message(cfg, host, subject, "\n".join(lines), None, "stale")


def test(cfg: Email, host: str) -> EmailMessage:
    return _message(cfg, host, f"[offsite] {host}: test mail",
                    f"This is a test mail from offsite on {host}. Mail delivery works.\n",
                    None, "test")
