"""borg's --log-json output, read line by line: progress becomes a few journal lines (not
thousands), log messages keep their level, and the errors are kept for the failure
message. Pure: no borg is run here."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

STEP = 10.0  # percent between progress lines in the journal
EVERY = 60.0  # seconds: a progress line at least this often, however slow


@dataclass
class Reader:
    """Feed it borg's lines; it says what to log. errors: borg's ERROR/CRITICAL messages."""

    errors: list[str] = field(default_factory=list)
    msgids: list[str] = field(default_factory=list)  # of the errors, where borg gave one
    _last_step: dict[str, float] = field(default_factory=dict)
    _last_time: float = 0.0

    def feed(self, line: str, now: float) -> tuple[int, str, dict[str, str]] | None:
        """(level, message, extra journal fields) to log for this line, or None."""
        try:
            data = json.loads(line)
        except ValueError:
            return (logging.INFO, line, {}) if line.strip() else None
        if not isinstance(data, dict):
            return logging.INFO, line, {}
        kind = data.get("type")
        if kind == "progress_percent":
            return self._progress(data, now)
        if kind == "log_message":
            level = logging.getLevelName(str(data.get("levelname", "INFO")))
            level = level if isinstance(level, int) else logging.INFO
            message = str(data.get("message", "")).rstrip()
            if level >= logging.ERROR:
                self.errors.append(message)
                if data.get("msgid"):
                    self.msgids.append(str(data["msgid"]))
            return level, message, {}
        return None  # other progress kinds (file names, bytes): too many for a journal

    def _progress(self, data: dict[str, object], now: float) -> tuple[int, str, dict[str, str]] | None:
        operation = str(data.get("msgid") or data.get("operation") or "")
        current, total = data.get("current"), data.get("total")
        if data.get("finished") or not isinstance(current, int | float) or not isinstance(
                total, int | float) or total <= 0:
            self._last_step.pop(operation, None)
            return None
        percent = 100.0 * current / total
        step = percent // STEP * STEP
        if step <= self._last_step.get(operation, -1.0) and now - self._last_time < EVERY:
            return None
        self._last_step[operation] = step
        self._last_time = now
        message = str(data.get("message") or f"{percent:.1f}%")
        return logging.INFO, message, {"PROGRESS_PERCENT": f"{percent:.1f}",
                                       "PROGRESS_OPERATION": operation}


def passphrase_refused(msgids: list[str], repository: str, source: str) -> tuple[str, str] | None:
    """(message, hint) when borg failed for want of the right passphrase, else None."""
    if "PassphraseWrong" in msgids:
        return (f"wrong passphrase for repository {repository}" + (f" (from {source})" if source
                                                                    else ""),
                "check the passphrase's source; `offsite repo test " + repository + "` tries it")
    if "NoPassphraseFailure" in msgids or "PasscommandFailure" in msgids:
        return (f"repository {repository} is encrypted and no passphrase reached borg" +
                (f" ({source} gave none)" if source else ""),
                f"set passphrase_file, passphrase_credential or passcommand under "
                f"repositories.{repository}")
    return None


# What borg 1.2.5+ and 1.4 say of an archive without a valid TAM (one that borg < 1.2.5
# renamed or recreated): `borg check` reports it and would delete it with --repair;
# extracting from it fails.
_TAM = re.compile(r"Archive TAM authentication issue for archive ([^\s:]+)|"
                  r"Archive authentication did not verify|ArchiveTAMInvalid|"
                  r"Manifest authentication did not verify|TAMRequiredError")


def tam_refused(texts: list[str], repository: str, path: str) -> tuple[str, str] | None:
    """(message, hint) when borg refused archives (or the manifest) it cannot authenticate,
    naming the archives where borg did; else None."""
    found = [m for t in texts for m in _TAM.finditer(t)]
    if not found:
        return None
    archives = sorted({m.group(1) for m in found if m.group(1)})
    manifest = any("Manifest" in m.group(0) or "TAMRequired" in m.group(0) for m in found)
    which = f" ({', '.join(archives)})" if archives else ""
    run = f"borg upgrade --tam {path}" if manifest else f"borg upgrade --archives-tam {path}"
    return (f"repository {repository} has archives this borg cannot authenticate{which}: "
            "written or renamed by borg before 1.2.5 (CVE-2023-36811). Never run borg check "
            "--repair on it now: that deletes them",
            f"check that the archives are yours (borg list {path}), then run: {run} "
            "(once per repository; see borg's changelog, pre-1.2.5 archives spoofing)")


def msgids_of(output: str) -> list[str]:
    """The msgids of borg's error messages in --log-json output (a whole run's); a JSON
    message may follow a prompt borg wrote without a newline."""
    reader = Reader()
    for line in output.splitlines():
        start = line.find('{"type"')
        if start >= 0:
            reader.feed(line[start:], 0.0)
    return reader.msgids
