"""Running one job: what ``offsite exec JOB`` does inside the backup namespace.

execute (locks, the job kinds, exit codes) · mirror (the interruption-safe copy) · pull
(rsync over restricted SSH) · restoretest · borgjson (borg's log lines) · namespace (the
private mount namespace) · hooks (a job unit's start and stop: history, notices, metrics).
May import: base, config, targets, units, notify.
"""
