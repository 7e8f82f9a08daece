"""Putting rendered units in place: plan (a diff), install, uninstall.

What offsite installed is recorded in a manifest (with a checksum of each file), so that a
later install removes exactly the units the configuration no longer wants, uninstall
removes exactly what offsite put there, and a unit offsite did not write is never touched.
Install stages everything next to the unit directory, has ``systemd-analyze verify``
check it, then moves each file into place with an atomic rename and reloads systemd once.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from offsite import durable
from offsite.errors import Fatal
from offsite.run import CommandError, run
from offsite.unitnames import AGENT_UNIT, MASK, NAMESPACE_UNIT
from offsite.units import systemd
from offsite.units.render import Rendered

log = logging.getLogger(__name__)

UNIT_DIR = Path("etc/systemd/system")
MANIFEST = Path("var/lib/offsite/installed-units.json")
LINK = "symlink to "  # how a link's content reads in the manifest and the diff


class Action(StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


@dataclass(frozen=True)
class Change:
    action: Action
    name: str  # relative to the unit directory
    old: str | None
    new: str | None


def _digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


MASKED = LINK + MASK


def desired(rendered: Rendered, root: Path | None = None) -> dict[str, str]:
    """Every path offsite wants under the unit directory, with its content. With root: a
    mask (borgmatic.timer) is left out where the administrator has a file of that name
    there already, their own override or their own mask: offsite does not take it over."""
    wanted = dict(rendered.files)
    wanted.update({name: LINK + target for name, target in rendered.links.items()})
    if root is not None:
        owned = read_installed(root).manifest
        for name in [n for n, c in wanted.items() if c == MASKED and n not in owned]:
            if _read_entry(root / UNIT_DIR / name) is not None:
                del wanted[name]
    return wanted


def enabled_unmasked(root: Path, unit: str) -> bool:
    """Whether unit is enabled under root (a .wants link) and not masked there."""
    unit_dir = root / UNIT_DIR
    if _read_entry(unit_dir / unit) == MASKED:
        return False
    return any(p.is_symlink() for p in unit_dir.glob(f"*.wants/{unit}"))


def masks(changes: Iterable[Change]) -> tuple[list[str], list[str]]:
    """(units these changes mask, units they unmask)."""
    changes = list(changes)
    return ([c.name for c in changes if c.new == MASKED and c.old != MASKED],
            [c.name for c in changes if c.old == MASKED and c.new != MASKED])


@dataclass(frozen=True)
class Installed:
    """What is on disk now: the manifest's entries and what each file holds today."""

    manifest: dict[str, str]  # name -> checksum when installed
    current: dict[str, str]  # name -> content now (missing files left out)


def _read_entry(path: Path) -> str | None:
    if path.is_symlink():
        return LINK + os.readlink(path)
    if path.is_file():
        return path.read_text()
    return None


def read_installed(root: Path) -> Installed:
    manifest_path = root / MANIFEST
    manifest: dict[str, str] = {}
    if manifest_path.exists():
        try:
            data = json.loads(manifest_path.read_text())
            manifest = {str(k): str(v) for k, v in data["units"].items()}
        except (ValueError, KeyError, AttributeError) as exc:
            raise Fatal(f"{manifest_path} is damaged: {exc}",
                        "compare it with /etc/systemd/system and fix or remove it") from exc
    current = {}
    for name in manifest:
        content = _read_entry(root / UNIT_DIR / name)
        if content is not None:
            current[name] = content
    return Installed(manifest, current)


def plan(root: Path, rendered: Rendered) -> list[Change]:
    """The changes install would make, sorted by name. Refuses to take over foreign units."""
    installed = read_installed(root)
    wanted = desired(rendered, root)
    foreign = [n for n in wanted if n not in installed.manifest
               and _read_entry(root / UNIT_DIR / n) not in (None, wanted[n])]
    if foreign:
        raise Fatal(
            "these units exist but were not installed by offsite: " + ", ".join(sorted(foreign)),
            f"offsite never overwrites them; move them out of {root / UNIT_DIR} or rename the job",
        )
    changes = []
    for name in sorted(set(wanted) | set(installed.manifest)):
        on_disk = (installed.current.get(name) if name in installed.manifest
                   else _read_entry(root / UNIT_DIR / name))
        if name not in wanted:
            changes.append(Change(Action.REMOVE, name, on_disk, None))
        elif on_disk is None:
            changes.append(Change(Action.ADD, name, None, wanted[name]))
        elif on_disk != wanted[name]:
            changes.append(Change(Action.CHANGE, name, on_disk, wanted[name]))
    return changes


def diff_text(changes: Iterable[Change], unit_dir: Path) -> str:
    out: list[str] = []
    for change in changes:
        old = (change.old or "").splitlines(keepends=True)
        new = (change.new or "").splitlines(keepends=True)
        a = f"a/{change.name}" if change.old is not None else "/dev/null"
        b = f"b/{change.name}" if change.new is not None else "/dev/null"
        out.append(f"{change.action}: {unit_dir / change.name}\n")
        out.extend(difflib.unified_diff(old, new, a, b))
        if out and not out[-1].endswith("\n"):
            out.append("\n")
    return "".join(out)


def verify(staging: Path, names: Iterable[str]) -> None:
    """``systemd-analyze verify`` on the staged units; any complaint stops the install."""
    units = sorted(n for n in names if "/" not in n)
    if not units:
        return
    try:
        result = run(["systemd-analyze", "verify", "--man=no", *[staging / n for n in units]],
                     check=False, timeout=120)
    except CommandError as exc:
        raise Fatal(f"could not verify the units: {exc}") from exc
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0 or complaints:
        text = "\n".join("    " + line for line in complaints) or f"    exit code {result.returncode}"
        raise Fatal("systemd-analyze verify rejected the generated units; nothing was installed:\n"
                    + text, "this is a bug in offsite if the configuration passed `offsite check`")


def _write_manifest(root: Path, entries: dict[str, str]) -> None:
    path = root / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    durable.replace(path, json.dumps({"units": dict(sorted(entries.items()))}, indent=1) + "\n",
                    mode=0o644)


def _units_to_stop(changes: Iterable[Change]) -> list[str]:
    names = [c.name for c in changes if c.action is Action.REMOVE and "/" not in c.name]
    # timers first, so nothing starts a service that is about to go
    return sorted((n for n in names if "@." not in n), key=lambda n: not n.endswith(".timer"))


@dataclass(frozen=True)
class Outcome:
    changes: tuple[Change, ...]
    reloads: int


def install(rendered: Rendered, root: Path = Path("/"), *, live: bool = True,
            check: bool = True, restart_namespace: bool = True) -> Outcome:
    """Install the rendered units under root. live: stop/reload/start through systemd;
    restart_namespace: restart the backup namespace if it runs (its paths changed)."""
    unit_dir = root / UNIT_DIR
    changes = plan(root, rendered)
    wanted = desired(rendered, root)
    unit_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".offsite-staging-", dir=unit_dir))
    try:
        for name, content in rendered.files.items():
            durable.write_file(staging / name, content)
        if check:  # what is unchanged was verified when it was installed
            verify(staging, [c.name for c in changes if c.action is not Action.REMOVE
                             and c.name in rendered.files])
        if not changes:
            return Outcome((), 0)
        masked, unmasked = masks(changes)
        if live:
            systemd.stop([*_units_to_stop(changes), *masked])
        for change in changes:
            target = unit_dir / change.name
            if change.action is Action.REMOVE:
                target.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    if target.parent != unit_dir:
                        target.parent.rmdir()  # an emptied .wants directory
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if change.name in rendered.links:
                tmp_link = staging / f"link-{_digest(change.name)[:16]}"
                tmp_link.symlink_to(rendered.links[change.name])
                tmp_link.replace(target)
            else:
                (staging / change.name).replace(target)
        durable.fsync_dir(unit_dir)
        _write_manifest(root, {n: _digest(c) for n, c in wanted.items()})
        reloads = 0
        if live:
            systemd.reload()
            reloads = 1
            _restart_unmasked(unmasked)
            # a running agent reads the configuration when it starts (first: a stopped
            # one is started below, once)
            systemd.try_restart([AGENT_UNIT])
            systemd.start(rendered.timers)
            # The namespace binds what the configuration names writable when it starts.
            if restart_namespace:
                systemd.try_restart([NAMESPACE_UNIT])
        return Outcome(tuple(changes), reloads)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def uninstall(root: Path = Path("/"), *, live: bool = True) -> Outcome:
    """Remove exactly what offsite installed (and what it recorded), nothing else."""
    installed = read_installed(root)
    changes = [Change(Action.REMOVE, n, installed.current.get(n), None)
               for n in sorted(installed.manifest)]
    if live:
        systemd.stop(_units_to_stop(changes))
    unit_dir = root / UNIT_DIR
    for change in changes:
        target = unit_dir / change.name
        target.unlink(missing_ok=True)
        if target.parent != unit_dir:
            with contextlib.suppress(OSError):
                target.parent.rmdir()
    (root / MANIFEST).unlink(missing_ok=True)
    reloads = 0
    if live and changes:
        systemd.reload()
        reloads = 1
        _restart_unmasked(masks(changes)[1])
    return Outcome(tuple(changes), reloads)


def _restart_unmasked(units: list[str]) -> None:
    """A unit offsite had masked runs again if its package had it enabled."""
    enabled = [u for u in units if systemd.properties(u).get("UnitFileState") == "enabled"]
    if enabled:
        systemd.start(enabled)
