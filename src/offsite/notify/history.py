"""Every job run, in SQLite under /var/lib/offsite: unit, invocation id, start, end, result,
bytes.

Written by the job units' own start and stop hooks (so a run is recorded even when the
agent is down), read by status, the mails and the agent. The database runs in WAL mode
with synchronous=FULL: a crash or power loss loses at most the run being written, never
what was committed before. Several writers are fine: each write is one short transaction
and waits for the others (busy timeout).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from offsite import state

PATH = state.STATE_DIR / "history.db"
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    invocation TEXT NOT NULL UNIQUE,  -- systemd's invocation id of the unit's run
    unit TEXT NOT NULL,
    job TEXT NOT NULL,
    drive TEXT,
    started REAL NOT NULL,            -- seconds since the epoch
    finished REAL,                    -- NULL while it runs (or if the machine died)
    result TEXT,                      -- success, warning, skipped, interrupted, failed;
                                      -- NULL while running
    detail TEXT,                      -- why it failed: "exit code 2", "timeout", "signal KILL"
    bytes INTEGER
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, started);
"""

RESULTS = ("success", "warning", "skipped", "interrupted", "failed")


@dataclass(frozen=True)
class Run:
    invocation: str
    unit: str
    job: str
    drive: str | None
    started: float
    finished: float | None
    result: str | None
    detail: str | None
    bytes: int | None

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else max(0.0, self.finished - self.started)

    @property
    def succeeded(self) -> bool:
        return self.result in ("success", "warning")


@contextlib.contextmanager
def connect(path: Path = PATH) -> Iterator[sqlite3.Connection]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        path.chmod(0o600)
        yield db
    finally:
        db.close()


def _run(row: tuple[object, ...]) -> Run:
    return Run(*row)  # type: ignore[arg-type]


def started(invocation: str, unit: str, job: str, drive: str | None, when: float,
            path: Path = PATH) -> None:
    """A run began. Recorded again (a restarted hook) it keeps its first start time."""
    with connect(path) as db:
        db.execute("INSERT INTO runs (invocation, unit, job, drive, started) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (invocation) DO NOTHING", (invocation, unit, job, drive, when))


def finished(invocation: str, unit: str, job: str, drive: str | None, when: float,
             result: str, detail: str | None, nbytes: int | None, path: Path = PATH) -> Run:
    """A run ended. Without a start record (its start hook never ran) it is recorded as
    starting when it ended."""
    if result not in RESULTS:
        raise ValueError(f"unknown result {result!r}")
    with connect(path) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO runs (invocation, unit, job, drive, started) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (invocation) DO NOTHING", (invocation, unit, job, drive, when))
        db.execute("UPDATE runs SET finished = ?, result = ?, detail = ?, bytes = ? "
                   "WHERE invocation = ?", (when, result, detail, nbytes, invocation))
        db.execute("COMMIT")
        row = db.execute("SELECT invocation, unit, job, drive, started, finished, result, detail, "
                         "bytes FROM runs WHERE invocation = ?",
                         (invocation,)).fetchone()
    return _run(row)


def runs(job: str | None = None, limit: int = 100, path: Path = PATH) -> list[Run]:
    """The latest runs, newest first (of one job, or of all)."""
    if not path.exists():
        return []
    with connect(path) as db:
        if job is None:
            rows = db.execute(
                "SELECT invocation, unit, job, drive, started, finished, result, detail, bytes "
                "FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = db.execute(
                "SELECT invocation, unit, job, drive, started, finished, result, detail, bytes "
                "FROM runs WHERE job = ? ORDER BY started DESC, id DESC LIMIT ?",
                (job, limit)).fetchall()
    return [_run(r) for r in rows]


def find(invocation: str, path: Path = PATH) -> Run | None:
    if not path.exists():
        return None
    with connect(path) as db:
        row = db.execute("SELECT invocation, unit, job, drive, started, finished, result, detail, "
                         "bytes FROM runs WHERE invocation = ?",
                         (invocation,)).fetchone()
    return _run(row) if row else None


@dataclass(frozen=True)
class Streak:
    """Where a job stands: failures since its last success, and that success."""

    failures: int
    last_success: Run | None
    first_failure: Run | None


def streak(job: str, path: Path = PATH, before: str | None = None) -> Streak:
    """Consecutive failures of job up to its latest finished run; skips and interrupted
    runs do not count either way. With `before`, that run and every newer one are left out (whether the run
    that just ended is a recovery depends on the runs before it)."""
    failures: list[Run] = []
    seen_before = before is None
    for run in runs(job, limit=10_000, path=path):
        if not seen_before:
            seen_before = run.invocation == before
            continue
        if run.result == "failed":
            failures.append(run)
        elif run.succeeded:
            return Streak(len(failures), run, failures[-1] if failures else None)
    return Streak(len(failures), None, failures[-1] if failures else None)
