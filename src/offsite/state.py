"""What offsite remembers between runs, under /var/lib/offsite: small JSON files written
atomically (temporary file, fsync, rename), so a crash leaves the old or the new one."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from offsite import durable

STATE_DIR = Path("/var/lib/offsite")  # history, drive records, the unit manifest
RUN_DIR = Path("/run/offsite")  # locks, the namespace record


def drive_file(uuid: str, root: Path = STATE_DIR) -> Path:
    # The UUID is validated hex-and-dashes from the config, never read from a device.
    return root / "drives" / f"{uuid}.json"


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    durable.replace(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def update(path: Path, **values: Any) -> dict[str, Any]:
    data = read(path)
    data.update(values)
    write(path, data)
    return data


def this_run_summary() -> Path | None:
    """The run summary of the job unit run this process belongs to (its INVOCATION_ID,
    which systemd sets and offsite's children inherit); None outside a unit."""
    invocation = os.environ.get("INVOCATION_ID", "")
    return run_summary_file(invocation) if re.fullmatch(r"[0-9a-f]{32}", invocation) else None


def run_summary_file(invocation: str, root: Path = RUN_DIR) -> Path:
    """What a job tells its stop hook about its run (bytes copied), by invocation id (32 hex
    digits, checked by the caller)."""
    return root / "runs" / f"{invocation}.json"
