"""Generated units in a real systemd: install, timers, OnFailure, drives, locks, names."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from offsite_lab.sandbox import Sandbox

from offsite import escape, locks, unitnames
from offsite.config import reader
from offsite.config.model import Schedule
from offsite.units import render

from . import repos

ROOT = Path(__file__).resolve().parents[2]
OFFSITE = Path(sys.prefix) / "bin" / "offsite"
CONFIG = "/etc/offsite/offsite.yaml"
UNIT_DIR = "/etc/systemd/system"
UUID = "22222222-3333-4444-5555-666666666666"
REPO = "/srv/borg/main"


def offsite(box: Sandbox, *args: str, check: bool = True) -> tuple[int, str, str]:
    result = box.run([str(OFFSITE), "--config", CONFIG, *args], check=check, timeout=300)
    return result.returncode, result.stdout, result.stderr


def write_config(box: Sandbox, text: str) -> None:
    box.write(CONFIG, textwrap.dedent(text))


def make_repo(box: Sandbox, path: str = REPO) -> None:
    repos.init(box, path)
    box.write("/srv/data/file.txt", "some data\n" * 1000)
    repos.borg(box, "create", "--", f"{path}::first", "/srv/data")


def test_example_config_installs_with_every_timer(sandbox: Sandbox) -> None:
    sandbox.write(CONFIG, (ROOT / "examples" / "offsite.yaml").read_text())
    _, out, _ = offsite(sandbox, "install")
    assert "systemd reloaded once" in out
    # One reload: systemd logs each one.
    reloads = [e for e in sandbox.entries("_PID=1") if e["MESSAGE"] == "Reloading."]
    assert len(reloads) == 1

    timers = sandbox.systemctl("list-timers", "--all", "--no-legend", "--plain").stdout
    cfg = reader.load(ROOT / "examples" / "offsite.yaml")
    scheduled = [j for j in cfg.jobs if isinstance(j.trigger, Schedule)]
    assert len(scheduled) == 4
    for job in scheduled:
        assert isinstance(job.trigger, Schedule)
        timer = unitnames.timer_unit(job.name)
        assert timer in timers
        assert sandbox.show(timer, "ActiveState") == "active"
        # The next run is the one systemd-analyze computes for the expression (plus at most
        # the randomized delay).
        utc = {"TZ": "UTC"}
        text = sandbox.run(["systemd-analyze", "calendar", "--", job.trigger.calendar],
                           env=utc).stdout
        match = re.search(r"Next elapse: \w{3} (\S+ \S+) UTC", text)
        assert match, text
        expected = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        raw = sandbox.run(["systemctl", "show", "-P", "NextElapseUSecRealtime", "--", timer],
                          env=utc).stdout.strip()
        actual = datetime.strptime(raw, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
        delay = timedelta(seconds=job.trigger.randomized_delay)
        assert expected <= actual <= expected + delay + timedelta(minutes=1), (timer, actual)
    # Drive jobs are wanted by the drives' device units.
    for drive in cfg.drives:
        wants = sandbox.host_path(f"{UNIT_DIR}/{escape.uuid_device_unit(drive.uuid)}.wants")
        assert [p.name for p in wants.iterdir()] == [unitnames.job_unit("offsite-copy", drive.name)]
    # A second install with nothing changed changes nothing and does not reload.
    _, out, _ = offsite(sandbox, "install")
    assert out.startswith("No changes")


BROKEN = """\
    repositories:
      main: {path: /srv/borg/missing}
    jobs:
      broken:
        kind: borg-check
        repositories: [main]
"""


def test_failing_job_is_failed_and_runs_notify_with_its_name(sandbox: Sandbox) -> None:
    write_config(sandbox, BROKEN)
    offsite(sandbox, "install")
    unit = unitnames.job_unit("broken")
    sandbox.systemctl("start", "--", unit, check=False)
    sandbox.wait_for_state(unit, ["failed"])
    assert sandbox.show(unit, "Result") == "exit-code"
    notify = f"offsite-notify@{unit}.service"
    # The OnFailure= unit ran with the failed unit's name as its instance.
    sandbox.wait_until("the notify unit to run", lambda: bool(sandbox.start_results(notify)))
    # It ran `offsite notify failure <unit>` (no mail configured here: it says so).
    sandbox.wait_until("the notify unit's output", lambda: any(
        "job broken failed (exit code 1); reporting it" in e["MESSAGE"]
        for e in sandbox.entries(f"_SYSTEMD_UNIT={notify}")))
    assert set(sandbox.start_results(notify)) == {"done"}
    job_log = "\n".join(e["MESSAGE"] for e in sandbox.entries("JOB=broken"))
    assert "/srv/borg/missing" in job_log


def test_drive_job_starts_on_plug_and_stops_on_pull(sandbox: Sandbox) -> None:
    make_repo(sandbox)
    write_config(sandbox, f"""\
        drives:
          d1: {{uuid: {UUID}, type: plain, mount: /mnt/offsite}}
        repositories:
          main: {{path: {REPO}, passphrase_file: {repos.SECRET}}}
        jobs:
          on-plug:
            kind: borg-check
            repositories: [main]
            drive: d1
        """)
    offsite(sandbox, "install")
    unit = unitnames.job_unit("on-plug", "d1")
    # Hold the repository's lock so that the job stays running until we pull the drive.
    lock = locks.LOCK_DIR / locks.lock_name(REPO)
    sandbox.run(["mkdir", "-p", str(locks.LOCK_DIR)])
    sandbox.run(["systemd-run", "--unit=holder", "--", "flock", str(lock), "sleep", "600"])
    sandbox.wait_for_state("holder.service", ["active"])

    image = sandbox.make_drive("d1", UUID)
    device = sandbox.plug(image)
    sandbox.wait_for_state(unit, ["activating"])
    sandbox.wait_until("the job to wait for the lock", lambda: any(
        "waiting for" in e["MESSAGE"] for e in sandbox.entries("JOB=on-plug")))
    sandbox.unplug(device)
    sandbox.wait_for_state(unit, ["inactive", "failed"])
    # Stopped while still waiting for the lock: systemd logs the stop (a start job that is
    # cut short logs no result of its own), the start never completed, the check never began.
    sandbox.wait_until("the stop", lambda: any(e.get("JOB_RESULT") for e in sandbox.entries(
        "_PID=1", f"UNIT={unit}", "JOB_TYPE=stop")))
    assert "done" not in sandbox.start_results(unit)
    assert not any("(borg-check) started" in e["MESSAGE"]
                   for e in sandbox.entries("JOB=on-plug"))
    # Plugged again with the lock free: the job runs to success.
    sandbox.systemctl("stop", "holder.service")
    sandbox.plug(image)
    sandbox.wait_until("the job to succeed", lambda: "done" in sandbox.start_results(unit))
    assert any("succeeded" in e["MESSAGE"] for e in sandbox.entries("JOB=on-plug"))


def two_jobs_config(names: list[str]) -> str:
    jobs = "".join(f'  "{n}":\n    kind: borg-check\n    repositories: [main]\n' for n in names)
    return (f"repositories:\n  main: {{path: {REPO}, passphrase_file: {repos.SECRET}}}\n"
            f"jobs:\n{jobs}")


def test_two_jobs_on_one_repository_run_one_after_the_other(sandbox: Sandbox) -> None:
    make_repo(sandbox)
    sandbox.write(CONFIG, two_jobs_config(["check-a", "check-b"]))
    offsite(sandbox, "install")
    units = [unitnames.job_unit("check-a"), unitnames.job_unit("check-b")]
    sandbox.systemctl("start", "--no-block", "--", *units)
    sandbox.wait_until("both checks to finish", lambda: all(
        sandbox.start_results(unit) for unit in units), timeout=120)
    for unit in units:
        assert sandbox.start_results(unit) == ["done"]
    spans = []
    for name in ("check-a", "check-b"):
        entries = sandbox.entries(f"JOB={name}")
        start = next(int(e["__MONOTONIC_TIMESTAMP"]) for e in entries if "started" in e["MESSAGE"])
        end = next(int(e["__MONOTONIC_TIMESTAMP"]) for e in entries if "succeeded" in e["MESSAGE"])
        spans.append((start, end))
    (_, first_end), (second_start, _) = sorted(spans)
    assert first_end <= second_start, f"the two checks overlapped: {spans}"
    waited = [e for n in ("check-a", "check-b") for e in sandbox.entries(f"JOB={n}")
              if "waiting for" in e["MESSAGE"]]
    assert len(waited) == 1 and REPO in waited[0]["MESSAGE"]


# Names in the documented set that still need escaping in a unit name ('-' is \x2d)
NASTY = ["weekly-check", "a-b-c", "main.2024", "x_y", "9lives"]


def test_nasty_names_round_trip(sandbox: Sandbox) -> None:
    make_repo(sandbox)
    sandbox.write(CONFIG, two_jobs_config(NASTY))
    offsite(sandbox, "install")
    for name in NASTY:
        unit = unitnames.job_unit(name)
        assert sandbox.host_path(f"{UNIT_DIR}/{unit}").exists()
        middle = unit.removeprefix("offsite-").removesuffix(".service")
        back = sandbox.run(["systemd-escape", "--unescape", "--", middle]).stdout.rstrip("\n")
        assert back == name
        sandbox.systemctl("start", "--", unit)
        assert sandbox.start_results(unit) == ["done"]
        messages = [e["MESSAGE"] for e in sandbox.entries(f"JOB={name}")]
        assert f"job {name} succeeded" in " ".join(messages), messages
        description = sandbox.show(unit, "Description")
        assert description.startswith(f"offsite {name}: ")


def _checksums(box: Sandbox) -> dict[str, str]:
    unit_dir = box.host_path(UNIT_DIR)
    out = {}
    for path in sorted(unit_dir.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(unit_dir))] = "-> " + str(path.readlink())
        elif path.is_file():
            out[str(path.relative_to(unit_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_removed_job_goes_and_foreign_units_stay(sandbox: Sandbox) -> None:
    make_repo(sandbox)
    sandbox.write(CONFIG, two_jobs_config(["keep", "drop"]) + "    schedule: daily\n")
    sandbox.install_unit("offsite-handmade.service", "[Service]\nExecStart=/bin/true\n")
    offsite(sandbox, "install")
    dropped = [unitnames.job_unit("drop"), unitnames.timer_unit("drop")]
    assert all(sandbox.host_path(f"{UNIT_DIR}/{u}").exists() for u in dropped)
    assert sandbox.show(unitnames.timer_unit("drop"), "ActiveState") == "active"

    sandbox.write(CONFIG, two_jobs_config(["keep"]))
    _, plan, _ = offsite(sandbox, "plan")
    assert "remove: " in plan and unitnames.timer_unit("drop") in plan
    offsite(sandbox, "install")
    assert not any(sandbox.host_path(f"{UNIT_DIR}/{u}").exists() for u in dropped)
    assert not sandbox.host_path(f"{UNIT_DIR}/timers.target.wants/{unitnames.timer_unit('drop')}").exists()
    assert sandbox.show(unitnames.timer_unit("drop"), "LoadState") == "not-found"
    assert sandbox.host_path(f"{UNIT_DIR}/offsite-handmade.service").exists()

    offsite(sandbox, "uninstall")
    left = [p for p in _checksums(sandbox) if "offsite" in p and p != "offsite-sandbox.target"]
    assert left == ["offsite-handmade.service"]


def test_broken_config_after_good_install_changes_nothing(sandbox: Sandbox) -> None:
    sandbox.write(CONFIG, (ROOT / "examples" / "offsite.yaml").read_text())
    offsite(sandbox, "install")
    sandbox.wait_for_state(unitnames.AGENT_UNIT, ["active"])  # settled before the snapshot
    before = _checksums(sandbox)
    states = sandbox.systemctl("list-units", "--all", "--plain", "--no-legend", "offsite-*").stdout
    sandbox.write(CONFIG, (ROOT / "examples" / "offsite.yaml").read_text().replace(
        "kind: borg-check", "kind: borg-chek").replace("schedule: monthly", "schedule: never"))
    code, _, err = offsite(sandbox, "install", check=False)
    assert code == 1
    assert "jobs.weekly-check.kind" in err and "jobs.restore-test.schedule" in err
    assert _checksums(sandbox) == before
    after = sandbox.systemctl("list-units", "--all", "--plain", "--no-legend", "offsite-*").stdout
    assert after == states


def test_a_unit_offsite_did_not_write_is_never_overwritten(sandbox: Sandbox) -> None:
    sandbox.write(CONFIG, two_jobs_config(["mine"]))
    sandbox.write(f"{UNIT_DIR}/{unitnames.job_unit('mine')}", "[Service]\nExecStart=/bin/true\n")
    code, _, err = offsite(sandbox, "install", check=False)
    assert code == 1 and "not installed by offsite" in err
    text = sandbox.host_path(f"{UNIT_DIR}/{unitnames.job_unit('mine')}").read_text()
    assert text == "[Service]\nExecStart=/bin/true\n"


@pytest.fixture(autouse=True)
def _offsite_is_installed() -> None:
    if shutil.which(str(OFFSITE)) is None:
        pytest.fail(f"{OFFSITE} is missing: run `make setup` (pip install -e .)")


def test_luks_drive_units_load_in_systemd(sandbox: Sandbox) -> None:
    """The unlock unit and the drive job it serves load cleanly (unlocking itself needs
    device-mapper: the vm tier)."""
    sandbox.write("/etc/offsite/keys/vault.key", b"k" * 64, mode=0o400)
    write_config(sandbox, f"""\
        drives:
          vault: {{uuid: {UUID}, type: luks, keyfile: /etc/offsite/keys/vault.key,
                   mount: /mnt/vault}}
        repositories:
          main: {{path: {REPO}, passphrase_file: {repos.SECRET}}}
        jobs:
          copy:
            kind: mirror
            repositories: [main]
            drive: vault
        """)
    offsite(sandbox, "install")
    unlock = unitnames.unlock_unit("vault")
    job = unitnames.job_unit("copy", "vault")
    for unit in (unlock, job):
        assert sandbox.show(unit, "LoadState") == "loaded"
    assert sandbox.show(unlock, "StopWhenUnneeded") == "yes"

    def names(unit: str, prop: str) -> list[str]:
        return shlex.split(sandbox.show(unit, prop))  # systemctl quotes names with backslashes

    assert unlock in names(job, "Requires") and unlock in names(job, "After")
    device = escape.uuid_device_unit(UUID)
    assert device in names(job, "BindsTo") and device in names(unlock, "BindsTo")
    assert job in names(device, "Wants")


def test_install_restarts_the_namespace_only_when_its_paths_change(sandbox: Sandbox) -> None:
    make_repo(sandbox)
    base = textwrap.dedent(f"""\
        repositories:
          main: {{path: {REPO}, passphrase_file: {repos.SECRET}}}
        jobs:
          check: {{kind: borg-check, repositories: [main], schedule: daily}}
        """)
    write_config(sandbox, base)
    offsite(sandbox, "install")
    sandbox.systemctl("start", "offsite-namespace.service")
    pid = sandbox.show("offsite-namespace.service", "MainPID")

    # a new schedule: the namespace (and any job running in it) is left alone
    write_config(sandbox, base.replace("schedule: daily", "schedule: weekly"))
    offsite(sandbox, "install")
    assert sandbox.show("offsite-namespace.service", "MainPID") == pid

    # a new repository: started afresh, so that its path is writable inside
    make_repo(sandbox, "/srv/borg/other")
    write_config(sandbox, base.replace("repositories:\n",
                                       "repositories:\n  other: {path: /srv/borg/other}\n", 1))
    offsite(sandbox, "install")
    assert sandbox.show("offsite-namespace.service", "MainPID") not in (pid, "0")


# Values a user may write that a careless renderer would let change a unit's meaning: a
# trailing backslash continues the line (the next setting would be swallowed), a quote
# ends a quoted word, % is a specifier, $ a variable, ; a second command.
HOSTILE_TEXT = ["ends in a backslash \\", "two at the end \\\\", 'a "quote', "it's 100% $HOME; rm",
                "back\\slash in the middle", "trailing space   "]
HOSTILE_PATHS = ['/srv/borg/with "quote', "/srv/borg/with space", "/srv/borg/back\\slash",
                 "/srv/borg/50%", "/srv/borg/$HOME", "/srv/borg/semi;colon", "/srv/borg/ends\\"]


def _yaml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_hostile_values_mean_what_they_say_when_systemd_reads_the_units(sandbox: Sandbox) -> None:
    """Every unit offsite renders from hostile descriptions and paths, read back by systemd
    itself: each value arrives whole, and the setting after it still stands."""
    repos_yaml = "".join(f"  r{i}:\n    path: {_yaml(p)}\n" for i, p in enumerate(HOSTILE_PATHS))
    jobs_yaml = "".join(
        f"  j{i}:\n    kind: borg-check\n    repositories: [r{i % len(HOSTILE_PATHS)}]\n"
        f"    description: {_yaml(t)}\n    schedule: daily\n" for i, t in enumerate(HOSTILE_TEXT))
    every = ", ".join(f"r{i}" for i in range(len(HOSTILE_PATHS)))
    jobs_yaml += (f"  copy:\n    kind: mirror\n    repositories: [{every}]\n"
                  f"    drive: d1\n    description: {_yaml(HOSTILE_TEXT[0])}\n")
    text = (f"drives:\n  d1:\n    uuid: {UUID}\n    type: plain\n    mount: /mnt/offsite\n"
            f"    description: {_yaml(HOSTILE_TEXT[1])}\n"
            f"repositories:\n{repos_yaml}jobs:\n{jobs_yaml}")
    sandbox.write(CONFIG, text)
    offsite(sandbox, "install")
    cfg = reader.load(sandbox.host_path(CONFIG))
    assert [j.description for j in cfg.jobs][:len(HOSTILE_TEXT)] == HOSTILE_TEXT

    checked = 0
    for job in cfg.jobs:
        for unit in (unitnames.job_unit(job.name, d) for d in job.drives or (None,)):
            assert sandbox.show(unit, "LoadState") == "loaded", unit
            assert sandbox.show(unit, "LoadError").strip() in ("", '""'), unit
            description = sandbox.show(unit, "Description")
            assert description.endswith(f": {job.description.rstrip()}"), (unit, description)
            # the line after Description= (a swallowed line would be gone)
            assert sandbox.show(unit, "OnFailure") == unitnames.notify_unit(unit), unit
            # systemctl show quotes a path that needs it, as the unit file does
            shown = sandbox.show(unit, "ReadWritePaths")
            writable = {w.removeprefix("-") for w in _shown_words(shown)}
            for name in job.repositories:
                path = str(cfg.repository(name).path)
                assert path in writable, (unit, path, shown)
            argv = sandbox.show(unit, "ExecStart")
            assert f"argv[]={OFFSITE} --config {CONFIG} exec" in argv, argv
            checked += 1
    assert checked == len(HOSTILE_TEXT) + 1
    # and every unit file offsite wrote (timers, templates, helpers): loaded, its
    # Description= read back as written, the setting after it in force
    rendered = render.render(cfg, OFFSITE, Path(CONFIG))
    units = [name for name in rendered.files if not name.endswith("@.service")]
    for name in units:
        assert sandbox.show(name, "LoadState") == "loaded", name
        written = next(line.removeprefix("Description=") for line in
                       rendered.files[name].splitlines() if line.startswith("Description="))
        assert sandbox.show(name, "Description") == written.rstrip().replace("%%", "%"), name
    print(f"{checked} job units and {len(units)} unit files read back by systemd; "
          f"{len(HOSTILE_PATHS)} hostile paths, {len(HOSTILE_TEXT)} hostile descriptions")



def _shown_words(value: str) -> list[str]:
    """A path list as systemctl show prints it: space-separated words, a word with special
    characters in double quotes with \\ before each of " \\ ` $ (systemd's shell_escape)."""
    return [re.sub(r"\\(.)", r"\1", w[1:-1]) if w.startswith('"') else w
            for w in re.findall(r'"(?:[^"\\]|\\.)*"|\S+', value)]


def test_debians_borgmatic_timer_is_masked_while_offsite_runs_borgmatic(sandbox: Sandbox) -> None:
    """Debian's borgmatic package enables borgmatic.timer: with an offsite borgmatic job,
    borgmatic would run twice a night. install masks it (and stops it), uninstall unmasks
    it and it runs again."""
    if not Path("/lib/systemd/system/borgmatic.timer").exists():
        pytest.fail("borgmatic's own timer is missing: scripts/setup installs borgmatic")
    sandbox.systemctl("enable", "--now", "borgmatic.timer")  # as its package leaves it
    write_config(sandbox, f"""\
        repositories:
          main: {{path: {REPO}}}
        jobs:
          nightly: {{kind: borgmatic, repositories: [main], schedule: daily}}
        """)
    _, _, said = offsite(sandbox, "check")
    assert "borgmatic.timer (Debian's own nightly borgmatic) is enabled here" in said, said
    _, planned, _ = offsite(sandbox, "plan")
    assert f"add: {UNIT_DIR}/borgmatic.timer" in planned and "symlink to /dev/null" in planned
    _, out, _ = offsite(sandbox, "install")
    assert "Masked borgmatic.timer" in out, out
    assert sandbox.show("borgmatic.timer", "LoadState") == "masked"
    assert sandbox.show("borgmatic.timer", "ActiveState") == "inactive"
    _, out, _ = offsite(sandbox, "uninstall")
    assert "Unmasked borgmatic.timer" in out, out
    assert sandbox.show("borgmatic.timer", "LoadState") == "loaded"
    assert sandbox.show("borgmatic.timer", "ActiveState") == "active"
