"""``offsite drives``: each drive's last copy, its age, and which drive of a group is due.

Built by pure functions from the configuration and the per-drive records the drive jobs
write (state.drive_file); formatting is separate from the facts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offsite import quantities, state
from offsite.config.model import Config
from offsite.jobs import push
from offsite.targets import assembly


@dataclass(frozen=True)
class DriveRow:
    name: str
    uuid: str
    group: str | None
    last_seen: float | None
    last_copy: float | None
    last_copy_bytes: int | None
    last_read_back: float | None  # the last copy whose new files were read back and matched
    last_checked: float | None  # the last borg check of the copies on the drive itself
    stale: bool  # the last copy is older than the drive's stale_after (or there is none)
    due: bool  # the drive of its group whose turn it is (oldest copy)


def rows(cfg: Config, records: dict[str, dict[str, Any]], now: float) -> list[DriveRow]:
    out = []
    for drive in cfg.drives:
        record = records.get(drive.uuid, {})
        last_copy = record.get("last_copy")
        age = now - last_copy if isinstance(last_copy, int | float) else math.inf
        out.append(DriveRow(
            drive.name, drive.uuid, drive.rotation,
            record.get("last_seen") if isinstance(record.get("last_seen"), int | float) else None,
            last_copy if isinstance(last_copy, int | float) else None,
            record.get("last_copy_bytes") if isinstance(record.get("last_copy_bytes"), int) else None,
            _time(record.get("last_read_back")), _time(record.get("last_checked")),
            age > drive.stale_after, False,
        ))
    due: dict[str, str] = {}
    for row in out:
        key = row.group or row.name
        current = next((r for r in out if r.name == due.get(key)), None)
        if current is None or (row.last_copy or 0) < (current.last_copy or 0):
            due[key] = row.name
    return [DriveRow(**{**asdict(r), "due": due[r.group or r.name] == r.name and
                        r.group is not None}) for r in out]


def _time(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _size(n: int | None) -> str:
    return "-" if n is None else quantities.format_size(n)


def table(drive_rows: list[DriveRow], now: float) -> str:
    header = ("DRIVE", "GROUP", "SEEN", "COPIED", "SIZE", "READ", "CHECKED", "")
    lines = [header]
    for r in drive_rows:
        notes = []
        if r.due:
            notes.append("due next")
        if r.stale:
            notes.append("STALE" if r.last_copy is not None else "no copy yet")
        lines.append((r.name, r.group or "-", quantities.age(r.last_seen, now),
                      quantities.age(r.last_copy, now), _size(r.last_copy_bytes),
                      quantities.age(r.last_read_back, now), quantities.age(r.last_checked, now),
                      ", ".join(notes)))
    return _columns(lines)


def _columns(lines: Sequence[tuple[str, ...]]) -> str:
    """Rows as aligned columns; the last (notes) column is not padded."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)] + [0]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines) + "\n"


@dataclass(frozen=True)
class TargetRow:
    name: str
    kind: str  # cloud-raid, nbd, or "push to HOST:PATH"
    health: str  # ok, degraded, refused, failed; "unknown" before its first assembly
    detail: str | None
    last_copy: float | None
    last_copy_bytes: int | None
    stale: bool  # the last copy is older than the target's stale_after (or there is none)


def target_rows(cfg: Config, records: dict[str, dict[str, Any]], now: float) -> list[TargetRow]:
    out = []
    for target in cfg.targets:
        record = records.get(target.name, {})
        last_copy = record.get("last_copy")
        last_copy = last_copy if isinstance(last_copy, int | float) else None
        health = record.get("state")
        detail = record.get("detail")
        nbytes = record.get("last_copy_bytes")
        out.append(TargetRow(
            target.name, target.kind, health if isinstance(health, str) else "unknown",
            detail if isinstance(detail, str) else None, last_copy,
            nbytes if isinstance(nbytes, int) else None,
            now - (last_copy if last_copy is not None else -math.inf) > target.stale_after))
    return out


def push_rows(cfg: Config, records: dict[str, dict[str, Any]], now: float) -> list[TargetRow]:
    """The far sides of push jobs, as targets: where, how the last push ended, its age."""
    out = []
    for job in cfg.jobs:
        if job.to is None:
            continue
        record = records.get(job.name, {})
        last_copy = _time(record.get("last_copy"))
        health, detail, nbytes = record.get("state"), record.get("detail"), \
            record.get("last_copy_bytes")
        limit = job.stale_after if job.stale_after is not None else math.inf
        out.append(TargetRow(
            job.name, f"push to {job.to.host}:{job.to.path}",
            health if isinstance(health, str) else "unknown",
            detail if isinstance(detail, str) else None, last_copy,
            nbytes if isinstance(nbytes, int) else None,
            now - (last_copy if last_copy is not None else -math.inf) > limit))
    return out


def load_push_records(cfg: Config, root: Path = push.RECORDS) -> dict[str, dict[str, Any]]:
    return {j.name: state.read(push.record(j.name, root)) for j in cfg.jobs if j.to is not None}


def target_table(rows_: list[TargetRow], now: float) -> str:
    header = ("TARGET", "KIND", "HEALTH", "LAST COPY", "COPIED", "")
    lines = [header]
    for r in rows_:
        notes = []
        if r.stale:
            notes.append("STALE" if r.last_copy is not None else "no copy yet")
        if r.health != "ok" and r.detail:
            notes.append(r.detail)
        health = r.health.upper() if r.health in ("degraded", "refused", "failed") else r.health
        lines.append((r.name, r.kind, health, quantities.age(r.last_copy, now), _size(r.last_copy_bytes),
                      "; ".join(notes)))
    return _columns(lines)


def load_target_records(cfg: Config, root: Path = state.STATE_DIR) -> dict[str, dict[str, Any]]:
    return {t.name: state.read(assembly.health_file(t, root)) for t in cfg.targets}


def load_records(cfg: Config, root: Path = state.STATE_DIR) -> dict[str, dict[str, Any]]:
    return {d.uuid: state.read(state.drive_file(d.uuid, root)) for d in cfg.drives}


def as_json(drive_rows: Sequence[DriveRow], target_rows_: Sequence[TargetRow] = ()) -> str:
    """Drives, then targets (each with "target": true), in one list."""
    return json.dumps([asdict(r) for r in drive_rows]
                      + [{**asdict(r), "target": True} for r in target_rows_], indent=1)
