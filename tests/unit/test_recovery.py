"""RECOVERY.txt, the page a stranger reads on the day the machine is gone (pure parts; the
drive that restores is in tests/system/test_encrypted.py)."""

from __future__ import annotations

from offsite.jobs import recovery

ID = "a638298b21d738171aca659095a8c4ec3d809498308993e0c9e05cec4296790c"


def test_the_repository_id_comes_from_borgs_config() -> None:
    config = f"[repository]\nversion = 1\nsegments_per_dir = 1000\nid = {ID}\nkey = hqlh\n"
    assert recovery.repository_id(config) == ID
    assert recovery.repository_id("[repository]\n") == ""


def test_the_page_names_each_repository_and_every_step_but_no_secret() -> None:
    copies = [recovery.Copied("main", ID, "keyfile", "keys/main.key", "nas-2026-11-30",
                              "file /etc/offsite/secrets/main.pass"),
              recovery.Copied("vm", "", "repokey", "keys/vm.key", None, "(no passphrase configured)")]
    page = recovery.text(copies, "drive offsite-a", "/mnt/offsite", "borg 1.2.4", 0.0, "nas")
    assert f"main: main/ on the drive, borg repository id {ID}" in page
    assert "encryption: keyfile; latest archive when written: nas-2026-11-30" in page
    assert "latest archive when written: unknown" in page
    assert "borg key import /mnt/offsite/REPO /mnt/offsite/offsite-recovery/keys/REPO.key" in page
    assert "mount -o ro" in page and "--bypass-lock" in page and "BORG_BASE_DIR=$(mktemp -d)" in page
    assert "the passphrase was kept at: file /etc/offsite/secrets/main.pass" in page
    assert "offsite" in page.splitlines()[2] and "borg 1.2.4" in page.splitlines()[2]


def test_the_far_side_of_a_push_gets_directions_for_a_directory_not_a_drive() -> None:
    copies = [recovery.Copied("main", "ab" * 32, "keyfile", "keys/main.key", "a1", "file /p")]
    page = recovery.text(copies, "x", "/tmp/stage", "borg 1.4.0", 0.0, "nas",
                         far="/srv/offsite/nas on home.example.org")
    assert "into /srv/offsite/nas on home.example.org" in page
    assert "cryptsetup" not in page and "borg key import DIR/REPO" in page
    assert "- main: borg repository id " + "ab" * 32 in page
