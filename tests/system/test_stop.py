"""A stop that reaches the work inside the backup namespace (issue #22): whoever stops a
job (a person with systemctl stop, its timeout), borg inside gets the signal and ends
cleanly, borg's lock is released, the repository passes `borg check`, and the run is
recorded with the reason. (A pull's `after` on a stop: test_scheduled.py; a drive pulled
out mid-copy, which a loop device cannot be: tests/vm/test_luks.py.)"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

from offsite_lab.sandbox import Sandbox

from offsite import unitnames

from . import records, repos

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"
REPO = "/srv/borg/main"


def _config(timeout: str = "1h") -> str:
    return textwrap.dedent(f"""\
        repositories:
          main: {{path: {REPO}, passphrase_file: {repos.SECRET}}}
        jobs:
          verify:
            kind: borg-check
            repositories: [main]
            verify_data: true
            timeout: {timeout}
        """)


def _repository(box: Sandbox, mb: int = 400) -> None:
    """A repository whose `borg check --verify-data` takes a while: random data, so
    nothing deduplicates or compresses away."""
    repos.init(box, REPO)
    box.run(["mkdir", "-p", "/srv/data"])
    box.run(["dd", "if=/dev/urandom", "of=/srv/data/blob", "bs=1M", f"count={mb}",
             "status=none"], timeout=300)
    repos.borg(box, "create", "--compression=none", "--", f"{REPO}::first", "/srv/data")
    box.run(["rm", "-rf", "/srv/data"])


def _install(box: Sandbox, text: str) -> None:
    box.write(CONFIG, text)
    box.run([str(OFFSITE), "--config", CONFIG, "install"], timeout=300)


def _pid_in(box: Sandbox, unit: str, *words: bytes) -> int | None:
    """The pid of a process in the unit's control group whose argv has all of words."""
    return next((pid for pid, argv in box.processes(unit)
                 if all(any(w in a for a in argv) for w in words)), None)


def _held(box: Sandbox) -> bool:
    return any(p.name.startswith("lock.") for p in box.host_path(REPO).iterdir())


def _freeze_holding_the_lock(box: Sandbox, unit: str, *words: bytes) -> int:
    """Stop (SIGSTOP) the work once it holds the repository's lock: a machine as slow as
    it likes, so the stop reliably comes in the middle. The stop signal offsite hands on
    waits for SIGCONT."""
    found: list[int] = []

    def caught() -> bool:
        pid = _pid_in(box, unit, *words)
        if pid is None or not _held(box):
            return False
        os.kill(pid, signal.SIGSTOP)
        found.append(pid)
        return True

    box.wait_until(f"{b' '.join(words).decode()} to hold the lock", caught, timeout=120)
    return found[0]


def _thaw_once_told(box: Sandbox, unit: str, pid: int, program: str) -> None:
    box.wait_until(f"the stop to be handed on to {program}", lambda: f"passed on to {program}"
                   in box.journal(unit=unit), timeout=60)
    os.kill(pid, signal.SIGCONT)


def _lock_released_and_repository_good(box: Sandbox) -> None:
    left = [p.name for p in box.host_path(REPO).iterdir() if p.name.startswith("lock.")]
    assert left == [], f"borg's lock is still there: {left}"
    repos.borg(box, "check", "--", REPO)  # raises if borg does not accept it


def test_systemctl_stop_reaches_borg_which_releases_its_lock(sandbox: Sandbox) -> None:
    _repository(sandbox)
    _install(sandbox, _config())
    unit = unitnames.job_unit("verify")
    sandbox.systemctl("start", "--no-block", "--", unit)
    borg = _freeze_holding_the_lock(sandbox, unit, b"borg", b"check")
    sandbox.systemctl("stop", "--no-block", "--", unit)
    _thaw_once_told(sandbox, unit, borg, "borg")
    sandbox.wait_until("the job to end", lambda: bool(records.runs(sandbox, "verify")), 150)
    journal = sandbox.journal(unit=unit)
    assert "asked to stop (SIGTERM); passed on to borg" in journal, journal
    assert "job verify stopped (SIGTERM) before it finished" in journal, journal
    result, detail = records.runs(sandbox, "verify")[-1]
    assert result == "interrupted", (result, detail)
    assert "stopped by hand" in detail and "ended cleanly" in detail, detail
    _lock_released_and_repository_good(sandbox)


def test_a_timeout_stops_borg_cleanly_and_is_a_failure_that_says_so(sandbox: Sandbox) -> None:
    _repository(sandbox)
    _install(sandbox, _config(timeout="4s"))
    unit = unitnames.job_unit("verify")
    sandbox.systemctl("start", "--no-block", "--", unit)
    borg = _freeze_holding_the_lock(sandbox, unit, b"borg", b"check")
    _thaw_once_told(sandbox, unit, borg, "borg")  # (systemd stops it at 4s)
    sandbox.wait_until("the job to end", lambda: bool(records.runs(sandbox, "verify")), 150)
    result, detail = records.runs(sandbox, "verify")[-1]
    assert result == "failed", (result, detail)
    assert "ran out of time (timeout 4s)" in detail and "ended cleanly" in detail, detail
    _lock_released_and_repository_good(sandbox)
