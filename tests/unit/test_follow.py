"""Following a run: which journal lines are shown, how progress updates, when it ends."""

from __future__ import annotations

import io
import json

from offsite.views.follow import follow

UNIT = "offsite-copy@d1.service"


def lines(*entries: dict[str, str]) -> list[str]:
    return [json.dumps(e) + "\n" for e in entries]


FEED = lines(
    {"_PID": "40", "MESSAGE": "an earlier run's last line"},
    {"_PID": "1", "UNIT": UNIT, "MESSAGE": "Finished", "JOB_TYPE": "start", "JOB_RESULT": "done",
     "JOB_ID": "6"},
    {"_PID": "1", "UNIT": UNIT, "MESSAGE": "Starting...", "JOB_TYPE": "start", "JOB_ID": "7"},
    {"_PID": "40", "MESSAGE": "job copy (mirror) started"},
    {"_PID": "41", "MESSAGE": "copy: 1.0 MiB of 2.0 MiB (50%)", "PROGRESS_BYTES": "1",
     "PROGRESS_TOTAL": "2"},
    {"_PID": "41", "MESSAGE": "copy: 2.0 MiB of 2.0 MiB (100%)", "PROGRESS_BYTES": "2",
     "PROGRESS_TOTAL": "2"},
    {"_PID": "40", "MESSAGE": "job copy succeeded in 1.0 s"},
    {"_PID": "1", "UNIT": UNIT, "MESSAGE": "Finished", "JOB_TYPE": "start", "JOB_RESULT": "done",
     "JOB_ID": "7"},
    {"_PID": "40", "MESSAGE": "never read: after the end"},
)


def test_plain_output_shows_every_line_of_the_run() -> None:
    out = io.StringIO()
    outcome = follow(iter(FEED), UNIT, out, tty=False, job_id="7")
    assert outcome.result == "done" and outcome.lines == 4
    assert out.getvalue().splitlines() == [
        "job copy (mirror) started", "1.0 MiB of 2.0 MiB (50%)", "2.0 MiB of 2.0 MiB (100%)",
        "job copy succeeded in 1.0 s"]


def test_terminal_output_updates_one_progress_line() -> None:
    out = io.StringIO()
    follow(iter(FEED), UNIT, out, tty=True, job_id="7")
    text = out.getvalue()
    assert "\r\x1b[K1.0 MiB of 2.0 MiB (50%)\r\x1b[K2.0 MiB of 2.0 MiB (100%)\n" in text
    assert text.endswith("job copy succeeded in 1.0 s\n")


def test_a_failed_start_is_reported() -> None:
    feed = lines({"_PID": "40", "MESSAGE": "job x failed: boom"},
                 {"_PID": "1", "UNIT": UNIT, "JOB_TYPE": "start", "JOB_RESULT": "failed",
                  "MESSAGE": "Failed"})
    assert follow(iter(feed), UNIT, io.StringIO(), tty=False).result == "failed"


def test_stopped_while_starting_ends_the_follow() -> None:
    feed = lines({"_PID": "1", "UNIT": UNIT, "JOB_TYPE": "start", "JOB_ID": "9",
                  "MESSAGE": "Starting..."},
                 {"_PID": "40", "MESSAGE": "job copy (mirror) started"},
                 {"_PID": "1", "UNIT": UNIT, "JOB_TYPE": "stop", "JOB_RESULT": "done",
                  "JOB_ID": "10", "MESSAGE": "Stopped"})
    outcome = follow(iter(feed), UNIT, io.StringIO(), tty=False, job_id="9")
    assert outcome.result == "stopped" and outcome.lines == 1
