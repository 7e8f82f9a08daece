"""The pure parts of notifications: outcomes, mail text, retry delays, staleness, the
history's failure streaks and the spool's bookkeeping (on a temporary directory)."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from offsite.config.model import Config, Drive, DriveType, Email, Job, JobKind
from offsite.notify import history, mailtext, spool, staleness
from offsite.notify.outcome import Outcome, from_service
from offsite.notify.transport import DeliveryError

EMAIL = Email(("admin@example.org",), "offsite@nas.example.org")
JOB = Job("nightly", JobKind.BORGMATIC, 3600.0, description="Nightly backup")


@pytest.mark.parametrize(("result", "code", "status", "expected"), [
    ("success", "exited", "0", Outcome("success", None)),
    ("success", "exited", "10", Outcome("warning", "finished with warnings")),
    ("success", "exited", "11", Outcome("skipped", "nothing to do")),
    ("exit-code", "exited", "2", Outcome("failed", "exit code 2")),
    ("signal", "killed", "KILL", Outcome("failed", "killed by signal KILL")),
    ("success", "killed", "TERM", Outcome("interrupted", "stopped before it finished (signal TERM)")),
    ("core-dump", "dumped", "SEGV", Outcome("failed", "crashed (core dump)")),
    ("timeout", "killed", "TERM", Outcome("failed", "ran out of time (TimeoutStartSec=)")),
])
def test_how_a_run_ended(result: str, code: str, status: str, expected: Outcome) -> None:
    assert from_service(result, code, status) == expected


def test_retry_delays_double_up_to_six_hours() -> None:
    assert [spool.delay(n, 300) for n in (1, 2, 3, 4)] == [300, 600, 1200, 2400]
    assert spool.delay(30, 300) == 6 * 3600
    assert spool.delay(1, 2) == 2 and spool.delay(3, 2) == 8
    assert spool.delay(5, 86400) == 86400  # a base longer than the cap is kept


def record(db: Path, results: list[str], job: str = "nightly") -> list[history.Run]:
    runs = []
    for result in results:
        n = len(history.runs(path=db)) + 1  # one run every 10 s, in order
        inv = f"{n:032x}"
        history.started(inv, "offsite-nightly.service", job, None, 1000.0 + n * 10, path=db)
        runs.append(history.finished(inv, "offsite-nightly.service", job, None,
                                     1005.0 + n * 10, result, None, None, path=db))
    return runs


def test_streaks_count_failures_since_the_last_success_and_ignore_skips(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    assert history.streak("nightly", path=db) == history.Streak(0, None, None)
    runs = record(db, ["success", "failed", "skipped", "failed", "failed"])
    streak = history.streak("nightly", path=db)
    assert streak.failures == 3
    assert streak.last_success == runs[0]
    assert streak.first_failure == runs[1]
    # a success ends the streak; the one before it is what a recovery mail reports
    ok = record(db, ["warning"])[0]
    assert history.streak("nightly", path=db).failures == 0
    assert history.streak("nightly", path=db, before=ok.invocation).failures == 3
    assert record(db, ["failed"], job="other") and history.streak("nightly", path=db).failures == 0


def test_a_run_without_a_start_record_is_still_recorded(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    run = history.finished("a" * 32, "u.service", "j", "d1", 50.0, "failed", "exit code 1", 7,
                           path=db)
    assert (run.started, run.finished, run.bytes, run.drive) == (50.0, 50.0, 7, "d1")
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="unknown result"):
        history.finished("b" * 32, "u", "j", None, 1.0, "fine", None, None, path=db)


def failure(streak: history.Streak, why: str | None = "borg said no") -> EmailMessage:
    report = mailtext.Failure(
        host="nas", job=JOB, unit="offsite-nightly.service", invocation="c" * 32,
        outcome=Outcome("failed", "exit code 1"), why=why, started=1000.0, finished=1190.0,
        streak=streak, journal=["02:30:00 offsite: job nightly started"],
        status="\u00d7 offsite-nightly.service\n     Active: failed")
    return mailtext.failure(EMAIL, report)


def test_the_failure_mail_says_what_happened_first_and_the_long_parts_last() -> None:
    first = history.Run("0" * 32, "u", "nightly", None, 900.0, 905.0, "failed", None, None)
    message = failure(history.Streak(3, None, first))
    assert message["Subject"] == "[offsite] nas: nightly FAILED (exit code 1), 3rd failure in a row"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert body.index("Why: borg said no") < body.index("What to do next") \
        < body.index("Journal of this run") < body.index("systemctl status")
    assert "Ran for:   3min 10s" in body
    assert "Failing:   3 runs in a row" in body
    assert "Last good: never" in body
    assert f"journalctl _SYSTEMD_INVOCATION_ID={'c' * 32}" in body
    assert failure(history.Streak(1, None, None))["Subject"] == \
        "[offsite] nas: nightly FAILED (exit code 1)"
    # every line fits a phone: the mail is wrapped by quoted-printable at 76 characters
    assert max(len(line) for line in message.as_string().splitlines()) <= 78


@pytest.mark.parametrize(("n", "text"), [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"),
                                         (11, "11th"), (12, "12th"), (13, "13th"), (21, "21st"),
                                         (22, "22nd"), (111, "111th")])
def test_ordinals(n: int, text: str) -> None:
    assert mailtext.ordinal(n) == text


def test_recovery_and_success_mails() -> None:
    run = history.Run("d" * 32, "u", "nightly", None, 2000.0, 2065.0, "warning", None, 1024)
    last = history.Run("e" * 32, "u", "nightly", None, 100.0, 110.0, "success", None, None)
    recovery = mailtext.recovery(EMAIL, "nas", JOB, run, history.Streak(2, last, None))
    assert recovery["Subject"] == "[offsite] nas: nightly recovered after 2 failures (with warnings)"
    success = mailtext.success(EMAIL, "nas", JOB, run)
    assert success["Subject"] == "[offsite] nas: nightly succeeded with warnings"
    assert "Copied:    1024 bytes" in success.get_content()


def config_with(drive_stale: float, job_stale: float | None) -> Config:
    drive = Drive("d1", "11111111-2222-3333-4444-555555555555", DriveType.PLAIN, Path("/mnt"),
                  stale_after=drive_stale)
    job = Job("nightly", JobKind.BORGMATIC, 60.0, stale_after=job_stale)
    quiet = Job("quiet", JobKind.BORGMATIC, 60.0)
    return Config(Path("/etc/offsite/offsite.yaml"), (drive,), (), (job, quiet))


def test_staleness_counts_a_never_done_item_from_when_watching_began() -> None:
    cfg = config_with(100.0, 50.0)
    items = staleness.watched(cfg, {}, {})
    assert [i.key for i in items] == ["drive:11111111-2222-3333-4444-555555555555", "job:nightly"]
    since = {i.key: 1000.0 for i in items}
    assert staleness.stale(items, since, 1040.0) == []
    stale = staleness.stale(items, since, 1060.0)
    assert [s.what for _, s in stale] == ["job nightly"]
    items = staleness.watched(cfg, {"11111111-2222-3333-4444-555555555555": 900.0},
                              {"nightly": 1055.0})
    assert [s.what for _, s in staleness.stale(items, since, 1060.0)] == ["drive d1"]


def test_a_stale_alert_repeats_weekly_not_daily() -> None:
    item = mailtext.Stale("drive d1", None, 0.0, 10.0)
    current = [("drive:x", item)]
    assert staleness.to_alert(current, {}, 100.0) == current
    assert staleness.to_alert(current, {"drive:x": 100.0}, 100.0 + 86400) == []
    assert staleness.to_alert(current, {"drive:x": 100.0}, 100.0 + 7 * 86400) == current
    mail = mailtext.stale(EMAIL, "nas", [item, mailtext.Stale("job j", 50.0, 0.0, 10.0)],
                          100.0 + 3 * 86400)
    assert mail["Subject"] == "[offsite] nas: no off-site copy of drive d1 for 3d 1min 40s (+1 more)"


def test_the_spool_keeps_what_was_not_taken_and_sends_in_order(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    a = spool.add(mailtext.test(EMAIL, "nas"), ["a@example.org", "b@example.org"], directory,
                  now=100.0)
    spool.add_ping("http://127.0.0.1:1/x/start", "", directory, now=101.0)
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert oct(a.stat().st_mode & 0o777) == "0o600"
    tried: list[str] = []

    def refuse_b(entry: spool.Entry) -> None:
        tried.append(entry.kind)
        if entry.kind == "mail":
            raise DeliveryError("b refused", refused=["b@example.org"])

    done = spool.flush(refuse_b, 60.0, directory, clock=lambda: 200.0)
    assert (done.sent, done.failed, tried) == (1, 1, ["mail", "ping"])
    kept = json.loads(a.read_text())
    assert kept["recipients"] == ["b@example.org"]  # a has it; only b is tried again
    assert (kept["attempts"], kept["next_attempt"], kept["last_error"]) == (1, 260.0, "b refused")
    # not due yet: left alone; with force, tried
    assert spool.flush(refuse_b, 60.0, directory, clock=lambda: 250.0).waiting == 1
    assert spool.flush(lambda e: None, 60.0, directory, clock=lambda: 250.0, force=True).sent == 1
    assert spool.entries(directory) == []


def test_an_unreadable_spool_file_is_left_in_place(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001-x.json").write_text("{not json")
    assert spool.entries(tmp_path) == []
    assert (tmp_path / "00000000000000000001-x.json").exists()


def test_a_ping_too_old_to_mean_anything_is_dropped(tmp_path: Path) -> None:
    from offsite.notify import pings

    spool.add_ping("http://127.0.0.1:9/x", "", tmp_path, now=0.0)

    def deliver(entry: spool.Entry) -> None:
        pings.send(str(entry.data["url"]), "", 1.0, entry.created, now=7200.0)

    assert spool.flush(deliver, 60.0, tmp_path, clock=lambda: 7200.0).failed == 1
    assert spool.entries(tmp_path) == []


def test_a_message_that_breaks_delivery_never_holds_up_the_ones_behind_it(tmp_path: Path) -> None:
    """A ping spooled with a URL urllib cannot send (written by an older offsite, before
    check refused such URLs) raised out of the outbox, and the failure mail behind it waited."""
    from offsite.notify import pings

    ping = spool.add_ping("http://127.0.0.1:9/caf\u00e9/start", "", tmp_path, now=100.0)
    spool.add(mailtext.test(EMAIL, "nas"), ["a@example.org"], tmp_path, now=101.0)
    mailed: list[str] = []

    def deliver(entry: spool.Entry) -> None:
        if entry.kind == "ping":
            pings.send(str(entry.data["url"]), "", 1.0, entry.created, now=150.0)
        else:
            mailed.append(entry.subject)

    done = spool.flush(deliver, 60.0, tmp_path, clock=lambda: 150.0)
    assert (done.sent, done.failed) == (1, 1) and len(mailed) == 1
    kept = json.loads(ping.read_text())
    assert kept["attempts"] == 1 and "Error" in kept["last_error"], kept["last_error"]


def test_a_job_name_in_a_ping_url_is_quoted() -> None:
    """(check allows no such name today; the URL is built right whatever the name)"""
    from offsite.config.model import Config, Healthchecks, Job, JobKind, Notify
    from offsite.notify import pings

    cfg = Config(Path("/x"), (), (), (), Notify(healthchecks=Healthchecks("https://hc.example")))
    job = Job(name="a b/c", kind=JobKind.BORG_CHECK, timeout=60.0)

    assert pings.url_for(cfg, job, "failed") == "https://hc.example/a%20b%2Fc/fail"


@pytest.mark.parametrize(("service_result", "gone", "down", "words"), [
    ("timeout", False, False, "it ran out of time (timeout 6h)"),
    ("success", True, False, "its drive was pulled out"),
    ("success", False, True, "the machine is shutting down"),
    ("success", False, False, "stopped by hand (systemctl stop)"),
])
def test_why_a_run_was_stopped(service_result: str, gone: bool, down: bool, words: str) -> None:
    from offsite.notify import outcome

    assert outcome.stop_reason(service_result, gone, down, "6h").startswith(words)


def test_a_stopped_run_says_whether_its_work_ended_cleanly() -> None:
    from offsite.notify import outcome

    interrupted = outcome.from_service("success", "killed", "TERM")
    assert interrupted.result == "interrupted"
    clean = outcome.stopped(interrupted, "its drive was pulled out", clean=True)
    assert clean == outcome.Outcome("interrupted", "stopped: its drive was pulled out; its "
                                    "work was told to stop and ended cleanly")
    assert outcome.stopped(interrupted, "x", clean=False).detail == "stopped: x; its work was killed"
