"""The scheduled strands in the sandbox systemd: a pull over SSH from a real sshd on
127.0.0.1 with keys that can do one thing only, a timer-started borgmatic job, borg check
passing and failing, the restore test, and jobs on the same data taking turns."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from offsite_lab.sandbox import Sandbox

from offsite import unitnames
from offsite.run import Result

from . import repos
from .records import history, messages, runs, start
from .servers import SmtpServer, T, free_port, start_sshd, wait_for

OFFSITE = str(Path(sys.prefix) / "bin" / "offsite")
PYTHON = str(Path(sys.prefix) / "bin" / "python")
CONFIG = "/etc/offsite/offsite.yaml"
FAR = "/srv/far"  # what the "remote host" holds (the far side is the sandbox itself)
HOLDING = "/srv/holding/vps"
REPO = "/srv/borg/main"
BORGMATIC = "/etc/borgmatic.d/main.yaml"


def offsite(box: Sandbox, *args: str, check: bool = True) -> Result:
    return box.run([OFFSITE, "--config", CONFIG, *args], check=check)


@pytest.fixture
def far_side(sandbox: Sandbox) -> Iterator[int]:
    """A real sshd on 127.0.0.1 inside the sandbox, and what the "remote host" holds."""
    sandbox.run(["mkdir", "-p", f"{FAR}/data/sub", f"{FAR}/etc"])  # HOLDING: made by offsite
    sandbox.write(f"{FAR}/data/a.txt", "alpha\n")
    sandbox.write(f"{FAR}/data/sub/b.bin", bytes(range(256)) * 100)
    sandbox.write(f"{FAR}/etc/conf", "setting=1\n")
    sandbox.write("/tmp/x", "must survive\n")
    yield start_sshd(sandbox)


def pull_config(port: int, host_key: str, paths: list[str]) -> dict[str, Any]:
    log = f"{FAR}/log"
    return {
        "jobs": {"vps": {
            "kind": "pull",
            "source": {"host": "127.0.0.1", "port": port, "user": "root", "paths": paths,
                       "before": f"sh -c 'echo before >> {log}'",
                       "after": f"sh -c 'echo after >> {log}'", "host_key": host_key},
            "destination": HOLDING,
        }},
    }


def install(box: Sandbox, cfg: dict[str, Any]) -> None:
    box.write(CONFIG, json.dumps(cfg, indent=1))
    offsite(box, "install")


def authorize(box: Sandbox) -> list[str]:
    lines = offsite(box, "ssh-key", "vps", "--from", "127.0.0.1").stdout.splitlines()
    box.write(f"{T}/authorized_keys", "\n".join(lines) + "\n", mode=0o600)
    return lines


def ssh(box: Sandbox, key: str, port: int, *command: str, bind: str = "127.0.0.1") -> Any:
    return box.run(["ssh", "-F", "none", "-i", f"/var/lib/offsite/ssh/vps/{key}", "-p", str(port),
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", f"BindAddress={bind}",
                    "-l", "root", "127.0.0.1", *command], check=False)


def test_a_pull_copies_with_keys_that_can_do_nothing_else(sandbox: Sandbox, far_side: int) -> None:
    port = far_side
    host_key = sandbox.host_path(f"{T}/host_key.pub").read_text().split(" ")[:2]
    install(sandbox, pull_config(port, " ".join(host_key), [f"{FAR}/data", f"{FAR}/etc"]))
    # no keys yet: the job says what to do
    assert not start(sandbox, "vps")
    assert any("offsite ssh-key vps --from ADDRESS" in m or "no SSH key" in m
               for m in messages(sandbox, "vps")), messages(sandbox, "vps")

    lines = authorize(sandbox)
    assert len(lines) == 4  # before, two paths, after
    for line in lines:
        assert line.startswith('restrict,from="127.0.0.1",command="')
    assert f'command="rrsync -ro {FAR}/data"' in lines[1]
    assert oct(sandbox.host_path("/var/lib/offsite/ssh/vps/path-1").stat().st_mode & 0o777) == "0o600"

    assert start(sandbox, "vps"), messages(sandbox, "vps")
    assert oct(sandbox.host_path(HOLDING).stat().st_mode & 0o777) == "0o700"
    assert sandbox.host_path(f"{HOLDING}/srv/far/data/a.txt").read_text() == "alpha\n"
    assert sandbox.host_path(f"{HOLDING}/srv/far/data/sub/b.bin").read_bytes() == \
        bytes(range(256)) * 100
    assert sandbox.host_path(f"{HOLDING}/srv/far/etc/conf").read_text() == "setting=1\n"
    assert sandbox.host_path(f"{FAR}/log").read_text() == "before\nafter\n"
    assert history(sandbox)[-1] == ("vps", "success")

    # What a thief with the path key can do: nothing but read that one path.
    denied = ssh(sandbox, "path-1", port, "rm", "-rf", "/tmp/x")
    assert denied.returncode != 0 and sandbox.host_path("/tmp/x").exists(), denied
    sandbox.write("/tmp/evil", "x")
    rsh = ("ssh -F none -i /var/lib/offsite/ssh/vps/path-1 -o BatchMode=yes "
           f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {port} -l root")
    write = sandbox.run(["rsync", "-e", rsh, "/tmp/evil", "127.0.0.1:/"], check=False)
    assert write.returncode != 0 and not sandbox.host_path(f"{FAR}/data/evil").exists(), write
    for outside in ("127.0.0.1:/../etc/", "127.0.0.1:/etc/passwd", f"127.0.0.1:{FAR}/etc/conf"):
        sandbox.run(["rm", "-rf", "/tmp/got"])
        stolen = sandbox.run(["rsync", "-a", "-e", rsh, outside, "/tmp/got"], check=False)
        assert stolen.returncode != 0 and not sandbox.host_path("/tmp/got").exists(), stolen
    # the key is good only from the address it was given for
    assert ssh(sandbox, "path-1", port, bind="127.0.0.2").returncode == 255
    # the before key runs its command and nothing else, whatever is asked
    asked = ssh(sandbox, "before", port, "cat", "/etc/shadow")
    assert "root:" not in asked.stdout
    assert sandbox.host_path(f"{FAR}/log").read_text() == "before\nafter\nbefore\n"


def test_after_runs_when_the_copy_fails(sandbox: Sandbox, far_side: int) -> None:
    host_key = sandbox.host_path(f"{T}/host_key.pub").read_text().split(" ")[:2]
    install(sandbox, pull_config(far_side, " ".join(host_key), [f"{FAR}/data", f"{FAR}/gone"]))
    authorize(sandbox)
    assert not start(sandbox, "vps")
    assert sandbox.host_path(f"{FAR}/log").read_text() == "before\nafter\n"
    assert history(sandbox)[-1] == ("vps", "failed")
    assert any(f"pulling 127.0.0.1:{FAR}/gone failed" in m for m in messages(sandbox, "vps"))


def test_a_stop_reaches_the_far_side_command_and_after_still_runs(sandbox: Sandbox,
                                                                  far_side: int) -> None:
    host_key = sandbox.host_path(f"{T}/host_key.pub").read_text().split(" ")[:2]
    cfg = pull_config(far_side, " ".join(host_key), [f"{FAR}/data"])
    cfg["jobs"]["vps"]["source"]["before"] = "sleep 600"  # a container stopping, say
    install(sandbox, cfg)
    authorize(sandbox)
    unit = unitnames.job_unit("vps")
    sandbox.systemctl("start", "--no-block", "--", unit)
    wait_for("the far side's before command", lambda: any(
        "on 127.0.0.1: sleep 600" in m for m in messages(sandbox, "vps")), 60)
    sandbox.systemctl("stop", "--", unit)
    wait_for("the stop to be recorded", lambda: any(j == "vps" for j, _ in history(sandbox)), 60)
    assert sandbox.host_path(f"{FAR}/log").read_text() == "after\n"
    journal = sandbox.journal(unit=unit)
    assert "asked to stop (SIGTERM); passed on to ssh" in journal, journal
    result, detail = runs(sandbox, "vps")[-1]
    assert result == "interrupted" and "stopped by hand" in detail, detail
    assert "ended cleanly" in detail, detail


def borgmatic_setup(box: Sandbox) -> None:
    box.run(["mkdir", "-p", "/srv/data", HOLDING])
    for i in range(30):
        box.write(f"/srv/data/file{i:02d}", f"content {i}\n" * (i + 1))
    # encrypted, the passphrase from borgmatic's own setting: offsite's borg-check and
    # restore-test jobs on this repository use it too
    box.write(BORGMATIC, "\n".join([
        "location:", "    source_directories:", "        - /srv/data", f"        - {HOLDING}",
        "    repositories:", f"        - {REPO}",
        "storage:", f"    encryption_passcommand: cat {repos.SECRET}",
        "retention:", "    keep_daily: 7", ""]))
    repos.init(box, REPO)


def borg_config(smtp_port: int, schedule: str | None = None) -> dict[str, Any]:
    nightly: dict[str, Any] = {"kind": "borgmatic", "repositories": ["main"],
                               "reads": [HOLDING]}
    if schedule:
        nightly["schedule"] = schedule
    return {
        "repositories": {"main": {"path": REPO, "borgmatic_config": BORGMATIC}},
        "jobs": {
            "nightly": nightly,
            "weekly": {"kind": "borg-check", "repositories": ["main"]},
            "monthly": {"kind": "restore-test", "repositories": ["main"], "sample": 30},
        },
        "notify": {"email": {"to": ["admin@example.org"], "retry_every": "2s",
                             "smtp": {"host": "127.0.0.1", "port": smtp_port,
                                      "security": "none"}}},
    }


def test_timer_borgmatic_then_check_and_restore_test_pass_and_fail(sandbox: Sandbox) -> None:
    borgmatic_setup(sandbox)
    with SmtpServer("plain") as server:
        install(sandbox, borg_config(server.port, schedule="*:*:0/10"))
        # the timer starts the borgmatic job by itself (AccuracySec=1min: within a minute)
        wait_for("the timer to run the borgmatic job", lambda: ("nightly", "success")
                 in history(sandbox), timeout=100)
        archives = repos.borg(sandbox, "list", "--short", "--", REPO).stdout.split()
        assert archives
        install(sandbox, borg_config(server.port))  # no more timer runs from here on

        assert start(sandbox, "weekly"), messages(sandbox, "weekly")
        progress = [e for e in sandbox.entries("JOB=weekly") if "PROGRESS_PERCENT" in e]
        assert progress and progress[0]["MESSAGE"].startswith("Checking segments")
        assert start(sandbox, "monthly"), messages(sandbox, "monthly")
        assert any("passed: 30 same" in m for m in messages(sandbox, "monthly")), \
            messages(sandbox, "monthly")

        # a source file whose content differs while its size and mtime are as archived
        sandbox.run(["sh", "-c", "cp -p /srv/data/file05 /tmp/keep && "
                     "tr a-z A-Z < /tmp/keep > /srv/data/file05 && "
                     "touch -r /tmp/keep /srv/data/file05"])
        assert not start(sandbox, "monthly")
        assert any("/srv/data/file05 differs" in m for m in messages(sandbox, "monthly"))
        sandbox.run(["cp", "-p", "/tmp/keep", "/srv/data/file05"])
        assert start(sandbox, "monthly")

        # a segment corrupted on purpose: the check fails, with mail
        segment = max(sandbox.host_path(f"{REPO}/data").rglob("[0-9]*"),
                      key=lambda p: p.stat().st_size)
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0xFF
        segment.write_bytes(bytes(data))
        assert not start(sandbox, "weekly")
        # mails so far: monthly failed, monthly recovered, and this one
        weekly = server.inbox.wait(3)[2]
        assert "weekly FAILED (exit code 1)" in weekly["Subject"], weekly["Subject"]
        assert "Why: borg check failed (exit code 1)" in weekly.get_body().get_content()  # type: ignore[union-attr]
        assert not start(sandbox, "monthly")  # borg cannot extract what is broken


def test_a_pull_and_borgmatic_on_the_same_holding_directory_take_turns(
        sandbox: Sandbox, far_side: int) -> None:
    borgmatic_setup(sandbox)
    host_key = " ".join(sandbox.host_path(f"{T}/host_key.pub").read_text().split(" ")[:2])
    # a slow far side: the "before" command takes 3 s
    cfg = borg_config(free_port())
    cfg["jobs"].update(pull_config(far_side, host_key, [f"{FAR}/data"])["jobs"])
    cfg["jobs"]["vps"]["source"]["before"] = "sleep 3"
    install(sandbox, cfg)
    authorize(sandbox)
    sandbox.systemctl("start", "--no-block", unitnames.job_unit("vps"))
    wait_for("the pull to begin", lambda: any("on 127.0.0.1: sleep 3" in m
                                             for m in messages(sandbox, "vps")), 30)
    began = time.monotonic()
    assert start(sandbox, "nightly"), messages(sandbox, "nightly")
    waited = time.monotonic() - began
    assert any(f"waiting for {HOLDING}" in m and "vps" in m for m in messages(sandbox, "nightly"))
    wait_for("the pull to be recorded", lambda: ("vps", "success") in history(sandbox), 30)
    assert ("nightly", "success") in history(sandbox)
    assert waited > 1.5  # it waited for the pull, which held the directory for 3 s
    # and borgmatic's archive has what the pull brought in
    archive = repos.borg(sandbox, "list", "--last", "1", "--short", "--", REPO).stdout.strip()
    listed = repos.borg(sandbox, "list", "--short", "--", f"{REPO}::{archive}").stdout
    assert f"{HOLDING.lstrip('/')}/srv/far/data/a.txt" in listed
