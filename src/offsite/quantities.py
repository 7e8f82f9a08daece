"""Quantities as people write and read them, as pure functions: systemd time spans ("6h",
"1h 30min", "infinity"), sizes ("512M", "1.5 GiB") and ages ("3 days ago")."""

from __future__ import annotations

import math
import re

_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("us", "usec", "µs", "μs"), 1e-6),
    (("ms", "msec"), 1e-3),
    (("s", "sec", "second", "seconds"), 1.0),
    (("m", "min", "minute", "minutes"), 60.0),
    (("h", "hr", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 604800.0),
    (("M", "month", "months"), 2629800.0),
    (("y", "year", "years"), 31557600.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Zµμ]*)")


class TimeSpanError(ValueError):
    pass


def parse(text: str) -> float:
    """Seconds in a systemd time span; math.inf for "infinity". Raises TimeSpanError."""
    value = text.strip()
    if value == "infinity":
        return math.inf
    if not value:
        raise TimeSpanError("empty time span")
    total = 0.0
    pos = 0
    while pos < len(value):
        match = _PART.match(value, pos)
        if not match or match.end() == pos:
            raise TimeSpanError(f"cannot read {value[pos:].strip()!r} as a time span")
        number, unit = match.groups()
        if unit not in _UNITS and unit != "":
            known = "us, ms, s, min, h, d, w, M, y"
            raise TimeSpanError(f"unknown time unit {unit!r} (use one of {known})")
        total += float(number) * (_UNITS[unit] if unit else 1.0)
        pos = match.end()
        while pos < len(value) and value[pos].isspace():
            pos += 1
    return total


def format_span(seconds: float) -> str:
    """A time span systemd reads back to the same value, e.g. 5400 -> "1h 30min"."""
    if math.isinf(seconds):
        return "infinity"
    whole = round(seconds)
    if whole == 0:
        return "0"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


_SIZE = re.compile(r"^([0-9]{1,12})\s*([KMGTkmgt])?(?:i?B)?$")
_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def parse_size(text: str) -> int:
    """Bytes in a size written like 512M, 20G or 1T (powers of 1024). Raises ValueError."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size")
    unit: str = match[2] or " "
    return int(match[1]) * int(1024 ** " KMGT".index(unit.upper()))


def format_size(n: float) -> str:
    """1536 -> "1.5 KiB"; whole bytes below 1 KiB ("512 B")."""
    for unit in _SIZE_UNITS:
        if abs(n) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def duration(seconds: float | None) -> str:
    """How long something took or lasts, for people: "1h 30min", "under 1s", "unknown"."""
    if seconds is None:
        return "unknown"
    return "under 1s" if seconds < 1 else format_span(seconds)


def age(then: float | None, now: float) -> str:
    """How long ago, in the largest whole unit: "70d ago", "5h ago", "12min ago"."""
    if then is None:
        return "never"
    seconds = now - then
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"
