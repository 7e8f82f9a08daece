"""The block-device steps targets share: loop devices, LUKS format/open/close, waiting.

Every name given to cryptsetup here is built from a validated target name; nothing read
from a device or a marker reaches these command lines.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from offsite.errors import Fatal
from offsite.run import CommandError, run

log = logging.getLogger(__name__)


def load_modules(*names: str) -> None:
    """What the target unit's ExecStartPre= does, for the commands run by hand (create,
    grow): built in or loaded already is fine, and a failure shows in the next step."""
    run(["modprobe", "-a", *names], check=False)


def attach_loop(image: Path) -> str:
    """A loop device over image (direct I/O off: the sync client reads the file too)."""
    return run(["losetup", "--find", "--show", "--", image]).stdout.strip()


def detach_loop(device: str) -> None:
    run(["losetup", "--detach", device], check=False)


def loops_of(image: Path) -> list[str]:
    """Loop devices already attached to image (left by a crash)."""
    out = run(["losetup", "--noheadings", "--output", "NAME", "--associated", image],
              check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith("/dev/loop")]


def luks_format(device: str, keyfile: Path) -> None:
    # a random keyfile gains nothing from a slow KDF (see enroll.py)
    run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", keyfile, "--", device])


def luks_open(device: str, name: str, keyfile: Path) -> None:
    try:
        run(["cryptsetup", "open", "--type", "luks", "--key-file", keyfile, "--", device, name])
    except CommandError as exc:
        raise Fatal(f"could not unlock {device} with {keyfile}: {exc}",
                    "is it the keyfile this target was created with?") from exc


def luks_close(name: str, attempts: int = 10) -> None:
    """Lock; a filesystem still being released (lazy unmount) gets a few seconds."""
    if not Path(f"/dev/mapper/{name}").exists():
        return
    for attempt in range(attempts):
        result = run(["cryptsetup", "close", "--", name], check=False)
        if result.returncode == 0 or not Path(f"/dev/mapper/{name}").exists():
            return
        if attempt == attempts - 1:
            raise Fatal(f"could not lock {name}: {result.stderr.strip()}",
                        "something still holds it: is it mounted somewhere?")
        time.sleep(0.5)


def machine_id(path: Path = Path("/etc/machine-id")) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise Fatal(f"cannot read {path}: {exc.strerror}") from exc
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise Fatal(f"{path} does not hold a machine id", "systemd-machine-id-setup")
    return value
