"""The disaster drill: the day the off-site drive exists for.

Guest A, a machine as a user has it, makes encrypted backups (one repokey, one keyfile
repository, each with its own passphrase) and copies them to a LUKS drive opened with
offsite's keyfile. Then the machine is gone. Guest B, a new machine of the other Debian
release with offsite as its package installs it (the example configuration only), no borg
keys and no cache, gets the drive and what a person keeps on paper (the drive's LUKS
passphrase and the two borg passphrases) and restores every file, bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .guest import booted
from .test_luks import blank, luks_drive, runs

CONFIG = "/etc/offsite/offsite.yaml"
LUKS_PASSPHRASE = "the drive's passphrase, kept on paper"
PASSPHRASES = {"photos": "first borg passphrase 1", "mail": "second borg passphrase 2"}
ENCRYPTION = {"photos": "repokey-blake2", "mail": "keyfile-blake2"}


@pytest.mark.parametrize(("old", "new"), [("bookworm", "trixie"), ("trixie", "bookworm")])
def test_a_new_machine_restores_everything_from_the_drive_and_the_passphrases(
        tmp_path: Path, old: str, new: str) -> None:
    """Across releases both ways: a drive written on Debian 12 (borg 1.2) read back on a
    Debian 13 machine (borg 1.4), the stranger's machine of most days, and the other way."""
    image = blank(tmp_path / "offsite.img", 160)
    originals: dict[str, bytes] = {}
    (tmp_path / "a").mkdir()
    with booted(tmp_path / "a", old) as a:
        device = luks_drive(a, image, "d1", LUKS_PASSPHRASE)
        out = a.run(["offsite", "drive", "enroll", device, "--name", "d1",
                     "--passphrase-file", "/root/d1.pass"]).stdout
        uuid = next(line.split()[1] for line in out.splitlines()
                    if line.strip().startswith("uuid:"))
        a.unplug("d1")
        a.run(["rm", "/root/d1.pass"])  # the person keeps it on paper
        repositories = {}
        for name, passphrase in PASSPHRASES.items():
            secret = f"/etc/offsite/secrets/{name}.pass"
            a.write(secret, passphrase + "\n", mode=0o400)
            for i in range(3):
                data = hashlib.sha256(f"{name}{i}".encode()).digest() * (3000 + 999 * i)
                originals[f"srv/{name}/file{i}"] = data
                a.write(f"/srv/{name}/file{i}", data)
            path = f"/srv/borg/{name}"
            env = f"BORG_PASSPHRASE={passphrase}"
            a.run(["env", env, "borg", "init", "--make-parent-dirs",
                   f"--encryption={ENCRYPTION[name]}", "--", path])
            a.run(["env", env, "borg", "create", "--", f"{path}::monday", f"/srv/{name}"])
            repositories[name] = {"path": path, "passphrase_file": secret}
        a.write(CONFIG, json.dumps({
            "drives": {"d1": {"uuid": uuid, "type": "luks",
                              "keyfile": "/etc/offsite/keys/d1.key", "mount": "/mnt/offsite"}},
            "repositories": repositories,
            "jobs": {"copy": {"kind": "mirror", "repositories": list(PASSPHRASES),
                              "drive": "d1"}},
            "notify": {"led": {"enabled": False}},
        }))
        a.run(["offsite", "--config", CONFIG, "install"], timeout=600)
        a.plug(image, "d1")
        a.wait_until("the copy", lambda: ("copy", "success") in runs(a), 400)
        a.wait_until("the drive to be locked", lambda: a.run(
            ["test", "-e", f"/dev/mapper/offsite-{uuid}"], check=False).returncode != 0, 60)
        a.unplug("d1")
    # Machine A is gone: its keyfile, its borg keys, its configuration went with it.
    raw = image.read_bytes()
    for secret in (LUKS_PASSPHRASE, *PASSPHRASES.values()):
        assert secret.encode() not in raw

    (tmp_path / "b").mkdir()
    with booted(tmp_path / "b", new) as b:
        # offsite as the package installs it: its commented example, nothing of machine A
        assert uuid not in b.run(["cat", CONFIG]).stdout
        assert b.run(["sh", "-c", "ls /root/.config/borg/keys 2>/dev/null | wc -l"]
                     ).stdout.strip() == "0"
        device = b.plug(image, "d1")
        b.wait_until("the drive", lambda: b.run(["test", "-b", device], check=False)
                     .returncode == 0)
        # what the person types from paper, as files
        b.write("/root/luks.pass", LUKS_PASSPHRASE, mode=0o400)
        for name, passphrase in PASSPHRASES.items():
            b.write(f"/root/{name}.pass", passphrase + "\n", mode=0o400)
        restored = b.run(["offsite", "recover", device, "--luks-key-file", "/root/luks.pass",
                          *[f"--passphrase-file={n}=/root/{n}.pass" for n in PASSPHRASES],
                          "--extract-to", "/srv/restore"], timeout=600).stdout
        assert "extracted monday into /srv/restore/photos" in restored, restored
        assert "key imported from offsite-recovery/keys/mail.key" in restored, restored
        for path, data in originals.items():
            name = path.split("/")[1]
            got = b.run(["sha256sum", f"/srv/restore/{name}/{path}"]).stdout.split()[0]
            assert got == hashlib.sha256(data).hexdigest(), path
        page = b.run(["sh", "-c", "cryptsetup open --readonly --key-file /root/luks.pass "
                      f"{device} look && mount -o ro /dev/mapper/look /mnt && "
                      "cat /mnt/offsite-recovery/RECOVERY.txt; umount /mnt; "
                      "cryptsetup close look"]).stdout
        assert "mail: mail/ on the drive" in page and "encryption: keyfile" in page, page
        b.unplug("d1")
