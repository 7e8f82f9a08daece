"""The mirror against real borg: interrupted at every kind of step, the copy stays usable.

Fault injection kills the copying process with SIGKILL after a chosen number of steps
(spread over the whole plan: segments, transaction files, deletions, the marker); after
each kill, `borg check` must accept what the destination holds, and the next run must
finish the copy.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from offsite import mirror
from offsite.errors import Fatal
from offsite.run import Result, run

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
BORG_ENV = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
# Small chunks and small segments: many segments, so that kills land in many places.
CHUNKER = "buzhash,10,14,12,4095"


def borg(*args: str, base: Path, check: bool = True) -> Result:
    return run(["borg", *args], env={**BORG_ENV, "BORG_BASE_DIR": str(base)}, check=check,
               timeout=300)


def add_archive(repo: Path, data: Path, name: str, size: int, base: Path) -> None:
    (data / name).write_bytes(os.urandom(size))
    borg("create", f"--chunker-params={CHUNKER}", "--", f"{repo}::{name}", str(data), base=base)


def mirror_copy(src: Path, dst: Path, base: Path, kill_after: int | None = None) -> Result:
    env = {**BORG_ENV, "BORG_BASE_DIR": str(base)}
    if kill_after is not None:
        env[mirror.KILL_AFTER_ENV] = str(kill_after)
    return run(["borg", "with-lock", "--", str(src), str(OFFSITE), "mirror-copy", "--",
                str(src), str(dst)], env=env, check=False, timeout=300)


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    base, data, src, dst = (tmp_path / n for n in ("base", "data", "src", "dst"))
    data.mkdir()
    borg("init", "--encryption=none", "--", str(src), base=base)
    borg("config", "--", str(src), "max_segment_size", "32768", base=base)
    for i in range(3):
        add_archive(src, data, f"a{i}", 150_000, base)
    return base, data, src, dst


def test_first_copy_passes_borg_check(repos: tuple[Path, Path, Path, Path]) -> None:
    base, _, src, dst = repos
    result = mirror_copy(src, dst, base)
    assert result.returncode == 0, result.stderr
    first = int(result.stdout.split()[1])
    borg("check", "--", str(dst), base=base)
    assert mirror.verify(dst) == []
    listed = borg("list", "--short", "--", str(dst), base=base).stdout.split()
    assert listed == ["a0", "a1", "a2"]
    # Again with nothing new: only what `borg with-lock` itself wrote (it commits a
    # transaction each time) is copied, not the data again.
    again = mirror_copy(src, dst, base)
    assert again.returncode == 0
    listing = mirror.scan(src)
    transaction_files = sum(e.size for e in listing.files.values())
    assert first > 400_000
    # the index and hints, plus with-lock's two tiny segments (a manifest write, a commit)
    assert int(again.stdout.split()[1]) <= transaction_files + 4096


def test_a_killed_copy_is_not_taken_for_a_finished_one(
        repos: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base, _, src, dst = repos
    for name, value in {**BORG_ENV, "BORG_BASE_DIR": str(base)}.items():
        monkeypatch.setenv(name, value)  # run() hands BORG_* variables on to borg
    mirror.copy_locked(src, dst, OFFSITE, timeout=60)
    assert mirror.verify(dst) == []
    mirror_copy(src, dst, base, kill_after=0)  # killed before it did anything: marker gone?
    # A command that "succeeds" without copying: with-lock says 0, the marker says no.
    (dst / mirror.MARKER).unlink(missing_ok=True)
    with pytest.raises(Fatal, match="did not finish"):
        mirror.copy_locked(src, dst, Path("/bin/true"), timeout=60)


def test_interrupted_anywhere_the_copy_stays_usable(repos: tuple[Path, Path, Path, Path],
                                                  tmp_path: Path) -> None:
    base, data, src, dst = repos
    assert mirror_copy(src, dst, base).returncode == 0
    good = tmp_path / "good"
    shutil.copytree(dst, good, symlinks=True)
    # The source moves on: new archives, old ones pruned, segments compacted away.
    for i in range(3, 5):
        add_archive(src, data, f"a{i}", 150_000, base)
    borg("prune", "--keep-last=2", "--", str(src), base=base)
    borg("compact", "--", str(src), base=base)
    steps = mirror.plan(mirror.scan(src), mirror.scan(dst))
    kinds = {s.op for s in steps}
    assert {mirror.Op.COPY, mirror.Op.DELETE, mirror.Op.UNMARK, mirror.Op.MARK} <= kinds
    assert len(steps) >= 20, f"the plan has only {len(steps)} steps"
    # At least 20 kill points spread over the plan, both ends included.
    points = sorted({round(i * (len(steps) - 1) / 21) for i in range(22)})
    assert len(points) >= 20
    for point in points:
        shutil.rmtree(dst)
        shutil.copytree(good, dst, symlinks=True)
        killed = mirror_copy(src, dst, base, kill_after=point)
        # borg with-lock exits 0 even when its command is killed; the summary line is
        # printed only by a copy that ran to the end
        assert "copied" not in killed.stdout, f"not killed at step {point}"
        check = borg("check", "--", str(dst), base=base, check=False)
        assert check.returncode == 0, f"borg check failed after a kill at step {point} " \
            f"({steps[point]}): {check.stderr}"
        finished = mirror_copy(src, dst, base)
        assert finished.returncode == 0, finished.stderr
        assert mirror.verify(dst) == [], point
    borg("check", "--", str(dst), base=base)
    assert borg("list", "--short", "--", str(dst), base=base).stdout.split() == ["a3", "a4"]
