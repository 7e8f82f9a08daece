"""Errors that end a command with a message (and exit codes the CLI maps them to)."""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_NOT_IMPLEMENTED = 3  # a subcommand whose issue is still open


class Fatal(Exception):
    """Stop the command: the message is for the user, the hint says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
