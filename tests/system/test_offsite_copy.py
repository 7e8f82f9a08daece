"""The off-site copy end to end in the sandbox systemd: plug, copy inside the backup
namespace, unmount, record; nothing of it visible outside the namespace."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from offsite import render
from offsite.run import Result
from offsite.sandbox import Sandbox

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"
INTERNAL = "33333333-4444-5555-6666-777777777777"
DRIVE = "44444444-5555-6666-7777-888888888888"
BORG_ENV = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}


def config_text() -> str:
    return textwrap.dedent(f"""\
        drives:
          d1: {{uuid: {DRIVE}, type: plain, mount: /mnt/offsite}}
        repositories:
          main: {{path: /backup/borg/main}}
        jobs:
          copy:
            kind: mirror
            repositories: [main]
            drive: d1
        namespace:
          mounts:
            - {{what: "UUID={INTERNAL}", where: /backup, type: ext4}}
        """)


def in_namespace(box: Sandbox, argv: list[str], check: bool = True) -> Result:
    status = box.run([str(OFFSITE), "--config", CONFIG, "namespace", "status"]).stdout
    pid = json.loads(status)["pid"]
    return box.run(["nsenter", f"--target={pid}", "--mount", "--", *argv], check=check,
                   env=BORG_ENV, timeout=300)


def journal(box: Sandbox, *matches: str) -> list[dict[str, str]]:
    out = box.run(["journalctl", "--no-pager", "-o", "json", *matches]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_plugging_the_drive_copies_the_repository_inside_the_namespace(sandbox: Sandbox) -> None:
    sandbox.plug(sandbox.make_drive("internal", INTERNAL, size_mb=128))
    sandbox.write(CONFIG, config_text())
    sandbox.run([str(OFFSITE), "--config", CONFIG, "install"])
    sandbox.systemctl("start", "offsite-namespace.service")
    # The repository lives on the internal backup filesystem, mounted only in the namespace.
    in_namespace(sandbox, ["borg", "init", "--make-parent-dirs", "--encryption=none", "--",
                           "/backup/borg/main"])
    in_namespace(sandbox, ["sh", "-c", "head -c 300000 /dev/urandom > /tmp/data && "
                           "borg create /backup/borg/main::first /tmp/data"])
    outside = sandbox.run(["findmnt", "--noheadings", "--output", "TARGET"]).stdout.split()
    assert "/backup" not in outside

    unit = render.job_unit("copy", "d1")
    drive = sandbox.plug(sandbox.make_drive("d1", DRIVE, size_mb=128))
    sandbox.wait_until("the copy to finish", lambda: any(
        e.get("JOB_RESULT") for e in journal(sandbox, "_PID=1", f"UNIT={unit}", "JOB_TYPE=start")),
        timeout=120)
    results = [e["JOB_RESULT"] for e in journal(sandbox, "_PID=1", f"UNIT={unit}", "JOB_TYPE=start")
               if "JOB_RESULT" in e]
    messages = [e["MESSAGE"] for e in journal(sandbox, "JOB=copy")]
    assert results == ["done"], messages
    assert any("safe to remove" in m for m in messages), messages
    # The copy reports progress to the journal as structured lines (not one per file).
    progress = [e for e in journal(sandbox, "JOB=copy") if "PROGRESS_BYTES" in e]
    assert progress and progress[-1]["MESSAGE"].startswith("copy: ")
    assert progress[-1]["PROGRESS_BYTES"] == progress[-1]["PROGRESS_TOTAL"]

    # Recorded for `offsite drives` and the LED.
    record = json.loads(sandbox.host_path(f"/var/lib/offsite/drives/{DRIVE}.json").read_text())
    assert record["last_copy_bytes"] > 300_000 and record["last_job"] == "copy"
    listing = sandbox.run([str(OFFSITE), "--config", CONFIG, "drives"]).stdout
    assert "d1" in listing and "just now" in listing and "KiB" in listing
    # Unmounted again, and never visible outside the namespace.
    outside = sandbox.run(["findmnt", "--noheadings", "--output", "TARGET"]).stdout.split()
    assert "/mnt/offsite" not in outside
    assert "/mnt/offsite" not in in_namespace(sandbox, ["findmnt", "--noheadings", "--output",
                                                        "TARGET"]).stdout.split()
    # What the drive holds is a repository borg accepts, with the archive.
    in_namespace(sandbox, ["mount", f"/dev/disk/by-uuid/{DRIVE}", "/mnt/offsite"])
    try:
        in_namespace(sandbox, ["borg", "check", "--", "/mnt/offsite/main"])
        archives = in_namespace(sandbox, ["borg", "list", "--short", "--", "/mnt/offsite/main"])
        assert archives.stdout.split() == ["first"]
    finally:
        in_namespace(sandbox, ["umount", "/mnt/offsite"])
    sandbox.unplug(drive)


def test_inside_the_namespace_only_the_targets_are_writable(sandbox: Sandbox) -> None:
    sandbox.plug(sandbox.make_drive("internal", INTERNAL, size_mb=64))
    sandbox.write(CONFIG, config_text())
    sandbox.run([str(OFFSITE), "--config", CONFIG, "install"])
    sandbox.systemctl("start", "offsite-namespace.service")
    for path in ("/etc/offsite-was-here", "/usr/offsite-was-here", "/root/offsite-was-here"):
        denied = in_namespace(sandbox, ["touch", path], check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, path
    for path in ("/backup/ok", "/var/lib/offsite/ok", "/tmp/ok"):
        in_namespace(sandbox, ["touch", path])
    # /tmp inside is the jobs' own.
    assert not sandbox.host_path("/tmp/ok").exists()


def test_a_drive_job_started_by_hand_without_the_drive_is_a_skip(sandbox: Sandbox) -> None:
    sandbox.plug(sandbox.make_drive("internal", INTERNAL, size_mb=64))
    sandbox.write(CONFIG, config_text())
    sandbox.run([str(OFFSITE), "--config", CONFIG, "install"])
    sandbox.systemctl("start", "offsite-namespace.service")
    result = sandbox.run([str(OFFSITE), "--config", CONFIG, "exec", "copy"], check=False)
    assert result.returncode == 0
    assert "not plugged in" in result.stderr
