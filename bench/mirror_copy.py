"""The mirror against `cp -a`: a full copy of a borg repository, then an incremental one.

Figures (issues #4, #19): the full mirror, which reads back every byte it wrote, against
its floor in the same run: `cp -a` of the same tree to the same filesystem, `sync`, and a
read of the copied bytes that bypasses the page cache (O_DIRECT); after about 1% new data,
bytes the mirror wrote against the bytes that changed in the repository (goal: at most
1.05x).
Run: .venv/bin/python bench/mirror_copy.py [SIZE_MB]   (default 2048)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from table import Figure, report

from offsite.jobs import mirror
from offsite.run import run

ENV = {"BORG_PASSPHRASE": "bench passphrase"}  # an encrypted repository, as users have


def borg(base: Path, *args: str) -> None:
    run(["borg", *args], env={**ENV, "BORG_BASE_DIR": str(base)}, timeout=3600)


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 22))
            f.write(block)
            left -= len(block)


def cold() -> None:
    """Both copies start with the source out of the page cache (else the second one read
    what the first had just cached)."""
    run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        print("(cannot drop the page cache: the second copy may read from memory)")


def tree_bytes(listing: mirror.Listing) -> int:
    return sum(e.size for e in listing.files.values())


def main() -> int:
    size = int(sys.argv[1]) * (1 << 20) if len(sys.argv) > 1 else 2 << 30
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-", dir="/var/tmp"))
    try:
        base, data, src = work / "base", work / "data", work / "repo"
        data.mkdir()
        borg(base, "init", "--encryption=repokey-blake2", "--", str(src))  # as users have
        write_random(data / "bulk", size)
        borg(base, "create", "--compression=none", "--", f"{src}::one", str(data))
        (data / "bulk").unlink()

        cold()
        started = time.perf_counter()
        run(["cp", "-a", "--", str(src), str(work / "cp-copy")], timeout=3600)
        run(["sync"])
        cp_s = time.perf_counter() - started
        for path in sorted(p for p in (work / "cp-copy").rglob("*") if p.is_file()):
            mirror.read_uncached(path)  # the floor of a read-back: the same bytes, uncached
        floor_s = time.perf_counter() - started
        shutil.rmtree(work / "cp-copy")

        cold()
        started = time.perf_counter()
        full = mirror.copy(src, work / "drive" / "repo")
        run(["sync"])
        mirror_s = time.perf_counter() - started

        before = mirror.scan(src)
        write_random(data / "new", size // 100)
        borg(base, "create", "--compression=none", "--", f"{src}::two", str(data))
        after = mirror.scan(src)
        changed = sum(e.size for p, e in after.files.items() if before.files.get(p) != e)
        incremental = mirror.copy(src, work / "drive" / "repo")

        print(f"repository: {tree_bytes(before) / (1 << 20):.0f} MiB in "
              f"{len(before.segments())} segments")
        return report([
            Figure("mirror_copy", "full mirror, fsync and read-back", mirror_s, "s",
                   "cp -a + sync + O_DIRECT read", floor_s, "<= 1.1x", mirror_s <= 1.1 * floor_s),
            Figure("mirror_copy", "full mirror, fsync and read-back", mirror_s, "s",
                   "cp -a + sync (no read-back)", cp_s),
            Figure("mirror_copy", "incremental: bytes written", incremental.bytes_copied,
                   "bytes", "bytes changed", changed, "<= 1.05x",
                   incremental.bytes_copied <= 1.05 * changed),
            Figure("mirror_copy", "full: bytes written", full.bytes_copied, "bytes",
                   "repository", tree_bytes(before), "<= 1.01x",
                   full.bytes_copied <= 1.01 * tree_bytes(before)),
        ])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
