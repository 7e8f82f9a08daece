"""Errors that end a command with a message (and exit codes the CLI maps them to)."""

from __future__ import annotations

EXIT_FAILURE = 1
# How `offsite exec` tells its unit's stop hook what happened; both are in the job units'
# SuccessExitStatus=, so neither fails the unit.
EXIT_WARNING = 10  # done, with warnings (borg's exit 1, rsync's 24)
EXIT_SKIPPED = 11  # nothing to do, and that is no failure (a drive not plugged in)


class Fatal(Exception):
    """Stop the command: the message is for the user, the hint says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
