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


def test_a_push_jobs_far_side_is_listed_with_its_last_push(tmp_path: Path) -> None:
    path = tmp_path / "offsite.yaml"
    path.write_text("repositories:\n  main: {path: /srv/borg/main}\njobs:\n"
                    "  far: {kind: push, repositories: [main], to: {host: h.example.org, "
                    "path: /srv/o}}\n"
                    "  far2: {kind: push, repositories: [main], stale_after: 1d, to: {host: g, "
                    "path: /srv/o}}\n")
    cfg = reader.load(path)
    records = {"far": {"state": "ok", "last_copy": NOW - 2 * DAY, "last_copy_bytes": 2048},
               "far2": {"state": "failed", "detail": "the far side is full",
                        "last_copy": NOW - 2 * DAY}}
    rows = {r.name: r for r in drives.push_rows(cfg, records, NOW)}
    assert rows["far"].kind == "push to h.example.org:/srv/o" and not rows["far"].stale  # 3d
    assert rows["far2"].stale and rows["far2"].health == "failed"
    text = drives.target_table(list(rows.values()), NOW)
    assert "the far side is full" in text and "STALE" in text and "2.0 KiB" in text
