"""``offsite drive enroll``: make a LUKS drive an off-site drive.

Adds a keyslot opened by a random keyfile (created root-only if it does not exist), backs
up the LUKS header to a root-only place as the cryptsetup documentation insists (a damaged
header makes the whole drive unreadable), and prints the lines for the configuration.

The keyfile holds 64 random bytes (512 bits): its slot uses PBKDF2 with few iterations,
since a slow key derivation protects guessable passphrases and adds nothing against a
random key but unlock time and memory. The drive's UUID is read from its header and is
attacker-controlled: it must be a well-formed UUID before it names a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from offsite import durable, state
from offsite.config import fields
from offsite.errors import Fatal
from offsite.run import CommandError, interactive, run

HEADER_DIR = state.STATE_DIR / "luks-headers"
KEY_DIR = Path("/etc/offsite/keys")
KEY_BYTES = 64
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def luks_uuid(device: Path) -> str:
    try:
        raw = run(["cryptsetup", "luksUUID", "--", device]).stdout.strip().lower()
    except CommandError as exc:
        raise Fatal(f"{device} is not a LUKS device (or cannot be read): {exc}") from exc
    if not _UUID.match(raw):
        raise Fatal(f"{device} reports a malformed LUKS UUID; refusing to use it")
    return raw


def make_keyfile(path: Path) -> bool:
    """A new random keyfile, mode 0400, never readable by others; False if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(KEY_BYTES))
        f.flush()
        os.fsync(f.fileno())
    durable.fsync_dir(path.parent)
    return True


def enroll(device: Path, name: str, keyfile: Path | None, passphrase_file: Path | None,
           mount: Path, header_dir: Path = HEADER_DIR) -> str:
    """Enroll device as drive name; returns the configuration lines to add."""
    problem = fields.name_problem(name)
    if problem:
        raise Fatal(f"drive name {name!r}: {problem}")
    if not (device.exists() and device.is_block_device()):
        raise Fatal(f"{device} is not a block device", "give the drive's device, e.g. /dev/sdb")
    uuid = luks_uuid(device)
    keyfile = keyfile or KEY_DIR / f"{name}.key"
    created = make_keyfile(keyfile)
    add = ["cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2",
           "--pbkdf-force-iterations", "1000"]
    try:
        if passphrase_file is not None:
            run([*add, "--key-file", passphrase_file, "--", device, keyfile])
        else:
            print(f"cryptsetup asks for a passphrase (or key) that opens {device} now:")
            if interactive([*add, "--", device, keyfile]) != 0:
                raise CommandError("cryptsetup luksAddKey failed")
    except CommandError as exc:
        if created:
            keyfile.unlink(missing_ok=True)
        raise Fatal(f"could not add the keyfile to {device}: {exc}",
                    "is the passphrase right? (--passphrase-file FILE, or type it)") from exc
    header_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    header_dir.chmod(0o700)
    backup = header_dir / f"{uuid}.img"
    tmp = header_dir / f".{uuid}.img.tmp"
    tmp.unlink(missing_ok=True)
    run(["cryptsetup", "luksHeaderBackup", "--header-backup-file", tmp, "--", device])
    tmp.chmod(0o400)
    tmp.replace(backup)
    durable.fsync_dir(header_dir)
    only_ours = slot_warning(name, backup)
    return (f"drives:\n  {name}:\n    uuid: {uuid}\n    type: luks\n    keyfile: {keyfile}\n"
            f"    mount: {mount}\n# LUKS header backed up to {backup} (keep a copy off the "
            f"machine too)\n# Keep the passphrase you opened it with away from this machine: "
            f"with the drive alone, only that opens it\n" +
            (f"# WARNING: {only_ours}\n" if only_ours else ""))


def key_slots(header: Path) -> int | None:
    """How many key slots a LUKS2 header (a drive, or its backup) has; None if unreadable."""
    import json

    try:
        dump = run(["cryptsetup", "luksDump", "--dump-json-metadata", "--", header]).stdout
        return len(json.loads(dump).get("keyslots", {}))
    except (CommandError, ValueError, AttributeError):
        return None


def slot_warning(name: str, header: Path) -> str | None:
    """Why a drive could be opened by the lost machine alone: its header (as backed up at
    enroll) has offsite's key slot and no other."""
    if key_slots(header) != 1:
        return None
    return (f"drive {name} has no key slot but offsite's keyfile, which stays on this "
            f"machine: if the machine is lost, nothing opens the drive. Add a passphrase "
            f"you keep elsewhere: cryptsetup luksAddKey --key-file KEYFILE /dev/sdX, then "
            f"offsite drive enroll again (for a fresh header backup)")


def drive_warnings(drives: list[tuple[str, str]], header_dir: Path = HEADER_DIR) -> list[str]:
    """For `offsite check`: (name, uuid) of LUKS drives whose header backup shows offsite's
    slot alone."""
    found = []
    for name, uuid in drives:
        header = header_dir / f"{uuid}.img"
        if header.exists():
            warning = slot_warning(name, header)
            if warning:
                found.append(warning)
    return found
