"""A copy of a borg repository that survives being interrupted at any moment.

``rsync -a --delete`` of a borg repository is not safe to interrupt: it sorts names
lexically (segment 10 before segment 9), deletes during the transfer and may send the
index before the segments it refers to. This mirror orders the work so that the copy on
the drive is, after every single step, a repository borg accepts:

1. the completion marker is removed (the copy is "in progress" from here on);
2. new segments are copied in ascending numeric order, each to a temporary name, fsync'd,
   and renamed into place; nothing is deleted yet, so the previous index still finds every
   segment it refers to, and borg replays any newer complete segments;
3. the transaction files (hints.N, integrity.N, then index.N last) and config/README/nonce;
4. only then what the source no longer has: old transaction files, obsolete segments;
5. the completion marker, written last.

What to do is decided by a pure function (``plan``) from two listings; ``apply`` carries
it out. The source is held still by ``borg with-lock`` (``copy_locked``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from offsite.errors import Fatal
from offsite.run import run

log = logging.getLogger(__name__)

MARKER = "offsite-mirror.json"
PARTIAL = ".offsite-partial"
TRANSACTION = re.compile(r"^(hints|integrity|index)\.(\d+)$")
# Files borg keeps at the top of a repository that belong in a copy (locks do not).
PLAIN_FILES = ("config", "README", "nonce")
# Hints and integrity before the index: borg takes the highest index.N as the state, so
# the index is written once what it relies on is in place.
TRANSACTION_ORDER = {"hints": 0, "integrity": 1, "index": 2}
# Fault injection for the tests: SIGKILL ourselves after this many steps.
KILL_AFTER_ENV = "OFFSITE_TEST_KILL_AFTER_STEPS"


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the repository
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    segments: dict[int, Entry] = field(default_factory=dict)
    files: dict[str, Entry] = field(default_factory=dict)  # transaction and plain files
    marker: bool = False


class Op(StrEnum):
    UNMARK = "unmark"
    COPY = "copy"
    DELETE = "delete"
    MARK = "mark"


@dataclass(frozen=True)
class Step:
    op: Op
    path: str = ""
    size: int = 0


def _entry(root: Path, path: Path) -> Entry:
    st = path.stat()
    return Entry(str(path.relative_to(root)), st.st_size, st.st_mtime_ns)


def scan(repo: Path) -> Listing:
    """What a repository directory holds, as far as a copy is concerned."""
    segments: dict[int, Entry] = {}
    data = repo / "data"
    if data.is_dir():
        for sub in data.iterdir():
            if not (sub.is_dir() and sub.name.isdigit()):
                continue
            for seg in sub.iterdir():
                if seg.name.isdigit() and seg.is_file():
                    segments[int(seg.name)] = _entry(repo, seg)
    files: dict[str, Entry] = {}
    if repo.is_dir():
        for path in repo.iterdir():
            if (TRANSACTION.match(path.name) or path.name in PLAIN_FILES) and path.is_file():
                files[path.name] = _entry(repo, path)
    return Listing(segments, files, (repo / MARKER).exists())


def _same(a: Entry, b: Entry | None) -> bool:
    # Segments are never rewritten under the same number; size and mtime (which the copy
    # carries over) tell a complete earlier copy from a missing or different one.
    return b is not None and a.size == b.size and a.mtime_ns == b.mtime_ns


def _transaction_key(name: str) -> tuple[int, int, str]:
    match = TRANSACTION.match(name)
    if match:
        return (1, TRANSACTION_ORDER[match.group(1)], name)
    return (0, 0, name)  # config, README, nonce before the transaction files


def plan(src: Listing, dst: Listing) -> list[Step]:
    """The steps that turn dst into a copy of src, in an order safe to interrupt."""
    steps: list[Step] = []
    changed_segments = [n for n in sorted(src.segments) if not _same(src.segments[n],
                                                                     dst.segments.get(n))]
    changed_files = sorted((name for name, e in src.files.items()
                            if not _same(e, dst.files.get(name))), key=_transaction_key)
    stale_files = sorted(name for name in dst.files if name not in src.files)
    stale_segments = sorted((n for n in dst.segments if n not in src.segments), reverse=True)
    if not (changed_segments or changed_files or stale_files or stale_segments):
        return [] if dst.marker else [Step(Op.MARK)]
    if dst.marker:
        steps.append(Step(Op.UNMARK))
    steps += [Step(Op.COPY, src.segments[n].path, src.segments[n].size) for n in changed_segments]
    steps += [Step(Op.COPY, name, src.files[name].size) for name in changed_files]
    steps += [Step(Op.DELETE, name) for name in stale_files]
    steps += [Step(Op.DELETE, dst.segments[n].path) for n in stale_segments]
    steps.append(Step(Op.MARK))
    return steps


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_file(src: Path, dst: Path, partial: Path, chunk: int = 1 << 20) -> int:
    """Copy to a temporary name, fsync, keep the mtime, rename into place."""
    st = src.stat()
    copied = 0
    with src.open("rb") as fin, partial.open("wb") as fout:
        while True:
            block = fin.read(chunk)
            if not block:
                break
            fout.write(block)
            copied += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    os.utime(partial, ns=(st.st_atime_ns, st.st_mtime_ns))
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial.replace(dst)
    _fsync_dir(dst.parent)
    return copied


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    steps_done: int
    steps_total: int


@dataclass(frozen=True)
class Result:
    steps: int
    bytes_copied: int
    seconds: float


def apply(steps: list[Step], src: Path, dst: Path,
          progress: Callable[[Progress], None] | None = None) -> Result:
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "-1"))
    started = time.monotonic()
    dst.mkdir(parents=True, exist_ok=True)
    partial = dst / PARTIAL
    partial.unlink(missing_ok=True)  # left by an interrupted run
    total = sum(s.size for s in steps)
    done_bytes = 0
    for i, step in enumerate(steps):
        if i == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if step.op is Op.UNMARK:
            (dst / MARKER).unlink(missing_ok=True)
            _fsync_dir(dst)
        elif step.op is Op.COPY:
            done_bytes += _copy_file(src / step.path, dst / step.path, partial)
        elif step.op is Op.DELETE:
            target = dst / step.path
            target.unlink(missing_ok=True)
            _fsync_dir(target.parent)
            if target.parent.parent.name == "data" and not any(target.parent.iterdir()):
                target.parent.rmdir()
        elif step.op is Op.MARK:
            _write_marker(dst, scan(src))
        if progress is not None:
            progress(Progress(done_bytes, total, i + 1, len(steps)))
    return Result(len(steps), done_bytes, time.monotonic() - started)


def _write_marker(dst: Path, src: Listing) -> None:
    transactions = [int(m.group(2)) for n in src.files if (m := TRANSACTION.match(n))]
    data = {
        "transaction": max(transactions, default=None),
        "segments": {str(n): e.size for n, e in sorted(src.segments.items())},
        "finished": time.time(),
    }
    tmp = dst / (MARKER + ".tmp")
    with tmp.open("w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(dst / MARKER)
    _fsync_dir(dst)


def verify(dst: Path) -> list[str]:
    """Cheap check of a finished copy: the marker, and every segment it lists present at
    its size (and no other)."""
    problems = []
    marker = dst / MARKER
    if not marker.exists():
        return [f"{dst}: no completion marker ({MARKER}): the copy did not finish"]
    recorded = json.loads(marker.read_text())["segments"]
    have = scan(dst)
    for number, size in recorded.items():
        entry = have.segments.get(int(number))
        if entry is None:
            problems.append(f"segment {number} is missing")
        elif entry.size != size:
            problems.append(f"segment {number} has {entry.size} bytes, not {size}")
    extra = set(have.segments) - {int(n) for n in recorded}
    if extra:
        problems.append(f"segments not in the source: {sorted(extra)[:5]}")
    return problems


def copy(src: Path, dst: Path, progress: Callable[[Progress], None] | None = None) -> Result:
    """Mirror src to dst (the source must be held still: see copy_locked)."""
    if not (src / "config").is_file() or not (src / "data").is_dir():
        raise Fatal(f"{src} is not a borg repository (no config file or data directory)")
    steps = plan(scan(src), scan(dst))
    log.info("mirroring %s to %s: %d step(s), %d bytes to copy", src, dst, len(steps),
             sum(s.size for s in steps))
    result = apply(steps, src, dst, progress)
    problems = verify(dst)
    if problems:
        raise Fatal(f"the copy in {dst} does not match {src}: " + "; ".join(problems))
    return result


def copy_locked(src: Path, dst: Path, offsite: Path, timeout: float) -> None:
    """Run ``offsite mirror-copy`` under ``borg with-lock`` so borg cannot change src.

    borg 1.2's with-lock reports 0 when its command was killed by a signal (it takes the
    maximum of its own code and the child's, which is negative), so success is judged by
    the copy itself: the completion marker and the segments it lists.
    """
    run(["borg", "with-lock", "--", str(src), str(offsite), "mirror-copy", "--", str(src),
         str(dst)], timeout=timeout)
    problems = verify(dst)
    if problems:
        raise Fatal(f"the copy to {dst} did not finish: " + "; ".join(problems),
                    "the drive still holds a usable copy; the next run completes it")
