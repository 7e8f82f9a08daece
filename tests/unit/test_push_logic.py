"""The pure parts of a push job: its keys' forced commands, the rsync command lines, what
ssh and rsync say turned into a reason, and the configuration it is read from."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from offsite import sshkeys
from offsite.config import reader
from offsite.config.model import Job, JobKind, PushTarget
from offsite.jobs import push, pushkeys
from offsite.units import render

TO = PushTarget("far.example.org", "/srv/offsite/s1", "offsite", 2222,
                host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE", bandwidth=2 * 1024**2,
                compress=True)
JOB = Job("far", JobKind.PUSH, 3600.0, repositories=("main",), to=TO,
          paths=(Path("/srv/backups/tarballs"),))


def test_two_keys_one_writes_only_one_reads_only_both_confined_to_the_directory() -> None:
    caps = pushkeys.capabilities(TO)
    assert [(c.name, c.command) for c in caps] == [
        ("push", "rrsync -wo /srv/offsite/s1"), ("read", "rrsync -ro /srv/offsite/s1")]
    line = sshkeys.authorized_line(caps[0], "ssh-ed25519 AAAAkey c\n", "192.0.2.10")
    assert line == ('restrict,from="192.0.2.10",command="rrsync -wo /srv/offsite/s1" '
                    "ssh-ed25519 AAAAkey c")


def test_ssh_of_a_push_key_pins_the_far_side(tmp_path: Path) -> None:
    argv = pushkeys.ssh_command(JOB, pushkeys.PUSH, tmp_path)
    assert argv[argv.index("-i") + 1] == str(tmp_path / "far" / "push")
    assert "StrictHostKeyChecking=yes" in argv and argv[-2:] == ["-l", "offsite"]
    assert pushkeys.known_hosts_line(TO) == \
        "[far.example.org]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE\n"


def test_a_new_tree_links_to_the_complete_one_and_never_copies_borgs_lock() -> None:
    first = push.tree_options(None, "main")
    assert not any(o.startswith("--link-dest") for o in first)
    assert "--exclude=/lock.exclusive" in first and "--exclude=/lock.roster" in first
    assert "--delete" in first and "--mkpath" in first
    later = push.tree_options("20261130T101500Z", "main")
    assert "--link-dest=/main.offsite/20261130T101500Z" in later  # rooted at DIR by rrsync


def test_rsync_carries_the_bandwidth_limit_compression_and_fsync() -> None:
    argv = push.rsync_argv(JOB, ["ssh", "-p", "2222"], "a/", "far.example.org:b/")
    assert argv[0] == "rsync" and "--fsync" in argv and "--bwlimit=2048" in argv
    assert "--compress" in argv and argv[-2:] == ["a/", "far.example.org:b/"]
    assert argv[argv.index("--rsh") + 1] == "ssh -p 2222"
    plain = Job("p", JobKind.PUSH, 1.0, to=PushTarget("h", "/d"))
    assert not {"--compress"} & set(push.rsync_argv(plain, ["ssh"]))
    assert not any(a.startswith("--bwlimit") for a in push.rsync_argv(plain, ["ssh"]))


def test_where_things_go_on_the_far_side() -> None:
    assert push.trees("main") == "main.offsite"
    assert push.far_files(Path("/srv/backups/tarballs")) == "files/srv/backups/tarballs"
    assert push.new_tree(0.0) == "19700101T000000Z"


def test_the_bytes_sent_are_read_from_rsyncs_totals() -> None:
    said = ["Number of files: 12 (reg: 10, dir: 2)", "Total bytes sent: 1,443,097",
            "Total bytes received: 523"]
    assert push.bytes_sent(said) == 1443097
    assert push.bytes_sent(["nothing"]) == 0


@pytest.mark.parametrize(("said", "means"), [
    ("ssh: connect to host 127.0.0.1 port 22: Connection refused", "cannot reach"),
    ("ssh: Could not resolve hostname far.example.org: Name or service not known",
     "cannot reach"),
    ("Host key verification failed.", "host key is not the one"),
    ("@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @", "host key is not the one"),
    ("offsite@127.0.0.1: Permission denied (publickey).", "refused the job's key"),
    ("rsync: [receiver] write failed on \"x\": No space left on device (28)", "is full"),
    ("/usr/bin/rrsync error: Another instance of rrsync is already accessing this directory.",
     "still open"),
    ("/usr/bin/rrsync error: option --server has been disabled on this server.",
     "rrsync refused"),
    ("rsync: connection unexpectedly closed (0 bytes received so far) [sender]", "was lost"),
    ("client_loop: send disconnect: Broken pipe", "was lost"),
])
def test_what_ssh_and_rsync_say_becomes_a_reason_and_what_to_do(said: str, means: str) -> None:
    found = push.reason(JOB, f"some line\n{said}\nrsync error: ... (code 12)")
    assert found is not None and means in found[0], found
    assert found[1]  # always something to do


def test_an_unknown_failure_has_no_made_up_reason() -> None:
    assert push.reason(JOB, "rsync: something new went wrong") is None


def _cfg(tmp_path: Path, jobs: str) -> Path:
    path = tmp_path / "offsite.yaml"
    path.write_text("repositories:\n  main: {path: /srv/borg/main}\n  files: {path: /srv/f}\n"
                    "jobs:\n" + textwrap.indent(textwrap.dedent(jobs), "  "))
    return path


def test_a_push_job_is_read_with_its_defaults_and_renders_with_the_network(
        tmp_path: Path) -> None:
    cfg = reader.load(_cfg(tmp_path, """\
        far:
          kind: push
          schedule: daily
          repositories: [main]
          paths: [/srv/backups]
          to: {host: far.example.org, path: /srv/offsite/s1/, bandwidth: 500K}
        proof: {kind: restore-test, repositories: [main], push: far}
        """))
    job = cfg.job("far")
    assert job.to == PushTarget("far.example.org", "/srv/offsite/s1", "offsite", 22,
                                bandwidth=500 * 1024)
    assert job.timeout == 12 * 3600 and job.paths == (Path("/srv/backups"),)
    assert cfg.job("proof").of_push == "far"
    units = render.render(cfg, Path("/usr/bin/offsite"), cfg.source).files
    for name in ("offsite-far.service", "offsite-proof.service"):
        assert "AF_INET" in units[name] and "PrivateNetwork" not in units[name], name
        assert "After=network-online.target" in units[name]


@pytest.mark.parametrize(("jobs", "where", "says"), [
    ("far: {kind: push, to: {host: h, path: /x}}", "jobs.far.repositories", "names neither"),
    ("far: {kind: push, repositories: [files], to: {host: h, path: /x}}",
     "jobs.far.repositories", "would collide"),
    ("far: {kind: push, paths: [/a], to: {host: h, path: '/x y'}}", "jobs.far.to.path",
     "letters, digits"),
    ('far: {kind: push, paths: [/a], to: {host: h, path: \'/x"\'}}', "jobs.far.to.path",
     "letters, digits"),
    ("far: {kind: push, paths: [/a], to: {host: h, path: /x/../etc}}", "jobs.far.to.path",
     "without . or .."),
    ("far: {kind: push, paths: [/a], to: {host: h, path: /}}", "jobs.far.to.path",
     "below /"),
    ("far: {kind: push, paths: [/a]}", "jobs.far.to", "required"),
    ("far: {kind: push, paths: [/a], to: {host: h, path: /x, bandwidth: 10}}",
     "jobs.far.to.bandwidth", ""),
    ("far: {kind: push, paths: [/a], to: {host: h, path: /x}}\n"
     "t: {kind: restore-test, repositories: [main], push: fra}", "jobs.t.push",
     "did you mean 'far'"),
    ("far: {kind: push, paths: [/a], to: {host: h, path: /x}}\n"
     "t: {kind: restore-test, repositories: [main], push: far}", "jobs.t.repositories",
     "does not send 'main'"),
    ("m: {kind: mirror, repositories: [main], drive: d, to: {host: h, path: /x}}",
     "jobs.m.to", ""),
])
def test_a_push_that_cannot_work_is_refused_at_its_key(tmp_path: Path, jobs: str, where: str,
                                                        says: str) -> None:
    with pytest.raises(reader.ConfigError) as info:
        reader.load(_cfg(tmp_path, jobs))
    found = [p for p in info.value.problems if p.path == where]
    assert found and says in f"{found[0].message} {found[0].hint}", info.value.problems


def test_the_switch_sends_the_symlink_then_deletes_only_the_older_trees() -> None:
    options = push.switch_options("main", "20261130T101500Z")
    assert "--delete-after" in options and "--links" in options  # the symlink first
    assert "--filter=P /main.offsite/20261130T101500Z/" in options  # the new tree stays
    # only DIR/main and DIR/main.offsite/ are looked at: files/, other repositories and
    # offsite-recovery/ are excluded, so never deleted
    assert options[-3:] == ["--include=/main", "--include=/main.offsite/", "--exclude=/*"]


def test_rsyncs_progress_lines_become_a_progress_line_of_the_push() -> None:
    moving = push.progress("     52,428,800  45%   10.50MB/s    0:00:12 (xfr#3, to-chk=5/9)")
    assert moving == push.Progress(52428800, 45, "10.50MB/s", "0:00:12")
    assert push.progress_text(moving) == \
        "push: 50.0 MiB of about 111.1 MiB (45%), 10.50MB/s, 0:00:12 left"
    assert push.progress("sending incremental file list") is None
    assert push.progress("Total bytes sent: 1,234") is None
    assert "of about" not in push.progress_text(push.Progress(0, 0, "0.00kB/s", "0:00:00"))
