"""Repository passphrases: where the configuration says they come from, how a unit loads
them, how borg is given them. The real thing (systemd credentials, borg) is in
tests/system/test_encrypted.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offsite.config import reader
from offsite.config.model import Passphrase, Repository, SecretSource
from offsite.errors import Fatal
from offsite.jobs import borgjson, secrets
from offsite.run import FdSecret
from offsite.units import render

from .test_config import GOOD, one, write


def secret_file(tmp_path: Path, mode: int = 0o400) -> Path:
    path = tmp_path / "main.pass"
    path.write_text("correct horse\n")
    path.chmod(mode)
    return path


def with_repo(text: str) -> str:
    return GOOD.replace("    path: /backup/borg/main\n", "    path: /backup/borg/main\n" + text)


def test_each_source_is_read_and_only_one_is_allowed(tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    cfg = reader.load(write(tmp_path, with_repo(f"    passphrase_file: {key}\n")))
    secret = cfg.repository("main").passphrase
    assert secret is not None and (secret.source, secret.where) == (SecretSource.FILE, str(key))
    cfg = reader.load(write(tmp_path, with_repo("    passcommand: cat /root/x\n")))
    assert cfg.repository("main").passphrase == Passphrase(SecretSource.COMMAND, "cat /root/x")
    p = one(tmp_path, with_repo(f"    passphrase_file: {key}\n    passcommand: cat /root/x\n"))
    assert p.path == "repositories.main.passcommand" and "one place" in p.message


@pytest.mark.parametrize(("mode", "fragment"), [(0o644, "readable by group or others"),
                                                (None, "does not exist")])
def test_a_passphrase_file_must_exist_and_be_private(tmp_path: Path, mode: int | None,
                                                      fragment: str) -> None:
    key = secret_file(tmp_path, mode or 0o400)
    if mode is None:
        key.unlink()
    p = one(tmp_path, with_repo(f"    passphrase_file: {key}\n"))
    assert p.path == "repositories.main.passphrase_file" and fragment in p.message


def test_a_path_systemd_cannot_load_is_refused(tmp_path: Path) -> None:
    p = one(tmp_path, with_repo("    passphrase_credential: /etc/cred store/main\n"))
    assert p.path == "repositories.main.passphrase_credential" and "LoadCredential" in p.message


def test_only_the_units_that_open_the_repository_load_its_passphrase(tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    check = "  check:\n    kind: borg-check\n    repositories: [main]\n"
    cfg = reader.load(write(tmp_path, with_repo(f"    passphrase_file: {key}\n") + check))
    out = render.render(cfg, Path("/usr/bin/offsite"), Path("/etc/offsite/offsite.yaml"))
    assert f"LoadCredential=offsite-borg-main:{key}\n" in out.files["offsite-check.service"]
    # the copy names the latest archive in the drive's RECOVERY.txt; borgmatic has its own
    assert "LoadCredential=offsite-borg-main:" in out.files["offsite-copy@d1.service"]
    assert "LoadCredential" not in out.files["offsite-nightly.service"]
    assert all("correct horse" not in text for text in out.files.values())


def test_borg_gets_the_passphrase_on_a_pipe_or_the_command_by_name() -> None:
    repo = Repository("main", Path("/r"), None,
                              Passphrase(SecretSource.FILE, "/k"))
    access = secrets.access(repo, {"main": "correct horse"})
    assert access.env == {} and access.fd_secret == FdSecret("BORG_PASSPHRASE_FD",
                                                                      "correct horse")
    with pytest.raises(Fatal, match="did not reach this job"):
        secrets.access(repo, {})
    command = Repository("c", Path("/r"), None,
                                 Passphrase(SecretSource.COMMAND, "pass show borg"))
    assert secrets.access(command, {}).env == {"BORG_PASSCOMMAND": "pass show borg"}


def test_a_borgmatic_configuration_gives_its_own_passphrase_setting(tmp_path: Path) -> None:
    config = tmp_path / "borgmatic.yaml"
    config.write_text("repositories: [{path: /r}]\nencryption_passcommand: cat /root/p\n")
    repo = Repository("b", Path("/r"), config,
                              Passphrase(SecretSource.BORGMATIC, str(config)))
    assert secrets.access(repo, {}).env == {"BORG_PASSCOMMAND": "cat /root/p"}
    config.write_text("storage:\n  encryption_passphrase: 'old style'\n")
    assert secrets.access(repo, {}).fd_secret == FdSecret("BORG_PASSPHRASE_FD", "old style")


def test_the_handover_pipe_carries_the_passphrases_once(monkeypatch: pytest.MonkeyPatch) -> None:
    handed = secrets.handover({"main": "correct horse"})
    assert handed is not None
    read_end, write_end = os.pipe()
    os.write(write_end, handed.value.encode())
    os.close(write_end)
    monkeypatch.setenv(secrets.HANDOVER, str(read_end))
    assert secrets.received() == {"main": "correct horse"}
    assert secrets.HANDOVER not in os.environ and secrets.received() is None


def test_borgs_refusal_is_named_for_what_it_is() -> None:
    wrong = borgjson.passphrase_refused(["PassphraseWrong"], "main", "file /k")
    assert wrong is not None and wrong[0] == "wrong passphrase for repository main (from file /k)"
    none = borgjson.passphrase_refused(["NoPassphraseFailure"], "main", "")
    assert none is not None and "no passphrase reached borg" in none[0]
    assert borgjson.passphrase_refused(["RepositoryDoesNotExist"], "main", "") is None


def test_a_refusal_after_borgs_own_prompt_is_still_read() -> None:
    output = ('Enter passphrase for key /r: {"type": "log_message", "message": "can not '
              'acquire a passphrase", "levelname": "ERROR", "msgid": "NoPassphraseFailure"}\n')
    assert borgjson.msgids_of(output) == ["NoPassphraseFailure"]
