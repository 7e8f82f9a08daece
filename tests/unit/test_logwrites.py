"""The dm-log-writes log reader the power-cut test replays with (tests/vm/logwrites.py),
on logs laid out as the kernel writes them (drivers/md/dm-log-writes.c, version 1); the
vm test replays the kernel's own log and compares the result with the real drive."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest

from tests.vm import logwrites as lw

SECTOR = 512


def _log(*entries: tuple[int, int, int, bytes], count: int | None = None,
         magic: int = lw.MAGIC, version: int = lw.VERSION) -> io.BytesIO:
    """A log: the super block, then each (sector, sectors, flags, payload) as a header
    sector (a mark's name inside it) and, for a write, its data sectors."""
    out = bytearray(struct.pack("<QQQI", magic, version,
                                len(entries) if count is None else count, SECTOR))
    out += bytes(SECTOR - len(out))
    for sector, sectors, flags, payload in entries:
        name = payload if flags & lw.MARK else b""
        head = struct.pack("<QQQQ", sector, sectors, flags, len(name)) + name
        out += head + bytes(SECTOR - len(head))
        if not flags & (lw.MARK | lw.DISCARD):
            assert len(payload) == sectors * SECTOR
            out += payload
    return io.BytesIO(bytes(out))


A = b"a" * SECTOR * 2
B = b"b" * SECTOR


def _sample() -> io.BytesIO:
    return _log((100, 2, 0, A), (0, 0, lw.FLUSH, b""), (0, 0, lw.MARK, b"copy-1"),
                (101, 1, lw.FUA, B), (100, 1, lw.DISCARD, b""))


def test_entries_are_read_in_order_with_their_places_in_the_log() -> None:
    got = list(lw.entries(_sample()))
    assert [(e.index, e.sector, e.sectors, e.mark) for e in got] == [
        (0, 100, 2, ""), (1, 0, 0, ""), (2, 0, 0, "copy-1"), (3, 101, 1, ""), (4, 100, 1, "")]
    # a header sector before each entry's data: 1 (data 2-3), 4, 5, 6 (data 7), 8
    assert [e.data_at for e in got] == [2 * SECTOR, 5 * SECTOR, 6 * SECTOR, 7 * SECTOR,
                                        9 * SECTOR]
    assert [e.point for e in got] == [False, True, True, True, False]
    assert got[2].describe() == "#2 mark copy-1"
    assert got[3].describe() == "#3 fua at 101 (1)"


def test_a_replay_writes_each_entry_where_the_drive_got_it(tmp_path: Path) -> None:
    log = _sample()
    target = tmp_path / "target"
    target.write_bytes(b"\xff" * SECTOR * 8)
    fd = os.open(target, os.O_RDWR)
    try:
        done = []
        for entry in lw.entries(log):
            lw.apply(entry, log, fd, SECTOR, shift=98)
            done.append(target.read_bytes())
    finally:
        os.close(fd)
    assert done[0][2 * SECTOR:4 * SECTOR] == A  # sector 100 - 98
    assert done[0][:2 * SECTOR] == b"\xff" * SECTOR * 2
    assert done[2] == done[0]  # a flush and a mark write nothing
    assert done[3][3 * SECTOR:4 * SECTOR] == B
    assert done[4][2 * SECTOR:3 * SECTOR] == bytes(SECTOR)  # discarded: zeros
    assert done[4][3 * SECTOR:4 * SECTOR] == B


def test_a_write_before_the_drive_begins_is_refused(tmp_path: Path) -> None:
    log = _log((10, 1, 0, B))
    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(lw.LogError, match="below sector 98"):
            for entry in lw.entries(log):
                lw.apply(entry, log, fd, SECTOR, shift=98)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("log", "said"), [
    (_log(magic=0x1234), "not a dm-log-writes log"),
    (_log(version=2), "version 2"),
    (_log((100, 2, 0, A), count=3), "entry 1 is cut off"),
    (io.BytesIO(b"short"), "shorter than its super block"),
])
def test_a_log_that_is_not_whole_is_refused(log: io.BytesIO, said: str) -> None:
    with pytest.raises(lw.LogError, match=said):
        list(lw.entries(log))


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_copy_is_told_apart_by_its_names_and_bytes_not_by_borgs_bookkeeping(
        tmp_path: Path) -> None:
    one = lw.tree_digest(_tree(tmp_path / "1", {"config": b"c", "data/0/1": b"seg"}))
    locked = lw.tree_digest(_tree(tmp_path / "2", {"config": b"c", "data/0/1": b"seg",
                                                   "lock.roster": b"{}", "nonce": b"2",
                                                   "lock.exclusive/host.1": b"",
                                                   "config-2oh8ovso.tmp": b"c"}))
    flipped = lw.tree_digest(_tree(tmp_path / "3", {"config": b"c", "data/0/1": b"seG"}))
    moved = lw.tree_digest(_tree(tmp_path / "4", {"config": b"c", "data/0/2": b"seg"}))
    assert one == locked
    assert len({one, flipped, moved}) == 3


def test_the_layout_shows_the_named_tree_and_each_marked_one(tmp_path: Path) -> None:
    trees = tmp_path / "main.offsite"
    _tree(trees / "1", {"config": b"c", lw.MARKER: b"{}"})
    _tree(trees / "2", {"config": b"c2"})  # a partial tree: no marker
    (tmp_path / "main").symlink_to("main.offsite/1")
    shown = lw.layout(tmp_path, "main")
    assert shown["names"] == "1"
    assert shown["digest"] == lw.tree_digest(trees / "1")
    assert shown["marked"] == {"1": lw.tree_digest(trees / "1")}
    (tmp_path / "main").unlink()
    (tmp_path / "main").symlink_to("main.offsite/9")
    assert lw.layout(tmp_path, "main")["names"] == "dangling"
    (tmp_path / "main").unlink()
    shown = lw.layout(tmp_path, "main")
    assert (shown["names"], shown["digest"]) == (None, None)
    assert shown["marked"] == {"1": lw.tree_digest(trees / "1")}
    assert shown["sizes"] == {"1": [2, 3]}  # files, bytes
