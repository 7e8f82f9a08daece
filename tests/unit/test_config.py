"""Config validation: every bad input named in the foundation issue, through the real loader."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from offsite.config import reader, schema
from offsite.config.model import DriveTrigger, DriveType, JobKind, OnWarning, Schedule

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "offsite.yaml"

GOOD = """\
drives:
  d1:
    uuid: 11111111-2222-3333-4444-555555555555
    type: plain
    mount: /mnt/offsite
repositories:
  main:
    path: /backup/borg/main
jobs:
  copy:
    kind: mirror
    repositories: [main]
    drive: d1
  nightly:
    kind: borgmatic
    repositories: [main]
    schedule: daily
"""


def write(tmp_path: Path, text: str, name: str = "offsite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[reader.Problem]:
    with pytest.raises(reader.ConfigError) as info:
        reader.load(write(tmp_path, text))
    return info.value.problems


def one(tmp_path: Path, text: str) -> reader.Problem:
    found = problems(tmp_path, text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def test_example_config_is_valid() -> None:
    cfg = reader.load(EXAMPLE)
    assert {j.name for j in cfg.jobs} == {"nightly", "weekly-check", "offsite-copy", "vps",
                                          "restore-test"}
    copy = cfg.job("offsite-copy")
    assert copy.trigger == DriveTrigger(("offsite-a", "offsite-b"))
    nightly = cfg.job("nightly")
    assert nightly.trigger == Schedule("*-*-* 02:30:00", 900.0)
    assert nightly.timeout == 6 * 3600


def test_good_config_parses_into_frozen_model(tmp_path: Path) -> None:
    cfg = reader.load(write(tmp_path, GOOD))
    drive = cfg.drive("d1")
    assert drive.type is DriveType.PLAIN
    assert drive.mount == Path("/mnt/offsite")
    assert cfg.job("nightly").kind is JobKind.BORGMATIC
    assert cfg.job("copy").timeout == 12 * 3600 == schema.JOBS.default("timeout", "mirror")
    with pytest.raises(AttributeError):
        drive.uuid = "x"  # type: ignore[misc]


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = one(tmp_path, "jobs:\n  a: [1, 2\n  b: 3\n")
    assert "YAML syntax error" in p.message
    assert p.loc is not None and p.loc.line == 3


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    p = one(tmp_path, text)
    assert "empty" in p.message


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("    schedule: daily", "    schedul: daily"))
    assert p.path == "jobs.nightly.schedul"
    assert "unknown key" in p.message and "'schedule'" in p.hint
    assert p.loc is not None and (p.loc.line, p.loc.column) == (17, 5)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD + "notfy: {}\n")
    assert p.path == "notfy" and "'notify'" in p.hint


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment"),
    [
        ("    type: plain", "    type: [plain]", "drives.d1.type", "got a list"),
        ("    mount: /mnt/offsite", "    mount: 42", "drives.d1.mount", "absolute path"),
        ("    schedule: daily", "    schedule: daily\n    verify_data: maybe",
         "jobs.nightly.verify_data", "applies only to borg-check"),
        ("    kind: borgmatic", "    kind: borgmatic\n    timeout: [1h]",
         "jobs.nightly.timeout", "expected text, got a list"),
        ("    repositories: [main]\n    schedule", "    repositories: {main: 1}\n    schedule",
         "jobs.nightly.repositories", "expected a list of text, got a mapping"),
    ],
)
def test_wrong_types(tmp_path: Path, old: str, new: str, path: str, fragment: str) -> None:
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new, 1))
    assert any(p.path == path and fragment in p.message for p in found), found


def test_wrong_type_for_a_whole_section(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace("repositories:\n  main:", "repositories: 3\nx:\n  main:"))
    # The broken section and the stray key; no follow-on "no repository named main".
    assert [(p.path, p.message) for p in found] == [
        ("repositories", "expected a mapping, got a number (3)"),
        ("x", "unknown key 'x'"),
    ]


def test_malformed_uuid(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("11111111-2222-3333-4444-555555555555", "1111-2222"))
    assert p.path == "drives.d1.uuid" and "not a UUID" in p.message
    assert p.loc is not None and p.loc.line == 3


def test_uuid_is_normalised_to_lower_case(tmp_path: Path) -> None:
    cfg = reader.load(write(tmp_path, GOOD.replace("11111111-2222-3333-4444-555555555555",
                                                   "ABCDEF01-2222-3333-4444-555555555555")))
    assert cfg.drive("d1").uuid == "abcdef01-2222-3333-4444-555555555555"


def test_duplicate_job_name(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD + "  nightly:\n    kind: borg-check\n    repositories: [main]\n")
    assert p.path == "jobs.nightly" and "defined twice" in p.message
    assert p.loc is not None and p.loc.line == 18


def test_duplicate_drive_name(tmp_path: Path) -> None:
    text = GOOD.replace("repositories:\n  main:", "  d1:\n    uuid: x\nrepositories:\n  main:", 1)
    p = one(tmp_path, text)
    assert p.path == "drives.d1" and "defined twice" in p.message


def test_two_drives_with_one_uuid(tmp_path: Path) -> None:
    second = ("  d2:\n    uuid: 11111111-2222-3333-4444-555555555555\n    type: plain\n"
              "    mount: /mnt/b\n")
    p = one(tmp_path, GOOD.replace("repositories:\n", second + "repositories:\n", 1))
    assert p.path == "drives.d2.uuid" and "same uuid" in p.message


def test_unknown_drive_and_repository(tmp_path: Path) -> None:
    text = GOOD.replace("drive: d1", "drive: d2").replace("[main]\n    schedule", "[mian]\n    schedule")
    found = {p.path: p for p in problems(tmp_path, text)}
    assert "no drive or rotation group named 'd2'" in found["jobs.copy.drive"].message
    assert "'main'" in found["jobs.nightly.repositories"].hint


def test_calendar_rejected_by_systemd(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("schedule: daily", "schedule: every second tuesday"))
    assert p.path == "jobs.nightly.schedule"
    assert "OnCalendar" in p.message and "Failed to parse" in p.message


def test_calendar_accepted_forms(tmp_path: Path) -> None:
    for expression in ["weekly", "Mon..Fri 22:30", "*-*-1 03:00:00", "hourly"]:
        reader.load(write(tmp_path, GOOD.replace("schedule: daily", f"schedule: '{expression}'")))


def test_relative_mount_point(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("mount: /mnt/offsite", "mount: mnt/offsite"))
    assert p.path == "drives.d1.mount" and "absolute" in p.message


LUKS = GOOD.replace("    type: plain", "    type: luks\n    keyfile: {keyfile}")


def test_keyfile_private_is_accepted(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(os.urandom(64))
    key.chmod(0o400)
    cfg = reader.load(write(tmp_path, LUKS.format(keyfile=key)))
    assert cfg.drive("d1").keyfile == key


def test_luks_without_keyfile(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("    type: plain", "    type: luks"))
    assert p.path == "drives.d1.keyfile" and "keyfile is required for luks drives" in p.message


def test_alias_bomb_is_rejected_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghij":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    started = time.monotonic()
    p = one(tmp_path, "\n".join(lines) + "\n")
    elapsed = time.monotonic() - started
    assert "alias" in p.message
    assert elapsed < 2.0  # the bound; the real figure is a few milliseconds


def test_self_referencing_alias(tmp_path: Path) -> None:
    p = one(tmp_path, "jobs: &j\n  x: *j\n")
    assert "alias" in p.message


def test_merge_keys_work(tmp_path: Path) -> None:
    text = GOOD + (
        "  weekly:\n    <<: &common {kind: borg-check, repositories: [main]}\n    schedule: weekly\n"
        "  monthly:\n    <<: *common\n    schedule: monthly\n    verify_data: true\n"
    )
    cfg = reader.load(write(tmp_path, text))
    assert cfg.job("weekly").kind is JobKind.BORG_CHECK
    assert cfg.job("monthly").repositories == ("main",) and cfg.job("monthly").verify_data


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (GOOD.replace("type: plain", "type: lusk")
            .replace("schedule: daily", "schedule: nope")
            .replace("mount: /mnt/offsite", "mount: relative"))
    found = problems(tmp_path, text)
    assert {p.path for p in found} >= {"drives.d1.type", "drives.d1.mount", "jobs.nightly.schedule"}
    lines = [p.loc.line for p in found if p.loc]
    assert lines == sorted(lines)


def test_problem_text_has_file_line_column_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("type: plain", "type: lusk"))
    with pytest.raises(reader.ConfigError) as info:
        reader.load(path)
    assert str(info.value).startswith(f"{path}:4:11: drives.d1.type: must be one of")
    assert "did you mean 'luks'?" in str(info.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(reader.ConfigError, match="cannot read"):
        reader.load(tmp_path / "absent.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"jobs: {\xe9: 1}\n")
    with pytest.raises(reader.ConfigError, match="not UTF-8"):
        reader.load(bad)


def test_job_kind_requirements(tmp_path: Path) -> None:
    text = GOOD + "  pull:\n    kind: pull\n    schedule: daily\n"
    found = {p.path for p in problems(tmp_path, text)}
    assert {"jobs.pull.source", "jobs.pull.destination"} <= found


def test_schedule_and_drive_together(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("    drive: d1", "    drive: d1\n    schedule: daily"))
    assert "not both" in p.message


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("    kind: borgmatic", '    kind: borgmatic\n    description: "two\\nlines"',
         "jobs.nightly.description"),
        ("    kind: borgmatic", "    kind: borgmatic\n    description: |\n      block\n      text",
         "jobs.nightly.description"),
        ("    path: /backup/borg/main", '    path: "/backup/x\\ny"', "repositories.main.path"),
        ("    schedule: daily", '    schedule: "daily\\nExecStart=/bin/sh"', "jobs.nightly.schedule"),
        ("[main]\n    schedule", '["main\\u0007"]\n    schedule', "jobs.nightly.repositories[0]"),
    ],
)
def test_control_characters_in_values(tmp_path: Path, old: str, new: str, path: str) -> None:
    assert old in GOOD
    p = one(tmp_path, GOOD.replace(old, new, 1))
    assert p.path == path and "control characters" in p.message


NOTIFY = GOOD + """\
notify:
  email:
    to: [admin@example.org]
    from: offsite@nas.example.org
    retry_every: 1min
    smtp:
      host: 127.0.0.1
      security: tls
      username: offsite
      ca_file: /etc/offsite/ca.pem
"""


def test_notification_settings(tmp_path: Path) -> None:
    text = NOTIFY.replace("    schedule: daily\n", "    schedule: daily\n    on_warning: fail\n"
                          "    mail_on_success: true\n    stale_after: 2d\n")
    cfg = reader.load(write(tmp_path, text))
    nightly = cfg.job("nightly")
    assert (nightly.on_warning, nightly.mail_on_success, nightly.stale_after) == \
        (OnWarning.FAIL, True, 2 * 86400)
    assert cfg.job("copy").stale_after is None and cfg.job("copy").on_warning is OnWarning.WARN
    email = cfg.notify.email
    assert email is not None and email.smtp is not None
    assert email.retry_every == 60 and email.smtp.port == 465
    # a username without password_file: the password comes as a systemd credential
    assert email.smtp.password_file is None and email.smtp.ca_file == Path("/etc/offsite/ca.pem")


@pytest.mark.parametrize(("old", "new", "path", "fragment"), [
    ("security: tls", "security: none", "notify.email.smtp.username",
     "would send the password in the clear"),
    ("      ca_file: /etc/offsite/ca.pem", "      ca_file: /etc/offsite/ca.pem\n      verify: false",
     "notify.email.smtp.ca_file", "verify is off"),
    ("retry_every: 1min", "retry_every: 0", "notify.email.retry_every", "at least 1s"),
    ("      username: offsite\n", "      password_file: /etc/offsite/pw\n",
     "notify.email.smtp.password_file", "needs a username"),
])
def test_bad_notification_settings(tmp_path: Path, old: str, new: str, path: str,
                                   fragment: str) -> None:
    problem = one(tmp_path, NOTIFY.replace(old, new))
    assert problem.path == path and fragment in problem.message, str(problem)


def test_bad_job_notification_keys(tmp_path: Path) -> None:
    text = GOOD.replace("    schedule: daily\n", "    schedule: daily\n    on_warning: ignore\n"
                        "    stale_after: -1d\n")
    found = {p.path for p in problems(tmp_path, text)}
    assert found == {"jobs.nightly.on_warning", "jobs.nightly.stale_after"}


PULL = GOOD + """\
  vps:
    kind: pull
    source:
      host: vps.example.org
      paths: [/srv/app]
      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE
    destination: /backup/holding/vps
    schedule: daily
"""


def test_pull_settings(tmp_path: Path) -> None:
    reads = "    schedule: daily\n    reads: [/backup/holding/vps]\n  vps:"
    cfg = reader.load(write(tmp_path, PULL.replace("    schedule: daily\n  vps:", reads)))
    vps = cfg.job("vps")
    assert vps.pull is not None and vps.pull.host_key == \
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE"
    assert cfg.job("nightly").reads == (Path("/backup/holding/vps"),)


@pytest.mark.parametrize(("old", "new", "path", "fragment"), [
    ("paths: [/srv/app]", "paths: ['/srv/\"x']", "jobs.vps.source.paths", "authorized_keys"),
    ("paths: [/srv/app]", "paths: [/srv/../etc]", "jobs.vps.source.paths", "authorized_keys"),
    ("host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE", "host_key: not a key",
     "jobs.vps.source.host_key", "not an SSH public key"),
    ("      host_key:", "      before: 'echo \"hi\"'\n      host_key:", "jobs.vps.source.before",
     "double quote"),
])
def test_bad_pull_settings(tmp_path: Path, old: str, new: str, path: str, fragment: str) -> None:
    problem = one(tmp_path, PULL.replace(old, new))
    assert problem.path == path and fragment in problem.message, str(problem)


def test_unknown_key_hints_come_from_the_schema(tmp_path: Path) -> None:
    p = one(tmp_path, GOOD.replace("    kind: mirror", "    kind: mirror\n    verify: true"))
    assert p.path == "jobs.copy.verify" and "'verify_data'" in p.hint
