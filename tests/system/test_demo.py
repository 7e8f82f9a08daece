"""`make demo` runs to the end and leaves the host as it found it."""

from __future__ import annotations

import pytest
from offsite_lab import demo

from tests.system.hosttraces import HostTraces


def test_demo_runs_to_the_end_and_leaves_nothing(capsys: pytest.CaptureFixture[str],
                                                 host: HostTraces) -> None:
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "job offsite-copy succeeded" in out and "result: done" in out
    assert "safe to remove" in out and "outside: findmnt /backup -> nothing" in out
    assert "the drive also carries offsite-recovery/ (RECOVERY.txt, demo.key, keys," in out
    assert "demo: demo/ on the drive, borg repository id " in out
    assert "job backup succeeded" in out and "the repository now holds: vm-" in out
    # the LED, as the emulated BlinkStick was set: blue while copying, green when done, red
    led = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("LED [")]
    assert led[:1] == ["off"] and "failed" in led, led
    assert led.index("working-drive") < led.index("done") < led.index("failed"), led
    # the mail as the demo's server delivered it into the mailbox
    assert "Subject: [offsite] vm: will-fail FAILED (exit code 1)" in out
    assert "Journal of this run" in out
    assert "1 job(s) FAILED: will-fail" in out and "USUALLY" in out  # status and schedule
    host.check()
