"""Reading typed values out of one YAML mapping, against the schema, collecting problems.

A FieldMap is one mapping of the file: its keys are read through the schema's Types
(read_section), each problem is recorded with file:line:column, the key path and a hint,
and the keys nobody asked for are reported as unknown with the nearest declared key.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from offsite import escape, quantities, unitnames
from offsite.config.schema import Read, Section, Setting
from offsite.config.yamlsrc import Loc, MapNode, Node, ScalarNode, SeqNode

NAME_MAX = 64
# The documented character set for names of drives, repositories, jobs and rotation groups
# (schema.NAME_RULE says the same): ASCII letters and digits, then also - _ and . ; so no
# name is ".", "..", a path, an option ("-x"), or text a URL, a mail header or a metrics
# label would need to quote.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

NAME_HINT = ("names become parts of unit names, paths and URLs: ASCII letters and digits, "
             "then also - _ and ., at most 64 characters")


def name_problem(name: str) -> str | None:
    """Why a job, drive or repository name is outside the documented character set, or
    cannot become part of a unit name."""
    if not name:
        return "a name must not be empty"
    if len(name) > NAME_MAX:
        return f"a name must be at most {NAME_MAX} characters long (this one has {len(name)})"
    if not NAME_PATTERN.match(name):
        if name[0] in "_.-":
            return f"a name must begin with a letter or a digit: {name!r}"
        bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-")))
        return f"a name must not contain {bad!r}: {name!r}"
    unit = unitnames.unlock_unit(name)  # the longest unit name made from one name alone
    if len(unit.encode()) > escape.UNIT_NAME_MAX:
        return f"escaped for systemd the name becomes {len(unit)} bytes, over the limit of 255"
    return None


@dataclass(frozen=True)
class Problem:
    file: Path
    loc: Loc | None
    path: str  # key path, e.g. jobs.nightly.schedule ("" for the whole file)
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.loc}" if self.loc else f"{self.file}"
        key = f" {self.path}:" if self.path else ""
        text = f"{where}:{key} {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class ConfigError(Exception):
    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(
            problems, key=lambda p: (p.loc.line, p.loc.column) if p.loc else (0, 0)
        )
        super().__init__("\n".join(str(p) for p in self.problems))


def normal_path(text: str) -> Path:
    """An absolute path without . and .. steps, repeated or trailing slashes; a leading //
    too (POSIX lets normpath keep it, and Path('//') is not Path('/'))."""
    return Path("/" + os.path.normpath(text).lstrip("/"))


def has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


T = TypeVar("T")


@dataclass
class Reader:
    """Collects problems while reading one file."""

    file: Path
    problems: list[Problem] = field(default_factory=list)

    def problem(self, node_loc: Loc | None, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.file, node_loc, path, message, hint))


def type_name(node: Node) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, SeqNode):
        return "a list"
    if not isinstance(node, ScalarNode):
        return "an unknown value"
    v = node.value
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({node.text})"
    if isinstance(v, int | float):
        return f"a number ({node.text})"
    return f"the text {node.text!r}"


class FieldMap:
    """One mapping of the file, read key by key; unread keys are reported as unknown."""

    def __init__(self, reader: Reader, node: MapNode, path: str) -> None:
        self.r = reader
        self.node = node
        self.path = path
        self.known: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def loc(self, key: str) -> Loc:
        entry = self.node.entries.get(key)
        return entry.value.loc if entry else self.node.loc

    def get(self, key: str) -> Node | None:
        self.known.add(key)
        entry = self.node.entries.get(key)
        if entry is None:
            return None
        if isinstance(entry.value, ScalarNode) and entry.value.value is None:
            return None
        return entry.value

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def fail(self, key: str, message: str, hint: str = "") -> None:
        self.r.problem(self.loc(key), self.key_path(key), message, hint)

    def _scalar(self, key: str, kinds: tuple[type, ...], want: str, required: bool) -> object:
        node = self.get(key)
        if node is None:
            if required:
                self.r.problem(self.node.loc, self.key_path(key), f"{key} is required")
            return None
        if not isinstance(node, ScalarNode) or not isinstance(node.value, kinds) or (
            bool not in kinds and isinstance(node.value, bool)
        ):
            self.fail(key, f"expected {want}, got {type_name(node)}")
            return None
        return node.value

    def text(self, key: str, required: bool = False) -> str | None:
        # A number where text is expected ("port: 22" style) is fine as text.
        node = self.get(key)
        if isinstance(node, ScalarNode) and isinstance(node.value, int | float) and not isinstance(
            node.value, bool
        ):
            return node.text
        value = self._scalar(key, (str,), "text", required)
        if isinstance(value, str) and has_control(value):
            # Values reach unit files and command lines, where a newline starts a new setting.
            self.fail(key, "must not contain control characters (a newline, tab, ...)",
                      "write it on one line")
            return None
        return value if isinstance(value, str) else None

    def integer(self, key: str, low: int, high: int, default: int) -> int:
        value = self._scalar(key, (int,), "a whole number", False)
        if not isinstance(value, int):
            return default
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._scalar(key, (bool,), "true or false", False)
        return value if isinstance(value, bool) else default

    def choice(self, key: str, options: type[T], required: bool = False) -> T | None:
        text = self.text(key, required)
        if text is None:
            return None
        values = [str(o) for o in options]  # type: ignore[attr-defined]
        if text not in values:
            close = difflib.get_close_matches(text, values, n=1)
            hint = f"did you mean {close[0]!r}?" if close else ""
            self.fail(key, f"must be one of {', '.join(values)}; got {text!r}", hint)
            return None
        return options(text)  # type: ignore[call-arg]

    def abspath(self, key: str, required: bool = False) -> Path | None:
        text = self.text(key, required)
        if text is None:
            return None
        if not text.startswith("/"):
            self.fail(key, f"must be an absolute path, got {text!r}", f"write it as /{text}?")
            return None
        return normal_path(text)

    def span(self, key: str, default: float) -> float:
        text = self.text(key)
        if text is None:
            return default
        try:
            return quantities.parse(text)
        except quantities.TimeSpanError as exc:
            self.fail(key, str(exc), "write a systemd time span such as 90min, 6h or 1d")
            return default

    def size(self, key: str, required: bool = False) -> int | None:
        """A size in bytes, written like 512M, 20G or 1T (powers of 1024)."""
        text = self.text(key, required)
        if text is None:
            return None
        try:
            return quantities.parse_size(text)
        except ValueError:
            self.fail(key, f"{text!r} is not a size", "write it like 512M, 20G or 1T")
            return None

    def failed(self, key: str) -> bool:
        """Whether a problem was already reported for key."""
        path = self.key_path(key)
        return any(p.path == path or p.path.startswith(path + "[") for p in self.r.problems)

    def text_list(self, key: str, required: bool = False) -> tuple[str, ...]:
        node = self.get(key)
        if node is None:
            if required:
                self.r.problem(self.node.loc, self.key_path(key), f"{key} is required")
            return ()
        if isinstance(node, ScalarNode) and isinstance(node.value, str):
            if has_control(node.value):
                self.fail(key, "must not contain control characters (a newline, tab, ...)")
                return ()
            return (node.value,)
        if not isinstance(node, SeqNode):
            self.fail(key, f"expected a list of text, got {type_name(node)}")
            return ()
        out = []
        for i, item in enumerate(node.items):
            if isinstance(item, ScalarNode) and isinstance(item.value, str):
                if has_control(item.value):
                    self.r.problem(item.loc, f"{self.key_path(key)}[{i}]",
                                   "must not contain control characters (a newline, tab, ...)")
                    continue
                out.append(item.value)
            else:
                self.r.problem(item.loc, f"{self.key_path(key)}[{i}]",
                               f"expected text, got {type_name(item)}")
        return tuple(out)

    def mapping(self, key: str) -> FieldMap | None:
        node = self.get(key)
        if node is None:
            return None
        if not isinstance(node, MapNode):
            self.fail(key, f"expected a mapping, got {type_name(node)}")
            return None
        return FieldMap(self.r, node, self.key_path(key))

    def declared(self, key: str) -> set[str] | None:
        """Every name under a section (valid or not); None when the section is unusable.

        References are checked against this, so one bad drive is one problem, not one
        more for every job that names it.
        """
        entry = self.node.entries.get(key)
        if entry is None:
            return set()
        if not isinstance(entry.value, MapNode):
            return None
        return set(entry.value.entries)

    def named_mappings(self, key: str) -> list[tuple[str, Loc, FieldMap]]:
        """A mapping of name -> settings (drives, repositories, jobs)."""
        section = self.mapping(key)
        if section is None:
            return []
        out = []
        for name, entry in section.node.entries.items():
            section.known.add(name)
            path = section.key_path(name)
            problem = name_problem(name)
            if problem:
                self.r.problem(entry.key_loc, path, problem,
                               NAME_HINT)
                continue
            if not isinstance(entry.value, MapNode):
                self.r.problem(entry.value.loc, path,
                               f"expected the settings of {name!r}, got {type_name(entry.value)}")
                continue
            out.append((name, entry.key_loc, FieldMap(self.r, entry.value, path)))
        return out

    def done(self) -> None:
        """Report every key nobody asked for, with the nearest known key as a hint."""
        for key, entry in self.node.entries.items():
            if key in self.known:
                continue
            close = difflib.get_close_matches(key, sorted(self.known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else (
                "known keys here: " + ", ".join(sorted(self.known)) if self.known else ""
            )
            self.r.problem(entry.key_loc, self.key_path(key), f"unknown key {key!r}", hint)


# -- reading a section through the schema ----------------------------------------------

E = TypeVar("E", bound=StrEnum)


class Values(dict[str, object]):
    """The values read from one mapping by read_section, typed on the way out."""

    def text(self, key: str) -> str | None:
        value = self.get(key)
        return value if isinstance(value, str) else None

    def path(self, key: str) -> Path | None:
        value = self.get(key)
        return value if isinstance(value, Path) else None

    def span(self, key: str) -> float | None:
        value = self.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def integer(self, key: str) -> int:
        value = self.get(key)
        assert isinstance(value, int)  # noqa: S101 - every integer setting has a default
        return value

    def flag(self, key: str) -> bool:
        return self.get(key) is True

    def size(self, key: str) -> int | None:
        """A size in bytes, or None when the key is absent and has no default."""
        value = self.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, tuple) else ()

    def paths(self, key: str) -> tuple[Path, ...]:
        value = self.get(key)
        return tuple(v for v in value if isinstance(v, Path)) if isinstance(value, tuple) else ()

    def choice(self, key: str, of: type[E]) -> E | None:
        value = self.get(key)
        return value if isinstance(value, of) else None


def _applies(setting: Setting, variant: str | None) -> bool:
    return not setting.only or variant is None or variant in setting.only


def read_section(m: FieldMap, section: Section) -> Values:
    """Every declared key of section that applies to this entry's variant (its kind or
    type, read first): the value as its Type reads it, else the declared default. A key of
    another variant is refused; the keys of sub-sections (MAPPING, MAPPINGS) are left to
    the caller."""
    values = Values()
    variant: str | None = None
    if section.variant:
        chosen = _read_value(m, section[section.variant], None, section)
        values[section.variant] = chosen
        variant = str(chosen) if chosen is not None else None
    for setting in section.settings:
        if setting.key == section.variant:
            continue
        if not _applies(setting, variant):
            if m.has(setting.key):
                allowed = " and ".join(setting.only)
                m.fail(setting.key, f"{setting.key} applies only to {allowed} {section.noun}, "
                       f"not to {variant} {section.noun}")
            values[setting.key] = None
        elif setting.type.read in (Read.MAPPING, Read.MAPPINGS):
            _missing(m, setting, variant, section)  # the caller reads what is there
        else:
            values[setting.key] = _read_value(m, setting, variant, section)
    return values


def _missing(m: FieldMap, setting: Setting, variant: str | None, section: Section) -> bool:
    """Report a required key that is absent; True if it was."""
    if not setting.required or (setting.only and variant not in setting.only) or \
            variant in setting.optional_for or m.has(setting.key):
        return False
    where = f" for {variant} {section.noun}" if setting.only and variant else ""
    m.r.problem(m.node.loc, m.key_path(setting.key), f"{setting.key} is required{where}",
                setting.hint)
    return True


def _read_value(m: FieldMap, setting: Setting, variant: str | None, section: Section) -> object:
    key, kind = setting.key, setting.type
    default = setting.default_for(variant)
    if _missing(m, setting, variant, section):
        return default
    if kind.read is Read.TEXT:
        text = m.text(key)
        if text is not None and kind.pattern is not None and not kind.pattern.match(text):
            m.fail(key, kind.bad.format(value=text), kind.hint)
            return None
        return text if text is not None else default
    if kind.read is Read.ABSPATH:
        path = m.abspath(key)
        if path is not None and kind.pattern is not None and not kind.pattern.match(str(path)):
            m.fail(key, kind.bad.format(value=str(path)), kind.hint)
            return None
        return path or default
    if kind.read is Read.SPAN:
        if not m.has(key):
            return default
        seconds = m.span(key, math.nan)
        if math.isnan(seconds):
            return default
        low = kind.low if kind.low is not None else 0.0
        high = kind.high if kind.high is not None else math.inf
        if not low <= seconds <= high:
            bound = f"at least {quantities.format_span(low)}" if seconds < low else \
                f"at most {quantities.format_span(high)}"
            m.fail(key, f"must be {bound}, got {m.text(key)!r}",
                   f"write a time span from {quantities.format_span(low)} to "
                   f"{quantities.format_span(high)}, such as 90min, 6h or 1d")
            return default
        return seconds
    if kind.read is Read.SIZE:
        size = m.size(key)
        low, high = kind.low or 0, kind.high or math.inf
        if size is not None and not low <= size <= high:
            bound = f"at least {quantities.format_size(int(low))}" if size < low else \
                f"at most {quantities.format_size(int(high))}"
            m.fail(key, f"must be {bound}, got {m.text(key)!r}", setting.doc)
            return None
        return size
    if kind.read is Read.INTEGER:
        if default is None:  # optional: absent is None
            if not m.has(key):
                return None
            value = m.integer(key, int(kind.low or 0), int(kind.high or 0), -1)
            return None if value == -1 else value
        assert isinstance(default, int)  # noqa: S101 - declared with every integer
        return m.integer(key, int(kind.low or 0), int(kind.high or 0), default)
    if kind.read is Read.BOOLEAN:
        assert isinstance(default, bool)  # noqa: S101 - declared with every boolean
        return m.boolean(key, default)
    if kind.read is Read.CHOICE:
        assert kind.choices is not None  # noqa: S101 - declared with every choice
        return m.choice(key, kind.choices) or default
    if kind.read in (Read.TEXTS, Read.PATHS):
        items = m.text_list(key)
        if m.has(key) and len(items) < kind.min_items and not m.failed(key):
            m.fail(key, "must not be empty", setting.doc)
        if kind.read is Read.TEXTS:
            return items
        paths = []
        for item in items:
            if not item.startswith("/"):
                m.fail(key, f"{item!r} must be an absolute path")
                continue
            paths.append(normal_path(item))
        return tuple(paths)
    raise AssertionError(f"no reader for {kind.read}")  # pragma: no cover
