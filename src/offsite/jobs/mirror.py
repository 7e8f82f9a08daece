"""A copy of a borg repository that survives being interrupted at any moment.

``rsync -a --delete`` of a borg repository is not safe to interrupt: it sorts names
lexically (segment 10 before segment 9), deletes during the transfer and may send the
index before the segments it refers to. Copying in place in a careful order is not safe
either: after ``borg compact`` the source has dropped the delete tags that only mattered
while old segments existed, so old segments plus new ones plus the old index make a
repository with orphaned objects (the fault-injection test found exactly that).

So the copy is a new tree beside the old one, swapped in by one atomic rename:

    DEST                    -> a symlink to the tree that holds the last complete copy
    DEST.offsite/<n>/       the trees; <n> grows by one per copy

1. a new tree is filled: files unchanged since the current copy are hard links to it (no
   data written), new ones are copied to a temporary name, fsync'd and renamed in; a tree
   left by an interrupted run is reused, so the work already done is kept;
2. the completion marker is written into the new tree;
3. a symlink to the new tree replaces DEST with rename(2): DEST names the old complete
   copy or the new one, never anything in between;
4. old trees are removed.

What to do is decided by a pure function (``plan``) from listings; ``apply`` carries it
out. The source is held still by ``borg with-lock`` (``copy_locked``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import mmap
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from offsite import durable, quantities, state
from offsite.errors import Fatal
from offsite.run import interactive

log = logging.getLogger(__name__)

MARKER = "offsite-mirror.json"
PARTIAL = ".offsite-partial"
TREES_SUFFIX = ".offsite"
TRANSACTION = re.compile(r"^(hints|integrity|index)\.(\d+)$")
# Files borg keeps at the top of a repository that belong in a copy (locks do not).
PLAIN_FILES = ("config", "README", "nonce")
LOCK_WAIT = 600  # seconds borg waits for the source repository's lock


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the repository
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    files: dict[str, Entry] = field(default_factory=dict)  # every file a copy needs
    marker: bool = False

    def segments(self) -> dict[int, Entry]:
        return {int(Path(p).name): e for p, e in self.files.items() if p.startswith("data/")}


class Op(StrEnum):
    DROP = "drop"  # a file an interrupted run left in the new tree that src no longer has
    LINK = "link"  # hard link from the current copy: unchanged
    COPY = "copy"  # from the source
    MARK = "mark"  # the completion marker, in the new tree
    SWAP = "swap"  # DEST -> the new tree, atomically
    CLEAN = "clean"  # remove trees DEST no longer names


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
    files: dict[str, Entry] = {}
    if not repo.is_dir():
        return Listing()
    data = repo / "data"
    if data.is_dir():
        for sub in data.iterdir():
            if sub.is_dir() and sub.name.isdigit():
                for seg in sub.iterdir():
                    if seg.name.isdigit() and seg.is_file():
                        entry = _entry(repo, seg)
                        files[entry.path] = entry
    for path in repo.iterdir():
        if (TRANSACTION.match(path.name) or path.name in PLAIN_FILES) and path.is_file():
            files[path.name] = _entry(repo, path)
    return Listing(files, (repo / MARKER).exists())


def _same(a: Entry, b: Entry | None) -> bool:
    # borg never rewrites a segment under the same number; size and mtime (which the copy
    # carries over) tell a complete earlier copy from a missing or different file.
    return b is not None and a.size == b.size and a.mtime_ns == b.mtime_ns


def _order(path: str) -> tuple[int, int, str]:
    # Segments in ascending number first (so a partial tree holds a prefix), then the rest.
    if path.startswith("data/"):
        return (0, int(Path(path).name), path)
    return (1, 0, path)


def plan(src: Listing, current: Listing, partial: Listing) -> list[Step]:
    """Steps that make a new tree holding src and swap it in.

    current: the tree DEST names now (may be empty); partial: a tree an interrupted run
    left (its files that match src are kept, the others dropped).
    """
    if current.marker and all(_same(e, current.files.get(p)) for p, e in src.files.items()) \
            and set(current.files) == set(src.files):
        return [Step(Op.CLEAN)]
    steps = [Step(Op.DROP, path) for path in sorted(partial.files) if path not in src.files]
    for path in sorted(src.files, key=_order):
        entry = src.files[path]
        if _same(entry, partial.files.get(path)):
            continue
        if _same(entry, current.files.get(path)):
            steps.append(Step(Op.LINK, path))
        else:
            steps.append(Step(Op.COPY, path, entry.size))
    steps += [Step(Op.MARK), Step(Op.SWAP), Step(Op.CLEAN)]
    return steps


SLACK = 4 * 1024 * 1024  # directories, the marker, the journal of the filesystem


@dataclass(frozen=True)
class Room:
    needed: int  # bytes this copy will take on the drive
    free: int  # bytes free there (for an unprivileged writer: not the reserved blocks)
    kept: int  # what the previous copy holds and keeps until the new one is complete

    def problem(self, what: str) -> str | None:
        """Why the copy cannot fit, in words a person can act on; None if it fits."""
        if self.needed <= self.free:
            return None
        size = quantities.format_size
        kept = (f"; the previous copy ({size(self.kept)}) stays until the new one is "
                "complete, so" if self.kept else ";")
        return (f"not enough room on {what}: this copy writes {size(self.needed)} of new "
                f"files and {size(self.free)} are free{kept} the drive needs "
                f"{size(self.needed - self.free)} more")


def room(steps: list[Step], free: int, kept: int, block: int = 4096) -> Room:
    """What a plan needs on the drive: every file it copies rounded up to whole blocks
    (linked files take no room), plus some slack."""
    copies = [s for s in steps if s.op is Op.COPY]
    needed = sum(-(-s.size // block) * block for s in copies) + SLACK if copies else 0
    return Room(needed, free, kept)


ROOM_HINT = ("use a bigger drive, or make the repository smaller on the source (borg prune, "
             "then borg compact) before the next plug; the drive still holds the previous "
             "complete copy")


def _copy_file(src: Path, dst: Path, partial: Path, chunk: int = 1 << 20) -> tuple[int, int]:
    """Copy to a temporary name, fsync, keep the mtime, rename into place; the bytes
    written and their CRC-32 (for the read-back)."""
    st = src.stat()
    copied = crc = 0
    with src.open("rb") as fin, partial.open("wb") as fout:
        while block := fin.read(chunk):
            fout.write(block)
            crc = zlib.crc32(block, crc)
            copied += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    os.utime(partial, ns=(st.st_atime_ns, st.st_mtime_ns))
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial.replace(dst)
    return copied, crc


def checksum(path: Path, chunk: int = 1 << 20) -> int:
    """The CRC-32 of a file, read the ordinary way (the source, for what an interrupted
    run wrote). CRC-32 finds the errors a drive makes (it is what disks and USB use
    themselves) at several GB/s, where a cryptographic hash would halve the copy's speed."""
    crc = 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def read_uncached(path: Path, chunk: int = 1 << 20) -> int:
    """The CRC-32 of path as the drive returns it, not as the page cache remembers it:
    read with O_DIRECT (an aligned buffer), or where the filesystem has no O_DIRECT,
    after telling the kernel to drop its cached pages of the (synced) file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    crc = 0
    try:
        with mmap.mmap(-1, chunk) as buffer:  # page-aligned, as O_DIRECT wants
            view = memoryview(buffer)
            while n := os.readv(fd, [buffer]):
                crc = zlib.crc32(view[:n], crc)
            view.release()
    finally:
        os.close(fd)
    return crc


def read_back(tree: Path, written: dict[str, int]) -> None:
    """Every file this copy wrote, read back from the drive and compared with what was
    written; Fatal naming the first that differs."""
    for path, expected in sorted(written.items(), key=lambda item: _order(item[0])):
        if read_uncached(tree / path) != expected:
            raise Fatal(f"read back from the drive, {path} is not what was written to it: the "
                        "drive (or its USB bridge) does not keep what it is given",
                        "the copy does not count; try another drive, or another cable or "
                        "port; the drive still holds the previous complete copy")


def _link_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    os.link(src, dst)


@dataclass(frozen=True)
class Layout:
    """Where the trees of one destination live."""

    dest: Path

    @property
    def trees(self) -> Path:
        return self.dest.with_name(self.dest.name + TREES_SUFFIX)

    def current(self) -> Path | None:
        if self.dest.is_symlink():
            target = self.dest.resolve()
            return target if target.is_dir() else None
        return self.dest if self.dest.is_dir() else None

    def generations(self) -> list[int]:
        if not self.trees.is_dir():
            return []
        return sorted(int(p.name) for p in self.trees.iterdir() if p.name.isdigit())

    def next_tree(self) -> Path:
        """The newest tree if it is not the current copy (an interrupted run's work, to be
        reused), else a new one."""
        generations = self.generations()
        if not generations:
            return self.trees / "1"
        newest = self.trees / str(generations[-1])
        current = self.current()
        if current is not None and current.resolve() == newest.resolve():
            return self.trees / str(generations[-1] + 1)
        return newest


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    steps_done: int
    steps_total: int


def progress_line(p: Progress, elapsed: float) -> str:
    """'1.2 GiB of 4.0 GiB (30%), 85 MiB/s, about 34 s left' (pure, for logs and the CLI)."""
    percent = 100 * p.bytes_done / p.bytes_total if p.bytes_total else 100.0
    done, total = quantities.format_size(p.bytes_done), quantities.format_size(p.bytes_total)
    text = f"{done} of {total} ({percent:.0f}%), {p.steps_done}/{p.steps_total} files"
    if elapsed > 0 and p.bytes_done:
        rate = p.bytes_done / elapsed
        text += f", {quantities.format_size(rate)}/s"
        if p.bytes_done < p.bytes_total:
            text += f", about {(p.bytes_total - p.bytes_done) / rate:.0f} s left"
    return text


class ThrottledProgress:
    """Logs a progress line at most every `every` seconds (and the last one), not per file."""

    def __init__(self, job: str | None, every: float = 5.0) -> None:
        self.job = job
        self.every = every
        self.started = time.monotonic()
        self.last = self.started

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.every and p.steps_done < p.steps_total:
            return
        self.last = now
        extra = {"fields": {"PROGRESS_BYTES": str(p.bytes_done),
                            "PROGRESS_TOTAL": str(p.bytes_total),
                            **({"JOB": self.job} if self.job else {})}}
        log.info("copy: %s", progress_line(p, now - self.started), extra=extra)


@dataclass(frozen=True)
class Result:
    steps: int
    bytes_copied: int
    seconds: float


def apply(steps: list[Step], src: Path, layout: Layout, new: Path,
          progress: Callable[[Progress], None] | None = None) -> Result:
    started = time.monotonic()
    new.mkdir(parents=True, exist_ok=True)
    partial = new / PARTIAL
    partial.unlink(missing_ok=True)
    _unmark(new)  # a reused tree is not complete until MARK
    work = _Applying(steps, src, layout, new, layout.current())
    total = sum(s.size for s in steps)
    if progress is not None:  # started: nothing copied yet
        progress(Progress(0, total, 0, len(steps)))
    for i, step in enumerate(steps):
        try:
            work.do(step)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise _drive_error(exc, step, work.done_bytes, total) from exc
        if progress is not None:
            progress(Progress(work.done_bytes, total, i + 1, len(steps)))
    return Result(len(steps), work.done_bytes, time.monotonic() - started)


def _drive_error(exc: OSError, step: Step, done: int, total: int) -> Fatal:
    """What a failed write or read of the drive means, for the failure mail."""
    where = f"{step.op} {step.path}".rstrip()
    written = f"{quantities.format_size(done)} of {quantities.format_size(total)} written"
    if exc.errno == errno.ENOSPC:
        return Fatal(f"the drive filled up at {where} ({written}): something else is using "
                     "its room", ROOM_HINT)
    if exc.errno in (errno.EIO, errno.EROFS, errno.ENODEV, errno.ENXIO):
        return Fatal(f"the drive failed at {where} ({written}): {exc.strerror}; what it "
                     "holds of this copy cannot be trusted",
                     "the drive still holds the previous complete copy; check the drive, its "
                     "cable and port (dmesg), or use another drive")
    return Fatal(f"the copy failed at {where} ({written}): {exc.strerror or exc}",
                 "the drive still holds the previous complete copy")


@dataclass
class _Applying:
    """One run of apply: what it was given, and what it has done so far."""

    steps: list[Step]
    src: Path
    layout: Layout
    new: Path
    current: Path | None  # the tree DEST named when the run began
    done_bytes: int = 0
    written: dict[str, int] = field(default_factory=dict)  # copied by this run: path -> CRC-32
    touched: set[Path] = field(default_factory=set)  # directories with new entries

    def do(self, step: Step) -> None:
        new = self.new
        if step.op is Op.DROP:
            (new / step.path).unlink(missing_ok=True)
        elif step.op is Op.LINK:
            if self.current is None:
                raise Fatal(f"cannot link {step.path}: there is no current copy")
            _link_file(self.current / step.path, new / step.path)
            self.touched.add((new / step.path).parent)
        elif step.op is Op.COPY:
            size, self.written[step.path] = _copy_file(self.src / step.path, new / step.path,
                                                       new / PARTIAL)
            self.done_bytes += size
            self.touched.add((new / step.path).parent)
        elif step.op is Op.MARK:
            self._mark()
        elif step.op is Op.SWAP:
            _swap(self.layout, new)
        elif step.op is Op.CLEAN:
            _clean(self.layout)

    def _mark(self) -> None:
        new, written = self.new, self.written
        for directory in sorted(self.touched | {new}):
            durable.fsync_dir(directory)
        # before the copy can count: what this run wrote, and what an interrupted run had
        # written into this tree (against the source; linked files are the previous
        # copy's, read back when they were written)
        linked = {s.path for s in self.steps if s.op is Op.LINK}
        listing = scan(new).files
        for path in listing.keys() - written.keys() - linked:
            written[path] = checksum(self.src / path)
        read_back(new, written)
        _write_marker(new, self.done_bytes,
                      sum(listing[p].size for p in written if p in listing))


def marker(listing: Listing, bytes_copied: int, bytes_read_back: int = 0) -> str:
    """The completion marker of a copy holding listing's files (its JSON text)."""
    transactions = [int(m.group(2)) for n in listing.files if (m := TRANSACTION.match(n))]
    return json.dumps({
        "transaction": max(transactions, default=None),
        "files": {p: e.size for p, e in sorted(listing.files.items())},
        "finished": time.time(),
        "bytes_copied": bytes_copied,
        "bytes_read_back": bytes_read_back,
    })


def _write_marker(tree: Path, bytes_copied: int, bytes_read_back: int = 0) -> None:
    durable.replace(tree / MARKER, marker(scan(tree), bytes_copied, bytes_read_back), mode=0o644)


def _swap(layout: Layout, new: Path) -> None:
    dest = layout.dest
    if dest.exists() and not dest.is_symlink():
        # A plain directory from before offsite managed this destination: keep it as the
        # first tree (one atomic rename), so that DEST can become a symlink.
        layout.trees.mkdir(exist_ok=True)
        dest.rename(layout.trees / "0")
    link = dest.with_name(dest.name + ".offsite-link")
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(new, dest.parent))
    link.replace(dest)
    durable.fsync_dir(dest.parent)


def _unmark(tree: Path) -> None:
    """Take a tree's completion marker away, durably, before anything in it changes: a
    power cut must never leave a marker beside a partial copy."""
    marker = tree / MARKER
    if marker.exists():
        marker.unlink()
        durable.fsync_dir(tree)


def _clean(layout: Layout) -> None:
    current = layout.current()
    for gen in layout.generations():
        tree = layout.trees / str(gen)
        if current is None or tree.resolve() != current.resolve():
            with contextlib.suppress(OSError):
                _unmark(tree)
            shutil.rmtree(tree, ignore_errors=True)
    if layout.trees.is_dir():
        durable.fsync_dir(layout.trees)


def verify(dest: Path) -> list[str]:
    """Cheap check of the copy DEST names: the marker, and every file it lists at its size."""
    marker = dest / MARKER
    if not marker.exists():
        return [f"{dest}: no completion marker ({MARKER}): no copy has finished"]
    recorded: dict[str, int] = json.loads(marker.read_text())["files"]
    have = scan(dest).files
    problems = []
    for path, size in recorded.items():
        entry = have.get(path)
        if entry is None:
            problems.append(f"{path} is missing")
        elif entry.size != size:
            problems.append(f"{path} has {entry.size} bytes, not {size}")
    extra = sorted(set(have) - set(recorded))
    if extra:
        problems.append(f"files the copy does not list: {extra[:5]}")
    return problems


def copy(src: Path, dest: Path, progress: Callable[[Progress], None] | None = None) -> Result:
    """Mirror src to dest (the source must be held still: see copy_locked)."""
    if not (src / "config").is_file() or not (src / "data").is_dir():
        raise Fatal(f"{src} is not a borg repository (no config file or data directory)")
    layout = Layout(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    layout.trees.mkdir(exist_ok=True)
    current = layout.current()
    new = layout.next_tree()
    before = scan(current) if current else Listing()
    steps = plan(scan(src), before, scan(new))
    log.info("mirroring %s to %s: %d step(s), %d bytes to copy", src, dest, len(steps),
             sum(s.size for s in steps))
    fs = os.statvfs(layout.trees)
    need = room(steps, fs.f_bavail * fs.f_frsize, sum(e.size for e in before.files.values()),
                fs.f_frsize)
    problem = need.problem(f"the drive at {dest.parent}")
    if problem:
        raise Fatal(problem, ROOM_HINT)
    result = apply(steps, src, layout, new, progress)
    problems = verify(dest)
    if problems:
        raise Fatal(f"the copy in {dest} is not complete: " + "; ".join(problems))
    return result


def copy_locked(src: Path, dest: Path, offsite: Path, job: str | None = None) -> int:
    """Run ``offsite mirror-copy`` under ``borg with-lock`` so borg cannot change src.

    borg 1.2's with-lock reports 0 when its command was killed by a signal (it takes the
    maximum of its own code and the child's, which is negative), so success is judged by
    the copy itself: the completion marker and the files it lists.
    """
    before = _marker_time(dest)
    # On our own stdout and stderr: the copy's progress lines go straight to the journal.
    # --lock-wait: a borg run of the user's own (not through offsite) may hold the source
    summary = state.this_run_summary()
    if summary is not None:
        state.update(summary, copy_error=None)
    code = interactive(["borg", f"--lock-wait={LOCK_WAIT}", "with-lock", "--", str(src),
                        str(offsite), "mirror-copy",
                        *(["--job", job] if job else []), "--", str(src), str(dest)])
    if code != 0:
        # the copy (borg's child) left its reason in this run's summary
        told = state.read(summary).get("copy_error") if summary is not None else None
        why = str(told) if told else f"exit code {code}, its own message is in the journal"
        raise Fatal(f"copying {src} to {dest} failed: {why}",
                    "the drive still holds the previous complete copy")
    problems = verify(dest)
    if not problems and _marker_time(dest) == before:
        problems = ["the completion marker is the previous copy's"]
    if problems:
        raise Fatal(f"the copy to {dest} did not finish: " + "; ".join(problems),
                    "the drive still holds the previous complete copy; the next run goes on")
    return marker_bytes(dest, "bytes_copied")


def marker_bytes(dest: Path, key: str) -> int:
    """A byte count the completion marker of DEST's copy records (bytes_copied,
    bytes_read_back); 0 if it has none."""
    try:
        value = json.loads((dest / MARKER).read_text()).get(key, 0)
    except (OSError, ValueError):
        return 0
    return int(value) if isinstance(value, int) else 0


def _marker_time(dest: Path) -> float | None:
    try:
        value = json.loads((dest / MARKER).read_text())["finished"]
    except (OSError, ValueError, KeyError):
        return None
    return float(value)
