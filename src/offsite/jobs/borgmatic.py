"""borgmatic's own verdict on the configurations offsite's borgmatic jobs run.

Each borgmatic release accepts its own forms: 1.7 (Debian 12) requires the sections
(`location:`, `storage:`, ...); 1.8 and later (Debian 13: 1.9) take options at the top
level and warn that sections, and repositories given as plain strings, are deprecated.
So offsite does not judge the file itself: it asks the borgmatic installed here
(`borgmatic config validate`, or `validate-borgmatic-config` before 1.7.15) and says what
it said, naming the offsite setting that points at the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offsite.config.model import Config, JobKind
from offsite.run import CommandError, run

CONFIG_SUBCOMMAND_SINCE = (1, 7, 15)  # `borgmatic config validate`
_NOISE = re.compile(r"^(summary:|All (given )?configuration files are valid|Need some help\?|"
                    r"validate-borgmatic-config is deprecated)")


@dataclass(frozen=True)
class Verdict:
    version: str
    valid: bool
    said: tuple[str, ...]  # borgmatic's own lines: its errors, or its warnings when valid


def version_tuple(version: str) -> tuple[int, ...]:
    """`1.9.14` -> (1, 9, 14); what follows the numbers (`.dev0`, `rc1`) is ignored."""
    numbers = []
    for part in version.strip().split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def validate_argv(version: str, config: Path) -> list[str]:
    if version_tuple(version) >= CONFIG_SUBCOMMAND_SINCE:
        return ["borgmatic", "config", "validate", "--config", str(config)]
    return ["validate-borgmatic-config", "--config", str(config)]


def verdict(version: str, returncode: int, output: str) -> Verdict:
    """borgmatic's lines worth a person's reading: what it found, without its summary
    banners (the validator's exit code says whether the file is valid)."""
    said = tuple(line.rstrip() for line in output.splitlines()
                 if line.strip() and not _NOISE.match(line.strip()))
    return Verdict(version, returncode == 0, said)


def installed_version() -> str | None:
    try:
        out = run(["borgmatic", "--version"], timeout=60).stdout.strip()
    except CommandError:
        return None
    return out.split()[-1] if out else None


def validate(configs: Sequence[Path]) -> dict[Path, Verdict] | None:
    """Each existing configuration as the installed borgmatic sees it; None when borgmatic
    is not installed. A file not there yet is left to the job (borgmatic says so then)."""
    version = installed_version()
    if version is None:
        return None
    found = {}
    for config in configs:
        if config.is_file():
            result = run(validate_argv(version, config), check=False, timeout=120)
            found[config] = verdict(version, result.returncode, result.stderr + result.stdout)
    return found


@dataclass(frozen=True)
class Findings:
    warnings: tuple[str, ...]
    errors: tuple[str, ...]


def configs_of(cfg: Config) -> dict[Path, list[str]]:
    """The borgmatic configurations offsite's borgmatic jobs run, each with the settings that
    name it (`repositories.NAME.borgmatic_config`); borgmatic's own search is not listed."""
    found: dict[Path, list[str]] = {}
    for job in cfg.jobs:
        if job.kind is JobKind.BORGMATIC:
            for name in job.repositories:
                config = cfg.repository(name).borgmatic_config
                setting = f"repositories.{name}.borgmatic_config"
                if config is not None and setting not in found.get(config, []):
                    found.setdefault(config, []).append(setting)
    return found


def findings(cfg: Config, verdicts: dict[Path, Verdict] | None) -> Findings:
    """What `offsite check` and `install` say about borgmatic: not installed (a warning: the
    job will fail), a configuration it refuses (an error), or one it warns about."""
    jobs = [j.name for j in cfg.jobs if j.kind is JobKind.BORGMATIC]
    if not jobs:
        return Findings((), ())
    if verdicts is None:
        return Findings((f"job {jobs[0]} runs borgmatic, which is not installed here "
                         "(apt install borgmatic)",), ())
    warnings, errors = [], []
    for config, settings in configs_of(cfg).items():
        v = verdicts.get(config)
        if v is None:
            continue
        said = "\n".join("    " + line for line in v.said)
        where = f"{' and '.join(settings)}: {config}"
        if not v.valid:
            errors.append(f"{where}: the installed borgmatic ({v.version}) refuses it:\n{said}")
        elif v.said:
            warnings.append(f"{where}: the installed borgmatic ({v.version}) accepts it and "
                            f"warns:\n{said}")
    return Findings(tuple(warnings), tuple(errors))
