"""The mirror's plan, by value: what is linked, copied, dropped, and in which order."""

from __future__ import annotations

from offsite.jobs import mirror
from offsite.jobs.mirror import Entry, Listing, Op, Step, plan


def listing(*files: tuple[str, int, int], marker: bool = False) -> Listing:
    return Listing({p: Entry(p, size, mtime) for p, size, mtime in files}, marker)


SRC = listing(("data/0/1", 100, 1), ("data/0/2", 100, 2), ("data/0/10", 50, 10),
              ("index.10", 30, 10), ("hints.10", 5, 10), ("integrity.10", 5, 10),
              ("config", 7, 1))


def test_first_copy_copies_everything_segments_in_numeric_order() -> None:
    steps = plan(SRC, Listing(), Listing())
    copies = [s.path for s in steps if s.op is Op.COPY]
    assert copies[:3] == ["data/0/1", "data/0/2", "data/0/10"]  # 10 after 2, not lexically
    assert set(copies) == set(SRC.files)
    assert [s.op for s in steps[-3:]] == [Op.MARK, Op.SWAP, Op.CLEAN]


def test_unchanged_files_are_linked_not_copied() -> None:
    current = listing(("data/0/1", 100, 1), ("data/0/2", 100, 2), ("index.9", 30, 9),
                      ("config", 7, 1), marker=True)
    steps = plan(SRC, current, Listing())
    assert {s.path for s in steps if s.op is Op.LINK} == {"data/0/1", "data/0/2", "config"}
    assert {s.path for s in steps if s.op is Op.COPY} == {"data/0/10", "index.10", "hints.10",
                                                          "integrity.10"}
    assert sum(s.size for s in steps) == 50 + 30 + 5 + 5
    assert not any(s.path == "index.9" for s in steps)  # never carried into the new tree


def test_same_size_other_mtime_is_copied() -> None:
    current = listing(("data/0/1", 100, 99), marker=True)
    steps = plan(SRC, current, Listing())
    assert Step(Op.COPY, "data/0/1", 100) in steps


def test_work_of_an_interrupted_run_is_kept_and_its_stale_files_dropped() -> None:
    partial = listing(("data/0/1", 100, 1), ("data/0/5", 80, 5), ("index.9", 30, 9))
    steps = plan(SRC, Listing(), partial)
    assert steps[:2] == [Step(Op.DROP, "data/0/5"), Step(Op.DROP, "index.9")]
    assert not any(s.path == "data/0/1" for s in steps)


def test_nothing_changed_means_no_new_tree() -> None:
    current = Listing(dict(SRC.files), marker=True)
    assert plan(SRC, current, Listing()) == [Step(Op.CLEAN)]


def test_a_current_copy_without_marker_is_redone() -> None:
    current = Listing(dict(SRC.files), marker=False)
    steps = plan(SRC, current, Listing())
    assert Op.SWAP in {s.op for s in steps} and all(s.op is not Op.COPY for s in steps)


def test_progress_line() -> None:
    from offsite.jobs.mirror import Progress, progress_line

    line = progress_line(Progress(1 << 30, 4 << 30, 10, 40), elapsed=10.0)
    assert line == "1.0 GiB of 4.0 GiB (25%), 10/40 files, 102.4 MiB/s, about 30 s left"
    assert progress_line(Progress(0, 0, 0, 1), elapsed=0.0) == "0 B of 0 B (100%), 0/1 files"


def test_room_counts_only_what_is_copied_in_whole_blocks() -> None:
    steps = [mirror.Step(mirror.Op.LINK, "data/0/1"), mirror.Step(mirror.Op.COPY, "data/0/2", 1),
             mirror.Step(mirror.Op.COPY, "data/0/3", 8192), mirror.Step(mirror.Op.MARK)]
    need = mirror.room(steps, free=10**9, kept=5000)
    assert need.needed == 4096 + 8192 + mirror.SLACK and need.problem("d1") is None
    assert mirror.room([mirror.Step(mirror.Op.CLEAN)], free=0, kept=0).needed == 0


def test_a_copy_that_cannot_fit_says_how_much_more_the_drive_needs() -> None:
    mib = 1024 * 1024
    steps = [mirror.Step(mirror.Op.COPY, f"data/0/{i}", 10 * mib) for i in range(15)]
    text = mirror.room(steps, free=60 * mib, kept=0).problem("drive d1")
    assert text == ("not enough room on drive d1: this copy writes 154.0 MiB of new files and "
                    "60.0 MiB are free; the drive needs 94.0 MiB more")
    again = mirror.room(steps, free=60 * mib, kept=150 * mib).problem("drive d1")
    assert again is not None and "the previous copy (150.0 MiB) stays until the new one is " \
        "complete, so the drive needs 94.0 MiB more" in again
