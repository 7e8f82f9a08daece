"""dm-log-writes' log, read and replayed (issue #19: a copy that survives a power cut at
any write).

The kernel's dm-log-writes target (drivers/md/dm-log-writes.c, log format version 1)
passes every write through to its device and records it, in completion order, on a
second device: a super block in sector 0, then per entry one sector holding the entry's
header (and a mark's name), followed by the entry's data. A flush is recorded after the
writes that completed before it, so the prefix of the log up to a flush (or a FUA write)
is exactly what a drive holds if its power is cut there: everything after it may or may
not have reached the platter. Marks are entries the test adds by name (`dmsetup message
DEV 0 mark NAME`).

This file is two things: the parser (pure, imported by the unit tests) and, run as a
script in the guest, the replayer that checks the drive at every flush, FUA and mark
(standard library only: it runs on the guest's own Python).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = 0x6A736677736872
VERSION = 1
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16
SUPER = struct.Struct("<QQQI")  # magic, version, number of entries, sector size
ENTRY = struct.Struct("<QQQQ")  # sector, sectors, flags, data length (a mark's name)


class LogError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    index: int
    sector: int  # where it was written, in units of the log's sector size
    sectors: int
    flags: int
    mark: str  # a mark's name; "" for other entries
    data_at: int  # byte offset of its data in the log

    @property
    def point(self) -> bool:
        """A moment a power cut can be replayed at: a flush, a FUA write or a mark."""
        return bool(self.flags & (FLUSH | FUA | MARK))

    def describe(self) -> str:
        names = [n for bit, n in ((FLUSH, "flush"), (FUA, "fua"), (DISCARD, "discard"),
                                  (MARK, "mark"), (METADATA, "metadata")) if self.flags & bit]
        what = "+".join(names) or "write"
        return f"#{self.index} {what} {self.mark}".rstrip() if self.mark else \
            f"#{self.index} {what} at {self.sector} ({self.sectors})"


@dataclass(frozen=True)
class Header:
    entries: int
    sector_size: int


def header(log: BinaryIO) -> Header:
    log.seek(0)
    raw = log.read(SUPER.size)
    if len(raw) < SUPER.size:
        raise LogError("the log is shorter than its super block")
    magic, version, count, size = SUPER.unpack(raw)
    if magic != MAGIC:
        raise LogError(f"not a dm-log-writes log (magic {magic:#x})")
    if version != VERSION:
        raise LogError(f"dm-log-writes log version {version}, not {VERSION}")
    if size < 512 or size & (size - 1):
        raise LogError(f"sector size {size} in the super block")
    return Header(count, size)


def entries(log: BinaryIO) -> Iterator[Entry]:
    """The log's entries in order (as many as its super block counts)."""
    head = header(log)
    size = head.sector_size
    offset = size  # entry 0's header is in sector 1
    for index in range(head.entries):
        log.seek(offset)
        raw = log.read(size)
        if len(raw) < size:
            raise LogError(f"entry {index} is cut off at byte {offset}")
        sector, sectors, flags, length = ENTRY.unpack_from(raw)
        mark = ""
        if flags & MARK:
            if length > size - ENTRY.size:
                raise LogError(f"entry {index}: a mark of {length} bytes")
            mark = raw[ENTRY.size:ENTRY.size + length].decode(errors="replace")
        elif length:
            raise LogError(f"entry {index}: inline data (a DAX log) is not supported")
        data_at = offset + size
        yield Entry(index, sector, sectors, flags, mark, data_at)
        offset = data_at + (0 if flags & DISCARD else sectors * size)


def apply(entry: Entry, log: BinaryIO, target: int, size: int, shift: int = 0) -> None:
    """Write entry to the file descriptor target as the device received it, shift
    sectors lower (a discard reads back as zeros)."""
    if not entry.sectors or entry.flags & MARK:
        return
    if entry.sector < shift:
        raise LogError(f"{entry.describe()}: below sector {shift}, where the drive begins")
    at = (entry.sector - shift) * size
    if entry.flags & DISCARD:
        zeros = bytes(min(entry.sectors * size, 1 << 20))
        left = entry.sectors * size
        while left:
            n = min(left, len(zeros))
            os.pwrite(target, zeros[:n], at)
            at, left = at + n, left - n
        return
    log.seek(entry.data_at)
    data = log.read(entry.sectors * size)
    if len(data) < entry.sectors * size:
        raise LogError(f"{entry.describe()}: its data is cut off")
    os.pwrite(target, data, at)


# -- run in the guest: the drive at every point -------------------------------------------

# What borg rewrites in a repository it only reads (seen with strace of `borg check`): its
# locks, the nonce reservation, the config's backup while it saves it again (same bytes),
# and its temporary files; not the repository's content.
BOOKKEEPING = ("lock.exclusive", "lock.roster", "nonce", "config.old")
MARKER = "offsite-mirror.json"
SNAPSHOT = "offsite-replay-snap"
OPENED = "offsite-replay"
MOUNT = Path("/mnt/offsite-replay")


def tree_digest(tree: Path) -> str:
    """The names and contents of a copy's files (borg's bookkeeping left out)."""
    total = hashlib.sha256()
    for top, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = Path(top, name)
            rel = path.relative_to(tree).as_posix()
            first = rel.split("/")[0]
            if first in BOOKKEEPING or first.startswith("lock.exclusive") or \
                    first.endswith(".tmp"):
                continue
            total.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


def layout(root: Path, name: str) -> dict[str, object]:
    """What the drive shows: the tree the repository path names, and each tree with a
    completion marker, with their digests."""
    dest = root / name
    trees = root / f"{name}.offsite"
    named: str | None = None
    if dest.is_symlink():
        target = dest.resolve()
        named = target.name if target.is_dir() else "dangling"
    elif dest.is_dir():
        named = "plain"
    marked, sizes = {}, {}
    if trees.is_dir():
        for tree in sorted(trees.iterdir()):
            if (tree / MARKER).exists():
                marked[tree.name] = tree_digest(tree)
                files = [p for p in tree.rglob("*") if p.is_file()]
                sizes[tree.name] = [len(files), sum(p.stat().st_size for p in files)]
    digest = tree_digest(dest) if named not in (None, "dangling") else None
    return {"names": named, "digest": digest, "marked": marked, "sizes": sizes}


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # the guest has no offsite.run on this script's path: its own, fixed argv only
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)  # noqa: S603


def _must(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise LogError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def check_point(target: str, cow: str, keyfile: str, name: str,
                checked: dict[str, int]) -> dict[str, object]:
    """The replayed drive as a machine sees it after a power cut, on a throwaway snapshot:
    the filesystem mounts (its journal replayed), then e2fsck finds nothing; what the
    repository path names; borg check of each copy not seen before (checked: by digest)."""
    sectors = _run("blockdev", "--getsz", target).stdout.strip()
    _must("dmsetup", "create", SNAPSHOT, "--table", f"0 {sectors} snapshot {target} {cow} N 8")
    result: dict[str, object] = {}
    mounted = opened = False
    try:
        _must("cryptsetup", "open", "--key-file", keyfile, f"/dev/mapper/{SNAPSHOT}", OPENED)
        opened = True
        device = f"/dev/mapper/{OPENED}"
        MOUNT.mkdir(parents=True, exist_ok=True)
        first = _run("mount", device, str(MOUNT))
        if first.returncode != 0:
            result["mount"] = first.stderr.strip()
            return result
        _must("umount", str(MOUNT))
        fsck = _run("e2fsck", "-f", "-n", device)
        result["fsck"] = fsck.returncode
        if fsck.returncode != 0:
            result["fsck_said"] = (fsck.stdout + fsck.stderr)[-2000:]
        _must("mount", device, str(MOUNT))
        mounted = True
        shown = layout(MOUNT, name)
        result.update(shown)
        marked = shown["marked"]
        assert isinstance(marked, dict)
        for digest, path in [(shown["digest"], MOUNT / name)] + [
                (d, MOUNT / f"{name}.offsite" / t) for t, d in marked.items()]:
            if isinstance(digest, str) and digest not in checked:
                with tempfile.TemporaryDirectory() as base:
                    env = {**os.environ, "BORG_BASE_DIR": base,
                           "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
                    # as a restore reads it: without the locks a cut run may have left
                    borg = _run("borg", "--bypass-lock", "check", "--", str(path), env=env)
                checked[digest] = borg.returncode
                if borg.returncode != 0:
                    result["borg_said"] = (borg.stdout + borg.stderr)[-2000:]
        return result
    finally:
        if mounted:
            _run("umount", str(MOUNT))
        if opened:
            _run("cryptsetup", "close", OPENED)
        _run("dmsetup", "remove", "--retry", SNAPSHOT)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="replay a dm-log-writes log, checking the drive "
                                "at every flush, FUA write and mark")
    p.add_argument("--log", required=True, help="the log device")
    p.add_argument("--target", required=True, help="a blank device to replay onto")
    p.add_argument("--cow", required=True, help="a device for the throwaway snapshots")
    p.add_argument("--shift", type=int, default=0, help="sectors before the drive's start")
    p.add_argument("--keyfile", required=True, help="opens the drive's LUKS container")
    p.add_argument("--name", required=True, help="the repository's path on the drive")
    p.add_argument("--from-mark", required=True, help="check the points after this mark")
    args = p.parse_args(argv)
    checked: dict[str, int] = {}
    started = False
    with open(args.log, "rb") as log:
        size = header(log).sector_size
        target = os.open(args.target, os.O_RDWR)
        try:
            for entry in entries(log):
                apply(entry, log, target, size, args.shift)
                started = started or entry.mark == args.from_mark
                if not (started and entry.point):
                    continue
                os.fsync(target)
                point = {"entry": entry.index, "what": entry.describe(), "mark": entry.mark,
                         **check_point(args.target, args.cow, args.keyfile, args.name,
                                       checked)}
                print(json.dumps(point), flush=True)
        finally:
            os.close(target)
    print(json.dumps({"borg_check": checked}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
