"""`offsite drives`: rows from config and records, by value."""

from __future__ import annotations

from pathlib import Path

from offsite.config import reader
from offsite.views import drives

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
NOW = 1_800_000_000.0


def test_rotation_due_and_stale() -> None:
    cfg = reader.load(ROOT / "examples" / "offsite.yaml")
    a, b = (d.uuid for d in cfg.drives)
    records = {a: {"last_copy": NOW - 70 * DAY, "last_seen": NOW - 70 * DAY,
                   "last_copy_bytes": 5 << 30},
               b: {"last_copy": NOW - 10 * DAY, "last_seen": NOW - 10 * DAY}}
    rows = {r.name: r for r in drives.rows(cfg, records, NOW)}
    assert rows["offsite-a"].due and not rows["offsite-b"].due  # the older copy is due
    assert rows["offsite-a"].stale and not rows["offsite-b"].stale  # 70 days > 62 days
    text = drives.table(list(rows.values()), NOW)
    assert "due next, STALE" in text and "5.0 GiB" in text and "70d ago" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_drive_never_copied_is_due_and_says_so() -> None:
    cfg = reader.load(ROOT / "examples" / "offsite.yaml")
    a, _ = (d.uuid for d in cfg.drives)
    rows = {r.name: r for r in drives.rows(cfg, {a: {"last_copy": NOW - DAY}}, NOW)}
    assert rows["offsite-b"].due and rows["offsite-b"].stale
    assert "no copy yet" in drives.table(list(rows.values()), NOW)
