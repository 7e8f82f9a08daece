"""The configuration reference (docs/config-reference.md), generated from the schema.

Every key, its value, whether it is required, its default and its meaning come from
config/schema.py, the table the reader reads by and the model takes its defaults from.
tests/unit/test_configref.py checks that the reader asks for exactly these keys and that
the file in docs/ is what this module generates (`make docs` writes it).
"""

from __future__ import annotations

from offsite.config import schema
from offsite.config.schema import Section, Setting


def required_text(section: Section, setting: Setting) -> str:
    if not setting.required:
        return "no"
    if setting.only:
        required = [v for v in setting.only if v not in setting.optional_for]
        return " and ".join(required) + " " + (section.noun or "entries")
    return "yes"


def default_text(setting: Setting) -> str:
    if setting.default_doc:
        return setting.default_doc
    return schema.format_default(setting.default) if setting.default is not None else ""


def applies_text(section: Section, setting: Setting) -> str:
    return ("only " + ", ".join(setting.only)) if setting.only and not setting.required else ""


def documented_keys() -> set[tuple[str, str]]:
    """(section path, key) for every key declared, including the keys that open a section."""
    out = {(s.path, k) for s in schema.SECTIONS for k in s.keys}
    for s in schema.SECTIONS:
        parent, _, last = s.path.rpartition(".")
        if last == "NAME":  # drives.NAME is opened by the top-level key drives
            out.add(("", parent))
        else:
            out.add((parent, last.removesuffix("[]")))
    return out


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/offsite/config/schema.py` (`make docs`), the one table the reader",
        "checks by and the model takes its defaults from; a test fails when this file, the",
        "schema or the reader disagree. The file is `/etc/offsite/offsite.yaml` unless",
        "`--config` names another; `offsite check` reports every problem at once, with its",
        "line and key. `examples/offsite.yaml` and `examples/targets.yaml` are commented examples.",
        "",
    ]
    for s in schema.SECTIONS:
        lines += [f"## `{s.path}`", "", s.doc, "", "| key | value | required | default | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for k in s.settings:
            default = default_text(k)
            applies = applies_text(s, k)
            meaning = k.doc + (f" ({applies} {s.noun}.)" if applies else "")
            lines.append(f"| `{k.key}` | {k.type.doc} | {required_text(s, k)} | "
                         f"{f'`{default}`' if default else '-'} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # make docs
    import sys

    sys.stdout.write(markdown())
