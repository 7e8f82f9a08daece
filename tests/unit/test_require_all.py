"""OFFSITE_REQUIRE_ALL=1 (CI) turns a skip into a failure, so a tier cannot vanish quietly."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from offsite.run import run

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def pytest_in(tmp_path: Path, require_all: bool) -> tuple[int, str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n\ndef test_needs_root() -> None:\n    pytest.skip('needs root')\n"
    )
    env = {"OFFSITE_REQUIRE_ALL": "1"} if require_all else {}
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                 check=False, cwd=tmp_path, env=env)
    return result.returncode, result.stdout


def test_skip_is_a_skip_normally(tmp_path: Path) -> None:
    code, out = pytest_in(tmp_path, require_all=False)
    assert code == 0 and "1 skipped" in out


def test_skip_fails_under_require_all(tmp_path: Path) -> None:
    code, out = pytest_in(tmp_path, require_all=True)
    assert code == 1 and "1 failed" in out
    assert "skipped under OFFSITE_REQUIRE_ALL=1" in out and "needs root" in out
