"""Every class of dangerous or broken configuration, refused by the real loader (issue #20).

One table: each row is one hostile or careless configuration as a user would write it, the
class it stands for, and the key path and words of the problem `offsite check` must report
(with file:line:column: checked for every row). Rows run through `reader.load` on a real
file with the real host checks (systemd-analyze, stat of the secret files).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from offsite.config import reader

BASE = """\
drives:
  d1:
    uuid: 11111111-2222-3333-4444-555555555555
    type: plain
    mount: /mnt/offsite
  d2:
    uuid: 11111111-2222-3333-4444-666666666666
    type: luks
    keyfile: {tmp}/keys/d2.key
    mount: /mnt/offsite-b
repositories:
  main:
    path: /backup/borg/main
    passphrase_file: {tmp}/keys/main.pass
jobs:
  copy:
    kind: mirror
    repositories: [main]
    drive: d1
  nightly:
    kind: borgmatic
    repositories: [main]
    schedule: daily
  vps:
    kind: pull
    schedule: daily
    destination: /backup/holding/vps
    source:
      host: vps.example.org
      paths: [/srv/app]
notify:
  email:
    to: [admin@example.org]
    from: offsite@example.org
    smtp:
      host: mail.example.org
      username: offsite
      password_file: {tmp}/keys/smtp.pass
  healthchecks:
    url: https://hc-ping.com/abc
namespace:
  mounts:
    - what: UUID=11111111-2222-3333-4444-777777777777
      where: /backup
"""


@dataclass(frozen=True)
class Case:
    cls: str  # the class of input it stands for
    old: str  # replaced in BASE (once) by new; "" appends new
    new: str
    path: str  # the key path the problem must name ("" for the file itself)
    words: str  # what the message (or its hint) must say
    prepare: Callable[[Path], None] | None = None  # makes files the row needs
    also: tuple[tuple[str, str], ...] = ()  # more (old, new) replacements


def _file(name: str, mode: int, uid: int = 0, gid: int = 0,
          text: str = "secret\n") -> Callable[[Path], None]:
    """A row's preparation: the file tmp/NAME with this content, owner and mode."""
    def make(tmp: Path) -> None:
        path = tmp / name
        path.write_text(text)
        os.chown(path, uid, gid)
        path.chmod(mode)
    return make


def _secret(name: str, mode: int, uid: int = 0) -> Callable[[Path], None]:
    return _file(f"keys/{name}", mode, uid)


def _link_to_public(name: str) -> Callable[[Path], None]:
    """keys/NAME becomes a symlink to a root-owned file others can read."""
    def make(tmp: Path) -> None:
        target = tmp / "public"
        target.write_text("secret\n")
        target.chmod(0o644)
        (tmp / "keys" / name).unlink()
        (tmp / "keys" / name).symlink_to(target)
    return make


J = "  nightly:\n    kind: borgmatic\n"
TIMEOUT = J + "    timeout: {}\n"
CASES = [
    # --- paths: / and the system's own directories
    Case("path", "path: /backup/borg/main", "path: /", "repositories.main.path", "cannot be /"),
    Case("path", "path: /backup/borg/main", "path: /etc/borg", "repositories.main.path",
         "inside /etc"),
    Case("path", "path: /backup/borg/main", "path: /home", "repositories.main.path",
         "cannot be /home"),
    Case("path", "path: /backup/borg/main", "path: /var/lib/offsite/x",
         "repositories.main.path", "inside /var/lib/offsite"),
    Case("path", "destination: /backup/holding/vps", "destination: /", "jobs.vps.destination",
         "cannot be /"),
    Case("path", "destination: /backup/holding/vps", "destination: /srv//", "jobs.vps.destination",
         "cannot be /srv"),
    Case("path", "destination: /backup/holding/vps", "destination: /usr/../proc/x",
         "jobs.vps.destination", "inside /proc"),
    Case("path", "mount: /mnt/offsite\n", "mount: /\n", "drives.d1.mount", "cannot be /"),
    Case("path", "mount: /mnt/offsite\n", "mount: //\n", "drives.d1.mount", "cannot be /,"),
    Case("path", "destination: /backup/holding/vps", "destination: //etc/x",
         "jobs.vps.destination", "inside /etc"),
    Case("path", "mount: /mnt/offsite\n", "mount: /run/offsite/d1\n", "drives.d1.mount",
         "inside /run"),
    Case("path", "where: /backup", "where: /", "namespace.mounts[0].where", "cannot be at /"),
    Case("path", "where: /backup", "where: /usr/lib", "namespace.mounts[0].where", "inside /usr"),
    Case("path", "namespace:\n", "namespace:\n  path: /tmp/ns.json\n", "namespace.path",
         "under /run"),
    # --- paths: one place inside another
    Case("overlap", "path: /backup/borg/main", "path: /mnt/offsite/main", "repositories.main.path",
         "inside the drive mount point of d1"),
    Case("overlap", "mount: /mnt/offsite-b", "mount: /backup/borg/main/drive",
         "repositories.main.path", "holds the drive mount point of d2"),
    Case("overlap", "mount: /mnt/offsite-b", "mount: /mnt/offsite", "drives.d2.mount",
         "same place as the drive mount point of d1"),
    Case("overlap", "    passphrase_file: {tmp}/keys/main.pass\n",
         "    passphrase_file: {tmp}/keys/main.pass\n  inner:\n    path: /backup/borg/main/sub\n",
         "repositories.inner.path", "inside the repository of main"),
    Case("overlap", "    passphrase_file: {tmp}/keys/main.pass\n",
         "    passphrase_file: {tmp}/keys/main.pass\n  twin:\n    path: /backup/borg/main/\n",
         "repositories.twin.path", "same place as the repository of main"),
    Case("overlap", "destination: /backup/holding/vps", "destination: /backup/borg/main",
         "jobs.vps.destination", "same place as the repository of main"),
    Case("overlap", "destination: /backup/holding/vps", "destination: /backup/borg",
         "jobs.vps.destination", "holds the repository of main"),
    Case("overlap", "destination: /backup/holding/vps", "destination: /mnt/offsite/vps",
         "jobs.vps.destination", "inside the drive mount point of d1"),
    Case("overlap", "notify:\n", "  vps2:\n    kind: pull\n    schedule: daily\n    destination: "
         "/backup/holding/vps/more\n    source: {host: h.example.org, paths: [/x]}\nnotify:\n",
         "jobs.vps2.destination", "inside the pull holding directory of vps"),
    Case("overlap", "where: /backup", "where: /backup/borg/main", "namespace.mounts[0].where",
         "would hide the repository of main"),
    Case("overlap", "where: /backup", "where: /mnt/offsite", "namespace.mounts[0].where",
         "would hide the drive mount point of d1"),
    Case("overlap", "      where: /backup\n", "      where: /backup\n    - what: /srv/x\n"
         "      where: /backup\n", "namespace.mounts[1].where", "two namespace mounts at /backup"),
    # --- names: the documented character set, offsite's own names, composed unit names
    *[Case("name", "  nightly:", f"  {name}:", f"jobs.{name.strip(chr(34))}", words)
      for name, words in [
          ("with space", "must not contain ' '"), ("unicod\u00e9", "must not contain '\u00e9'"),
          ("50%", "must not contain '%'"), ("$HOME", "must not contain '$'"),
          ("a:b", "must not contain ':'"), ("-leading", "must begin with a letter or a digit"),
          (".hidden", "must begin with a letter or a digit"), ("x" * 65, "at most 64")]],
    Case("name", "  copy:", '  "..":', "jobs...", "must begin with a letter or a digit"),
    Case("name", "  copy:", '  "a/b":', "jobs.a/b", "must not contain '/'"),
    Case("name", "  copy:", '  "a\\nb":', "jobs.a\nb", "must not contain '\\n'"),
    Case("name", "  copy:", '  "":', "jobs.", "must not be empty"),
    Case("name", "  d1:\n", '  "..":\n', "drives...", "must begin with a letter or a digit"),
    Case("name", "  main:\n", "  ../../etc:\n", "repositories.../../etc",
         "must begin with a letter or a digit"),
    Case("name", "    mount: /mnt/offsite\n", "    mount: /mnt/offsite\n    rotation: a b\n",
         "drives.d1.rotation", "must not contain ' '"),
    *[Case("name", "  nightly:", f"  {name}:", f"jobs.{name}", "a unit offsite writes for itself")
      for name in ("agent", "outbox", "stale", "namespace")],
    Case("name", "  main:\n", "  main.offsite:\n", "repositories.main.offsite", "would collide"),
    Case("name", "  main:\n", "  offsite-recovery:\n", "repositories.offsite-recovery",
         "would collide"),
    # each fits alone; offsite-JOB@DRIVE.service, '-' escaped to \x2d, does not
    Case("name", "  copy:", "  j" + "-" * 40 + ":", "jobs.j" + "-" * 40, "systemd allows 255",
         also=(("  d1:\n", "  d" + "-" * 40 + ":\n"), ("drive: d1", "drive: d" + "-" * 40))),
    # --- durations and numbers: bounds in the units systemd uses
    Case("number", J, TIMEOUT.format("400ms"), "jobs.nightly.timeout", "at least 1s"),
    Case("number", J, TIMEOUT.format("0"), "jobs.nightly.timeout", "at least 1s"),
    Case("number", J, TIMEOUT.format("infinity"), "jobs.nightly.timeout", "at most 30d"),
    Case("number", J, TIMEOUT.format("31d"), "jobs.nightly.timeout", "at most 30d"),
    Case("number", J, TIMEOUT.format("-5min"), "jobs.nightly.timeout", ""),
    Case("number", J, TIMEOUT.format("9999999999999999999999y"), "jobs.nightly.timeout", ""),
    Case("number", J, J + "    randomized_delay: 8d\n", "jobs.nightly.randomized_delay",
         "at most 7d"),
    Case("number", "    mount: /mnt/offsite\n", "    mount: /mnt/offsite\n    stale_after: 0\n",
         "drives.d1.stale_after", "at least 1s"),
    Case("number", "      host: mail.example.org\n", "      host: mail.example.org\n"
         "      port: 70000\n", "notify.email.smtp.port", "between 1 and 65535"),
    Case("number", "      host: mail.example.org\n", "      host: mail.example.org\n"
         "      timeout: 0\n", "notify.email.smtp.timeout", "at least 1s"),
    Case("number", "    to: [admin@example.org]\n", "    to: [admin@example.org]\n"
         "    retry_every: 7h\n", "notify.email.retry_every", "at most 6h"),
    Case("number", "    url: https://hc-ping.com/abc\n", "    url: https://hc-ping.com/abc\n"
         "    timeout: 2h\n", "notify.healthchecks.timeout", "at most 1h"),
    Case("number", "notify:\n", "notify:\n  led: {brightness: 0}\n", "notify.led.brightness",
         "between 1 and 100"),
    Case("number", "notify:\n", "notify:\n  led: {index: 64}\n", "notify.led.index",
         "between 0 and 63"),
    Case("number", "    kind: pull\n", "    kind: pull\n    timeout: 1e400\n",
         "jobs.vps.timeout", ""),
    Case("number", "      paths: [/srv/app]\n", "      paths: [/srv/app]\n      port: 0\n",
         "jobs.vps.source.port", "between 1 and 65535"),
    # --- lists that must not be empty
    Case("list", "    repositories: [main]\n    schedule", "    repositories: []\n    schedule",
         "jobs.nightly.repositories", "must not be empty"),
    Case("list", "    to: [admin@example.org]", "    to: []", "notify.email.to", "must not be empty"),
    Case("list", "      paths: [/srv/app]", "      paths: []", "jobs.vps.source.paths",
         "must not be empty"),
    # --- secrets: root's own and private, followed through symlinks
    Case("secret", "", "", "drives.d2.keyfile", "readable by group or others",
         _secret("d2.key", 0o644)),
    Case("secret", "", "", "drives.d2.keyfile", "belongs to uid 1000",
         _secret("d2.key", 0o400, uid=1000)),
    Case("secret", "", "", "repositories.main.passphrase_file", "readable by group or others",
         _secret("main.pass", 0o640)),
    Case("secret", "", "", "repositories.main.passphrase_file", "belongs to uid 1000",
         _secret("main.pass", 0o600, uid=1000)),
    Case("secret", "", "", "repositories.main.passphrase_file", "readable by group or others",
         _link_to_public("main.pass")),
    Case("secret", "", "", "notify.email.smtp.password_file", "readable by group or others",
         _secret("smtp.pass", 0o604)),
    Case("secret", "keys/d2.key", "keys/missing.key", "drives.d2.keyfile", "does not exist"),
    Case("secret", "    passphrase_file: {tmp}/keys/main.pass\n", "    borgmatic_config: "
         "{tmp}/borgmatic.yaml\n", "repositories.main.borgmatic_config", "writable by others",
         _file("borgmatic.yaml", 0o666, text="repositories: []\n")),
    Case("secret", "keys/d2.key", "keys", "drives.d2.keyfile", "not a regular file"),
    # --- URLs and addresses
    Case("url", "url: https://hc-ping.com/abc", "url: https://hc-ping.com/a b",
         "notify.healthchecks.url", "not an http(s) URL"),
    Case("url", "url: https://hc-ping.com/abc", "url: https://hc-ping.com/caf\u00e9",
         "notify.healthchecks.url", "printable ASCII"),
    Case("url", "url: https://hc-ping.com/abc", "url: file:///etc/shadow",
         "notify.healthchecks.url", "not an http(s) URL"),
    Case("url", "    to: [admin@example.org]", "    to: ['admin@example.org, x@evil.org']",
         "notify.email.to", "not an email address"),
    # --- the file itself
    Case("file", "path: /backup/borg/main", "path: !!python/object/apply:os.system [id]",
         "repositories.main.path", "YAML tag !!python/object/apply:os.system"),
    Case("file", "path: /backup/borg/main", "path: !secret /x", "repositories.main.path",
         "YAML tag !secret"),
    Case("file", "path: /backup/borg/main", "path: !!binary L2V0Yw==", "repositories.main.path",
         "YAML tag !!binary"),
    Case("file", "  main:\n", "  main: !!omap\n", "repositories.main", "YAML tag !!omap"),
    Case("file", "  main:\n", "  ? !!python/name:os.system\n  :\n", "repositories",
         "YAML tag !!python/name:os.system"),
    Case("file", "", "# " + "x" * (1 << 20) + "\n", "", "larger than 1024 KiB"),
    Case("file", "", "", "", "writable by others", _file("offsite.yaml", 0o646)),
    Case("file", "", "", "", "writable by its group", _file("offsite.yaml", 0o664, gid=1000)),
    Case("file", "", "", "", "belongs to uid 1000", _file("offsite.yaml", 0o644, uid=1000)),
    Case("file", "jobs:\n", "jobs:\n  nightly: {kind: borg-check}\n", "jobs.nightly",
         "defined twice"),
]


def _id(case: Case) -> str:
    return f"{case.cls}:{case.path or 'file'}:{case.new[:30] or 'prepared'}"


def _keys(tmp: Path) -> None:
    keys = tmp / "keys"
    keys.mkdir()
    for name in ("d2.key", "main.pass", "smtp.pass"):
        _secret(name, 0o400)(tmp)


def _load(tmp: Path, text: str) -> list[reader.Problem]:
    path = tmp / "offsite.yaml"
    path.write_text(text)
    with pytest.raises(reader.ConfigError) as info:
        reader.load(path)
    return info.value.problems


def test_the_base_configuration_is_accepted(tmp_path: Path) -> None:
    """Every row starts from this: a namespace mount holding the repositories and the holding
    directory, a plain and a LUKS drive, secrets that are root's own."""
    _keys(tmp_path)
    path = tmp_path / "offsite.yaml"
    path.write_text(BASE.format(tmp=tmp_path))
    cfg = reader.load(path)
    assert {j.name for j in cfg.jobs} == {"copy", "nightly", "vps"}


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_hostile_configuration_is_refused_where_it_is_written(tmp_path: Path,
                                                                case: Case) -> None:
    _keys(tmp_path)
    base = BASE.replace("{tmp}", str(tmp_path))
    old, new = (s.replace("{tmp}", str(tmp_path)) for s in (case.old, case.new))
    assert old in base, f"the row's old text is not in BASE: {old!r}"
    text = base.replace(old, new, 1) if old else base + new
    for more_old, more_new in case.also:
        assert more_old in text
        text = text.replace(more_old, more_new, 1)
    if case.prepare is not None:
        case.prepare(tmp_path)
    found = _load(tmp_path, text)
    match = [p for p in found if p.path == case.path and case.words in p.message + p.hint]
    assert match, "\n".join(map(str, found))
    rendered = str(match[0])
    if case.path:  # (a problem with the file as a whole has no line)
        assert match[0].loc is not None, "no file:line:column"
        assert rendered.startswith(f"{tmp_path / 'offsite.yaml'}:{match[0].loc}:"), rendered


def test_the_table_covers_every_class() -> None:
    assert {c.cls for c in CASES} == {"path", "overlap", "name", "number", "list", "secret",
                                      "url", "file"}


@pytest.mark.parametrize("name", ["a", "A1", "weekly-check", "main.2024", "x_y", "0day",
                                  "n" * 64])
def test_names_in_the_documented_set_are_accepted(tmp_path: Path, name: str) -> None:
    _keys(tmp_path)
    path = tmp_path / "offsite.yaml"
    path.write_text(BASE.format(tmp=tmp_path).replace("  nightly:", f"  {name}:"))
    assert name in {j.name for j in reader.load(path).jobs}


def test_drives_of_one_rotation_group_may_share_a_mount_point(tmp_path: Path) -> None:
    _keys(tmp_path)
    text = BASE.format(tmp=tmp_path).replace("mount: /mnt/offsite-b", "mount: /mnt/offsite")
    text = text.replace("    mount: /mnt/offsite\n", "    mount: /mnt/offsite\n    rotation: pair\n")
    path = tmp_path / "offsite.yaml"
    path.write_text(text)
    assert {d.rotation for d in reader.load(path).drives} == {"pair"}


@pytest.mark.parametrize("special", ["fifo", "directory", "device"])
def test_a_special_file_is_refused_before_it_is_read(tmp_path: Path, special: str) -> None:
    path = tmp_path / "offsite.yaml"
    if special == "fifo":
        os.mkfifo(path)  # reading it would hang check for good
    elif special == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")  # reading it would never end
    with pytest.raises(reader.ConfigError) as info:
        reader.load(path)
    assert "not a regular file" in str(info.value)


def test_a_file_over_the_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    """50 MB: refused from its size (bench/check_scale.py measures the memory)."""
    path = tmp_path / "offsite.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: the size is there, no bytes to read
    with pytest.raises(reader.ConfigError, match="larger than 1024 KiB"):
        reader.load(path)


def test_one_bad_schedule_among_many_is_named(tmp_path: Path) -> None:
    """All expressions go to one systemd-analyze call; the bad ones are told apart from its
    output (bench/check_scale.py times 1,500 of them)."""
    jobs = "".join(f"  c{i}:\n    kind: borg-check\n    repositories: [main]\n"
                   f"    schedule: '*-*-* {i:02d}:00'\n" for i in range(20))
    jobs += "  bad1:\n    kind: borg-check\n    repositories: [main]\n    schedule: 'never ever'\n"
    jobs += "  bad2:\n    kind: borg-check\n    repositories: [main]\n    schedule: \"it's 25:00\"\n"
    text = "repositories:\n  main: {path: /backup/borg/main}\njobs:\n" + jobs
    found = _load(tmp_path, textwrap.dedent(text))
    assert [p.path for p in found] == ["jobs.bad1.schedule", "jobs.bad2.schedule"]
    assert "'never ever'" in found[0].message and "it's 25:00" in found[1].message


ODD_VALUES = ["", "~", "[]", "{}", "[a, b]", "{a: 1}", "true", "-1", "0", "1e999", ".nan", ".inf",
              "99999999999999999999999999", "0x10", '"a\\u0000b"', '"\\\\"', "'%n'", "'$$'",
              "2024-01-01", "'..'", "'//'", "'-x'", '"\\u202e"', "'\u00fc'"]


def test_any_value_anywhere_is_refused_or_rendered_never_a_traceback(tmp_path: Path) -> None:
    """Each value of BASE replaced by each odd value (a list, a mapping, null, NaN, a huge
    number, a NUL, a lone backslash, a specifier...): `check` refuses it with a problem,
    or the units render; nothing raises anything else."""
    from offsite.units import render

    _keys(tmp_path)
    lines = BASE.format(tmp=tmp_path).splitlines()
    path = tmp_path / "offsite.yaml"
    tried = rendered = 0
    for i, line in enumerate(lines):
        head = line.split(": ", 1)[0] + ": " if ": " in line else None
        if head is None:
            continue
        for value in ODD_VALUES:
            path.write_text("\n".join([*lines[:i], head + value, *lines[i + 1:]]) + "\n")
            tried += 1
            try:
                cfg = reader.load(path)
            except reader.ConfigError:
                continue
            render.render(cfg, Path("/usr/sbin/offsite"), path)
            rendered += 1
    assert tried > 600 and 0 < rendered < tried, (tried, rendered)
