"""The jobs that talk to another machine, on each Debian release's own OpenSSH, rsync and
borg (Debian 12: OpenSSH 9.2, rsync 3.2, borg 1.2; Debian 13: OpenSSH 10, rsync 3.4,
borg 1.4), offsite from its package: a pull through keys that can only read one path, a
push of an encrypted repository through a key that can only deliver, and the restore test
of what was pushed. The far side is the guest's own sshd on 127.0.0.1 (the system tier
runs the same strands on this machine's Debian 12 in far more detail)."""

from __future__ import annotations

import json

import pytest

from offsite import unitnames

from .guest import SUITES, Guest
from .test_luks import CONFIG, REPO, _last_run, encrypted_repository
from .test_targets import start_job

OFFSITE = ["offsite", "--config", CONFIG]
FAR = "/srv/far"  # what the "remote host" holds for the pull
HOLDING = "/srv/holding/vps"
PUSHED = "/srv/far-push"  # where the push delivers


def _sshd(g: Guest) -> str:
    """The guest's own sshd on 127.0.0.1 (root by key only, Debian's defaults); its host
    key as offsite's configuration pins it."""
    g.run(["sh", "-c", "mkdir -p /run/sshd -m 0755 && ssh-keygen -A && "
           "mkdir -p -m 0700 /root/.ssh && touch /root/.ssh/authorized_keys && "
           "chmod 0600 /root/.ssh/authorized_keys"])
    g.run(["systemd-run", "--unit", "test-sshd", "/usr/sbin/sshd", "-D", "-e",
           "-o", "ListenAddress=127.0.0.1"])
    g.wait_until("sshd to listen", lambda: ":0016 00000000:0000 0A" in g.run(
        ["cat", "/proc/net/tcp"]).stdout, 60)  # port 22, LISTEN
    return " ".join(g.run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[:2])


def _why(g: Guest, job: str) -> str:
    return f"{_last_run(g, job)}\n" + g.run(
        ["journalctl", "-o", "cat", "-n", "40", "--no-pager", "-u", unitnames.job_unit(job)]
    ).stdout


@pytest.mark.parametrize("guest", SUITES, indirect=True)  # Debian 12 and 13
def test_pull_push_and_restore_test_over_each_releases_ssh(guest: Guest) -> None:
    g = guest
    host_key = _sshd(g)
    repository = encrypted_repository(g)
    g.run(["sh", "-c", f"mkdir -p /srv/data {FAR}/data/sub {PUSHED} && "
           "head -c 300000 /dev/urandom > /srv/data/one && "
           f"printf 'alpha\\n' > {FAR}/data/a.txt && "
           f"head -c 70000 /dev/urandom > {FAR}/data/sub/b.bin && "
           f". /root/.borg-env && borg create {REPO}::first /srv/data"], timeout=600)
    far = {"host": "127.0.0.1", "user": "root", "host_key": host_key}
    g.write(CONFIG, json.dumps({
        "repositories": {"main": repository},
        "jobs": {
            "vps": {"kind": "pull", "source": {**far, "paths": [f"{FAR}/data"]},
                    "destination": HOLDING},
            "far": {"kind": "push", "repositories": ["main"], "to": {**far, "path": PUSHED}},
            "proof": {"kind": "restore-test", "repositories": ["main"], "push": "far",
                      "sample": 10},
        },
        "notify": {"led": {"enabled": False}},
    }))
    g.run([*OFFSITE, "install"], timeout=600)
    keys = [line for job in ("vps", "far")
            for line in g.run([*OFFSITE, "ssh-key", job, "--from", "127.0.0.1"]
                              ).stdout.splitlines()]
    assert all(line.startswith('restrict,from="127.0.0.1",command="') for line in keys), keys
    g.write("/root/.ssh/authorized_keys", "\n".join(keys) + "\n", mode=0o600)

    # the pull: the far side's files, as they were
    assert start_job(g, unitnames.job_unit("vps")), _why(g, "vps")
    assert g.run(["cat", f"{HOLDING}{FAR}/data/a.txt"]).stdout == "alpha\n"
    assert g.run(["cmp", f"{FAR}/data/sub/b.bin", f"{HOLDING}{FAR}/data/sub/b.bin"]
                 ).returncode == 0

    # the push: a whole copy borg checks (a borg of its own: the copy has the source's id)
    assert start_job(g, unitnames.job_unit("far")), _why(g, "far")
    copy = g.run(["sh", "-c", f". /root/.borg-env && export BORG_BASE_DIR=$(mktemp -d) && "
                  f"borg check {PUSHED}/main && borg list --short {PUSHED}/main"],
                 timeout=600).stdout.split()
    assert copy == ["first"], copy
    assert g.run(["sh", "-c", f"head -c 9 {PUSHED}/offsite-recovery/keys/main.key"]
                 ).stdout == "BORG_KEY "

    # the restore test of the pushed copy, fetched with the read-only key
    assert start_job(g, unitnames.job_unit("proof")), _why(g, "proof")

    # the push key on this release's sshd: it delivers and does nothing else
    denied = g.run(["ssh", "-F", "none", "-i", "/var/lib/offsite/ssh/far/push", "-o",
                    "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "root@127.0.0.1",
                    "cat", "/etc/shadow"], check=False)
    assert denied.returncode != 0 and "root:" not in denied.stdout, denied
