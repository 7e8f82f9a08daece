"""Debian 13 as its users run it (issue #17): borgmatic 1.9 and borg 1.4 from Debian's
archive, offsite from its package.

- borgmatic 1.9 runs as offsite's nightly job inside the job's hardened unit and backup
  namespace, with the configuration form it documents (no deprecated sections) and the
  passphrase from its own `encryption_passcommand`: its runtime directory is writable
  there (the archive holds the bootstrap manifest borgmatic writes into it), and Debian's
  own borgmatic.timer, enabled by the package, is masked while offsite runs borgmatic and
  enabled again by `uninstall`.
- A repository written by borg 1.2.4 (this machine's, Debian 12), one archive renamed
  there: borg 1.4 cannot authenticate that archive. The borg-check job fails saying exactly
  what to run and never to repair; nothing is deleted; after the command it passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offsite import unitnames
from offsite.run import run

from .guest import Guest
from .test_luks import CONFIG, REPO, SECRET, _last_run, encrypted_repository
from .test_targets import start_job

OLD = "/srv/borg/old"
OLD_SECRET = "/etc/offsite/secrets/old.pass"
OLD_PASSPHRASE = "old passphrase"
BORGMATIC = "/etc/borgmatic/config.yaml"
OFFSITE = ["offsite", "--config", CONFIG]


def _borg_1_2_repository(work: Path) -> bytes:
    """A tarball of a repository made by this machine's borg (1.2.4 on Debian 12) with two
    archives, the first renamed (borg before 1.2.5 writes it without the archive TAM)."""
    version = run(["borg", "--version"]).stdout.split()[1]
    assert version.startswith("1.2."), f"this machine's borg is {version}, not 1.2"
    env = {"BORG_PASSPHRASE": OLD_PASSPHRASE, "BORG_BASE_DIR": str(work / "base")}
    (work / "data").mkdir()
    (work / "data" / "file").write_text("written in 2023\n")

    old = work / "old"
    run(["borg", "init", "--encryption=repokey-blake2", old], env=env)
    run(["borg", "create", f"{old}::first", work / "data"], env=env)
    run(["borg", "create", f"{old}::second", work / "data"], env=env)
    run(["borg", "rename", f"{old}::first", "renamed"], env=env)
    run(["tar", "-C", work, "-czf", work / "old.tgz", "old"])
    return (work / "old.tgz").read_bytes()


def _borg(g: Guest, *args: str, passphrase: str = "") -> str:
    env = f"BORG_PASSPHRASE='{passphrase}'" if passphrase else ". /root/.borg-env &&"
    return g.run(["sh", "-c", f"{env} borg " + " ".join(args)], timeout=600).stdout


@pytest.mark.parametrize("guest", ["trixie"], indirect=True)
def test_borgmatic_1_9_and_a_borg_1_2_repository_on_debian_13(
        guest: Guest, tmp_path: Path) -> None:
    g = guest
    assert g.run(["borgmatic", "--version"]).stdout.startswith("1.9.")
    assert g.run(["borg", "--version"]).stdout.startswith("borg 1.4.")
    assert g.run(["systemctl", "is-enabled", "borgmatic.timer"],
                 check=False).stdout.strip() == "enabled"  # as Debian's package leaves it

    encrypted_repository(g)
    g.run(["sh", "-c", "mkdir -p /srv/data && head -c 200000 /dev/urandom > /srv/data/one"])
    g.write(BORGMATIC, "\n".join([
        "source_directories:", "    - /srv/data",
        "repositories:", f"    - path: {REPO}", "      label: main",
        f"encryption_passcommand: cat {SECRET}",
        "keep_daily: 7", ""]))
    g.write("/root/old.tgz", _borg_1_2_repository(tmp_path))
    g.run(["sh", "-c", "mkdir -p /srv/borg && tar -C /srv/borg -xzf /root/old.tgz"])
    g.write(OLD_SECRET, OLD_PASSPHRASE + "\n", mode=0o400)
    g.write(CONFIG, json.dumps({
        "repositories": {"main": {"path": REPO, "borgmatic_config": BORGMATIC},
                         "old": {"path": OLD, "passphrase_file": OLD_SECRET}},
        "jobs": {"nightly": {"kind": "borgmatic", "repositories": ["main"]},
                 "weekly": {"kind": "borg-check", "repositories": ["main"]},
                 "old-check": {"kind": "borg-check", "repositories": ["old"]}},
        "notify": {"led": {"enabled": False}},
    }))
    said = g.run(["offsite", "--config", CONFIG, "install"], timeout=600).stdout
    assert "borgmatic.timer" in said, said
    assert g.run(["systemctl", "is-enabled", "borgmatic.timer"],
                 check=False).stdout.strip() == "masked"

    # borgmatic 1.9 inside the job's unit: an archive, with borgmatic's bootstrap manifest
    assert start_job(g, unitnames.job_unit("nightly")), _last_run(g, "nightly")
    archives = _borg(g, "list", "--short", REPO).split()
    assert len(archives) == 1, archives
    contents = _borg(g, "list", "--short", f"{REPO}::{archives[0]}")
    assert "srv/data/one" in contents
    assert "bootstrap/manifest.json" in contents, contents
    assert start_job(g, unitnames.job_unit("weekly")), _last_run(g, "weekly")
    checked = g.run([*OFFSITE, "check"])
    assert "installed borgmatic" not in checked.stderr, checked  # the form 1.9 documents

    # the form borgmatic 1.7 required (sections, repositories as strings): 1.9 still runs
    # it and warns; offsite's check says so under the setting that names the file, the
    # nightly job runs it, and offsite's own borg check finds the passphrase under storage:
    g.write(BORGMATIC, "\n".join([
        "location:", "    source_directories:", "        - /srv/data",
        "    repositories:", f"        - {REPO}",
        "storage:", f"    encryption_passcommand: cat {SECRET}",
        "retention:", "    keep_daily: 7", ""]))
    checked = g.run([*OFFSITE, "check"])
    assert f"repositories.main.borgmatic_config: {BORGMATIC}: the installed borgmatic " \
        "(1.9.14) accepts it and warns" in checked.stderr, checked
    assert "move your options out of sections to the global scope" in checked.stderr, checked
    assert start_job(g, unitnames.job_unit("nightly")), _last_run(g, "nightly")
    assert len(_borg(g, "list", "--short", REPO).split()) == 2
    assert start_job(g, unitnames.job_unit("weekly")), _last_run(g, "weekly")

    # a file borgmatic refuses: check fails naming the setting and borgmatic's reason, and
    # install changes nothing
    g.write(BORGMATIC, "\n".join([
        "source_directories:", "    - /srv/data", "repositories:", f"    - path: {REPO}",
        f"encryption_passcommand: cat {SECRET}", "keep_dayly: 7", ""]))
    checked = g.run([*OFFSITE, "check"], check=False)
    assert checked.returncode == 1, checked
    assert f"error: repositories.main.borgmatic_config: {BORGMATIC}: the installed borgmatic " \
        "(1.9.14) refuses it" in checked.stderr, checked
    assert "'keep_dayly' was unexpected" in checked.stderr, checked
    units = g.run(["sh", "-c", "ls -l --time-style=+%s.%N /etc/systemd/system/offsite*"]).stdout
    refused = g.run([*OFFSITE, "install"], check=False, timeout=600)
    assert refused.returncode == 1 and "nothing was installed" in refused.stderr, refused
    assert g.run(["sh", "-c", "ls -l --time-style=+%s.%N /etc/systemd/system/offsite*"]
                 ).stdout == units

    # the old repository: refused by borg 1.4 until upgraded, and offsite says how
    assert not start_job(g, unitnames.job_unit("old-check"))
    result, detail = _last_run(g, "old-check") or ("", "")
    assert result == "failed", (result, detail)
    assert "cannot authenticate (renamed)" in detail, detail
    assert "Never run borg check --repair" in detail, detail
    told = g.run(["journalctl", "-o", "cat", "-u", unitnames.job_unit("old-check")]).stdout
    assert f"what to do: check that the archives are yours (borg list {OLD}), then run: " \
        f"borg upgrade --archives-tam {OLD}" in told, told
    g.run(["sh", "-c", f"BORG_PASSPHRASE='{OLD_PASSPHRASE}' borg upgrade --archives-tam {OLD}"],
          timeout=600)
    assert start_job(g, unitnames.job_unit("old-check")), _last_run(g, "old-check")
    assert sorted(_borg(g, "list", "--short", OLD, passphrase=OLD_PASSPHRASE).split()) == [
        "renamed", "second"]  # nothing was deleted

    g.run(["offsite", "--config", CONFIG, "uninstall"], timeout=600)
    assert g.run(["systemctl", "is-enabled", "borgmatic.timer"],
                 check=False).stdout.strip() == "enabled"
