"""A drive whose writes start failing, or start being silently dropped, in the middle of a
copy (issue #19), made with dm-flakey under the drive's LUKS container in the guest: the
copy fails saying so (the drive's error; or the read-back finding what was "written" is
not there), the LED never says "unplug now" for it, and the previous copy stays intact
(the next plug, the drive healthy again, completes a copy borg check accepts on it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .guest import Guest
from .test_luks import (
    CONFIG,
    COPY_PROCESS,
    REPO,
    _last_run,
    blank,
    encrypted_repository,
    enroll,
    format_luks,
    one_drive_config,
    remove_when_locked,
)

FLAKEY = "offsite-test-flakey"
OFFSET = 8192  # sectors: the container starts here, so the raw disk shows no signature


def _table(g: Guest, disk: str, fault: str = "") -> str:
    """fault: error_writes (every write fails) or drop_writes (every write is reported
    done and thrown away: a drive or bridge that lies); reads work either way."""
    sectors = int(g.run(["blockdev", "--getsz", disk]).stdout) - OFFSET
    if fault:  # always "down", and while down the fault applies
        return f"0 {sectors} flakey {disk} {OFFSET} 0 3600 1 {fault}"
    return f"0 {sectors} flakey {disk} {OFFSET} 86400 0"


def _plug(g: Guest, disk: str) -> None:
    """The drive appears (as a USB drive's device would): the flakey device is created."""
    g.run(["dmsetup", "create", FLAKEY, "--table", _table(g, disk)])
    g.run(["udevadm", "settle"])


def _unplug(g: Guest, uuid: str) -> None:
    remove_when_locked(g, uuid, FLAKEY)


WRITING = (  # the copy (not borg with-lock) with a file open for writing: frozen there
    "for i in $(seq 1200); do "
    f"for pid in $(pgrep -f '{COPY_PROCESS}'); do "
    "if ls -l /proc/$pid/fd 2>/dev/null | grep -q offsite-partial; then "
    "kill -STOP $pid; echo $pid; exit 0; fi; done; sleep 0.05; done; exit 1")


@pytest.mark.parametrize(("fault", "said"), [
    ("error_writes", "the drive failed at"),
    ("drop_writes", "is not what was written to it"),
])
def test_a_drive_failing_mid_copy(guest: Guest, tmp_path: Path, fault: str, said: str) -> None:
    g = guest
    g.run(["modprobe", "dm-flakey"])
    g.plug(blank(tmp_path / "d5.img", 200), "d5")
    disk = g.run(["readlink", "-f", "/dev/disk/by-id/virtio-d5"]).stdout.strip()
    g.run(["dmsetup", "create", FLAKEY, "--table", _table(g, disk)])
    format_luks(g, f"/dev/mapper/{FLAKEY}", "d5", "a passphrase")
    uuid = enroll(g, f"/dev/mapper/{FLAKEY}", "d5")
    g.run(["dmsetup", "remove", "--retry", FLAKEY])
    repository = encrypted_repository(g)
    g.run(["sh", "-c", f". /root/.borg-env && head -c 20000000 /dev/urandom > /srv/one && "
           f"borg create --compression=none {REPO}::one /srv/one"], timeout=600)
    g.write(CONFIG, one_drive_config("d5", uuid, repository, check_every="0"))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)
    # the drive's unlock unit stays "deactivating" for a while after it has locked the
    # drive (as its eject step can on a slow machine): each replug below lands in that
    # window, where systemd drops the start the plug asks for and the agent starts the job
    g.write("/etc/systemd/system/offsite-unlock-d5.service.d/slow-stop.conf",
            "[Service]\nExecStopPost=/bin/sleep 10\n")
    g.run(["systemctl", "daemon-reload"])

    _plug(g, disk)  # a first, healthy copy
    g.wait_until("the first copy", lambda: _last_run(g, "copy") == ("success", ""), 600)
    _unplug(g, uuid)

    g.run(["sh", "-c", f". /root/.borg-env && head -c 20000000 /dev/urandom > /srv/two && "
           f"borg create --compression=none {REPO}::two /srv/two"], timeout=600)
    agent_before = len(g.run(["journalctl", "-o", "cat", "-u", "offsite-agent"]).stdout)
    _plug(g, disk)
    frozen = g.run(["sh", "-c", WRITING], timeout=300, check=False)
    assert frozen.returncode == 0, g.run(["journalctl", "-o", "cat", "-u",
                                          "offsite-copy@d5.service"]).stdout
    # mid-copy, the drive starts failing (or dropping) every write
    g.run(["dmsetup", "suspend", "--nolockfs", FLAKEY])
    g.run(["dmsetup", "load", FLAKEY, "--table", _table(g, disk, fault)])
    g.run(["dmsetup", "resume", FLAKEY])
    g.run(["kill", "-CONT", frozen.stdout.strip()])
    g.wait_until("the copy to fail", lambda: (_last_run(g, "copy") or ("",))[0] == "failed", 300)
    _, detail = _last_run(g, "copy") or ("", "")
    assert said in detail, detail
    said = g.run(["journalctl", "-o", "cat", "-u", "offsite-agent"]).stdout[agent_before:]
    assert "LED: done" not in said, said  # never "unplug now" for a copy that failed

    # healthy again: the previous copy was intact, and the next plug completes a copy
    # that borg check accepts on the drive itself (check_every: 0)
    g.run(["dmsetup", "suspend", "--nolockfs", FLAKEY])
    g.run(["dmsetup", "load", FLAKEY, "--table", _table(g, disk)])
    g.run(["dmsetup", "resume", FLAKEY])
    _unplug(g, uuid)
    _plug(g, disk)
    g.wait_until("a copy after the fault", lambda: _last_run(g, "copy") == ("success", ""), 600)
    journal = g.run(["journalctl", "-o", "cat", "-u", "offsite-copy@d5.service"]).stdout
    assert journal.count("passed borg check") == 2, journal
    agent = g.run(["journalctl", "-o", "cat", "-u", "offsite-agent"]).stdout
    assert "drive d5 was plugged in again while its last run was still ending" in agent, agent
    _unplug(g, uuid)
    g.unplug("d5")
