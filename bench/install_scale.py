"""Install 500 jobs into a sandbox systemd: time against rendering alone, and reloads.

Goal (issue #3): one daemon-reload, and the whole install under 10 s on a 2-core machine.
Run as root: .venv/bin/python bench/install_scale.py [JOBS]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from offsite_lab import sandbox
from table import Figure, report

from offsite.config import reader
from offsite.units import render

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"


def config_text(jobs: int) -> str:
    lines = ["repositories:"]
    lines += [f"  repo{i}: {{path: /srv/borg/repo{i}}}" for i in range(jobs)]
    lines.append("jobs:")
    for i in range(jobs):
        lines += [f"  job-{i}:", "    kind: borg-check", f"    repositories: [repo{i}]",
                  f"    schedule: '*-*-* {i % 24:02d}:{(i * 7) % 60:02d}:00'"]
    return "\n".join(lines) + "\n"


def reloads(box: sandbox.Sandbox) -> int:
    out = box.run(["journalctl", "--no-pager", "-o", "json", "_PID=1"]).stdout
    return sum(1 for line in out.splitlines() if json.loads(line)["MESSAGE"] == "Reloading.")


def main() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    text = config_text(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "offsite.yaml"
        path.write_text(text)
        render_times = []
        for _ in range(3):
            started = time.perf_counter()
            cfg = reader.load(path)
            rendered = render.render(cfg, OFFSITE, Path(CONFIG))
            render_times.append(time.perf_counter() - started)
    render_s = statistics.median(render_times)
    with sandbox.booted() as box:
        box.write(CONFIG, text)
        before = reloads(box)
        started = time.perf_counter()
        box.run([str(OFFSITE), "--config", CONFIG, "install"], timeout=600)
        install_s = time.perf_counter() - started
        count = reloads(box) - before
        timers = box.systemctl("list-timers", "--all", "--no-legend", "--plain").stdout
        active = sum(1 for line in timers.splitlines() if "offsite-job" in line)
    print(f"jobs: {jobs}; unit files and links: {len(rendered.files) + len(rendered.links)}")
    return report([
        Figure("install_scale", f"offsite install, {jobs} jobs (wall)", install_s, "s",
               "render alone", render_s, "< 10 s", install_s < 10),
        Figure("install_scale", "daemon reloads", count, "", goal="1", ok=count == 1),
        Figure("install_scale", "timers active after install", active, "", goal=str(jobs),
               ok=active == jobs),
    ])


if __name__ == "__main__":
    raise SystemExit(main())
