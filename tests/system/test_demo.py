"""`make demo` runs to the end and leaves the host as it found it."""

from __future__ import annotations

import pytest

from offsite import demo
from tests.system.test_sandbox import host_snapshot


def test_demo_runs_to_the_end_and_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    before = host_snapshot()
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "job offsite-copy succeeded" in out and "result: done" in out
    assert "safe to remove" in out and "outside: findmnt /backup -> nothing" in out
    assert "Triggering OnFailure= dependencies" in out
    assert "will-fail FAILED (exit code 1)" in out and "Journal of this run" in out
    assert "1 message(s) in /var/lib/offsite/spool" in out
    assert host_snapshot() == before
