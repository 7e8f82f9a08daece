"""What happened, and who hears of it.

history (the run record, SQLite) · outcome (a run's result from systemd's words) · notices
(failure, recovery and staleness notices) · mailtext (their text, pure) · transport (SMTP,
sendmail) · spool (the outbox: nothing is lost) · pings (healthchecks) · staleness (pure) ·
metrics (Prometheus textfile).
May import: base, config, units.
"""
