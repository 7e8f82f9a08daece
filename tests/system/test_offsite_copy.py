"""The off-site copy end to end in the sandbox systemd: plug, copy inside the backup
namespace, unmount, record; nothing of it visible outside the namespace."""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
import time
from pathlib import Path

from offsite_lab.sandbox import Sandbox

from offsite import unitnames
from offsite.errors import EXIT_SKIPPED
from offsite.run import Result

from . import repos

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
          main: {{path: /backup/borg/main, passphrase_file: {repos.SECRET}}}
        jobs:
          copy:
            kind: mirror
            repositories: [main]
            drive: d1
        namespace:
          mounts:
            - {{what: "UUID={INTERNAL}", where: /backup, type: ext4}}
        """)


def in_namespace(box: Sandbox, argv: list[str], check: bool = True,
                 env: dict[str, str] | None = None) -> Result:
    status = box.run([str(OFFSITE), "--config", CONFIG, "namespace", "status"]).stdout
    pid = json.loads(status)["pid"]
    # The borg host id offsite's jobs use: where uuid.getnode() is random (no network card,
    # as in this sandbox) borg would otherwise take a killed job's lock for another host's.
    host_id = json.loads(box.host_path("/run/offsite/namespace.json").read_text())["borg_host_id"]
    return box.run(["nsenter", f"--target={pid}", "--mount", "--", *argv], check=check,
                   env={**BORG_ENV, **repos.ENV, "BORG_HOST_ID": host_id, **(env or {})},
                   timeout=300)


def test_plugging_the_drive_copies_the_repository_inside_the_namespace(sandbox: Sandbox) -> None:
    sandbox.plug(sandbox.make_drive("internal", INTERNAL, size_mb=128))
    sandbox.write(CONFIG, config_text())
    sandbox.run([str(OFFSITE), "--config", CONFIG, "install"])
    sandbox.systemctl("start", "offsite-namespace.service")
    # The repository lives on the internal backup filesystem, mounted only in the namespace.
    repos.init(sandbox, "/srv/unused")  # the passphrase file
    in_namespace(sandbox, ["borg", "init", "--make-parent-dirs", "--encryption=repokey-blake2",
                           "--", "/backup/borg/main"])
    in_namespace(sandbox, ["sh", "-c", "head -c 300000 /dev/urandom > /tmp/data && "
                           "borg create /backup/borg/main::first /tmp/data"])
    outside = sandbox.run(["findmnt", "--noheadings", "--output", "TARGET"]).stdout.split()
    assert "/backup" not in outside

    unit = unitnames.job_unit("copy", "d1")
    drive = sandbox.plug(sandbox.make_drive("d1", DRIVE, size_mb=128))
    sandbox.wait_until("the copy to finish", lambda: any(
        e.get("JOB_RESULT") for e in sandbox.entries("_PID=1", f"UNIT={unit}", "JOB_TYPE=start")),
        timeout=120)
    results = [e["JOB_RESULT"] for e in sandbox.entries("_PID=1", f"UNIT={unit}", "JOB_TYPE=start")
               if "JOB_RESULT" in e]
    messages = [e["MESSAGE"] for e in sandbox.entries("JOB=copy")]
    assert results == ["done"], messages
    assert any("safe to remove" in m for m in messages), messages
    # The copy reports progress to the journal as structured lines (not one per file).
    progress = [e for e in sandbox.entries("JOB=copy") if "PROGRESS_BYTES" in e]
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
    assert result.returncode == EXIT_SKIPPED  # in the unit's SuccessExitStatus=: no failure
    assert "not plugged in" in result.stderr


DRIVE2 = "88888888-9999-aaaa-bbbb-cccccccccccc"
# Two drives taking turns at one mount point, the job started by either.
ROTATION = config_text().replace(
    f"  d1: {{uuid: {DRIVE}, type: plain, mount: /mnt/offsite}}",
    f"  d1: {{uuid: {DRIVE}, type: plain, mount: /mnt/offsite, rotation: offsite}}\n"
    f"  d2: {{uuid: {DRIVE2}, type: plain, mount: /mnt/offsite, rotation: offsite}}",
).replace("drive: d1", "drive: offsite")


def prepare(box: Sandbox, text: str, data_kb: int = 300) -> None:
    box.plug(box.make_drive("internal", INTERNAL, size_mb=1024))
    box.write(CONFIG, text)
    box.run([str(OFFSITE), "--config", CONFIG, "install"])
    box.systemctl("start", "offsite-namespace.service")
    repos.init(box, "/srv/unused")  # the passphrase file
    in_namespace(box, ["borg", "init", "--make-parent-dirs", "--encryption=repokey-blake2", "--",
                       "/backup/borg/main"])
    add_archive(box, "first", data_kb)


def add_archive(box: Sandbox, name: str, data_kb: int) -> None:
    in_namespace(box, ["sh", "-c", f"head -c {data_kb * 1024} /dev/urandom > /tmp/{name} && "
                       f"borg create /backup/borg/main::{name} /tmp/{name}"])


def check_drive(box: Sandbox, uuid: str) -> list[str]:
    """borg check of what the drive holds; returns its archives."""
    in_namespace(box, ["mount", f"/dev/disk/by-uuid/{uuid}", "/mnt/offsite"])
    # A cache of its own: the copy has the source's repository id, and may be older than
    # the source's cache (borg would refuse: "Cache is newer than repository").
    base = {"BORG_BASE_DIR": f"/tmp/borg-check-{time.monotonic_ns()}"}
    try:
        in_namespace(box, ["borg", "check", "--", "/mnt/offsite/main"], env=base)
        return in_namespace(box, ["borg", "list", "--short", "--", "/mnt/offsite/main"],
                            env=base).stdout.split()
    finally:
        in_namespace(box, ["umount", "/mnt/offsite"])


def test_a_second_drive_of_the_group_waits_its_turn(sandbox: Sandbox) -> None:
    from offsite import locks

    prepare(sandbox, ROTATION)
    # Hold the repository's lock, so that both drives' jobs are waiting at once.
    lock = locks.LOCK_DIR / locks.lock_name("/backup/borg/main")
    sandbox.run(["mkdir", "-p", str(locks.LOCK_DIR)])
    sandbox.run(["systemd-run", "--unit=holder", "--", "flock", str(lock), "sleep", "600"])
    sandbox.wait_for_state("holder.service", ["active"])
    units = [unitnames.job_unit("copy", "d1"), unitnames.job_unit("copy", "d2")]
    uuids = [DRIVE, DRIVE2]
    for name, uuid in zip(("d1", "d2"), uuids, strict=True):
        sandbox.plug(sandbox.make_drive(name, uuid, size_mb=128))
    for unit in units:
        sandbox.wait_for_state(unit, ["activating"])
    sandbox.wait_until("both jobs to wait", lambda: sum(
        "waiting for" in e["MESSAGE"] for e in sandbox.entries("JOB=copy")) >= 2)
    sandbox.systemctl("stop", "holder.service")
    sandbox.wait_until("both copies", lambda: all(sandbox.start_results(u) for u in units),
                       timeout=120)
    assert [sandbox.start_results(u) for u in units] == [["done"], ["done"]]
    entries = sandbox.entries("JOB=copy")
    spans = []
    for entry in entries:
        if "started" in entry["MESSAGE"] or "succeeded" in entry["MESSAGE"]:
            spans.append((int(entry["_PID"]), int(entry["__MONOTONIC_TIMESTAMP"])))
    by_pid: dict[int, list[int]] = {}
    for pid, t in spans:
        by_pid.setdefault(pid, []).append(t)
    # each run's span, from its "started" to its "succeeded" line: none overlaps the next
    # (a drive's job may run more than once, e.g. on a late "change" event of its device)
    spans_in_order = sorted((min(v), max(v)) for v in by_pid.values())
    assert len(spans_in_order) >= 2, entries
    for (_, end), (start, _) in itertools.pairwise(spans_in_order):
        assert end <= start, "two copies overlapped"
    for uuid in uuids:
        assert check_drive(sandbox, uuid) == ["first"]


def test_killed_mid_copy_the_drive_keeps_a_good_copy(sandbox: Sandbox) -> None:
    """SIGKILL of the whole job at moments spread over a copy (the deterministic kill
    points are in test_mirror.py); each time the drive holds a repository borg accepts,
    and the next plug completes the copy."""
    prepare(sandbox, config_text(), data_kb=20_000)
    unit = unitnames.job_unit("copy", "d1")
    image = sandbox.make_drive("d1", DRIVE, size_mb=256)
    device = sandbox.plug(image)
    sandbox.wait_until("the first copy", lambda: bool(sandbox.start_results(unit)), 120)
    assert sandbox.start_results(unit) == ["done"]
    sandbox.unplug(device)
    for round_, delay in enumerate((0.3, 0.6, 0.9, 1.2, 1.5)):
        add_archive(sandbox, f"more{round_}", 20_000)
        device = sandbox.plug(image)
        sandbox.wait_for_state(unit, ["activating"])
        time.sleep(delay)
        sandbox.systemctl("kill", "--signal=SIGKILL", "--", unit, check=False)
        sandbox.wait_for_state(unit, ["inactive", "failed"])
        # ExecStopPost= (offsite release) has unmounted what the killed job had mounted.
        assert "/mnt/offsite" not in in_namespace(sandbox, ["findmnt", "--noheadings", "-o",
                                                            "TARGET"]).stdout.split()
        assert "first" in check_drive(sandbox, DRIVE)
        sandbox.unplug(device)
    # Killed once more, and the drive pulled straight away.
    device = sandbox.plug(image)
    sandbox.wait_for_state(unit, ["activating"])
    time.sleep(0.5)
    sandbox.systemctl("kill", "--signal=SIGKILL", "--", unit, check=False)
    sandbox.wait_for_state(unit, ["inactive", "failed"])
    sandbox.unplug(device)
    done = len(sandbox.start_results(unit))
    device = sandbox.plug(image)
    sandbox.wait_until("a copy that runs to the end", lambda: len(
        sandbox.start_results(unit)) > done, 120)
    assert sandbox.start_results(unit)[-1] == "done"
    archives = check_drive(sandbox, DRIVE)
    assert archives[0] == "first" and "more4" in archives
    sandbox.unplug(device)


def test_offsite_run_follows_a_job_to_its_end(sandbox: Sandbox) -> None:
    prepare(sandbox, config_text())
    # No drive plugged: a skip, with a clear message, and no unit started.
    skipped = sandbox.run([str(OFFSITE), "--config", CONFIG, "run", "copy"])
    assert "no drive of job copy is plugged in" in skipped.stdout
    unit = unitnames.job_unit("copy", "d1")
    assert sandbox.start_results(unit) == []
    # With a drive plugged (its own start done), run copies again and shows the lines.
    device = sandbox.plug(sandbox.make_drive("d1", DRIVE, size_mb=128))
    sandbox.wait_until("the plug's copy", lambda: bool(sandbox.start_results(unit)), 120)
    ran = sandbox.run([str(OFFSITE), "--config", CONFIG, "run", "copy"], timeout=120)
    out = ran.stdout
    assert f"started {unit}" in out and "job copy succeeded" in out and "copy" in out
    assert any(line.endswith("files") or "files," in line for line in out.splitlines())
    assert out.rstrip().endswith(f"{unit} succeeded")
    sandbox.unplug(device)


def test_offsite_run_of_a_failing_job_exits_non_zero(sandbox: Sandbox) -> None:
    prepare(sandbox, config_text().replace(
        "namespace:", "  broken:\n    kind: borg-check\n    repositories: [main]\nnamespace:"))
    in_namespace(sandbox, ["rm", "-rf", "/backup/borg/main/data"])
    ran = sandbox.run([str(OFFSITE), "--config", CONFIG, "run", "broken"], check=False,
                      timeout=120)
    assert ran.returncode == 1
    assert "job broken failed" in ran.stdout and "ended: failed" in ran.stdout


def test_a_drive_without_room_is_refused_before_a_byte_is_written(sandbox: Sandbox) -> None:
    """Issue #19's room first: 90 MiB of repository for a 64 MiB drive, then a drive that
    holds one copy but not the old and the new at once (after prune and compact)."""
    from .records import runs

    prepare(sandbox, config_text(), data_kb=90 * 1024)
    small = sandbox.make_drive("d1", DRIVE, size_mb=64)
    device = sandbox.plug(small)
    sandbox.wait_until("the copy to end", lambda: bool(runs(sandbox, "copy")), 120)
    result, detail = runs(sandbox, "copy")[-1]
    assert result == "failed" and "not enough room on the drive" in detail, detail
    assert "the drive needs" in detail and "more" in detail, detail
    assert "lines above" not in detail
    # nothing of the copy was written: the new tree holds no file
    written = in_namespace(sandbox, ["sh", "-c", f"mount /dev/disk/by-uuid/{DRIVE} /mnt/offsite "
                                     "&& find /mnt/offsite -type f | wc -l; "
                                     "umount /mnt/offsite"]).stdout.split()
    sandbox.unplug(device)
    assert written == ["0"], written

    # a drive with room for one copy: the first fits; after prune and compact the new copy
    # would need the old and the new files at once
    in_namespace(sandbox, ["borg", "delete", "/backup/borg/main::first"])
    add_archive(sandbox, "second", 40 * 1024)
    in_namespace(sandbox, ["borg", "compact", "/backup/borg/main"])
    device = sandbox.plug(small)
    sandbox.wait_until("the copy to end", lambda: len(runs(sandbox, "copy")) == 2, 120)
    assert runs(sandbox, "copy")[-1][0] == "success"
    sandbox.unplug(device)
    in_namespace(sandbox, ["borg", "delete", "/backup/borg/main::second"])
    add_archive(sandbox, "third", 40 * 1024)
    in_namespace(sandbox, ["borg", "compact", "/backup/borg/main"])
    device = sandbox.plug(small)
    sandbox.wait_until("the copy to end", lambda: len(runs(sandbox, "copy")) == 3, 120)
    result, detail = runs(sandbox, "copy")[-1]
    assert result == "failed" and "the previous copy" in detail and "stays" in detail, detail
    assert check_drive(sandbox, DRIVE) == ["second"]  # the previous copy, as it was
    sandbox.unplug(device)


def test_the_drive_copy_is_checked_by_borg_and_rot_on_the_drive_is_found(
        sandbox: Sandbox) -> None:
    """Issue #19's periodic check: the first copy is checked (no check yet), the next
    within check_every is not; a byte rotted on the drive is found by the next check."""
    import json as jsonmod

    from .records import runs

    prepare(sandbox, config_text(), data_kb=2_000)
    image = sandbox.make_drive("d1", DRIVE, size_mb=128)
    device = sandbox.plug(image)
    sandbox.wait_until("the first copy", lambda: len(runs(sandbox, "copy")) == 1, 120)
    assert runs(sandbox, "copy")[-1][0] == "success"
    journal = sandbox.journal("JOB=copy")
    assert "the copy of main on drive d1 passed borg check" in journal, journal
    record = jsonmod.loads(sandbox.host_path(f"/var/lib/offsite/drives/{DRIVE}.json").read_text())
    assert record["last_checked"] == record["last_copy"] == record["last_read_back"]
    assert record["last_read_back_bytes"] > 2_000_000
    sandbox.unplug(device)

    add_archive(sandbox, "second", 500)
    device = sandbox.plug(image)
    sandbox.wait_until("the second copy", lambda: len(runs(sandbox, "copy")) == 2, 120)
    assert sandbox.journal("JOB=copy").count("passed borg check") == 1  # within 30 days
    drives_out = sandbox.run([str(OFFSITE), "--config", CONFIG, "drives"]).stdout
    assert "CHECKED" in drives_out and "READ" in drives_out, drives_out

    # a byte rots in an old segment on the drive (kept by the next copy as a hard link)
    in_namespace(sandbox, ["mount", f"/dev/disk/by-uuid/{DRIVE}", "/mnt/offsite"])
    biggest = in_namespace(sandbox, ["sh", "-c", "ls -S /mnt/offsite/main/data/0/ | head -n1"])
    segment = f"/mnt/offsite/main/data/0/{biggest.stdout.strip()}"
    # (as rot does: the file's times stay, so the next copy still takes it as unchanged)
    in_namespace(sandbox, ["python3", "-c", "import os, sys\np = sys.argv[1]\nst = os.stat(p)\n"
                           "with open(p, 'r+b') as f:\n"
                           "    f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 1]))\n"
                           "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))", segment])
    in_namespace(sandbox, ["umount", "/mnt/offsite"])
    sandbox.unplug(device)
    sandbox.write(CONFIG, config_text().replace("mount: /mnt/offsite}",
                                                "mount: /mnt/offsite, check_every: 0}"))
    sandbox.run([str(OFFSITE), "--config", CONFIG, "install"])
    add_archive(sandbox, "third", 500)
    device = sandbox.plug(image)
    sandbox.wait_until("the third copy", lambda: len(runs(sandbox, "copy")) == 3, 120)
    result, detail = runs(sandbox, "copy")[-1]
    assert result == "failed" and "borg check of the copy of main on drive d1 failed" in detail, \
        detail
    sandbox.unplug(device)


def test_a_drive_filled_by_something_else_mid_copy_ends_with_the_reason(
        sandbox: Sandbox) -> None:
    """The room was there when the copy began; something else takes it while the copy is
    frozen mid-way (SIGSTOP: a machine as slow as it likes); the copy ends saying so, and
    the drive keeps no partial file of it."""
    import os
    import signal

    from .records import runs

    # 100 MiB: caught within the first tenth of writing it, far more is left to write than
    # the few blocks ext4 keeps back when full
    prepare(sandbox, config_text(), data_kb=100 * 1024)
    unit = unitnames.job_unit("copy", "d1")
    device = sandbox.plug(sandbox.make_drive("d1", DRIVE, size_mb=256))
    frozen: list[int] = []

    def copy_running() -> bool:
        for pid, argv in sandbox.processes(unit):
            if argv[2:3] != [b"mirror-copy"]:  # (not borg with-lock, whose argv names it too)
                continue
            try:  # writing a file: its temporary name is open
                open_files = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
            except OSError:
                continue
            if any(f.endswith(".offsite-partial") for f in open_files):
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
                return True
        return False

    sandbox.wait_until("the copy to be writing a file", copy_running, 120)
    # every block, the ones kept for root too (the copy runs as root): written until full
    left = in_namespace(sandbox, ["sh", "-c", "dd if=/dev/zero of=/mnt/offsite/filler bs=1M "
                                  "status=none 2>/dev/null; dd if=/dev/zero "
                                  "of=/mnt/offsite/filler2 bs=4k status=none 2>/dev/null; sync; "
                                  "stat -f -c '%f %S' /mnt/offsite"]).stdout.split()
    assert int(left[0]) * int(left[1]) < 8 << 20, left  # (ext4 keeps a few MiB back)
    os.kill(frozen[0], signal.SIGCONT)
    sandbox.wait_until("the copy to end", lambda: bool(runs(sandbox, "copy")), 120)
    result, detail = runs(sandbox, "copy")[-1]
    assert result == "failed" and "the drive filled up" in detail, detail
    assert "something else is using its room" in detail
    sandbox.unplug(device)
