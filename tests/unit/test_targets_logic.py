"""Targets (cloud RAID, NBD) as pure logic: the config, the markers, the assembly plan and
the units. The real assembly runs in the vm tier (tests/vm/test_targets.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from offsite.config import reader
from offsite.config.model import CloudRaid, RaidLevel
from offsite.targets import assembly, nbd
from offsite.units import render

from .test_config import one, write

ME = "a" * 32
OTHER = "b" * 32
SET = "c" * 32


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    key = tmp_path / "target.key"
    key.write_bytes(os.urandom(64))
    key.chmod(0o400)
    return key


def raid_config(key: Path, extra: str = "", members: str = "[/s/a, /s/b, /s/c]") -> str:
    return f"""\
targets:
  cloud:
    type: cloud-raid
    members: {members}
    member_size: 2G
    keyfile: {key}
    mount: /mnt/cloud
{extra}
  remote:
    type: nbd
    host: backup.example.org
    export: offsite
    keyfile: {key}
    mount: /mnt/remote
repositories:
  main:
    path: /srv/borg/main
jobs:
  cloudcopy:
    kind: mirror
    repositories: [main]
    target: cloud
    schedule: daily
  remotecopy:
    kind: mirror
    repositories: [main]
    target: remote
"""


def test_targets_parse(tmp_path: Path, keyfile: Path) -> None:
    cfg = reader.load(write(tmp_path, raid_config(keyfile)))
    cloud, remote = cfg.target("cloud"), cfg.target("remote")
    assert cloud.raid == CloudRaid((Path("/s/a"), Path("/s/b"), Path("/s/c")), 2 * 1024**3,
                                   RaidLevel.RAID5)
    assert remote.nbd is not None and remote.nbd.nbd_port == 10809 and remote.nbd.user == "offsite"
    assert cfg.job("cloudcopy").target == "cloud"


@pytest.mark.parametrize(("extra", "members", "path", "fragment"), [
    ("    level: 6\n", "[/s/a, /s/b, /s/c]", "targets.cloud.members", "RAID6 needs at least 4"),
    ("    level: 4\n", "[/s/a, /s/b, /s/c]", "targets.cloud.level", "must be one of 5, 6, 1"),
    ("", "[/s/a, /s/a, /s/c]", "targets.cloud.members", "listed twice"),
    ("", "[/s/a, s/b, /s/c]", "targets.cloud.members", "absolute path"),
    ("    host: x\n", "[/s/a, /s/b, /s/c]", "targets.cloud.host", "only to nbd targets"),
])
def test_bad_raid_settings(tmp_path: Path, keyfile: Path, extra: str, members: str, path: str,
                           fragment: str) -> None:
    problem = one(tmp_path, raid_config(keyfile, extra, members))
    assert problem.path == path and fragment in problem.message, problem
    assert problem.loc is not None and problem.loc.line > 0


def test_a_job_naming_an_unknown_target(tmp_path: Path, keyfile: Path) -> None:
    problem = one(tmp_path, raid_config(keyfile).replace("target: remote", "target: remot"))
    assert problem.path == "jobs.remotecopy.target" and "'remote'" in problem.hint


def test_a_target_name_that_cannot_name_an_array(tmp_path: Path, keyfile: Path) -> None:
    problem = one(tmp_path, raid_config(keyfile).replace("  cloud:", "  Cloud.Box:")
                  .replace("target: cloud", "target: Cloud.Box"))
    assert problem.path == "targets.Cloud.Box" and "md array" in problem.message


def test_a_size_that_is_not_a_size(tmp_path: Path, keyfile: Path) -> None:
    problem = one(tmp_path, raid_config(keyfile).replace("member_size: 2G", "member_size: lots"))
    assert problem.path == "targets.cloud.member_size" and "512M" in problem.hint


# -- markers -------------------------------------------------------------------------


def marker(machine: str = ME, generation: int = 3, state: str = "clean",
           set_id: str = SET, member: int = 0) -> assembly.Marker:
    return assembly.Marker(set_id, member, generation, machine, "box", state, 1.0, 3)


def test_a_marker_round_trips() -> None:
    m = marker()
    assert assembly.parse_marker(m.to_json()) == m


@pytest.mark.parametrize(("text", "fragment"), [
    ("[]", "not a JSON object"),
    ("{", "not JSON"),
    ('{"set": "../../etc", "member": 0, "generation": 1, "machine": "' + ME
     + '", "state": "clean"}', "set id"),
    ('{"set": "' + SET + '", "member": 0, "generation": 1, "machine": "x; rm -rf /", '
     '"state": "clean"}', "machine id"),
    ('{"set": "' + SET + '", "member": true, "generation": 1, "machine": "' + ME
     + '", "state": "clean"}', "'member'"),
    ('{"set": "' + SET + '", "member": 0, "generation": 1, "machine": "' + ME
     + '", "state": "owned", "size": 3}', "'state'"),
    ('{"set": "' + SET + '", "member": 0, "generation": 1, "machine": "' + ME
     + '", "state": "clean", "size": 99}', "out of range"),
])
def test_a_marker_from_a_sync_folder_is_checked(text: str, fragment: str) -> None:
    with pytest.raises(assembly.MarkerError, match=re.escape(fragment)):
        assembly.parse_marker(text)


def test_a_hostname_from_a_marker_is_made_printable() -> None:
    text = marker().to_json().replace('"box"', '"evil\\u001b[2Jhost"')
    assert assembly.parse_marker(text).hostname == "evil?[2Jhost"


# -- the plan --------------------------------------------------------------------------

RAID5 = CloudRaid((Path("/a"), Path("/b"), Path("/c")), 64 * 1024**2)


def members(*markers: assembly.Marker | None, images: tuple[bool, ...] = (True, True, True),
            ) -> list[assembly.Member]:
    return [assembly.Member(i, Path("/abc"[0] + "abc"[i]), images[i], m)
            for i, m in enumerate(markers)]


def test_all_current_members_assemble_clean() -> None:
    plan = assembly.plan(RAID5, members(marker(), marker(), marker()), ME)
    assert plan.refusal is None and plan.assemble == (0, 1, 2) and not plan.degraded


def test_a_missing_image_runs_degraded() -> None:
    plan = assembly.plan(RAID5, members(marker(), marker(), marker(),
                                       images=(True, False, True)), ME)
    assert plan.refusal is None and plan.missing == (1,) and plan.degraded
    assert "missing: /b" in assembly.describe(plan, members(marker(), marker(), marker()))


def test_a_stale_member_is_added_back() -> None:
    plan = assembly.plan(RAID5, members(marker(generation=9), marker(generation=5),
                                       marker(generation=9)), ME)
    assert plan.assemble == (0, 2) and plan.add == (1,) and plan.generation == 9


def test_a_member_one_generation_behind_is_left_to_md() -> None:
    # dropped during the last run: md's own event count decides, the assembly re-adds it
    plan = assembly.plan(RAID5, members(marker(generation=9), marker(generation=8),
                                       marker(generation=9)), ME)
    assert plan.assemble == (0, 1, 2)


def test_a_blank_member_from_repair_is_added() -> None:
    plan = assembly.plan(RAID5, members(marker(), marker(generation=0, state="blank"),
                                       marker()), ME)
    assert plan.add == (1,) and plan.refusal is None


def test_two_members_missing_of_a_raid5_is_refused() -> None:
    plan = assembly.plan(RAID5, members(marker(), None, None, images=(True, False, False)), ME)
    assert plan.refusal is not None and "only 1 of 3" in plan.refusal


def test_raid1_survives_all_but_one() -> None:
    raid1 = CloudRaid(RAID5.members, RAID5.member_size, RaidLevel.RAID1)
    plan = assembly.plan(raid1, members(marker(), None, None, images=(True, False, False)), ME)
    assert plan.refusal is None and plan.missing == (1, 2)


def test_another_computers_set_is_refused() -> None:
    for state in ("assembled", "clean"):
        plan = assembly.plan(RAID5, members(marker(), marker(OTHER, 4, state), marker()), ME)
        assert plan.refusal is not None and "another computer, box" in plan.refusal
        assert "take-over" in plan.refusal


def test_members_of_different_sets_are_refused() -> None:
    plan = assembly.plan(RAID5, members(marker(), marker(set_id="d" * 32), marker()), ME)
    assert plan.refusal is not None and "different sets" in plan.refusal


def test_members_beyond_the_sets_size_wait_for_grow() -> None:
    four = CloudRaid((*RAID5.members, Path("/d")), RAID5.member_size)
    found = [*members(marker(), marker(), marker()), assembly.Member(3, Path("/d"), False, None)]
    plan = assembly.plan(four, found, ME)
    assert plan.refusal is None and plan.new == (3,) and plan.size == 3 and not plan.degraded
    assert "not in the set yet" in assembly.describe(plan, found)


def test_fewer_members_in_the_config_than_in_the_set_is_refused() -> None:
    bigger = assembly.Marker(SET, 2, 3, ME, "box", "clean", 1.0, 4)
    found = [*members(marker(), marker(), marker())[:2], assembly.Member(2, Path("/c"), True, bigger)]
    plan = assembly.plan(RAID5, found, ME)
    assert plan.refusal is not None and "the set has 4" in plan.refusal


def test_no_marker_at_all_is_refused() -> None:
    plan = assembly.plan(RAID5, members(None, None, None), ME)
    assert plan.refusal is not None and "offsite target create" in plan.refusal


# -- units -----------------------------------------------------------------------------


def test_units_of_targets(tmp_path: Path, keyfile: Path) -> None:
    cfg = reader.load(write(tmp_path, raid_config(keyfile)))
    out = render.render(cfg, Path("/usr/bin/offsite"), Path("/etc/offsite/offsite.yaml")).files
    job = out["offsite-cloudcopy.service"]
    assert "Wants=offsite-target-cloud.service" in job
    assert "After=offsite-target-cloud.service" in job
    assert "DeviceAllow=/dev/mapper/offsite-target-cloud rw" in job
    assert "release --target -- cloud" in job
    unit = out["offsite-target-cloud.service"]
    assert "StopWhenUnneeded=yes" in unit and "RequiresMountsFor=/s/a /s/b /s/c" in unit
    assert "target assemble -- cloud" in unit and "target disassemble -- cloud" in unit
    remote = out["offsite-target-remote.service"]
    assert "Wants=offsite-tunnel-remote.service" in remote
    tunnel = out["offsite-tunnel-remote.service"]
    assert "-L /run/offsite/tunnels/remote.sock:127.0.0.1:10809" in tunnel
    assert "ExitOnForwardFailure=yes" in tunnel and " -N " in tunnel


def test_the_far_sides_key_may_only_forward_to_nbd_server(tmp_path: Path, keyfile: Path) -> None:
    cfg = reader.load(write(tmp_path, raid_config(keyfile)))
    line = nbd.authorized_line(cfg.target("remote"), "ssh-ed25519 AAAAC3Nz x\n", "192.0.2.7")
    assert line == ('restrict,port-forwarding,permitopen="127.0.0.1:10809",from="192.0.2.7",'
                    'command="/bin/false" ssh-ed25519 AAAAC3Nz x')
    with pytest.raises(Exception, match="address pattern"):
        nbd.authorized_line(cfg.target("remote"), "ssh-ed25519 AAAA x", 'x" evil')


class _AnyKeyfile(reader.SystemHostChecks):
    def keyfile_error(self, path: Path) -> str | None:
        return None  # the example's keyfiles do not exist on this machine


def test_the_targets_example_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = reader.load(root / "examples" / "targets.yaml", _AnyKeyfile())
    assert [t.kind for t in cfg.targets] == ["cloud-raid", "nbd"]
    assert {j.target for j in cfg.jobs} == {"cloud", "remote"}


def test_security_scores_of_target_units(tmp_path: Path, keyfile: Path) -> None:
    """The target unit makes loop, md, nbd and device-mapper devices, so it cannot have a
    closed device policy or a private /dev: it is allowed more than the job units."""
    from .test_render import score

    cfg = reader.load(write(tmp_path, raid_config(keyfile)))
    out = render.render(cfg, Path("/usr/bin/offsite"), Path("/etc/offsite/offsite.yaml")).files
    limits = {"offsite-target-cloud.service": 5.0, "offsite-target-remote.service": 5.0,
              "offsite-tunnel-remote.service": 3.0, "offsite-cloudcopy.service": 3.0,
              "offsite-remotecopy.service": 3.0}
    for name, limit in limits.items():
        assert score(tmp_path, name, out[name]) <= limit, name
