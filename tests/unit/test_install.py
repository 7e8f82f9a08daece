"""plan / install / uninstall on a directory tree (--root), without systemd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offsite.config import reader
from offsite.errors import Fatal
from offsite.units import install, render

ROOT = Path(__file__).resolve().parents[2]
# Files the tree already has that offsite must never touch.
FOREIGN = {"etc/systemd/system/sshd.service": "[Service]\nExecStart=/usr/sbin/sshd\n"}


def rendered(tmp_path: Path, text: str | None = None, offsite: str = "/usr/bin/offsite") -> render.Rendered:
    path = tmp_path / "offsite.yaml"
    path.write_text(text or (ROOT / "examples" / "offsite.yaml").read_text())
    return render.render(reader.load(path), Path(offsite), Path("/etc/offsite/offsite.yaml"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for name, text in FOREIGN.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    os.symlink("sshd.service", root / "etc/systemd/system/ssh.service")
    return root


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def test_install_writes_units_links_and_manifest(tmp_path: Path, tree: Path) -> None:
    r = rendered(tmp_path)
    outcome = install.install(r, tree, live=False, check=False)
    assert outcome.reloads == 0
    unit_dir = tree / install.UNIT_DIR
    assert (unit_dir / "offsite-nightly.service").read_text() == r.files["offsite-nightly.service"]
    link = unit_dir / "timers.target.wants/offsite-nightly.timer"
    assert os.readlink(link) == "offsite-nightly.timer"
    assert (tree / install.MANIFEST).exists()
    assert not list(unit_dir.glob(".offsite-staging-*"))
    # Nothing to do the second time.
    assert install.plan(tree, r) == []


def test_plan_touches_nothing(tmp_path: Path, tree: Path) -> None:
    before = snapshot(tree)
    changes = install.plan(tree, rendered(tmp_path))
    assert changes and all(c.action is install.Action.ADD for c in changes)
    text = install.diff_text(changes, tree / install.UNIT_DIR)
    assert "+OnCalendar=*-*-* 02:30:00" in text
    assert snapshot(tree) == before


def test_reinstall_removes_what_the_config_dropped(tmp_path: Path, tree: Path) -> None:
    install.install(rendered(tmp_path), tree, live=False, check=False)
    smaller = (ROOT / "examples" / "offsite.yaml").read_text().replace(
        "  restore-test:\n    kind: restore-test\n    repositories: [main]\n    sample: 25\n"
        "    schedule: monthly\n", "")
    changes = install.plan(tree, rendered(tmp_path, smaller))
    removed = {c.name for c in changes if c.action is install.Action.REMOVE}
    assert removed == {"offsite-restore\\x2dtest.service", "offsite-restore\\x2dtest.timer",
                       "timers.target.wants/offsite-restore\\x2dtest.timer"}
    install.install(rendered(tmp_path, smaller), tree, live=False, check=False)
    assert not (tree / install.UNIT_DIR / "offsite-restore\\x2dtest.timer").exists()


def test_uninstall_removes_exactly_what_was_installed(tmp_path: Path, tree: Path) -> None:
    before = snapshot(tree)
    install.install(rendered(tmp_path), tree, live=False, check=False)
    install.uninstall(tree, live=False)
    after = snapshot(tree)
    assert after == before


def test_foreign_unit_with_our_name_is_refused(tmp_path: Path, tree: Path) -> None:
    mine = tree / install.UNIT_DIR / "offsite-nightly.service"
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    before = snapshot(tree)
    with pytest.raises(Fatal, match="not installed by offsite"):
        install.install(rendered(tmp_path), tree, live=False, check=False)
    assert snapshot(tree) == before


def test_hand_edited_unit_shows_as_a_change(tmp_path: Path, tree: Path) -> None:
    r = rendered(tmp_path)
    install.install(r, tree, live=False, check=False)
    unit = tree / install.UNIT_DIR / "offsite-nightly.service"
    unit.write_text(unit.read_text() + "# edited\n")
    [change] = install.plan(tree, r)
    assert change.action is install.Action.CHANGE and change.name == "offsite-nightly.service"


def test_verify_rejects_a_broken_unit_and_installs_nothing(tmp_path: Path, tree: Path) -> None:
    r = rendered(tmp_path, offsite="/bin/true")  # an executable that exists, for verify
    broken = dict(r.files)
    broken["offsite-nightly.timer"] = broken["offsite-nightly.timer"].replace(
        "OnCalendar=*-*-* 02:30:00", "OnCalendar=garbage")
    before = snapshot(tree)
    with pytest.raises(Fatal, match="systemd-analyze verify rejected") as info:
        install.install(render.Rendered(broken, r.links, r.timers), tree, live=False, check=True)
    assert "garbage" in str(info.value) and "offsite-nightly.timer" in str(info.value)
    assert snapshot(tree) == before
    # The same units unbroken pass verify.
    install.install(r, tree, live=False, check=True)


def test_damaged_manifest_is_a_clear_error(tmp_path: Path, tree: Path) -> None:
    (tree / install.MANIFEST).parent.mkdir(parents=True)
    (tree / install.MANIFEST).write_text("{not json")
    with pytest.raises(Fatal, match=r"installed-units\.json is damaged"):
        install.plan(tree, rendered(tmp_path))


def test_a_borgmatic_job_masks_debians_timer_until_uninstall(tmp_path: Path, tree: Path) -> None:
    """The example has a borgmatic job: Debian's borgmatic.timer (enabled by its package)
    would run borgmatic a second time each night."""
    unit_dir = tree / install.UNIT_DIR
    (unit_dir / "timers.target.wants").mkdir(parents=True)
    os.symlink("/lib/systemd/system/borgmatic.timer", unit_dir / "timers.target.wants/borgmatic.timer")
    assert install.enabled_unmasked(tree, "borgmatic.timer")
    r = rendered(tmp_path)
    planned = install.plan(tree, r)
    assert install.masks(planned) == (["borgmatic.timer"], [])
    outcome = install.install(r, tree, live=False, check=False)
    assert os.readlink(unit_dir / "borgmatic.timer") == "/dev/null"
    assert install.masks(outcome.changes) == (["borgmatic.timer"], [])
    assert not install.enabled_unmasked(tree, "borgmatic.timer")
    undone = install.uninstall(tree, live=False)
    assert install.masks(undone.changes) == ([], ["borgmatic.timer"])
    assert not (unit_dir / "borgmatic.timer").is_symlink()
    assert install.enabled_unmasked(tree, "borgmatic.timer")  # as its package left it


def test_no_mask_without_a_borgmatic_job_nor_over_the_admins_own_file(tmp_path: Path,
                                                                       tree: Path) -> None:
    text = (ROOT / "examples" / "offsite.yaml").read_text()
    assert "borgmatic.timer" in rendered(tmp_path, text).links
    unit_dir = tree / install.UNIT_DIR
    own = "[Timer]\nOnCalendar=weekly\n"
    (unit_dir / "borgmatic.timer").write_text(own)  # the admin's own override
    r = rendered(tmp_path, text)
    assert install.masks(install.plan(tree, r)) == ([], [])  # neither refused nor taken over
    install.install(r, tree, live=False, check=False)
    assert (unit_dir / "borgmatic.timer").read_text() == own
    install.uninstall(tree, live=False)
    assert (unit_dir / "borgmatic.timer").read_text() == own
    mirror_only = """\
repositories:
  main: {path: /srv/borg/main}
jobs:
  check: {kind: borg-check, repositories: [main]}
"""
    assert "borgmatic.timer" not in rendered(tmp_path, mirror_only).links
