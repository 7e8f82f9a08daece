"""Journal entry encoding and level handling (the journal itself is tested in the system tier)."""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path

from offsite import log


def test_encode_simple_and_multiline_values() -> None:
    data = log.encode_journal_entry({"MESSAGE": "two\nlines", "JOB": "nightly"})
    body = b"two\nlines"
    assert data == b"MESSAGE\n" + struct.pack("<Q", len(body)) + body + b"\nJOB=nightly\n"


def test_level_from_env() -> None:
    assert log.level_from_env("debug") == logging.DEBUG
    assert log.level_from_env("7") == logging.DEBUG
    assert log.level_from_env("err") == logging.ERROR
    assert log.level_from_env("warning") == logging.WARNING
    assert log.level_from_env(None) == logging.INFO
    assert log.level_from_env("nonsense") == logging.INFO


def test_fields_helper_upper_cases_and_drops_none() -> None:
    assert log.fields(job="a", drive=None) == {"fields": {"JOB": "a"}}


def test_journal_handler_sends_structured_datagram(tmp_path: Path) -> None:
    # A datagram socket standing where journald's would be: we read what the handler sent.
    path = str(tmp_path / "socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    handler = log.JournalHandler(path)
    logger = logging.getLogger("offsite.test")
    logger.addHandler(handler)
    try:
        logger.warning("copy started", extra=log.fields(job="offsite-copy", drive="a"))
    finally:
        logger.removeHandler(handler)
        handler.close()
    data = server.recv(65536)
    server.close()
    lines = data.split(b"\n")
    assert b"MESSAGE=copy started" in lines
    assert b"PRIORITY=4" in lines and b"JOB=offsite-copy" in lines and b"DRIVE=a" in lines


def test_stderr_format_shows_fields() -> None:
    record = logging.LogRecord("offsite", logging.WARNING, __file__, 1, "led missing", None, None)
    record.fields = {"JOB": "x"}
    assert log.StderrFormatter("%(message)s").format(record) == "offsite: warning: led missing [JOB=x]"
