"""The repositories of the system tier are the kind users have: encrypted (repokey-blake2
unless a test says otherwise), the passphrase in a root-only file that the configuration
names. A test that is about an unencrypted repository says so."""

from __future__ import annotations

from pathlib import Path

from offsite_lab.sandbox import Sandbox

from offsite.run import Result

PASSPHRASE = "system tier passphrase 4"
SECRET = "/etc/offsite/secrets/repository.pass"
# what the configuration says of an encrypted repository: merge into its settings
SETTINGS = {"passphrase_file": SECRET}
# borg as a test runs it (not as offsite does): the passphrase in its environment
ENV = {"BORG_PASSPHRASE": PASSPHRASE}


def write_secret(box: Sandbox) -> None:
    """The passphrase file SETTINGS names (root only, as `offsite check` wants it)."""
    box.write(SECRET, PASSPHRASE + "\n", mode=0o400)


def init(box: Sandbox, path: str, encryption: str = "repokey-blake2") -> dict[str, str]:
    """A new encrypted repository at path (parents made); returns SETTINGS."""
    write_secret(box)
    box.run(["mkdir", "-p", str(Path(path).parent)])
    borg(box, "init", f"--encryption={encryption}", "--", path)
    return SETTINGS


def borg(box: Sandbox, *args: str, env: dict[str, str] | None = None) -> Result:
    return box.run(["borg", *args], env={**ENV, **(env or {})})
