"""What the CLI shows a person: read-only views of systemd, the history and the drives.

status · drives · schedule · follow (``offsite run``: a job's progress as it runs).
May import: base, config, targets, units, notify.
"""
