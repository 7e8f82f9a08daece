"""Mail that is never lost: every message (and every health ping) is written to a spool
under /var/lib/offsite first, then handed on by offsite-outbox.service; what the server
does not take stays and is retried with growing delays by offsite-outbox.timer, across
reboots. Entries go out in the order they were spooled.

One file per message, written atomically, mode 0600 in a 0700 directory. A flush holds
a lock, so the timer's run and a failure mail's run never send one message twice; a
message leaves the spool only after the server took it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from offsite import durable, locks, state
from offsite.notify.transport import DeliveryError

log = logging.getLogger(__name__)

SPOOL_DIR = state.STATE_DIR / "spool"
MAX_DELAY = 6 * 3600.0  # a message is tried at least this often, however long it waited

Deliver = Callable[["Entry"], None]  # raises DeliveryError


def delay(attempts: int, base: float) -> float:
    """How long after its attempts-th failed try a message is tried again: base, 2 base,
    4 base, ... up to MAX_DELAY (or base, if that is longer)."""
    grown: float = base * 2.0 ** max(0, attempts - 1)
    return min(grown, max(MAX_DELAY, base))


@dataclass(frozen=True)
class Entry:
    path: Path
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "mail"))

    @property
    def subject(self) -> str:
        """What it is, for a log line: the mail's subject, or the ping's URL."""
        return str(self.data.get("subject") or self.data.get("url", ""))

    @property
    def created(self) -> float:
        value = self.data.get("created", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def recipients(self) -> list[str]:
        return list(self.data["recipients"])

    @property
    def due(self) -> float:
        value = self.data.get("next_attempt", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0


def _write(data: dict[str, Any], directory: Path, now: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    name = f"{int(now * 1e6):020d}-{uuid.uuid4().hex[:12]}.json"
    tmp = directory / f".{name}.tmp"
    durable.write_file(tmp, json.dumps(data), 0o600)
    tmp.replace(directory / name)
    durable.fsync_dir(directory)
    return directory / name


def add(message: EmailMessage, recipients: Sequence[str], directory: Path = SPOOL_DIR,
        now: float | None = None) -> Path:
    """Write message to the spool (durably) and return its file."""
    now = time.time() if now is None else now
    return _write({"kind": "mail", "created": now, "attempts": 0, "next_attempt": now,
                   "last_error": None, "recipients": list(recipients),
                   "subject": str(message["Subject"]), "message_id": str(message["Message-ID"]),
                   "message": message.as_string()}, directory, now)


def add_ping(url: str, body: str, directory: Path = SPOOL_DIR, now: float | None = None) -> Path:
    now = time.time() if now is None else now
    return _write({"kind": "ping", "created": now, "attempts": 0, "next_attempt": now,
                   "last_error": None, "url": url, "body": body}, directory, now)


def entries(directory: Path = SPOOL_DIR) -> list[Entry]:
    """Every spooled message, oldest first. A file that cannot be read is reported and
    left where it is (never deleted: it may be the only copy of a message)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("[0-9]*.json")):
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not (
                    {"message", "recipients"} <= data.keys() or "url" in data):
                raise ValueError("not a spooled message or ping")
        except (OSError, ValueError) as exc:
            log.error("spooled mail %s cannot be read (%s); left in place", path, exc)
            continue
        found.append(Entry(path, data))
    return found


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locks.file_lock(directory / ".lock"):
        yield


@dataclass
class Flushed:
    sent: int = 0
    failed: int = 0
    waiting: int = 0  # not due yet


def flush(deliver: Deliver, base_delay: float, directory: Path = SPOOL_DIR,
          clock: Callable[[], float] = time.time, force: bool = False) -> Flushed:
    """Try every due message once (every message, with force). Messages spooled while this
    runs are tried too, before it returns."""
    counts = Flushed()
    tried: set[str] = set()
    with _locked(directory):
        while True:
            todo = [e for e in entries(directory) if e.path.name not in tried]
            if not todo:
                break
            for entry in todo:
                tried.add(entry.path.name)
                now = clock()
                if not force and entry.due > now:
                    counts.waiting += 1
                    continue
                try:
                    sent = _try(entry, deliver, base_delay, now)
                except Exception as exc:
                    # entry stays as it was, and the next one is still tried
                    log.error("%s %r (%s) could not be handled: %s: %s", entry.kind,
                              entry.subject, entry.path, type(exc).__name__, exc)
                    sent = False
                if sent:
                    counts.sent += 1
                else:
                    counts.failed += 1
    return counts


def _try(entry: Entry, deliver: Deliver, base_delay: float, now: float) -> bool:
    data = dict(entry.data)
    try:
        try:
            deliver(entry)
        except DeliveryError:
            raise
        except Exception as exc:
            log.error("%s %r (%s): delivering it failed unexpectedly: %s: %s", entry.kind,
                      entry.subject, entry.path, type(exc).__name__, exc)
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    except DeliveryError as exc:
        if exc.give_up:
            entry.path.unlink()
            durable.fsync_dir(entry.path.parent)
            log.warning("%s %r dropped: %s", entry.kind, entry.subject, exc)
            return False
        attempts = int(data.get("attempts", 0)) + 1
        wait = delay(attempts, base_delay)
        if exc.refused and set(exc.refused) < set(entry.recipients):
            # the others have it: only the refused ones are tried again
            data["recipients"] = [r for r in entry.recipients if r in exc.refused]
        data.update(attempts=attempts, next_attempt=now + wait, last_error=str(exc),
                    last_attempt=now)
        durable.replace(entry.path, json.dumps(data), 0o600)
        to = f" to {', '.join(entry.recipients)}" if entry.kind == "mail" else ""
        log.warning("%s %r%s not sent (try %d): %s. It stays in the spool (%s); next try in "
                    "%.0f s.", entry.kind, entry.subject, to, attempts, exc, entry.path, wait)
        return False
    entry.path.unlink()
    durable.fsync_dir(entry.path.parent)
    tries = f" after {data.get('attempts', 0) + 1} tries" if data.get("attempts") else ""
    if entry.kind == "mail":
        log.info("mail %r sent to %s%s", entry.subject, ", ".join(entry.recipients), tries)
    else:
        log.info("health ping %s sent%s", entry.subject, tries)
    return True
