"""Logging: structured journal entries under systemd, plain lines on stderr otherwise.

Structured fields ride on a record as ``extra=fields(job=..., drive=...)`` and become
journal fields (``JOB=``, ``DRIVE=``) so that ``journalctl JOB=nightly`` finds them.
"""

from __future__ import annotations

import logging
import os
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "offsite"

# syslog priorities, as journald stores them in PRIORITY=
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
# SYSTEMD_LOG_LEVEL accepts names and syslog numbers; map both onto logging levels.
_LEVEL_NAMES = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emerg": logging.CRITICAL,
}
_LEVEL_NUMBERS = [logging.CRITICAL, logging.CRITICAL, logging.CRITICAL, logging.ERROR,
                  logging.WARNING, logging.INFO, logging.INFO, logging.DEBUG]


def fields(**values: object) -> dict[str, dict[str, str]]:
    """Structured fields for a log call: ``log.info("...", extra=fields(job="x"))``."""
    return {"fields": {k.upper(): str(v) for k, v in values.items() if v is not None}}


def level_from_env(value: str | None, default: int = logging.INFO) -> int:
    if not value:
        return default
    value = value.strip().lower()
    if value.isdigit() and int(value) < len(_LEVEL_NUMBERS):
        return _LEVEL_NUMBERS[int(value)]
    return _LEVEL_NAMES.get(value, default)


def _valid_field(name: str) -> bool:
    return bool(name) and not name.startswith("_") and all(
        c.isascii() and (c.isupper() or c.isdigit() or c == "_") for c in name
    )


class JournalHandler(logging.Handler):
    """Each record as one journal entry with its fields, through libsystemd (pystemd)."""

    def __init__(self, identifier: str = IDENTIFIER) -> None:
        super().__init__()
        from pystemd import journal

        self._sendv = journal.sendv
        self.identifier = identifier

    def entry(self, record: logging.LogRecord) -> dict[str, str]:
        items = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
            "LOGGER": record.name,
        }
        for key, value in getattr(record, "fields", {}).items():
            if _valid_field(key):
                items[key] = value
        return items

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sendv(*(f"{k}={v}" for k, v in self.entry(record).items()))
        except Exception:  # a log line must never take the program down
            self.handleError(record)


class StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        extra = getattr(record, "fields", {})
        suffix = " [" + " ".join(f"{k}={v}" for k, v in extra.items()) + "]" if extra else ""
        return f"offsite: {prefix}{text}{suffix}"


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal (it sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup(debug: bool = False, identifier: str = IDENTIFIER) -> None:
    """Log to the journal (as identifier: the SyslogIdentifier= of the unit that runs us)
    when systemd connected stderr to it, else plain lines to stderr."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if stderr_is_journal() and os.path.exists(JOURNAL_SOCKET):
        handler = JournalHandler(identifier)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(StderrFormatter("%(message)s"))
    root.addHandler(handler)
    level = logging.DEBUG if debug else level_from_env(os.environ.get("SYSTEMD_LOG_LEVEL"))
    root.setLevel(level)
