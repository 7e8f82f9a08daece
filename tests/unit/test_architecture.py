"""The layout holds: each room imports only the rooms below it, and the lab stays outside.

The order, lowest first (docs/architecture.md draws it):
  base     offsite/*.py: run, log, errors, durable, state, locks, escape, quantities,
           unitnames, sshkeys
  config   the schema, the reader, the frozen model
  targets  where a copy goes (cloud RAID, NBD, block devices)
  units    unit text, install, the systemd binding
  notify   history, notices, mail, spool, pings, metrics
  jobs     offsite exec: the job kinds, the namespace, the unit hooks
  agent    the daemon and the LED;  views: status, drives, schedule, follow
  cli      the command line (and manpage, generated from it)
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "offsite"
LAYERS = {
    "base": 0, "config": 1, "targets": 2, "units": 3, "notify": 4, "jobs": 5,
    "agent": 6, "views": 6, "cli": 7,
}
TOP = {"cli": "cli", "manpage": "cli", "__main__": "cli"}  # top-level modules above base


def room(module: str) -> str:
    """offsite.jobs.mirror -> jobs; offsite.run -> base; offsite.cli -> cli."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] in LAYERS and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return TOP.get(parts[1], "base")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """Every offsite module path imports (``from offsite.x import y`` counts y if it is a
    module), wherever the import stands (deferred imports too)."""
    found: set[str] = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in known)
    return {m for m in found if m.split(".")[0] in ("offsite", "offsite_lab")}


def test_every_room_imports_only_rooms_below_it() -> None:
    wrong = []
    for name, path in modules().items():
        mine = room(name)
        for other in imports(path):
            if other.split(".")[0] == "offsite_lab":
                wrong.append(f"{name} imports the lab ({other})")
            elif other != "offsite" and LAYERS[room(other)] > LAYERS[mine]:
                wrong.append(f"{name} ({mine}) imports {other} ({room(other)})")
    assert not wrong, "\n".join(wrong)


def test_each_room_says_what_it_owns_and_may_import() -> None:
    for directory in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((directory / "__init__.py").read_text())) or ""
        assert "May import:" in doc, directory.name
        assert directory.name in LAYERS, f"{directory.name} has no place in LAYERS"


def test_no_test_or_demo_machinery_in_the_package() -> None:
    names = set(modules())
    for machinery in ("sandbox", "blinkstick_emulator", "demo", "demomail"):
        assert not any(n.rsplit(".", 1)[-1] == machinery for n in names), machinery
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "OFFSITE_TEST" not in text and "OFFSITE_USB_BACKEND" not in text, path
