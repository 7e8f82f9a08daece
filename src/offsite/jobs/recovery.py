"""What an off-site drive carries so that a stranger's machine can restore it.

Beside the copies, each copy job writes `offsite-recovery/` on the drive: each encrypted
repository's key as `borg key export` gives it (still protected by its passphrase: a
keyfile repository cannot be opened without it), offsite's configuration, and RECOVERY.txt:
what is on the drive, which offsite and borg wrote it, each repository's id and latest
archive, and the commands that restore it on a new machine. Never a passphrase, never the
drive's own keyfile. Every file is written atomically and flushed: a drive pulled while
they are written still holds the previous set, or the new one.
"""

from __future__ import annotations

import logging
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offsite import __version__, durable
from offsite.config.model import Config, Job
from offsite.errors import Fatal
from offsite.jobs import borgjson, secrets
from offsite.log import fields
from offsite.run import CommandError, run

log = logging.getLogger(__name__)

DIRECTORY = "offsite-recovery"
README = "RECOVERY.txt"
_ID = re.compile(r"^id\s*=\s*([0-9a-f]{64})\s*$", re.M)


@dataclass(frozen=True)
class Copied:
    """One repository as the drive holds it, for RECOVERY.txt."""

    name: str
    repo_id: str  # borg's repository id ("" if unreadable)
    encryption: str  # "repokey", "keyfile", "none" or "unknown"
    key_file: str | None  # the exported key, relative to the recovery directory
    latest: str | None  # the latest archive's name (None: could not be read)
    passphrase_from: str  # where the passphrase is kept on the lost machine, for the reader


def is_repokey(config_text: str) -> bool:
    """Whether a repository's config holds its key (repokey) rather than a keyfile beside borg."""
    return re.search(r"^key\s*=\s*\S", config_text, re.M) is not None


def repository_id(config_text: str) -> str:
    found = _ID.search(config_text)
    return found.group(1) if found else ""


def text(copies: Sequence[Copied], drive: str, mount: str, borg_version: str, written: float,
         host: str, far: str | None = None) -> str:
    """RECOVERY.txt (pure): what is here and how to restore it, for someone who has only
    this drive and the passphrases. far: the copies are in this directory of another
    machine (a push job's), not on a drive."""
    if far is not None:
        return _far_text(copies, far, borg_version, written, host)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(written))
    lines = [
        "OFF-SITE BACKUP: HOW TO RESTORE IT",
        "",
        f"Written {stamp} by offsite {__version__} ({borg_version}) on {host}, to {drive}.",
        "This drive holds borg repositories. To restore them you need this drive and the",
        "passphrases below; nothing else from the lost machine.",
        "",
        "What you need to know (kept away from the machine, e.g. on paper):",
        "- the drive's LUKS passphrase, if the drive is encrypted (offsite's own keyfile",
        "  stayed on the lost machine: it is not on this drive);",
        "- each repository's borg passphrase.",
        "",
        "Repositories on this drive:",
    ]
    for c in copies:
        lines += [
            f"- {c.name}: {c.name}/ on the drive, borg repository id {c.repo_id or 'unknown'}",
            f"  encryption: {c.encryption}; latest archive when written: {c.latest or 'unknown'}",
            f"  key: {c.key_file or 'none needed (it travels inside the repository)'}",
            f"  the passphrase was kept at: {c.passphrase_from}",
        ]
    lines += [
        "",
        "On a new Debian machine, as root (the drive is /dev/sdX; check with lsblk):",
        "",
        "  apt install borgbackup cryptsetup",
        "  cryptsetup open --readonly /dev/sdX offsite   # asks for the LUKS passphrase",
        "  mkdir -p /mnt/offsite && mount -o ro /dev/mapper/offsite /mnt/offsite",
        "  (a drive without LUKS: mount -o ro /dev/sdX1 /mnt/offsite)",
        "  export BORG_BASE_DIR=$(mktemp -d)          # a borg of its own: no old cache, keys",
        "",
        "Then for each repository (REPO is its name above):",
        "",
        f"  borg key import /mnt/offsite/REPO /mnt/offsite/{DIRECTORY}/keys/REPO.key"
        "   # keyfile ones",
        "  borg list --bypass-lock /mnt/offsite/REPO                  # asks for its passphrase",
        "  (an unencrypted one: export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes first)",
        "  mkdir -p /srv/restore && cd /srv/restore",
        "  borg extract --bypass-lock /mnt/offsite/REPO::ARCHIVE      # or a path inside it",
        "",
        "The drive stays read-only throughout: nothing is changed on the only copy.",
        "With offsite installed, one command does all of the above:",
        "  offsite recover /dev/sdX --extract-to /srv/restore   # asks for each passphrase",
        f"offsite's configuration of the lost machine is in {DIRECTORY}/offsite.yaml.",
        "",
    ]
    return "\n".join(lines)


def _far_text(copies: Sequence[Copied], far: str, borg_version: str, written: float,
              host: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(written))
    lines = [
        "OFF-SITE BACKUP: HOW TO RESTORE IT",
        "",
        f"Written {stamp} by offsite {__version__} ({borg_version}) on {host}, which pushed",
        f"its copies into {far}. To restore them you need this directory and the",
        "passphrases below; nothing else from the lost machine.",
        "",
        "Repositories here (each REPO is a symlink to the last complete copy, in",
        "REPO.offsite/; the other trees there are unfinished pushes):",
    ]
    for c in copies:
        lines += [
            f"- {c.name}: borg repository id {c.repo_id or 'unknown'}",
            f"  encryption: {c.encryption}; latest archive when written: {c.latest or 'unknown'}",
            f"  key: {c.key_file or 'none needed (it travels inside the repository)'}",
            f"  the passphrase was kept at: {c.passphrase_from}",
        ]
    lines += [
        "",
        "On this machine or any other Debian machine with this directory (copy it with",
        "rsync -aH first if you like: DIR below is where it is), as root:",
        "",
        "  apt install borgbackup",
        "  export BORG_BASE_DIR=$(mktemp -d)          # a borg of its own: no old cache, keys",
        f"  borg key import DIR/REPO DIR/{DIRECTORY}/keys/REPO.key   # keyfile ones",
        "  borg list --bypass-lock DIR/REPO                    # asks for its passphrase",
        "  mkdir -p /srv/restore && cd /srv/restore",
        "  borg extract --bypass-lock DIR/REPO::ARCHIVE        # or a path inside it",
        "",
        f"offsite's configuration of the lost machine is in {DIRECTORY}/offsite.yaml.",
        "Plain directories it pushed are under files/, by their path on that machine.",
        "",
    ]
    return "\n".join(lines)


def _export_key(repo: Path, name: str, keys: Path) -> tuple[str, str | None]:
    """(encryption, key file name) of repo; the key exported into keys/ when there is one."""
    try:
        exported = run(["borg", "key", "export", "--", str(repo), "-"]).stdout
    except CommandError as exc:
        if "not available for unencrypted" in exc.stderr:
            return "none", None
        log.warning("the key of repository %s could not be exported: %s", name, exc)
        return "unknown", None
    path = keys / f"{name}.key"
    durable.replace(path, exported, mode=0o600)
    config = (repo / "config").read_text(errors="replace") if (repo / "config").exists() else ""
    return ("repokey" if is_repokey(config) else "keyfile"), \
        f"keys/{name}.key"


def _latest(cfg: Config, name: str, passphrases: dict[str, str]) -> str | None:
    repo = cfg.repository(name)
    try:
        access = secrets.access(repo, passphrases)
        out = run(["borg", "list", "--last", "1", "--short", "--", str(repo.path)],
                  env=access.env, fd_secret=access.fd_secret).stdout.strip()
    except (CommandError, Fatal) as exc:
        log.warning("the latest archive of repository %s could not be read: %s", name, exc)
        return None
    return out or None


def write(cfg: Config, job: Job, mount: Path, what: str, passphrases: dict[str, str],
          far: str | None = None) -> None:
    """Write the recovery set for job's repositories onto the drive mounted at mount (far:
    into a directory sent to that place of another machine)."""
    directory = mount / DIRECTORY
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    copies = []
    for name in job.repositories:
        repo = cfg.repository(name)
        encryption, key_file = _export_key(repo.path, name, keys)
        config = repo.path / "config"
        secret = repo.passphrase
        copies.append(Copied(
            name, repository_id(config.read_text(errors="replace") if config.exists() else ""),
            encryption, key_file, _latest(cfg, name, passphrases),
            f"{secret.source} {secret.where}" if secret else "(no passphrase configured)"))
    try:
        borg_version = run(["borg", "--version"]).stdout.strip()
    except CommandError:
        borg_version = "borg (version unknown)"
    durable.replace(directory / "offsite.yaml", cfg.source.read_text(), mode=0o600)
    durable.replace(directory / README, text(copies, what, str(mount), borg_version, time.time(),
                                             platform.node(), far), mode=0o644)
    durable.fsync_dir(keys)
    durable.fsync_dir(directory)
    log.info("%s: recovery notes, keys and configuration written to %s", what, DIRECTORY,
             extra=fields(job=job.name))


# -- getting it back: `offsite recover` ------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A repository on a drive being recovered."""

    name: str
    path: Path  # on the read-only mount
    key: Path | None  # its exported key on the drive, if one was written


def repositories_on(mount: Path) -> list[Found]:
    """The borg repositories at the top of a drive (a copy is DIR -> DIR.offsite/<n>)."""
    found = []
    keys = mount / DIRECTORY / "keys"
    for entry in sorted(mount.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(".offsite") or entry.name == DIRECTORY:
            continue
        if (entry / "config").is_file() and (entry / "data").is_dir():
            key = keys / f"{entry.name}.key"
            found.append(Found(entry.name, entry, key if key.is_file() else None))
    return found


def recover(device: Path, ask: Callable[[str], str], extract_to: Path | None = None,
            archive: str | None = None, only: Sequence[str] = (),
            luks_key: Path | None = None) -> list[str]:
    """Open a drive on any machine, read-only, with a borg of its own (no keys, cache or
    configuration of this machine: it also works on the machine that made the copy), and
    list each repository's archives; with extract_to, extract archive (default: the
    latest) of each. ask(repository) returns its passphrase (a terminal prompt, or a file).
    Returns the lines to print. Everything is closed and unmounted afterwards."""
    import secrets as random_names
    import tempfile

    from offsite.run import interactive

    out: list[str] = []
    luks = run(["cryptsetup", "isLuks", "--", str(device)], check=False).returncode == 0
    mapper = f"offsite-recover-{random_names.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="offsite-recover-") as work:
        mount, base = Path(work) / "drive", Path(work) / "borg"
        mount.mkdir()
        base.mkdir(mode=0o700)
        source = str(device)
        if luks:
            argv = ["cryptsetup", "open", "--readonly", *(["--key-file", str(luks_key)]
                                                          if luks_key else []),
                    "--", str(device), mapper]
            if interactive(argv) != 0:  # asks for the drive's passphrase on the terminal
                raise Fatal(f"{device}: the LUKS passphrase did not open it")
            source = f"/dev/mapper/{mapper}"
        try:
            run(["mount", "-o", "ro,nodev,nosuid,noexec", "--", source, str(mount)])
            try:
                found = [f for f in repositories_on(mount) if not only or f.name in only]
                if not found:
                    raise Fatal(f"{device} holds no borg repository" +
                                (f" named {', '.join(only)}" if only else ""))
                env = {"BORG_BASE_DIR": str(base),
                       "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
                for repo in found:
                    out += _recover_one(repo, env, ask, extract_to, archive)
            finally:
                run(["umount", "--", str(mount)], check=False)
        finally:
            if luks:
                run(["cryptsetup", "close", mapper], check=False)
    return out


def _recover_one(repo: Found, env: dict[str, str], ask: Callable[[str], str],
                 extract_to: Path | None, archive: str | None) -> list[str]:
    from offsite.run import FdSecret

    def borg(*args: str, passphrase: str | None, cwd: Path | None = None) -> str:
        return run(["borg", "--log-json", *args], env=env, cwd=cwd,
                   fd_secret=FdSecret(secrets.BORG_FD, passphrase) if passphrase else None,
                   ).stdout

    out = [f"repository {repo.name} ({repo.path.name} on the drive)"]
    if repo.key is not None and not is_repokey((repo.path / "config").read_text(errors="replace")):
        borg("key", "import", "--", str(repo.path), str(repo.key), passphrase=None)
        out.append(f"  key imported from {DIRECTORY}/keys/{repo.key.name}")
    passphrase: str | None = None
    try:
        listed = borg("list", "--bypass-lock", "--short", "--", str(repo.path), passphrase=None)
    except CommandError as exc:
        if borgjson.passphrase_refused(borgjson.msgids_of(exc.stderr), repo.name, "") is None:
            raise Fatal(f"cannot open {repo.name}: {exc}") from exc
        passphrase = ask(repo.name)
        try:
            listed = borg("list", "--bypass-lock", "--short", "--", str(repo.path),
                          passphrase=passphrase)
        except CommandError as again:
            refused = borgjson.passphrase_refused(borgjson.msgids_of(again.stderr), repo.name, "")
            raise Fatal(*(refused or (f"cannot open {repo.name}: {again}",))) from again
    archives = listed.split()
    out.append(f"  archives: {' '.join(archives) or 'none'}")
    if extract_to is not None and archives:
        chosen = archive or archives[-1]
        if chosen not in archives:
            raise Fatal(f"repository {repo.name} has no archive {chosen!r}",
                        f"its archives: {', '.join(archives)}")
        target = extract_to / repo.name
        target.mkdir(parents=True, exist_ok=True)
        borg("extract", "--bypass-lock", "--", f"{repo.path}::{chosen}", passphrase=passphrase,
             cwd=target)
        out.append(f"  extracted {chosen} into {target}")
    return out
