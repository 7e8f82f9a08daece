"""`offsite check` at scale: a 1,500-job configuration with one bad schedule, against the
same configuration with every schedule good, in the same run; and the peak memory of
checking a 50 MB file, against checking a small good one.

Goals (issue #20): the bad schedule costs no more calendar calls than the good ones (one
`systemd-analyze calendar` for all), the check under 2 s; a 50 MB file refused without
being read (peak memory within a few MB of the small file's).
Run: .venv/bin/python bench/check_scale.py [JOBS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from table import Figure, report

from offsite.run import run

OFFSITE = Path(sys.prefix) / "bin" / "offsite"


def config_text(jobs: int, bad: int | None = None) -> str:
    lines = ["repositories:", "  main: {path: /srv/borg/main}", "jobs:"]
    for i in range(jobs):
        # every expression its own, so nothing is checked once for many jobs
        schedule = "every other tuesday" if i == bad else f"*-*-{i % 28 + 1:02d} " \
            f"{i % 24:02d}:{(i * 7) % 60:02d}:{i % 60:02d}"
        lines += [f"  job-{i}:", "    kind: borg-check", "    repositories: [main]",
                  f"    schedule: '{schedule}'"]
    return "\n".join(lines) + "\n"


def check_seconds(path: Path, runs: int = 3) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        code = run([str(OFFSITE), "check", "-c", str(path)], check=False).returncode
        times.append(time.perf_counter() - started)
    return statistics.median(times), code


def peak_mib(path: Path) -> float:
    """Peak RSS of one `offsite check` of path (its own child, so nothing else counts)."""
    argv = [sys.executable, "-c", "import resource, subprocess, sys; "
            "subprocess.run(sys.argv[1:], capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
            str(OFFSITE), "check", "-c", str(path)]
    return int(run(argv).stdout.strip()) / 1024


def main() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    with tempfile.TemporaryDirectory() as tmp:
        good, bad, big = (Path(tmp) / n for n in ("good.yaml", "bad.yaml", "big.yaml"))
        good.write_text(config_text(jobs))
        bad.write_text(config_text(jobs, bad=jobs // 2))
        with big.open("w") as f:
            line = "# " + "x" * 97 + "\n"
            for _ in range(50 * 1024 * 1024 // len(line)):
                f.write(line)
        good_s, good_code = check_seconds(good)
        bad_s, bad_code = check_seconds(bad)
        small = Path(tmp) / "small.yaml"
        small.write_text(config_text(2))
        small_mib, big_mib = peak_mib(small), peak_mib(big)
    print(f"jobs: {jobs}; exit codes: good {good_code}, one bad schedule {bad_code}; "
          f"50 MB file peak {big_mib:.1f} MiB")
    return report([
        Figure("check_scale", f"check, {jobs} jobs, one bad schedule", bad_s, "s",
               "all schedules good", good_s, "< 2 s", bad_s < 2.0 and bad_code == 1),
        Figure("check_scale", "check of a 50 MB file, peak RSS", big_mib, "MiB",
               "a 2-job file", small_mib, "< anchor + 8 MiB", big_mib < small_mib + 8),
    ])


if __name__ == "__main__":
    raise SystemExit(main())
