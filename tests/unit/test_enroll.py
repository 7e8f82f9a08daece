"""A LUKS drive that only the lost machine could open is called out (real cryptsetup on a
header in a file: no device-mapper is needed to write or read one)."""

from __future__ import annotations

from pathlib import Path

from offsite.run import run
from offsite.targets import enroll

FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]


def header(tmp_path: Path, *keys: Path) -> Path:
    image = tmp_path / "drive.img"
    with image.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", *FAST, "--key-file",
         keys[0], image])
    for key in keys[1:]:
        run(["cryptsetup", "luksAddKey", "--batch-mode", *FAST, "--key-file", keys[0], image, key])
    backup = tmp_path / "headers" / "11111111-2222-3333-4444-555555555555.img"
    backup.parent.mkdir(exist_ok=True)
    run(["cryptsetup", "luksHeaderBackup", "--header-backup-file", backup, image])
    return backup


def key(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(name.encode() * 8)
    return path


def test_a_drive_with_only_offsites_slot_is_warned_about(tmp_path: Path) -> None:
    backup = header(tmp_path, key(tmp_path, "offsite-key"))
    found = enroll.drive_warnings([("d1", "11111111-2222-3333-4444-555555555555")], backup.parent)
    assert len(found) == 1 and "drive d1 has no key slot but offsite's keyfile" in found[0]


def test_a_drive_with_a_passphrase_slot_too_is_fine(tmp_path: Path) -> None:
    backup = header(tmp_path, key(tmp_path, "passphrase"), key(tmp_path, "offsite-key"))
    assert enroll.key_slots(backup) == 2
    assert enroll.drive_warnings([("d1", "11111111-2222-3333-4444-555555555555")],
                                 backup.parent) == []
