"""Writing values into unit files: escaped for systemd, refused when they cannot be.

``%`` becomes ``%%``, ``$`` becomes ``$$`` on command lines, a value with spaces is quoted,
and a control character is never written (it would start a new setting). Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


class RenderError(ValueError):
    """A value cannot be written into a unit file safely."""


def no_controls(text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise RenderError(f"{text!r} contains a control character and cannot go into a unit file")
    return text


def unit_value(text: str) -> str:
    """A free-text value (Description=): specifiers disarmed, and a trailing backslash
    followed by a space, which systemd drops from the value: written bare at the end of a
    line it would join the next line (the next setting) onto this one."""
    out = no_controls(text).replace("%", "%%")
    return out + " " if out.endswith("\\") else out


_PLAIN_ARG = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@"
)


def word(text: str) -> str:
    """One word of a space-separated setting (LogExtraFields=): quoted if needed."""
    no_controls(text)
    if text and all(c in _PLAIN_ARG for c in text):
        quoted = text
    else:
        quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted.replace("%", "%%")


def exec_arg(arg: str) -> str:
    """One argument of ExecStart=: quoted if needed, specifiers and variables disarmed."""
    return word(arg).replace("$", "$$")


def exec_line(argv: Sequence[str | Path]) -> str:
    """A command line for ExecStart=. The program is an absolute path, so none of the
    prefixes systemd reads from the first word (-, @, +, !, :) can appear by accident."""
    if not str(argv[0]).startswith("/"):
        raise RenderError(f"the program {argv[0]!r} must be given by its absolute path")
    return " ".join(exec_arg(str(a)) for a in argv)


def path_list(paths: Iterable[str | Path]) -> str:
    """A space-separated path list (ReadWritePaths=); '-' prefix allowed, quoted if needed."""
    out = []
    for raw in paths:
        text = no_controls(str(raw))
        optional = text.startswith("-")
        path = text[1:] if optional else text
        if any(c in path for c in ' "\\'):
            path = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(("-" if optional else "") + path.replace("%", "%%"))
    return " ".join(out)
