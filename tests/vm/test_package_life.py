"""The package's life on a running Debian 12 and 13 (the guest, whose offsite is the package,
installed with apt): upgraded to a newer build with apt (the agent restarted, the units
rendered again from the configuration, a running job not killed), removed (offsite's units
stopped and gone, nothing left pointing at the missing program), purged (what cannot be
made again kept, and named)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from offsite.run import run

from .guest import ROOT, SUITES, Guest, python
from .test_luks import CONFIG, REPO, encrypted_repository

UNITS = "/etc/systemd/system"


def show(g: Guest, unit: str, prop: str) -> str:
    return g.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()


@pytest.mark.parametrize("guest", SUITES, indirect=True)  # Debian 12 and 13
def test_upgrade_remove_and_purge_on_a_running_system(guest: Guest, tmp_path: Path) -> None:
    g = guest
    g.write(CONFIG, json.dumps({
        "repositories": {"main": encrypted_repository(g)},
        "jobs": {"weekly": {"kind": "borg-check", "repositories": ["main"],
                            "schedule": "Sun 04:00"},
                 "held": {"kind": "borg-check", "repositories": ["main"]}},
    }))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)
    agent_pid = show(g, "offsite-agent.service", "MainPID")
    assert agent_pid != "0"

    # A job that runs through the upgrade: it waits for its repository, which a process of
    # the test holds (offsite's own lock), then checks it.
    g.run(["systemd-run", "--unit=test-holder", *python(
        "import time\nfrom offsite import locks\n"
        f"with locks.held([{REPO!r}], 'test', 600):\n    time.sleep(600)")])
    g.run(["systemctl", "start", "--no-block", "offsite-held.service"])
    g.wait_until("the job to wait for its repository", lambda: "waiting for" in g.run(
        ["journalctl", "-u", "offsite-held.service", "-o", "cat"]).stdout)
    job_pid = show(g, "offsite-held.service", "MainPID")
    # a unit file gone astray: the upgrade renders it again
    g.run(["rm", f"{UNITS}/offsite-weekly.timer"])

    newer = tmp_path / "newer"
    run([ROOT / "packaging" / "build-deb", newer], timeout=1800,
        env={**os.environ, "OFFSITE_DEB_VERSION": "0.1.0+upgrade1"})
    deb = next(newer.glob("offsite_*_all.deb"))
    g.write(f"/tmp/{deb.name}", deb.read_bytes())
    upgraded = g.run(["apt-get", "install", "-y", "--no-install-recommends", f"/tmp/{deb.name}"],
                     timeout=600)
    assert g.run(["dpkg-query", "-W", "-f=${Version}", "offsite"]).stdout == "0.1.0+upgrade1"
    # restarted onto the new code (its start may still be finishing on a busy machine),
    # and not by a crash
    g.wait_until("the agent to be up again", lambda: show(
        g, "offsite-agent.service", "ActiveState") == "active", 120)
    assert show(g, "offsite-agent.service", "MainPID") not in ("0", agent_pid), upgraded.stdout
    assert show(g, "offsite-agent.service", "NRestarts") == "0", g.run(
        ["journalctl", "-u", "offsite-agent.service", "-o", "cat", "--no-pager"]).stdout
    assert g.run(["test", "-f", f"{UNITS}/offsite-weekly.timer"], check=False).returncode == 0
    assert show(g, "offsite-held.service", "MainPID") == job_pid  # still the same run
    g.run(["systemctl", "stop", "test-holder.service"])
    g.wait_until("the held job to end", lambda: show(
        g, "offsite-held.service", "ActiveState") in ("inactive", "failed"), 300)
    assert show(g, "offsite-held.service", "Result") == "success"

    removed = g.run(["apt-get", "remove", "-y", "offsite"], timeout=600)
    assert "after installing offsite again, run: offsite install" in removed.stdout
    left = g.run(["grep", "-rl", "/usr/sbin/offsite", UNITS], check=False)
    assert left.stdout == "", left.stdout  # nothing points at the program that is gone
    assert show(g, "offsite-agent.service", "ActiveState") == "inactive"
    assert show(g, "offsite-weekly.timer", "LoadState") == "not-found"
    assert g.run(["test", "-f", CONFIG], check=False).returncode == 0

    g.run(["sh", "-c", "mkdir -p /var/lib/offsite/luks-headers && echo header > "
           "/var/lib/offsite/luks-headers/1.img"])
    purged = g.run(["apt-get", "purge", "-y", "offsite"], timeout=600)
    assert "kept in /var/lib/offsite" in purged.stdout, purged.stdout
    assert g.run(["cat", "/var/lib/offsite/luks-headers/1.img"]).stdout == "header\n"
    assert g.run(["test", "-e", "/var/lib/offsite/history.db"], check=False).returncode != 0
