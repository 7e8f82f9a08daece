"""Notifications against real servers on loopback: the failure mail from the OnFailure=
unit of a job failing in the sandbox systemd, SMTP in plain, STARTTLS and TLS modes with
login, the spool surviving a reboot, recovery mail, health pings, staleness alerts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from offsite_lab.sandbox import Sandbox, booted

from offsite import unitnames

from . import repos
from .records import history
from .servers import PASSWORD, REFUSED, USER, PingServer, SmtpServer, certificate, wait_for

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"
REPO = "/srv/borg/repo"
UNIT = unitnames.job_unit("check")
SPOOL = "/var/lib/offsite/spool"
PASSWORD_FILE = "/etc/offsite/smtp-password"


def config(smtp: dict[str, object], **notify: object) -> dict[str, Any]:
    """The test configuration as data (written as JSON, which is YAML too)."""
    return {
        "repositories": {"repo": {"path": REPO, **repos.SETTINGS}},
        "jobs": {"check": {"kind": "borg-check", "description": "Check of the test repository",
                           "repositories": ["repo"]}},
        "notify": {"email": {"to": ["admin@example.org"], "from": "offsite@nas.example.org",
                             "retry_every": "2s", "smtp": smtp}, **notify},
    }


def plain(port: int) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "security": "none"}


def install(box: Sandbox, cfg: dict[str, Any]) -> None:
    box.write(CONFIG, json.dumps(cfg, indent=1))
    box.run([str(OFFSITE), "--config", CONFIG, "check"])
    box.run([str(OFFSITE), "--config", CONFIG, "install"])


def run_job(box: Sandbox, unit: str = UNIT) -> bool:
    """Start the job's unit and wait for it; True if it succeeded."""
    return box.systemctl("start", "--", unit, check=False).returncode == 0


def spooled(box: Sandbox) -> list[Path]:
    directory = box.host_path(SPOOL)
    return sorted(directory.glob("[0-9]*.json")) if directory.exists() else []


def make_repo(box: Sandbox) -> None:
    repos.init(box, REPO)
    # the backup namespace makes writable what exists when it starts: start it afresh
    box.systemctl("try-restart", "offsite-namespace.service")


def test_a_failed_job_mails_its_status_and_only_this_runs_journal(sandbox: Sandbox) -> None:
    with SmtpServer("plain") as server:
        install(sandbox, config(plain(server.port)))
        assert not run_job(sandbox)  # no repository yet: borg check fails
        first = server.inbox.wait(1)[0]
        assert not run_job(sandbox)
        second = server.inbox.wait(2)[1]
        runs = history(sandbox)
        assert runs == [("check", "failed"), ("check", "failed")]
        ids = [e["_SYSTEMD_INVOCATION_ID"] for e in sandbox.entries("JOB=check")
               if "started, run" in e.get("MESSAGE", "")]
        assert len(ids) == 2

        host = sandbox.run(["hostname"]).stdout.strip()
        assert first["Subject"] == f"[offsite] {host}: check FAILED (exit code 1)"
        assert second["Subject"] == f"[offsite] {host}: check FAILED (exit code 1), 2nd failure in a row"
        body = second.get_body().get_content()  # type: ignore[union-attr]
        # this run's journal: its own start line and borg's error, not the first run's
        assert f"run {ids[1]}" in body and f"run {ids[0]}" not in body
        assert f"Why: opening repository repo failed (exit code 2): Repository {REPO} does not exist." \
            in body, body
        # systemctl status of the failed unit, and what to do next
        assert f"{UNIT} - offsite check: Check of the test repository" in body, body
        assert "Active: failed" in body
        assert f"journalctl _SYSTEMD_INVOCATION_ID={ids[1]}" in body
        assert "offsite run check" in body
        assert "Failing:   2 runs in a row" in body
        assert second["To"] == "admin@example.org"
        assert second["Auto-Submitted"] == "auto-generated"

        # fixed: the next run succeeds and sends one recovery mail
        make_repo(sandbox)
        assert run_job(sandbox)
        recovery = server.inbox.wait(3)[2]
        assert recovery["Subject"] == f"[offsite] {host}: check recovered after 2 failures"
        assert history(sandbox)[-1] == ("check", "success")
        # and another success sends nothing (no mail_on_success)
        assert run_job(sandbox)
        wait_for("the second success to be recorded", lambda: len(history(sandbox)) == 4)
        sandbox.systemctl("start", unitnames.OUTBOX_SERVICE)
        assert len(server.inbox.messages) == 3
        assert not spooled(sandbox)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_login_over_tls_with_the_password_from_a_file_or_a_credential(
        sandbox: Sandbox, tmp_path: Path, mode: str) -> None:
    cert, key = certificate(tmp_path)
    sandbox.write("/etc/offsite/ca.pem", cert.read_text())
    with SmtpServer(mode, login=True, cert=(cert, key)) as server:
        smtp: dict[str, object] = {"host": "127.0.0.1", "port": server.port, "security": mode,
                                   "username": USER, "ca_file": "/etc/offsite/ca.pem"}
        if mode == "starttls":
            sandbox.write("/etc/offsite/smtp-password", PASSWORD + "\n", mode=0o400)
            smtp["password_file"] = PASSWORD_FILE
        install(sandbox, config(smtp))
        if mode == "tls":
            # No password file: the password is the systemd credential offsite-smtp-password,
            # read from $CREDENTIALS_DIRECTORY. (systemd 252 in this sandbox makes the
            # credentials directory but leaves it empty, for SetCredential= and
            # LoadCredential= alike, so the flush runs here with the directory systemd
            # would have made.)
            sandbox.write("/run/credentials/test/offsite-smtp-password", PASSWORD, mode=0o400)
        assert not run_job(sandbox)
        if mode == "tls":
            wait_for("the failure to be spooled", lambda: len(spooled(sandbox)) == 1)
            flushed = sandbox.run([str(OFFSITE), "--config", CONFIG, "notify", "flush",
                                   "--now"], env={"CREDENTIALS_DIRECTORY": "/run/credentials/test"})
            assert "1 sent" in flushed.stdout, flushed
        message = server.inbox.wait(1)[0]
        assert "check FAILED" in message["Subject"]
        # the outbox removes the file after the server took it (and said goodbye): a moment later
        wait_for("the spool to empty", lambda: not spooled(sandbox), 30)


@pytest.mark.parametrize("problem", ["wrong password", "refused recipient", "untrusted certificate"])
def test_a_refused_mail_is_a_clear_journal_message_and_stays_spooled(
        sandbox: Sandbox, tmp_path: Path, problem: str) -> None:
    cert, key = certificate(tmp_path)
    sandbox.write("/etc/offsite/ca.pem", cert.read_text())
    password = "wrong" if problem == "wrong password" else PASSWORD
    sandbox.write("/etc/offsite/smtp-password", password, mode=0o400)
    with SmtpServer("starttls", login=True, cert=(cert, key)) as server:
        smtp: dict[str, object] = {"host": "127.0.0.1", "port": server.port,
                                   "security": "starttls", "username": USER,
                                   "password_file": PASSWORD_FILE}
        if problem != "untrusted certificate":
            smtp["ca_file"] = "/etc/offsite/ca.pem"
        text = config(smtp)
        if problem == "refused recipient":
            text["notify"]["email"]["to"] = [REFUSED]
        install(sandbox, text)
        assert not run_job(sandbox)
        expected = {
            "wrong password": "refused the login of offsite@example.org (wrong user name or password)",
            "refused recipient": f"refused every recipient: {REFUSED} (550",
            "untrusted certificate": "the server's certificate is not trusted",
        }[problem]
        wait_for("the outbox to log why", lambda: any(
            expected in e.get("MESSAGE", "") for e in sandbox.entries(
                f"_SYSTEMD_UNIT={unitnames.OUTBOX_SERVICE}")))
        assert not server.inbox.messages
        kept = spooled(sandbox)
        assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600
        assert kept[0].parent.stat().st_mode & 0o777 == 0o700
        assert json.loads(kept[0].read_text())["attempts"] >= 1
        # the failed mail is no failed unit
        assert sandbox.show(unitnames.OUTBOX_SERVICE, "Result") == "success"


def test_a_spooled_mail_survives_a_reboot_and_arrives_once(tmp_path: Path) -> None:
    port = SmtpServer().port  # a port nobody listens on yet
    keep = {"/var/lib/offsite": tmp_path / "state", "/etc/offsite": tmp_path / "etc"}
    for d in keep.values():
        d.mkdir()
    with booted(keep=keep) as box:
        repos.write_secret(box)
        install(box, config(plain(port)))
        assert not run_job(box)
        wait_for("the outbox to fail to connect", lambda: any(
            "cannot reach the mail server" in e.get("MESSAGE", "")
            for e in box.entries(f"_SYSTEMD_UNIT={unitnames.OUTBOX_SERVICE}")))
        assert len(spooled(box)) == 1
    # the machine is off; the mail waits on disk
    assert len(list((tmp_path / "state" / "spool").glob("[0-9]*.json"))) == 1
    with booted(keep=keep) as box, SmtpServer("plain", port=port) as server:
        repos.write_secret(box)
        # the sandbox's /etc/systemd is new at each boot: install again (the spool is kept)
        box.run([str(OFFSITE), "--config", CONFIG, "install"])
        messages = server.inbox.wait(1, timeout=90)
        assert "check FAILED" in messages[0]["Subject"]
        wait_for("the spool to empty", lambda: not spooled(box))
        # three more retry periods: nothing is sent twice
        wait_for("three more runs of the outbox", lambda: len(box.start_results(
            unitnames.OUTBOX_SERVICE)) >= 4, timeout=60)
        assert len(server.inbox.messages) == 1


def test_health_pings_arrive_in_order_and_success_mail_when_asked(sandbox: Sandbox) -> None:
    with SmtpServer("plain") as server, PingServer() as pings:
        cfg = config(plain(server.port),
                     healthchecks={"url": f"http://127.0.0.1:{pings.port}/ping"})
        cfg["jobs"]["check"]["mail_on_success"] = True
        install(sandbox, cfg)
        make_repo(sandbox)
        assert run_job(sandbox)
        assert pings.pings.wait(2) == ["/ping/check/start", "/ping/check"]
        assert "check succeeded" in server.inbox.wait(1)[0]["Subject"]
        sandbox.run(["rm", "-rf", "--", REPO])
        assert not run_job(sandbox)
        assert pings.pings.wait(4)[2:] == ["/ping/check/start", "/ping/check/fail"]
        assert "exit code 2" in pings.pings.seen[3][2]  # borg's, from the job's own words
        # the job unit itself has no network: the pings left through the outbox
        assert sandbox.show(UNIT, "PrivateNetwork") == "yes"


def test_staleness_alerts_once_and_a_skip_is_no_failure(sandbox: Sandbox) -> None:
    drive = "55555555-6666-7777-8888-999999999999"
    with SmtpServer("plain") as server:
        text = config(plain(server.port))
        text["drives"] = {"d1": {"uuid": drive, "type": "plain", "mount": "/mnt/offsite",
                                 "stale_after": "2s"}}
        text["jobs"]["copy"] = {"kind": "mirror", "repositories": ["repo"], "drive": "d1"}
        text["jobs"]["check"]["stale_after"] = "2s"
        install(sandbox, text)
        stale = [str(OFFSITE), "--config", CONFIG, "notify", "stale"]
        assert "nothing stale" in sandbox.run(stale).stdout  # watching starts now
        time.sleep(3)
        out = sandbox.run(stale).stdout
        assert "drive d1" in out and "job check" in out
        sandbox.systemctl("start", unitnames.OUTBOX_SERVICE)
        mail = server.inbox.wait(1)[0]
        assert "no off-site copy of drive d1" in mail["Subject"] and "(+1 more)" in mail["Subject"]
        # still stale the next day: no second mail within the week
        sandbox.run(stale)
        sandbox.systemctl("start", unitnames.OUTBOX_SERVICE)
        assert len(server.inbox.messages) == 1

        # a drive job with its drive not plugged in: a skip, recorded, no failure mail
        # (run as its unit runs it: exit 11 is success, the stop hook records it)
        sandbox.systemctl("start", "offsite-namespace.service")
        hook = f"{OFFSITE} --config {CONFIG} hook finish copy"
        result = sandbox.systemd_run([str(OFFSITE), "--config", CONFIG, "exec", "copy"],
                                     check=False, properties=["SuccessExitStatus=10 11",
                                                              f"ExecStopPost={hook}"])
        assert result.returncode == 0, result
        assert history(sandbox)[-1] == ("copy", "skipped")
        sandbox.systemctl("start", unitnames.OUTBOX_SERVICE)
        assert [m["Subject"] for m in server.inbox.messages] == [mail["Subject"]]
