"""Encrypted repositories in the sandbox systemd, as users have them: repokey and keyfile,
the passphrase from a root-only file, an encrypted credential or a command. The
passphrase reaches borg and nothing else: no unit file, `systemctl show`, journal line
(with every command logged) or mail holds it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from offsite_lab.sandbox import Sandbox

from offsite import unitnames
from offsite.run import Result

from .records import history, messages, start

OFFSITE = str(Path(sys.prefix) / "bin" / "offsite")
CONFIG = "/etc/offsite/offsite.yaml"
PASSPHRASE = "correct horse battery staple 7"
SECRET = "/etc/offsite/secrets/main.pass"
CREDENTIAL = "/etc/credstore.encrypted/main.cred"
REPO = "/srv/borg/main"
DATA = "/srv/data"


def offsite(box: Sandbox, *args: str, check: bool = True) -> Result:
    return box.run([OFFSITE, "--config", CONFIG, *args], check=check)


def borg(box: Sandbox, *args: str) -> Result:
    """borg as the test uses it (not offsite): the passphrase in its environment."""
    return box.run(["env", f"BORG_PASSPHRASE={PASSPHRASE}", "borg", *args])


def make_repository(box: Sandbox, encryption: str) -> None:
    box.write(SECRET, PASSPHRASE + "\n", mode=0o400)
    box.run(["mkdir", "-p", DATA])
    for i in range(12):
        box.write(f"{DATA}/file{i:02d}", f"content {i}\n" * (50 * i + 1))
    borg(box, "init", "--make-parent-dirs", f"--encryption={encryption}", "--", REPO)
    borg(box, "create", "--", f"{REPO}::first", DATA)


def install(box: Sandbox, secret: dict[str, str]) -> None:
    box.write(CONFIG, json.dumps({
        "repositories": {"main": {"path": REPO, **secret}},
        "jobs": {"check": {"kind": "borg-check", "repositories": ["main"], "verify_data": True},
                 "restore": {"kind": "restore-test", "repositories": ["main"], "sample": 6}},
    }, indent=1))
    offsite(box, "install")
    # every command a job runs is logged: the journal check below sees every argv
    for job in ("check", "restore"):
        box.write(f"/etc/systemd/system/{unitnames.job_unit(job)}.d/debug.conf",
                  "[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug\n")
    box.systemctl("daemon-reload")


def assert_nowhere_but_its_source(box: Sandbox) -> None:
    """The passphrase is in no unit file, unit property, journal entry or mail."""
    units = box.run(["grep", "-rlF", "--", PASSPHRASE, "/etc/systemd/system"], check=False)
    assert units.returncode == 1, units.stdout
    for job in ("check", "restore"):
        shown = box.systemctl("show", "--", unitnames.job_unit(job)).stdout
        assert PASSPHRASE not in shown
    journal = box.run(["journalctl", "--no-pager", "-o", "export"]).stdout
    assert PASSPHRASE not in journal
    assert "running borg --log-json list" in journal  # the debug lines were there to look at
    spool = box.run(["sh", "-c", "cat /var/lib/offsite/spool/* 2>/dev/null; true"]).stdout
    assert PASSPHRASE not in spool


def test_a_repokey_repository_with_a_passphrase_file(sandbox: Sandbox) -> None:
    make_repository(sandbox, "repokey-blake2")
    install(sandbox, {"passphrase_file": SECRET})
    assert start(sandbox, "check"), messages(sandbox, "check")
    assert start(sandbox, "restore"), messages(sandbox, "restore")
    assert any("passed: 6 same" in m for m in messages(sandbox, "restore"))
    tested = offsite(sandbox, "repo", "test", "main").stdout
    assert "opens with the passphrase from file /etc/offsite/secrets/main.pass" in tested
    assert "latest archive: first" in tested
    assert history(sandbox) == [("check", "success"), ("restore", "success")]
    assert_nowhere_but_its_source(sandbox)


def test_a_keyfile_repository_with_an_encrypted_credential(sandbox: Sandbox) -> None:
    make_repository(sandbox, "keyfile-blake2")
    sandbox.run(["mkdir", "-p", str(Path(CREDENTIAL).parent)])
    sandbox.run(["systemd-creds", "encrypt", "--name=" + unitnames.credential("main"), SECRET,
                 CREDENTIAL])
    sandbox.run(["chmod", "0400", CREDENTIAL])
    assert PASSPHRASE not in sandbox.host_path(CREDENTIAL).read_bytes().decode(errors="replace")
    install(sandbox, {"passphrase_credential": CREDENTIAL})
    assert "LoadCredentialEncrypted=offsite-borg-main:" + CREDENTIAL in sandbox.host_path(
        f"/etc/systemd/system/{unitnames.job_unit('check')}").read_text()
    assert start(sandbox, "check"), messages(sandbox, "check")
    assert start(sandbox, "restore"), messages(sandbox, "restore")
    assert "opens with the passphrase from credential" in offsite(
        sandbox, "repo", "test", "main").stdout
    assert_nowhere_but_its_source(sandbox)


def test_a_passcommand(sandbox: Sandbox) -> None:
    make_repository(sandbox, "repokey-blake2")
    install(sandbox, {"passcommand": f"cat {SECRET}"})
    assert start(sandbox, "restore"), messages(sandbox, "restore")
    assert_nowhere_but_its_source(sandbox)


def test_a_wrong_passphrase_is_named_before_any_long_work(sandbox: Sandbox) -> None:
    make_repository(sandbox, "repokey-blake2")
    install(sandbox, {"passphrase_file": SECRET})
    sandbox.write(SECRET, "not the passphrase\n", mode=0o400)
    assert not start(sandbox, "check")
    said = messages(sandbox, "check")
    assert any("wrong passphrase for repository main (from file /etc/offsite/secrets/main.pass)"
               in m for m in said), said
    assert not any(e for e in sandbox.entries("JOB=check") if "PROGRESS_PERCENT" in e)
    assert history(sandbox) == [("check", "failed")]
    tested = offsite(sandbox, "repo", "test", "main", check=False)
    assert tested.returncode == 1 and "wrong passphrase for repository main" in tested.stderr


def test_without_a_passphrase_an_encrypted_repository_fails_at_once(sandbox: Sandbox) -> None:
    make_repository(sandbox, "repokey-blake2")
    install(sandbox, {})
    assert not start(sandbox, "check")  # borg would prompt: stdin is closed, it fails at once
    assert any("repository main is encrypted and no passphrase reached borg" in m
               for m in messages(sandbox, "check")), messages(sandbox, "check")


def test_credentials_are_not_visible_inside_the_backup_namespace(sandbox: Sandbox) -> None:
    """Why offsite exec hands the passphrases over on a pipe: systemd mounts a unit's
    credentials after the backup namespace was made, and that namespace does not receive
    later mounts (private propagation). Checked here with a plain transient unit."""
    sandbox.write(SECRET, PASSPHRASE + "\n", mode=0o400)
    sandbox.write(CONFIG, json.dumps({"repositories": {"main": {"path": REPO}},
                                      "jobs": {"c": {"kind": "borg-check",
                                                     "repositories": ["main"]}}}))
    offsite(sandbox, "install")
    sandbox.systemctl("start", unitnames.NAMESPACE_UNIT)
    holder = json.loads(sandbox.host_path("/run/offsite/namespace.json").read_text())["pid"]
    seen = sandbox.systemd_run(["sh", "-c", 'ls "$CREDENTIALS_DIRECTORY"; echo --; '
                                f'nsenter --target={holder} --mount -- ls "$CREDENTIALS_DIRECTORY"'
                                ' 2>&1; true'], properties=[f"LoadCredential=pp:{SECRET}"]).stdout
    outside, inside = seen.split("--\n")
    assert outside.split() == ["pp"] and "pp" not in inside.split(), seen


DRIVE = "44444444-5555-6666-7777-888888888888"


def copied_to_a_drive(box: Sandbox) -> tuple[Path, str]:
    """A keyfile repository (its key lives only on this machine) copied by offsite to a
    plain drive; (the drive's image inside, its device) with the drive still plugged."""
    make_repository(box, "keyfile-blake2")
    box.write(CONFIG, json.dumps({
        "drives": {"d1": {"uuid": DRIVE, "type": "plain", "mount": "/mnt/offsite"}},
        "repositories": {"main": {"path": REPO, "passphrase_file": SECRET}},
        "jobs": {"copy": {"kind": "mirror", "repositories": ["main"], "drive": "d1"}},
    }))
    offsite(box, "install")
    image = box.make_drive("d1", DRIVE, size_mb=64)
    device = box.plug(image)
    box.wait_until("the copy", lambda: ("copy", "success") in history(box), 90)
    return image, device


def test_the_drive_restores_with_nothing_but_itself_and_the_passphrase(sandbox: Sandbox) -> None:
    """A keyfile repository (its key lives only on this machine) copied to a drive; then a
    stranger's borg (no keys, no cache, no configuration) restores every file from the
    drive mounted read-only, with the passphrase alone, by the drive's RECOVERY.txt."""
    image, device = copied_to_a_drive(sandbox)
    sandbox.unplug(device)
    assert PASSPHRASE.encode() not in sandbox.host_path(image).read_bytes()

    device = sandbox.plug(image)
    stranger = {"BORG_BASE_DIR": "/tmp/stranger", "BORG_PASSPHRASE": PASSPHRASE}
    sandbox.run(["mkdir", "-p", "/mnt/found", "/tmp/stranger", "/srv/restored"])
    sandbox.run(["mount", "-o", "ro", device, "/mnt/found"])
    try:
        page = sandbox.host_path("/mnt/found/offsite-recovery/RECOVERY.txt").read_text()
        repo_id = sandbox.host_path(f"{REPO}/config").read_text().split("id = ")[1].split()[0]
        assert f"main: main/ on the drive, borg repository id {repo_id}" in page, page
        assert "encryption: keyfile; latest archive when written: first" in page, page
        assert sandbox.host_path("/mnt/found/offsite-recovery/offsite.yaml").exists()
        # the steps of the page, as a stranger types them
        sandbox.run(["borg", "key", "import", "/mnt/found/main",
                     "/mnt/found/offsite-recovery/keys/main.key"], env=stranger)
        listed = sandbox.run(["borg", "list", "--bypass-lock", "--short", "/mnt/found/main"],
                             env=stranger).stdout.split()
        assert listed == ["first"]
        sandbox.run(["sh", "-c", "cd /srv/restored && borg extract --bypass-lock "
                     "/mnt/found/main::first"], env=stranger)
    finally:
        sandbox.run(["umount", "/mnt/found"])
    for i in range(12):
        original = sandbox.host_path(f"{DATA}/file{i:02d}").read_bytes()
        assert sandbox.host_path(f"/srv/restored{DATA}/file{i:02d}").read_bytes() == original
    # without the key the drive carries, a stranger could not have opened it
    assert sandbox.run(["borg", "list", "--bypass-lock", REPO], check=False,
                       env={"BORG_BASE_DIR": "/tmp/other", "BORG_PASSPHRASE": PASSPHRASE,
                            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}).returncode != 0


def test_offsite_recover_lists_and_extracts_on_the_same_machine_and_on_a_bare_one(
        sandbox: Sandbox) -> None:
    _, device = copied_to_a_drive(sandbox)
    sandbox.write("/root/told.pass", PASSPHRASE + "\n", mode=0o400)
    # on the machine that made the copy (its keys and cache are there: not used)
    listed = offsite(sandbox, "recover", device, "--passphrase-file", "/root/told.pass").stdout
    assert "repository main (main on the drive)" in listed and "archives: first" in listed
    # a bare machine: no configuration, no borg keys or cache
    sandbox.run(["rm", "-rf", CONFIG, "/root/.config/borg", "/root/.cache/borg"])
    done = sandbox.run([OFFSITE, "recover", device, "--passphrase-file", "/root/told.pass",
                        "--extract-to", "/srv/back"]).stdout
    assert "key imported from offsite-recovery/keys/main.key" in done
    assert "extracted first into /srv/back/main" in done
    for i in range(12):
        original = sandbox.host_path(f"{DATA}/file{i:02d}").read_bytes()
        assert sandbox.host_path(f"/srv/back/main{DATA}/file{i:02d}").read_bytes() == original
    sandbox.write("/root/wrong.pass", "guess\n", mode=0o400)
    refused = sandbox.run([OFFSITE, "recover", device, "--passphrase-file", "/root/wrong.pass"],
                          check=False)
    assert refused.returncode == 1 and "wrong passphrase for repository main" in refused.stderr
    mounts = sandbox.run(["findmnt", "-rn", "-o", "TARGET"]).stdout
    assert "offsite-recover" not in mounts  # nothing left mounted
