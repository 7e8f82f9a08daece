"""systemd's escaping rules, as pure functions (the same output as ``systemd-escape``)."""

from __future__ import annotations

import posixpath

# Characters systemd leaves alone in an escaped name; everything else becomes \xNN.
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")

UNIT_NAME_MAX = 255  # bytes, including the suffix (systemd's UNIT_NAME_MAX is 256 with NUL)


def _escape_byte(b: int) -> str:
    return f"\\x{b:02x}"


def escape_name(text: str) -> str:
    """``systemd-escape TEXT``: '/' becomes '-', unsafe bytes become \\xNN."""
    out: list[str] = []
    data = text.encode("utf-8")
    for i, b in enumerate(data):
        ch = chr(b)
        if i == 0 and ch == ".":
            out.append(_escape_byte(b))
        elif ch == "/":
            out.append("-")
        elif b < 0x80 and ch in _KEEP:
            out.append(ch)
        else:
            out.append(_escape_byte(b))
    return "".join(out)


def escape_path(path: str) -> str:
    """``systemd-escape --path PATH``: the name of a mount or device unit for PATH."""
    simplified = posixpath.normpath("/" + path).strip("/")
    if not simplified:
        return "-"
    return escape_name(simplified)


def device_unit(path: str) -> str:
    """The device unit systemd creates for a device node path (dev-disk-by\\x2duuid-...)."""
    return escape_path(path) + ".device"


def uuid_device_unit(uuid: str) -> str:
    return device_unit(f"/dev/disk/by-uuid/{uuid}")
