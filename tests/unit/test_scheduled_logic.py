"""The pure parts of the scheduled jobs: authorized_keys lines, the ssh and rsync command
lines of a pull, reading borg's JSON log, judging a restored file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from offsite import sshkeys
from offsite.config.model import Job, JobKind, PullSource
from offsite.errors import Fatal
from offsite.jobs import borgjson, pull, pullkeys, restoretest

SOURCE = PullSource("vps.example.org", ("/srv/app/data", "/etc"), "backup", 2222,
                    before="docker stop app", after="docker start app",
                    host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE")
JOB = Job("vps", JobKind.PULL, 3600.0, pull=SOURCE, destination=Path("/backup/holding/vps"))


def test_one_key_per_capability_each_forced_to_one_command() -> None:
    caps = pullkeys.capabilities(SOURCE)
    assert [(c.name, c.command) for c in caps] == [
        ("before", "docker stop app"),
        ("path-1", "rrsync -ro /srv/app/data"),
        ("path-2", "rrsync -ro /etc"),
        ("after", "docker start app"),
    ]
    line = sshkeys.authorized_line(caps[1], "ssh-ed25519 AAAAkey offsite pull vps path-1\n",
                                   "192.0.2.10")
    assert line == ('restrict,from="192.0.2.10",command="rrsync -ro /srv/app/data" '
                    "ssh-ed25519 AAAAkey offsite pull vps path-1")
    spaced = pullkeys.capabilities(PullSource("h", ("/srv/my data",)))
    assert spaced[0].command == "rrsync -ro '/srv/my data'"


@pytest.mark.parametrize("bad", ['1.2.3.4" ,command="sh', "a b", "", "host;rm"])
def test_a_from_pattern_cannot_break_out_of_its_quotes(bad: str) -> None:
    with pytest.raises(Fatal):
        sshkeys.authorized_line(pullkeys.capabilities(SOURCE)[0], "ssh-ed25519 AAAA", bad)


def test_ssh_uses_only_the_keys_and_host_key_offsite_gives_it(tmp_path: Path) -> None:
    cap = pullkeys.capabilities(SOURCE)[1]
    argv = pullkeys.ssh_command(JOB, cap, tmp_path)
    assert argv[:4] == ["ssh", "-F", "none", "-i"] and argv[4] == str(tmp_path / "vps" / "path-1")
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[-2:] == ["-l", "backup"]
    assert pullkeys.known_hosts_line(SOURCE) == \
        "[vps.example.org]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE\n"
    unpinned = Job("x", JobKind.PULL, 1.0, pull=PullSource("h", ("/a",)), destination=Path("/d"))
    assert "StrictHostKeyChecking=accept-new" in pullkeys.ssh_command(
        unpinned, pullkeys.capabilities(unpinned.pull)[0], tmp_path)  # type: ignore[arg-type]


def test_rsync_pulls_the_root_of_what_rrsync_allows_into_its_own_directory() -> None:
    cap = pullkeys.capabilities(SOURCE)[1]
    target = pull.target_dir(JOB.destination, "/srv/app/data")  # type: ignore[arg-type]
    assert target == Path("/backup/holding/vps/srv/app/data")
    argv = pull.rsync_argv(JOB, cap, target)
    assert argv[0] == "rsync" and "--delete" in argv and "--numeric-ids" in argv
    assert argv[-2:] == ["vps.example.org:/", "/backup/holding/vps/srv/app/data/"]
    assert argv[argv.index("--rsh") + 1].startswith("ssh -F none -i ")


def progress(current: int, total: int, msgid: str = "repository.check", finished: bool = False
             ) -> str:
    return json.dumps({"type": "progress_percent", "current": current, "total": total,
                       "msgid": msgid, "finished": finished,
                       "message": f"Checking segments {100 * current / total:.1f}%"})


def test_borg_progress_becomes_a_line_per_ten_percent() -> None:
    reader = borgjson.Reader()
    said = [reader.feed(progress(i, 1000), now=0.0) for i in range(1000)]
    logged = [s for s in said if s is not None]
    assert len(logged) == 10
    assert logged[3][2] == {"PROGRESS_PERCENT": "30.0", "PROGRESS_OPERATION": "repository.check"}
    assert reader.feed(progress(1000, 1000, finished=True), now=0.0) is None
    # a slow run still says something every minute
    slow = borgjson.Reader()
    assert slow.feed(progress(1, 1000), now=0.0) is not None
    assert slow.feed(progress(2, 1000), now=30.0) is None
    assert slow.feed(progress(3, 1000), now=61.0) is not None


def test_borg_log_messages_keep_their_level_and_errors_are_kept() -> None:
    reader = borgjson.Reader()
    error = json.dumps({"type": "log_message", "levelname": "ERROR", "message": "Index corrupted"})
    assert reader.feed(error, 0.0) == (logging.ERROR, "Index corrupted", {})
    assert reader.feed("plain text", 0.0) == (logging.INFO, "plain text", {})
    assert reader.feed(json.dumps({"type": "file_status", "path": "x"}), 0.0) is None
    assert reader.errors == ["Index corrupted"]


def test_a_restored_file_is_judged_against_its_source(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_text("hello\n")
    st = source.stat()
    item = restoretest.Item("f", st.st_size, st.st_mtime)
    same = restoretest.digest(source)
    assert restoretest.judge(item, same, source) == "same"
    assert restoretest.judge(item, "0" * 64, source) == "MISMATCH"
    os.utime(source, (st.st_atime, st.st_mtime + 10))
    assert restoretest.judge(item, "0" * 64, source) == "changed"
    assert restoretest.judge(item, same, tmp_path / "missing") == "gone"


def test_only_regular_files_are_sampled() -> None:
    listing = "\n".join(json.dumps(d) for d in [
        {"type": "d", "path": "srv", "size": 0, "mtime": "2026-11-23T00:29:24.867237"},
        {"type": "-", "path": "srv/a", "size": 3, "mtime": "2026-11-23T00:29:24.867237",
         "source": ""},
        {"type": "-", "path": "srv/b", "size": 3, "mtime": "2026-11-23T00:29:24.867237",
         "source": "srv/a"},
        {"type": "l", "path": "srv/c", "size": 0, "mtime": "2026-11-23T00:29:24.867237"},
    ])
    found = restoretest.items(listing)
    assert [i.path for i in found] == ["srv/a"]
    assert restoretest.sample(found * 5, 3) and len(restoretest.sample(found, 10)) == 1


def test_archives_borg_1_4_cannot_authenticate_are_named_with_the_command_that_fixes_them() -> None:
    """What borg 1.4.0 (Debian 13) said of a repository whose archive borg 1.2.4 had
    renamed: `borg check` (it would delete the archive with --repair), and extract."""
    check = [
        "Archive TAM authentication issue for archive uno: Data integrity error: Archive "
        "authentication did not verify",
        "This archive will be *removed* from the manifest! It will be deleted.",
        "Archive consistency check complete, problems found."]
    found = borgjson.tam_refused(check, "main", "/srv/borg/main")
    assert found is not None
    assert "archives this borg cannot authenticate (uno)" in found[0]
    assert "Never run borg check --repair" in found[0]
    assert "borg upgrade --archives-tam /srv/borg/main" in found[1]
    extract = ("borg.crypto.key.ArchiveTAMInvalid: Data integrity error: Archive authentication "
               "did not verify")
    found = borgjson.tam_refused([extract], "main", "/srv/borg/main")
    assert found is not None and "--archives-tam" in found[1]
    manifest = borgjson.tam_refused(["Manifest authentication did not verify"], "m", "/r")
    assert manifest is not None and "borg upgrade --tam /r" in manifest[1]
    assert borgjson.tam_refused(["Archive consistency check complete, problems found."],
                                "m", "/r") is None
