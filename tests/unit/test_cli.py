"""The CLI through its real entry point, as a user runs it."""

from __future__ import annotations

import sys
from pathlib import Path

from offsite.cli import build_parser
from offsite.run import run

ROOT = Path(__file__).resolve().parents[2]


def offsite(*args: str) -> tuple[int, str, str]:
    result = run([sys.executable, "-m", "offsite", *args], check=False,
                 env={"PYTHONPATH": str(ROOT / "src")})
    return result.returncode, result.stdout, result.stderr


def test_check_example_exits_zero() -> None:
    code, out, _ = offsite("check", str(ROOT / "examples" / "offsite.yaml"))
    assert code == 0 and "OK" in out


def test_check_with_dash_c() -> None:
    code, _, _ = offsite("-c", str(ROOT / "examples" / "offsite.yaml"), "check")
    assert code == 0


def test_check_bad_file_exits_one_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  a:\n    kind: borgmatc\n")
    code, _, err = offsite("check", str(bad))
    assert code == 1
    assert f"{bad}:3:11: jobs.a.kind: must be one of" in err and "did you mean 'borgmatic'?" in err
    assert "nothing was changed" in err


def test_missing_default_config_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = offsite("-c", str(tmp_path / "none.yaml"), "check")
    assert code == 1 and "cannot read the file" in err and "Traceback" not in err


def test_every_command_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name in subparsers.choices:  # type: ignore[union-attr]
        code, out, _ = offsite(name, "--help")
        assert code == 0 and out.startswith("usage: offsite"), name


def test_version() -> None:
    code, out, _ = offsite("--version")
    assert code == 0 and out.startswith("offsite ")


def test_a_tree_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # A file where a directory must be (file modes would not stop root).
    (root / "etc" / "systemd").write_text("not a directory")
    code, _, err = offsite("-c", str(ROOT / "examples" / "offsite.yaml"), "install",
                           "--root", str(root), "--no-verify", "--offsite-bin", "/usr/bin/offsite")
    assert code == 1 and "offsite: error:" in err and "etc/systemd" in err
    assert "Traceback" not in err


def test_the_man_page_names_only_units_offsite_writes() -> None:
    """Help text once sent users to offsite-mail.service, which does not exist."""
    import re

    from offsite import manpage, unitnames
    from offsite.config import reader
    from offsite.units import render

    cfg = reader.load(ROOT / "examples" / "offsite.yaml")
    written = set(render.render(cfg, Path("/usr/bin/offsite"), Path("/etc/offsite/x")).files)
    named = set(re.findall(r"offsite-[a-z@-]*\.(?:service|timer)", manpage.man().replace("\\-", "-")))
    generic = {unitnames.PREFIX + "JOB.service"}  # a placeholder, not a name
    assert named and named - generic <= written | {unitnames.NOTIFY_TEMPLATE}, named - written
