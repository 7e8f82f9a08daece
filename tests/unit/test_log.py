"""Journal entry encoding and level handling (the journal itself is tested in the system tier)."""

from __future__ import annotations

import logging

from offsite import log


def test_level_from_env() -> None:
    assert log.level_from_env("debug") == logging.DEBUG
    assert log.level_from_env("7") == logging.DEBUG
    assert log.level_from_env("err") == logging.ERROR
    assert log.level_from_env("warning") == logging.WARNING
    assert log.level_from_env(None) == logging.INFO
    assert log.level_from_env("nonsense") == logging.INFO


def test_fields_helper_upper_cases_and_drops_none() -> None:
    assert log.fields(job="a", drive=None) == {"fields": {"JOB": "a"}}


def test_journal_entry_carries_fields_and_the_units_identifier() -> None:
    handler = log.JournalHandler("offsite-agent")
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("offsite.agent", logging.WARNING, __file__, 7, "copy started",
                               None, None)
    record.fields = {"JOB": "offsite-copy", "DRIVE": "a", "_PID": "1", "bad key": "x"}
    entry = handler.entry(record)
    assert entry["MESSAGE"] == "copy started" and entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "offsite-agent"
    assert entry["JOB"] == "offsite-copy" and entry["DRIVE"] == "a"
    assert "_PID" not in entry and "bad key" not in entry  # journald's own fields, or invalid


def test_stderr_format_shows_fields() -> None:
    record = logging.LogRecord("offsite", logging.WARNING, __file__, 1, "led missing", None, None)
    record.fields = {"JOB": "x"}
    assert log.StderrFormatter("%(message)s").format(record) == "offsite: warning: led missing [JOB=x]"
