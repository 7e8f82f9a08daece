"""Mail through the machine's own MTA (issue #22), from inside the hardened outbox unit:
msmtp-mta relaying to an SMTP server on loopback, nullmailer's queue and its daemon
relaying there too, postfix delivering to a local mailbox. Each MTA is a Debian package
installed by the test into the sandbox (its copy-on-write overlay of this machine; the
machine itself gets nothing) and runs under the sandbox's systemd."""

from __future__ import annotations

import json
import mailbox
import sys
from pathlib import Path
from typing import Any

from offsite_lab.sandbox import Sandbox

from offsite import unitnames

from . import repos
from .records import history
from .servers import REFUSED, SmtpServer, wait_for

OFFSITE = str(Path(sys.prefix) / "bin" / "offsite")
CONFIG = "/etc/offsite/offsite.yaml"
REPO = "/srv/borg/repo"
UNIT = unitnames.job_unit("check")
SPOOL = "/var/lib/offsite/spool"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def apt_install(box: Sandbox, *packages: str, preseed: str = "") -> None:
    """Install packages into the sandbox from Debian's archive; their services are not
    started by the install (the test configures, then starts them)."""
    box.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", mode=0o755)
    if preseed:
        box.run(["debconf-set-selections"], input=preseed)
    result = box.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                     env=APT_ENV, timeout=600, check=False)
    if result.returncode != 0:  # the package lists may be older than the archive
        box.run(["apt-get", "update"], env=APT_ENV, timeout=600)
        box.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                env=APT_ENV, timeout=600)
    box.run(["rm", "-f", "/usr/sbin/policy-rc.d"])


def config(to: str = "admin@example.org") -> dict[str, Any]:
    """No smtp: section: the local sendmail (/usr/sbin/sendmail)."""
    return {
        "repositories": {"repo": {"path": REPO, **repos.SETTINGS}},
        "jobs": {"check": {"kind": "borg-check", "repositories": ["repo"]}},
        "notify": {"email": {"to": [to], "from": "offsite@nas.example.org",
                             "retry_every": "2s"}},
    }


def install(box: Sandbox, cfg: dict[str, Any]) -> None:
    box.write(CONFIG, json.dumps(cfg, indent=1))
    box.run([OFFSITE, "--config", CONFIG, "install"])


def fail_then_recover(box: Sandbox) -> None:
    """The job fails (no repository yet: a failure mail), then is fixed (a recovery mail)."""
    assert box.systemctl("start", "--", UNIT, check=False).returncode != 0
    repos.init(box, REPO)
    box.systemctl("try-restart", "offsite-namespace.service")
    assert box.systemctl("start", "--", UNIT, check=False).returncode == 0
    wait_for("both runs to be recorded", lambda: len(history(box)) == 2)


def outbox_says(box: Sandbox) -> str:
    return box.journal(unit=unitnames.OUTBOX_SERVICE)


def spooled(box: Sandbox) -> list[Path]:
    directory = box.host_path(SPOOL)
    return sorted(directory.glob("[0-9]*.json")) if directory.exists() else []


def subjects_sent(host: str) -> list[str]:
    return [f"[offsite] {host}: check FAILED (exit code 1)",
            f"[offsite] {host}: check recovered after 1 failure"]


def test_msmtp_mta_relays_the_failure_recovery_and_test_mail(sandbox: Sandbox) -> None:
    apt_install(sandbox, "msmtp-mta")
    with SmtpServer("plain") as server:
        sandbox.write("/etc/msmtprc", f"defaults\nauth off\ntls off\naccount default\n"
                      f"host 127.0.0.1\nport {server.port}\nfrom nas@example.org\n")
        install(sandbox, config())
        fail_then_recover(sandbox)
        host = sandbox.run(["hostname"]).stdout.strip()
        got = server.inbox.wait(2)
        assert [m["Subject"] for m in got] == subjects_sent(host)
        sandbox.run([OFFSITE, "--config", CONFIG, "notify", "test"])
        test_mail = server.inbox.wait(3)[2]
        assert "test" in test_mail["Subject"].lower(), test_mail["Subject"]
        assert all(m["From"] == "offsite@nas.example.org" for m in server.inbox.wait(3))
    assert not spooled(sandbox)


def test_msmtp_refused_or_no_mta_at_all_keeps_the_mail_spooled_and_says_why(
        sandbox: Sandbox) -> None:
    # no MTA installed: sendmail is missing
    install(sandbox, config())
    assert sandbox.systemctl("start", "--", UNIT, check=False).returncode != 0
    wait_for("the failure mail to be tried", lambda: "not sent" in outbox_says(sandbox), 60)
    assert "/usr/sbin/sendmail is not installed" in outbox_says(sandbox), outbox_says(sandbox)
    assert len(spooled(sandbox)) == 1
    # an MTA that refuses the recipient: still spooled, msmtp's own words in the journal
    apt_install(sandbox, "msmtp-mta")
    with SmtpServer("plain") as server:
        sandbox.write("/etc/msmtprc", f"defaults\nauth off\ntls off\naccount default\n"
                      f"host 127.0.0.1\nport {server.port}\nfrom nas@example.org\n")
        sandbox.run([OFFSITE, "--config", CONFIG, "notify", "flush", "--now"])
        assert len(server.inbox.wait(1)) == 1 and not spooled(sandbox)  # the waiting one
        install(sandbox, config(to=REFUSED))
        refused = sandbox.run([OFFSITE, "--config", CONFIG, "notify", "test"], check=False)
        assert refused.returncode == 1, refused
        assert "the local sendmail failed" in refused.stderr, refused.stderr
        assert "stays in the spool" in refused.stderr
        assert "the local sendmail failed" in outbox_says(sandbox)
        assert len(spooled(sandbox)) == 1 and len(server.inbox.messages) == 1


def test_nullmailer_queues_and_its_daemon_relays(sandbox: Sandbox) -> None:
    apt_install(sandbox, "nullmailer", preseed="nullmailer shared/mailname string nas.example.org\n")
    with SmtpServer("plain") as server:
        sandbox.write("/etc/nullmailer/remotes", f"127.0.0.1 smtp --port={server.port}\n",
                      mode=0o640)
        sandbox.run(["chgrp", "mail", "/etc/nullmailer/remotes"])
        sandbox.systemctl("restart", "nullmailer.service")
        install(sandbox, config())
        fail_then_recover(sandbox)
        host = sandbox.run(["hostname"]).stdout.strip()
        got = server.inbox.wait(2, timeout=120)
        assert sorted(m["Subject"] for m in got) == sorted(subjects_sent(host))
    assert not spooled(sandbox)


def test_postfix_delivers_to_a_local_mailbox(sandbox: Sandbox) -> None:
    apt_install(sandbox, "postfix", preseed="\n".join([
        "postfix postfix/main_mailer_type select Local only",
        "postfix postfix/mailname string nas.example.org", ""]))
    # local delivery only: no SMTP listener (the sandbox shares this machine's network)
    sandbox.run(["postconf", "-M#", "smtp/inet"])
    sandbox.run(["postconf", "-e", "mydestination=localhost, nas.example.org"])
    sandbox.systemctl("restart", "postfix.service")
    install(sandbox, config(to="root@localhost"))
    fail_then_recover(sandbox)
    sandbox.run([OFFSITE, "--config", CONFIG, "notify", "test"])
    host = sandbox.run(["hostname"]).stdout.strip()

    def delivered() -> list[str]:
        path = sandbox.host_path("/var/mail/root")
        return [str(m["Subject"]) for m in mailbox.mbox(path)] if path.exists() else []

    wait_for("three mails in root's mailbox", lambda: len(delivered()) == 3, 120)
    assert delivered()[:2] == subjects_sent(host)
    assert not spooled(sandbox)

