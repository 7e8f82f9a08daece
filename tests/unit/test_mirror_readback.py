"""The read-back before a copy counts (issue #19): what the drive returns, compared with
what was written, on real files (O_DIRECT where the filesystem has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offsite.errors import Fatal
from offsite.jobs import mirror


def _tree(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    tree = tmp_path / "tree"
    (tree / "data" / "0").mkdir(parents=True)
    written = {}
    for name, size in (("data/0/1", 5_000_001), ("data/0/2", 0), ("index.2", 4096)):
        data = os.urandom(size)
        (tree / name).write_bytes(data)
        src = tmp_path / "src"
        src.write_bytes(data)
        written[name] = mirror.checksum(src)
    return tree, written


def test_a_tree_that_kept_what_it_was_given_passes(tmp_path: Path) -> None:
    tree, written = _tree(tmp_path)
    mirror.read_back(tree, written)


def test_a_byte_changed_after_it_was_written_fails_the_copy_and_names_the_file(
        tmp_path: Path) -> None:
    tree, written = _tree(tmp_path)
    with (tree / "data/0/1").open("r+b") as f:  # a drive that lies: one byte, mid-file
        f.seek(3_000_000)
        byte = f.read(1)
        f.seek(3_000_000)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(Fatal, match=r"read back from the drive, data/0/1 is not what was "
                                    r"written to it"):
        mirror.read_back(tree, written)


def test_the_uncached_read_is_the_file_as_written(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 * 1024 * 1024 + 17)  # not a whole number of blocks
    path.write_bytes(data)
    import zlib

    assert mirror.read_uncached(path) == zlib.crc32(data) == mirror.checksum(path)
