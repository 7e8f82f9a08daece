"""What offsite makes of the installed borgmatic's verdict on a job's configuration (the
pure part; borgmatic itself judges real files in tests/vm/test_debian13.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from offsite.config import reader
from offsite.config.model import Config
from offsite.jobs.borgmatic import (
    Verdict,
    configs_of,
    findings,
    validate_argv,
    verdict,
    version_tuple,
)

# borgmatic 1.9.14 (Debian 13), `borgmatic config validate` on a sectioned file, stderr
SECTIONED_1_9 = (
    "\nsummary:\n"
    "/etc/borgmatic/old.yaml: Configuration sections (like location:, storage:, retention:, "
    "consistency:, and hooks:) are deprecated and support will be removed from a future "
    "release. To prepare for this, move your options out of sections to the global scope.\n"
    "/etc/borgmatic/old.yaml: The repositories option now expects a list of key/value pairs. "
    "Lists of strings for this option are deprecated and support will be removed from a "
    "future release.\n"
    "All configuration files are valid\n")
# borgmatic 1.7.7 (Debian 12), validate-borgmatic-config on the flat form it predates
FLAT_1_7 = """new.yaml: Error parsing configuration file
An error occurred while parsing a configuration file at new.yaml:
At the top level: 'location' is a required property
"""


def test_versions_compare_by_their_numbers() -> None:
    assert version_tuple("1.9.14") == (1, 9, 14)
    assert version_tuple("1.7.15.dev0") == (1, 7, 15)
    assert version_tuple("2.0.0rc1") == (2, 0, 0)


def test_the_validator_is_the_one_that_release_has() -> None:
    config = Path("/etc/borgmatic/config.yaml")
    assert validate_argv("1.7.7", config)[0] == "validate-borgmatic-config"
    assert validate_argv("1.7.15", config)[:3] == ["borgmatic", "config", "validate"]
    assert validate_argv("1.9.14", config)[-1] == str(config)


def test_a_verdict_keeps_what_borgmatic_found_and_drops_its_banners() -> None:
    v = verdict("1.9.14", 0, SECTIONED_1_9)
    assert v.valid and len(v.said) == 2
    assert v.said[0].startswith("/etc/borgmatic/old.yaml: Configuration sections")
    refused = verdict("1.7.7", 1, FLAT_1_7)
    assert not refused.valid and refused.said[-1].endswith("'location' is a required property")
    assert verdict("1.9.14", 0, "summary:\nAll configuration files are valid\n").said == ()


def _cfg(tmp_path: Path, borgmatic_config: str) -> Config:
    path = tmp_path / "offsite.yaml"
    path.write_text(textwrap.dedent(f"""\
        repositories:
          main:
            path: /srv/borg/main
            {borgmatic_config}
          other:
            path: /srv/borg/other
        jobs:
          nightly:
            kind: borgmatic
            repositories: [main, other]
            schedule: daily
        """))
    return reader.load(path)


def test_findings_name_the_setting_and_say_what_borgmatic_said(tmp_path: Path) -> None:
    config = tmp_path / "borgmatic.yaml"  # not there: the reader leaves it to borgmatic
    cfg = _cfg(tmp_path, f"borgmatic_config: {config}")
    assert configs_of(cfg) == {config: ["repositories.main.borgmatic_config"]}

    warned = findings(cfg, {config: verdict("1.9.14", 0, SECTIONED_1_9)})
    assert warned.errors == () and len(warned.warnings) == 1
    assert warned.warnings[0].startswith(f"repositories.main.borgmatic_config: {config}: "
                                         "the installed borgmatic (1.9.14) accepts it and warns")
    assert "move your options out of sections" in warned.warnings[0]

    refused = findings(cfg, {config: verdict("1.7.7", 1, FLAT_1_7)})
    assert refused.warnings == () and "refuses it" in refused.errors[0]
    assert "'location' is a required property" in refused.errors[0]

    assert findings(cfg, {config: Verdict("1.9.14", True, ())}) == findings(cfg, {})
    assert findings(cfg, {}).warnings == findings(cfg, {}).errors == ()


def test_borgmatic_missing_is_a_warning_for_a_borgmatic_job(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "")
    assert configs_of(cfg) == {}
    missing = findings(cfg, None)
    assert missing.errors == () and "apt install borgmatic" in missing.warnings[0]
