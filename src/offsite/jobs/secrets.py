"""Repository passphrases, from where the configuration says to borg's pipe.

The way of a passphrase kept in a file or an encrypted credential:
1. systemd reads it (decrypting an encrypted one) and gives it to the job unit alone, in
   $CREDENTIALS_DIRECTORY (LoadCredential=, LoadCredentialEncrypted=; units/render.py);
2. `offsite exec`, still in the unit's own mount namespace, reads it there (loaded()) and
   hands it to itself inside the backup namespace on a pipe (handover(), received()):
   systemd mounts the credentials after the backup namespace was made, so they are not
   visible in there;
3. each borg gets it on a pipe of its own (BORG_PASSPHRASE_FD).
A passcommand (and a borgmatic configuration's encryption_passcommand) goes to borg as
BORG_PASSCOMMAND, which names the command, not the secret. No passphrase is ever in a
unit file, an argv, an environment or a log line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from offsite.config.model import Config, Job, Repository, SecretSource
from offsite.errors import Fatal
from offsite.run import FdSecret

HANDOVER = "OFFSITE_PASSPHRASES_FD"  # names the pipe to the re-entered `offsite exec`
BORG_FD = "BORG_PASSPHRASE_FD"


def _credentials_dir() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def loaded(cfg: Config, repositories: tuple[str, ...]) -> dict[str, str]:
    """The passphrases systemd handed to this unit as credentials, by repository name (a
    command run by hand, outside any unit, reads them from their sources instead). A
    missing one is a failure that says which and why."""
    found: dict[str, str] = {}
    directory = _credentials_dir()
    if directory is None:
        return from_files(cfg, repositories)
    for name in repositories:
        repo = cfg.repository(name)
        if repo.passphrase is None or not repo.passphrase.loaded_by_systemd:
            continue
        try:
            found[name] = (directory / repo.credential).read_text().rstrip("\n")
        except OSError as exc:
            raise Fatal(f"the passphrase of repository {name} did not reach this job: "
                        f"credential {repo.credential}: {exc.strerror}",
                        "offsite install writes LoadCredential= into the job's unit") from exc
    return found


def from_files(cfg: Config, repositories: tuple[str, ...]) -> dict[str, str]:
    """The passphrases read straight from their sources, for a command run by hand (as
    root): a file is read, an encrypted credential decrypted with systemd-creds."""
    from offsite.run import CommandError, run

    found: dict[str, str] = {}
    for name in repositories:
        secret = cfg.repository(name).passphrase
        if secret is None:
            continue
        try:
            if secret.source is SecretSource.FILE:
                found[name] = Path(secret.where).read_text().rstrip("\n")
            elif secret.source is SecretSource.CREDENTIAL:
                result = run(["systemd-creds", "decrypt", "--name=" + cfg.repository(name).credential,
                              secret.where, "-"])
                found[name] = result.stdout.rstrip("\n")
        except (OSError, CommandError) as exc:
            raise Fatal(f"cannot read the passphrase of repository {name} from {secret.where}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from exc
    return found


def handover(passphrases: Mapping[str, str]) -> FdSecret | None:
    """What to give the re-entered `offsite exec` (on a pipe), or None."""
    return FdSecret(HANDOVER, json.dumps(dict(passphrases))) if passphrases else None


def received() -> dict[str, str] | None:
    """The passphrases handed over on the pipe HANDOVER names (read once, then closed), or
    None when none were handed over."""
    value = os.environ.pop(HANDOVER, None)
    if value is None or not value.isdigit():
        return None
    with os.fdopen(int(value), "r") as pipe:
        data = json.loads(pipe.read())
    if not isinstance(data, dict):
        raise Fatal("the passphrases handed to the job were not readable")
    return {str(k): str(v) for k, v in data.items()}


@dataclass(frozen=True)
class BorgAccess:
    """What a borg command on one repository is given so that it can open it."""

    env: dict[str, str] = field(default_factory=dict)
    fd_secret: FdSecret | None = None
    source: str = ""  # where the passphrase came from, for a message

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.fd_secret.value,) if self.fd_secret else ()


def borgmatic_settings(config: Path) -> tuple[str | None, str | None]:
    """(encryption_passcommand, encryption_passphrase) of a borgmatic configuration; both
    at the top (borgmatic 1.8 and later) or under storage: (before)."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise Fatal(f"cannot read the borgmatic configuration {config}: {exc}") from exc
    if not isinstance(data, dict):
        return None, None
    found = data.get("storage")
    storage: dict[str, object] = found if isinstance(found, dict) else {}
    command = data.get("encryption_passcommand") or storage.get("encryption_passcommand")
    phrase = data.get("encryption_passphrase") or storage.get("encryption_passphrase")
    return (str(command) if command else None), (str(phrase) if phrase else None)


def access(repo: Repository, passphrases: Mapping[str, str]) -> BorgAccess:
    """How borg gets repo's passphrase in this process."""
    secret = repo.passphrase
    if secret is None:
        return BorgAccess()
    if secret.loaded_by_systemd:
        if repo.name not in passphrases:
            raise Fatal(f"the passphrase of repository {repo.name} did not reach this job",
                        "run the job through its unit; after changing the configuration: "
                        "offsite install")
        return BorgAccess(fd_secret=FdSecret(BORG_FD, passphrases[repo.name]),
                          source=f"{secret.source} {secret.where}")
    if secret.source is SecretSource.COMMAND:
        return BorgAccess(env={"BORG_PASSCOMMAND": secret.where},
                          source=f"passcommand {secret.where}")
    command, phrase = borgmatic_settings(Path(secret.where))
    if command:
        return BorgAccess(env={"BORG_PASSCOMMAND": command},
                          source=f"encryption_passcommand of {secret.where}")
    if phrase:
        return BorgAccess(fd_secret=FdSecret(BORG_FD, phrase),
                          source=f"encryption_passphrase of {secret.where}")
    return BorgAccess()


def for_job(cfg: Config, job: Job) -> dict[str, str]:
    """In the job, before it enters the backup namespace: the passphrases it needs."""
    return loaded(cfg, job.opens)
