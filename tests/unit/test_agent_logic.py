"""The pure parts of the agent and its views: LED priorities, unit paths, metrics text, the
schedule's overlaps and clock line, the status table at 80 columns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from offsite.agent import ledstate
from offsite.agent.daemon import Units, replugged_while_ending, start_after_replug
from offsite.agent.ledstate import Phase, Picture, Verdict, resolve
from offsite.config.model import Config, Drive, DriveTrigger, DriveType, Job, JobKind, Schedule
from offsite.notify import metrics
from offsite.notify.history import Run
from offsite.units.systemd import unit_from_path
from offsite.views import drives, schedule, status


@pytest.mark.parametrize(("picture", "state"), [
    (Picture(), "off"),
    (Picture(drives={"a": Phase.DONE}), "done"),
    # not locked (and ejected) yet: not safe, and not idle either
    (Picture(drives={"a": Phase.DONE}, unlocked={"a"}), "working-drive"),
    (Picture(active={"offsite-n.service": None}, drives={"a": Phase.DONE}), "working"),
    (Picture(drives={"a": Phase.PENDING}), "working-drive"),  # plugged, job not started yet
    (Picture(active={"offsite-n.service": None, "offsite-c@a.service": "a"}), "working-drive"),
    # a failure no longer hides the work (it is shown beside it: frames below)
    (Picture(active={"offsite-c@a.service": "a"}, failed_jobs={"n"}), "working-drive"),
    (Picture(drives={"a": Phase.DONE}, failed_jobs={"n"}), "done"),
    (Picture(failed_jobs={"n"}), "failed"),
    (Picture(drives={"a": Phase.FAILED}), "off"),
])
def test_led_priorities(picture: Picture, state: str) -> None:
    assert resolve(picture).state == state


def test_led_says_why() -> None:
    assert resolve(Picture(failed_jobs={"b", "a"})) == Verdict("failed", "failed: a, b",
                                                               ("a", "b"))
    assert resolve(Picture(drives={"d1": Phase.DONE})).why == "safe to remove: drive d1"
    assert resolve(Picture(drives={"d1": Phase.DONE}, failed_jobs={"n"})).why == \
        "safe to remove: drive d1; failed: n"


def test_green_is_never_hidden_by_a_failure_nor_a_failure_by_green() -> None:
    """Issue #18: a scheduled check failed, then a drive was copied: the LED stayed red."""
    done_and_failed = resolve(Picture(drives={"d1": Phase.DONE}, failed_jobs={"check"}))
    one_led = ledstate.frames(done_and_failed, 0, None)
    assert [f.lights for f in one_led] == [((0, "done"),), ((0, "failed"),)]
    assert one_led[0].seconds == ledstate.FLASH_EVERY - ledstate.FLASH_FOR  # mostly green
    assert one_led[1].seconds == ledstate.FLASH_FOR
    two_leds = ledstate.frames(done_and_failed, 0, 1)
    assert [f.lights for f in two_leds] == [((0, "done"), (1, "failed"))]
    # each alone: steady
    assert ledstate.frames(resolve(Picture(failed_jobs={"x"})), 0, None) == \
        (ledstate.Frame(((0, "failed"),)),)
    assert ledstate.frames(resolve(Picture(drives={"d1": Phase.DONE})), 0, 1) == \
        (ledstate.Frame(((0, "done"), (1, "off"))),)
    assert ledstate.frames(resolve(Picture(failed_jobs={"x"})), 0, 1) == \
        (ledstate.Frame(((0, "off"), (1, "failed"))),)


def test_every_situation_of_the_picture_shows_both_things() -> None:
    for text, verdict in ledstate.DISPLAYS:
        shown = {name for f in ledstate.frames(verdict, 0, None) for _, name in f.lights}
        if verdict.failed:
            assert "failed" in shown, text
        if verdict.state not in ("off", "failed"):
            assert verdict.state in shown, text


def test_the_led_picture_in_docs_is_current() -> None:
    from offsite.config.model import Led

    current = (Path(__file__).resolve().parents[2] / "docs" / "led-states.svg").read_text()
    assert current == ledstate.svg(dict(Led().colors)), "run `make docs` and commit it"


def test_brightness_scales_the_colour() -> None:
    assert ledstate.rgb("#ff8000", 100) == (255, 128, 0)
    assert ledstate.rgb("#ff8000", 40) == (102, 51, 0)
    assert ledstate.rgb("#0000ff", 1) == (0, 0, 3)


def test_unit_object_paths_decode() -> None:
    assert unit_from_path("/org/freedesktop/systemd1/unit/offsite_2dcopy_40d1_2eservice") == \
        "offsite-copy@d1.service"
    assert unit_from_path("/org/freedesktop/systemd1") is None


def cfg() -> Config:
    d1 = Drive("d1", "11111111-2222-3333-4444-555555555555", DriveType.LUKS, Path("/mnt"),
               keyfile=Path("/k"))
    return Config(Path("/etc/offsite/offsite.yaml"), (d1,), (), (
        Job("nightly", JobKind.BORGMATIC, 60.0, trigger=Schedule("*-*-* 02:30:00", 900.0)),
        Job("check", JobKind.BORG_CHECK, 60.0, trigger=Schedule("*-*-* 02:40:00")),
        Job("copy", JobKind.MIRROR, 60.0, trigger=DriveTrigger(("d1",))),
    ))


def test_the_agent_knows_which_unit_runs_which_job() -> None:
    units = Units.of(cfg())
    assert units.jobs == {"offsite-nightly.service": ("nightly", None),
                          "offsite-check.service": ("check", None),
                          "offsite-copy@d1.service": ("copy", "d1")}
    assert units.unlock == {"offsite-unlock-d1.service": "d1"}
    assert units.of_drive("d1") == ["offsite-unlock-d1.service", "offsite-copy@d1.service"]
    assert units.drive_of("offsite-unlock-d1.service") == "d1"
    assert units.drive_of("offsite-copy@d1.service") == "d1"
    assert units.drive_of("offsite-nightly.service") is None


def test_a_drive_plugged_in_again_while_its_last_run_ends_gets_its_jobs_started() -> None:
    # seen: unplugged once its mapping was gone and plugged in again while its unlock unit
    # still stopped (the eject step): systemd dropped the start, nothing copied
    assert replugged_while_ending(["deactivating", "failed"])
    assert not replugged_while_ending(["inactive", "failed"])
    # (a job systemd already started for this plug is not a reason: it runs)
    assert not replugged_while_ending(["active", "activating"])
    # started once every unit of the drive has stopped, the drive still there
    assert start_after_replug(["inactive", "failed"], plugged=True)
    assert not start_after_replug(["deactivating", "failed"], plugged=True)
    assert not start_after_replug(["inactive", "activating"], plugged=True)  # queued after all
    assert not start_after_replug(["inactive", "inactive"], plugged=False)  # pulled out again


def run(job: str, result: str, started: float, took: float, nbytes: int | None = None) -> Run:
    return Run(f"{int(started):032x}", f"offsite-{job}.service", job, None, started,
               started + took, result, None, nbytes)


def test_metrics_text_is_node_exporter_textfile_format() -> None:
    text = metrics.text(["nightly", "copy", "new"], {
        "nightly": [run("nightly", "failed", 2000, 5), run("nightly", "success", 1000, 60)],
        "copy": [run("copy", "success", 3000, 90, nbytes=1234)],
    }, {"d1": 3090.0, "d2": None})
    lines = text.splitlines()
    assert 'offsite_job_last_success_timestamp_seconds{offsite_job="nightly"} 1060.000' in lines
    assert 'offsite_job_last_result{offsite_job="nightly"} 4' in lines
    assert 'offsite_job_last_duration_seconds{offsite_job="nightly"} 5.000' in lines
    assert 'offsite_job_last_bytes{offsite_job="copy"} 1234' in lines
    assert 'offsite_drive_last_copy_timestamp_seconds{drive="d1"} 3090.000' in lines
    assert not any("new" in line or "d2" in line for line in lines)
    for name in ("offsite_job_last_result", "offsite_job_last_bytes"):
        assert f"# TYPE {name} gauge" in lines
    assert text.endswith("\n")


def test_metrics_are_written_only_where_node_exporter_looks(tmp_path: Path) -> None:
    assert metrics.write(cfg(), tmp_path / "absent") is None
    assert metrics.write_heartbeat(1.0, tmp_path / "absent") is None
    beat = metrics.write_heartbeat(1234.5, tmp_path)
    assert beat is not None and beat.name == "offsite-agent.prom"
    assert "offsite_agent_heartbeat_timestamp_seconds 1234.500" in beat.read_text().splitlines()


def test_the_age_limits_of_the_configuration_are_metrics_too() -> None:
    text = metrics.text(["far"], {}, {"d1": None}, {"far": 3 * 86400.0}, {"d1": 62 * 86400.0})
    lines = text.splitlines()
    assert 'offsite_job_stale_after_seconds{offsite_job="far"} 259200' in lines
    assert 'offsite_drive_stale_after_seconds{drive="d1"} 5356800' in lines


def test_schedule_flags_runs_that_overlap() -> None:
    day = 86400.0
    starts = {"*-*-* 02:30:00": [day * i + 9000 for i in range(7)],
              "*-*-* 02:40:00": [day * i + 9600 for i in range(7)]}
    entries = schedule.plan(cfg(), starts, {"nightly": 1800.0, "check": 300.0, "copy": 600.0})
    by_job = {e.job: e for e in entries}
    # nightly: 02:30 + up to 15 min delay + 30 min usually: check at 02:40 falls inside
    assert by_job["nightly"].overlaps == ["check"] and by_job["check"].overlaps == ["nightly"]
    assert by_job["copy"].starts == [] and "d1" in by_job["copy"].when
    apart = schedule.plan(cfg(), {"*-*-* 02:30:00": [9000.0], "*-*-* 02:40:00": [day]},
                          {"nightly": 60.0})
    assert all(not e.overlaps for e in apart)


def test_the_schedule_fits_80_columns() -> None:
    entries = schedule.plan(cfg(), {"*-*-* 02:30:00": [9000.0], "*-*-* 02:40:00": [9600.0]},
                            {"nightly": 1800.0})
    text = schedule.render_text(entries, 0.0)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "  ?" in text and "nightly overlaps check" in text


def test_schedule_median_of_successful_runs() -> None:
    runs = [run("n", "success", 0, 10), run("n", "failed", 0, 1000), run("n", "warning", 0, 30),
            run("n", "success", 0, 20)]
    assert schedule.usual_duration(runs) == 20
    assert schedule.usual_duration([]) is None


def test_status_puts_failures_first_and_fits_80_columns() -> None:
    now = time.time()
    rows = [
        status.JobRow("a-job-with-a-rather-long-name", "borgmatic", "daily", False, "failed",
                      "exit code 1: borg create failed because the repository is locked by "
                      "another process that never ended", now - 3600, 65.0, now + 7200, 3),
        status.JobRow("check", "borg-check", "weekly", True, "success", None, now - 86400,
                      4000.0, None, 0),
    ]
    drive_rows = drives.rows(cfg(), {}, now)
    target_rows = [drives.TargetRow("cloud", "cloud-raid", "degraded",
                                    "missing: /srv/sync/a-provider-with-a-long-folder-name/and/more",
                                    now - 7200, 123456, False)]
    text = status.render_text(status.Status(rows, drive_rows, target_rows, "failed", "failed: a",
                                            "active"), now)
    lines = text.splitlines()
    assert lines[0] == "1 job(s) FAILED: a-job-with-a-rather-long-name"
    assert "red (a job failed)" in lines[1]
    assert max(len(line) for line in lines) <= 80, [ln for ln in lines if len(ln) > 80]
    assert "FAILED x3" in text and "running" in text and "in 2h" in text
    assert "cloud   cloud-raid  DEGRADED  2h ago" in text, text


def test_a_job_that_runs_every_few_seconds_fills_the_whole_clock() -> None:
    now = 1_800_000_000.0
    starts = [now + 20 * i for i in range(schedule.ITERATIONS)]
    text = schedule.render_text([schedule.Entry("often", "*:*:0/20", starts, 0.0, 2.0)], now)
    often = text.splitlines()[2]
    assert often.startswith("often") and "#" * schedule.SLOTS in often, text
    assert f"more than {schedule.ITERATIONS} run(s)" in text


def test_the_hint_for_an_unknown_luks_drive_is_a_command_offsite_accepts() -> None:
    from offsite import cli
    from offsite.agent.daemon import unknown_drive_hint

    uuid = "3f1b6a0e-8c1d-4e55-9a57-2f4d7b1e6c01"
    hint = unknown_drive_hint(uuid, "crypto_LUKS")
    command = hint.split("offsite ", 1)[1].split(" (", 1)[0].replace("NAME", "offsite-a")
    args = cli.build_parser().parse_args(command.split())
    assert (args.command, args.action, str(args.device), args.name) == \
        ("drive", "enroll", f"/dev/disk/by-uuid/{uuid}", "offsite-a")
    assert "type: plain" in unknown_drive_hint(uuid, "ext4")


def test_metrics_label_values_with_quotes_and_backslashes_still_parse() -> None:
    """Names may hold `"` and `\\`; Prometheus' own parser must read the file back."""
    from prometheus_client.parser import text_string_to_metric_families

    odd = 'say "hi" \\ back'
    run = Run("i", "u", odd, None, 10.0, 12.0, "success", None, 5)
    text = metrics.text([odd], {odd: [run]}, {'d"r\\ive': 3.0})
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("offsite_job_last_result", (("offsite_job", odd),))] == 0
    assert samples[("offsite_drive_last_copy_timestamp_seconds", (("drive", 'd"r\\ive'),))] == 3.0
