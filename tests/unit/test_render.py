"""Rendering: escaping by value, and the security score systemd itself gives each unit."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from offsite import unitnames
from offsite.config import reader
from offsite.run import run
from offsite.units import hardening, render, syntax

ROOT = Path(__file__).resolve().parents[2]
OFFSITE = Path("/usr/bin/offsite")
CONFIG = Path("/etc/offsite/offsite.yaml")


@pytest.fixture
def example(tmp_path: Path) -> render.Rendered:
    """The example config plus a LUKS drive, so that an unlock unit is rendered too."""
    key = tmp_path / "key"
    key.write_bytes(os.urandom(64))
    key.chmod(0o400)
    text = (ROOT / "examples" / "offsite.yaml").read_text()
    vault = ("  vault:\n    uuid: 9d3e5c1a-0b2f-4a6e-8c7d-1e2f3a4b5c6d\n    type: luks\n"
             f"    keyfile: {key}\n    mount: /mnt/vault\n\n")
    job = "  vault-copy:\n    kind: mirror\n    repositories: [main]\n    drive: vault\n\n"
    text = text.replace("\nrepositories:\n", "\n" + vault + "repositories:\n", 1)
    text = text.replace("\nnotify:\n", "\n" + job + "notify:\n", 1)
    path = tmp_path / "offsite.yaml"
    path.write_text(text)
    cfg = reader.load(path)
    return render.render(cfg, OFFSITE, CONFIG)


def score(tmp_path: Path, name: str, text: str) -> float:
    unit = tmp_path / "units" / name
    unit.parent.mkdir(exist_ok=True)
    unit.write_text(text)
    if name.endswith("@.service"):
        instance = unit.with_name(name.replace("@.", "@x."))
        instance.write_text(text)
        unit = instance
    out = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)]).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out)
    assert match, out
    return float(match.group(1))


def test_example_renders_every_kind_of_unit(example: render.Rendered) -> None:
    names = set(example.files)
    assert {"offsite-nightly.service", "offsite-nightly.timer", "offsite-unlock-vault.service",
            "offsite-vault\\x2dcopy@vault.service", "offsite-namespace.service",
            "offsite-notify@.service", "offsite-agent.service"} <= names
    assert example.links["timers.target.wants/offsite-nightly.timer"] == "offsite-nightly.timer"


def test_security_scores(example: render.Rendered, tmp_path: Path) -> None:
    limits = {"offsite-agent.service": 4.0, "offsite-notify@.service": 4.0}
    scored = {}
    for name, text in example.files.items():
        if not name.endswith(".service") or name == unitnames.NAMESPACE_UNIT:
            continue  # timers have no exposure; the namespace unit must act on the host
        scored[name] = score(tmp_path, name, text)
        assert scored[name] <= limits.get(name, 3.0), (name, scored[name])
    assert len(scored) >= 9


def test_every_hardening_option_says_why(example: render.Rendered) -> None:
    options = {key for key, _, _ in hardening.BASE_HARDENING} | {
        "CapabilityBoundingSet", "ProtectSystem", "ReadWritePaths", "ProtectHome", "PrivateTmp",
        "RestrictNamespaces", "RestrictAddressFamilies", "SystemCallFilter", "PrivateNetwork",
        "DevicePolicy", "DeviceAllow", "PrivateDevices", "IPAddressDeny", "PrivateIPC"}
    for name, text in example.files.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            key = line.split("=", 1)[0]
            if key in options:
                assert lines[i - 1].startswith("# "), f"{name}: {line} has no comment"


def test_job_unit_contents(example: render.Rendered) -> None:
    unit = example.files["offsite-nightly.service"]
    assert "Type=oneshot" in unit
    assert "TimeoutStartSec=6h" in unit
    assert "OnFailure=offsite-notify@%n.service" in unit
    assert "ExecStart=/usr/bin/offsite --config /etc/offsite/offsite.yaml exec -- nightly" in unit
    timer = example.files["offsite-nightly.timer"]
    assert "OnCalendar=*-*-* 02:30:00" in timer and "Persistent=true" in timer
    assert "RandomizedDelaySec=15min" in timer
    drive_job = example.files["offsite-vault\\x2dcopy@vault.service"]
    device = "dev-disk-by\\x2duuid-9d3e5c1a\\x2d0b2f\\x2d4a6e\\x2d8c7d\\x2d1e2f3a4b5c6d.device"
    for line in (f"BindsTo={device}", f"After={device}", f"WantedBy={device}",
                 "Requires=offsite-unlock-vault.service", "After=offsite-unlock-vault.service",
                 "DeviceAllow=/dev/mapper/offsite-9d3e5c1a-0b2f-4a6e-8c7d-1e2f3a4b5c6d rw"):
        assert line in drive_job.splitlines(), line
    unlock = example.files["offsite-unlock-vault.service"]
    assert "StopWhenUnneeded=yes" in unlock and f"BindsTo={device}" in unlock
    assert "ExecStop=/lib/systemd/systemd-cryptsetup detach offsite-9d3e5c1a" in unlock


def _lines(text: str, key: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(key + "=")]


def test_a_drive_is_ejected_after_it_is_locked_or_unmounted(example: render.Rendered) -> None:
    """LUKS: the unlock unit's last stop step, after the mapping is closed; plain: the
    job's last step after the namespace's mount is released; both outside the sandbox."""
    eject = "+/usr/bin/offsite --config /etc/offsite/offsite.yaml drive eject "
    stops = _lines(example.files["offsite-unlock-vault.service"], "ExecStop")
    assert stops[0].startswith("ExecStop=/lib/systemd/systemd-cryptsetup detach ")
    assert stops[1:] == [f"ExecStop={eject}vault"]
    plain = next(text for name, text in example.files.items()
                 if name.endswith("@offsite\\x2da.service"))
    posts = _lines(plain, "ExecStopPost")
    release = next(i for i, line in enumerate(posts) if " release -- offsite-a" in line)
    assert posts[release + 1] == f"ExecStopPost=-{eject}offsite-a"  # the record still follows
    assert "hook finish" in posts[release + 2]
    luks_job = example.files["offsite-vault\\x2dcopy@vault.service"]
    assert " drive eject " not in luks_job  # (its unlock unit ejects, once it has locked)


def test_eject_false_leaves_the_drive_attached(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "offsite.yaml").read_text().replace(
        "    mount: /mnt/offsite\n", "    mount: /mnt/offsite\n    eject: false\n")
    path = tmp_path / "offsite.yaml"
    path.write_text(text)
    rendered = render.render(reader.load(path), OFFSITE, CONFIG)
    assert not any(" drive eject " in unit for unit in rendered.files.values())


@pytest.mark.parametrize(
    ("arg", "expected"),
    [("plain", "plain"), ("with space", '"with space"'), ("50%", '"50%%"'), ("$HOME", '"$$HOME"'),
     ("-leading", "-leading"), ('a"b', '"a\\"b"'), ("back\\slash", '"back\\\\slash"'),
     ("unicodé", '"unicodé"'), (";", '";"'), ("", '""')],
)
def test_exec_arg(arg: str, expected: str) -> None:
    assert syntax.exec_arg(arg) == expected


def test_control_characters_never_reach_a_unit() -> None:
    for bad in ["a\nExecStart=/bin/evil", "a\rb", "a\x00b", "a\x1bb"]:
        with pytest.raises(syntax.RenderError):
            syntax.exec_arg(bad)
        with pytest.raises(syntax.RenderError):
            syntax.unit_value(bad)


def test_unit_value_disarms_specifiers() -> None:
    assert syntax.unit_value("100% done") == "100%% done"


def test_unit_value_never_ends_a_line_in_a_backslash() -> None:
    """(it would join the next setting on; tests/system/test_units.py reads it back)"""
    assert syntax.unit_value("ends \\") == "ends \\ "
    assert syntax.unit_value("mid\\dle") == "mid\\dle"


def test_path_list_quotes_spaces_and_keeps_optional_prefix() -> None:
    assert syntax.path_list(["-/srv/my repo", "/plain"]) == '-"/srv/my repo" /plain'


def test_rendering_is_deterministic(example: render.Rendered, tmp_path: Path) -> None:
    again = render.render(reader.load(next(tmp_path.glob("*.yaml"))), OFFSITE, CONFIG)
    assert again.digest() == example.digest()


def test_offsite_logs_under_the_identifier_of_the_unit_that_runs_it(
        example: render.Rendered) -> None:
    """`journalctl -t offsite-agent` must find the agent's journal entries too: the CLI
    picks the identifier of a command from the same table the units are rendered from."""
    from offsite import cli

    checked = 0
    for name, text in example.files.items():
        exec_start = re.search(r"^ExecStart=(\S+) (.*)$", text, re.M)
        ident = re.search(r"^SyslogIdentifier=(.*)$", text, re.M)
        if exec_start is None or ident is None or exec_start.group(1) != str(OFFSITE):
            continue
        argv = exec_start.group(2).replace("%i", "x").split()
        args = cli.build_parser().parse_args(argv)
        assert unitnames.identifier(args.command, getattr(args, "action", None)) == \
            ident.group(1), name
        checked += 1
    assert checked >= 6  # jobs, the namespace, agent, notify, outbox, stale
