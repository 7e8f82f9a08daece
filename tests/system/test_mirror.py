"""The mirror against real borg: interrupted at every kind of step, the copy stays usable.

Fault injection kills the copying process with SIGKILL before a chosen step (spread over
the whole plan: links, copies, the marker, the swap, the clean-up); after each kill,
`borg check` must accept what the destination names, and the next run must finish.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from offsite.errors import Fatal
from offsite.jobs import mirror
from offsite.run import Result, run

OFFSITE = Path(sys.prefix) / "bin" / "offsite"
# an encrypted repository, as users have (the copy is read with the same passphrase)
BORG_ENV = {"BORG_PASSPHRASE": "mirror test passphrase",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
# Small chunks and small segments: many segments, so that kills land in many places.
CHUNKER = "buzhash,10,14,12,4095"


def borg(*args: str, base: Path, check: bool = True) -> Result:
    return run(["borg", *args], env={**BORG_ENV, "BORG_BASE_DIR": str(base)}, check=check,
               timeout=300)


def on_copy(*args: str, check: bool = True) -> Result:
    """borg on the copy, with a fresh cache each time: the copy shares the source's
    repository id, and a restored older copy must not meet a newer cache."""
    with tempfile.TemporaryDirectory() as base:
        return borg(*args, base=Path(base), check=check)


def add_archive(repo: Path, data: Path, name: str, size: int, base: Path) -> None:
    (data / name).write_bytes(os.urandom(size))
    borg("create", f"--chunker-params={CHUNKER}", "--", f"{repo}::{name}", str(data), base=base)


def mirror_copy(src: Path, dst: Path, base: Path, kill_after: int | None = None) -> Result:
    env = {**BORG_ENV, "BORG_BASE_DIR": str(base)}
    copy: list[str] = [str(OFFSITE), "mirror-copy", "--"] if kill_after is None else [
        sys.executable, "-m", "offsite_lab.interrupted_copy", str(kill_after)]
    return run(["borg", "with-lock", "--", str(src), *copy, str(src), str(dst)], env=env,
               check=False, timeout=300)


def copied(result: Result) -> int:
    assert result.returncode == 0 and result.stdout.startswith("copied"), result
    return int(result.stdout.split()[1])


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    base, data, src, drive = (tmp_path / n for n in ("base", "data", "src", "drive"))
    data.mkdir()
    drive.mkdir()
    borg("init", "--encryption=repokey-blake2", "--", str(src), base=base)
    borg("config", "--", str(src), "max_segment_size", "32768", base=base)
    for i in range(3):
        add_archive(src, data, f"a{i}", 150_000, base)
    return base, data, src, drive / "main"


def test_first_copy_passes_borg_check(repos: tuple[Path, Path, Path, Path]) -> None:
    base, data, src, dst = repos
    first = copied(mirror_copy(src, dst, base))
    assert first > 400_000
    on_copy("check", "--", str(dst))
    assert mirror.verify(dst) == []
    assert on_copy("list", "--short", "--", str(dst)).stdout.split() == ["a0", "a1", "a2"]
    # Again with nothing new: only what `borg with-lock` itself wrote (it commits a
    # transaction each time) is copied; the segments are hard links to the last copy.
    transaction_files = sum(e.size for p, e in mirror.scan(src).files.items() if "/" not in p)
    assert copied(mirror_copy(src, dst, base)) <= transaction_files + 4096
    # After new data, what is written is about what changed.
    add_archive(src, data, "a3", 100_000, base)
    changed = copied(mirror_copy(src, dst, base))
    assert 100_000 <= changed <= 100_000 + transaction_files + 64_000
    # One tree is left: the old ones were removed after each swap.
    assert [p.name for p in (dst.parent / "main.offsite").iterdir()] == [dst.resolve().name]
    on_copy("check", "--", str(dst))


def test_a_copy_that_did_not_finish_is_not_taken_for_one(
        repos: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base, _, src, dst = repos
    for name, value in {**BORG_ENV, "BORG_BASE_DIR": str(base)}.items():
        monkeypatch.setenv(name, value)  # run() hands BORG_* variables on to borg
    mirror.copy_locked(src, dst, OFFSITE)
    assert mirror.verify(dst) == []
    # with-lock says 0 for a command that did nothing; the marker says otherwise.
    with pytest.raises(Fatal, match="did not finish"):
        mirror.copy_locked(src, dst, Path("/bin/true"))


def test_interrupted_anywhere_the_copy_stays_usable(repos: tuple[Path, Path, Path, Path],
                                                  tmp_path: Path) -> None:
    base, data, src, dst = repos
    copied(mirror_copy(src, dst, base))
    drive = dst.parent
    good = tmp_path / "good"
    shutil.copytree(drive, good, symlinks=True)
    # The source moves on: new archives, old ones pruned, segments compacted away.
    for i in range(3, 5):
        add_archive(src, data, f"a{i}", 150_000, base)
    borg("prune", "--keep-last=2", "--", str(src), base=base)
    borg("compact", "--", str(src), base=base)
    before = ["a0", "a1", "a2"]
    after = borg("list", "--short", "--", str(src), base=base).stdout.split()
    assert len(after) == 2 and after != before
    layout = mirror.Layout(dst)
    current = layout.current()
    assert current is not None
    steps = mirror.plan(mirror.scan(src), mirror.scan(current), mirror.Listing())
    assert {mirror.Op.COPY, mirror.Op.LINK, mirror.Op.MARK, mirror.Op.SWAP} <= {s.op for s in steps}
    assert len(steps) >= 20, f"the plan has only {len(steps)} steps"
    # At least 20 kill points spread over the plan, both ends and the swap included.
    points = sorted({round(i * (len(steps) - 1) / 21) for i in range(22)} | {len(steps) - 2})
    assert len(points) >= 20
    states: set[tuple[str, ...]] = set()
    for point in points:
        shutil.rmtree(drive)
        shutil.copytree(good, drive, symlinks=True)
        killed = mirror_copy(src, dst, base, kill_after=point)
        # borg with-lock exits 0 even when its command is killed; the summary line is
        # printed only by a copy that ran to the end
        assert "copied" not in killed.stdout, f"not killed at step {point}"
        check = on_copy("check", "--", str(dst), check=False)
        assert check.returncode == 0, f"borg check failed after a kill before step {point} " \
            f"({steps[point]}): {check.stderr}"
        # The previous complete copy, or (killed after the swap) the new one: nothing else.
        archives = on_copy("list", "--short", "--", str(dst)).stdout.split()
        assert archives in (before, after), (point, archives)
        states.add(tuple(archives))
        # The next run finishes the copy, reusing what the killed one had done.
        copied(mirror_copy(src, dst, base))
        assert mirror.verify(dst) == [], point
        assert on_copy("list", "--short", "--", str(dst)).stdout.split() == after
    on_copy("check", "--", str(dst))
    assert tuple(before) in states  # most kills leave the previous copy in place
