"""Per-resource job locks: the later job waits and says so, and gives up after its bound."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from offsite import locks
from offsite.errors import Fatal


def test_second_holder_waits_until_the_first_lets_go(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="offsite.locks")
    order: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with locks.held(["/srv/borg/main"], "nightly", 10, tmp_path):
            first_in.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(5)
    with locks.held(["/srv/borg/main", "/srv/other"], "weekly-check", 10, tmp_path):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
    assert "waiting for /srv/borg/main: it is in use by job nightly" in caplog.text


def test_gives_up_after_the_bound(tmp_path: Path) -> None:
    release = threading.Event()
    held = threading.Event()

    def holder() -> None:
        with locks.held(["/r"], "long-job", 10, tmp_path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        with pytest.raises(Fatal, match=r"gave up after waiting 0\.2 s for /r, in use by job long-job"), \
                locks.held(["/r"], "impatient", 0.2, tmp_path):
            pass
        assert time.monotonic() - started < 2
    finally:
        release.set()
        thread.join()


def test_different_resources_do_not_wait(tmp_path: Path) -> None:
    with locks.held(["/a"], "one", 0.1, tmp_path), locks.held(["/b"], "two", 0.1, tmp_path):
        pass


def test_lock_file_names_carry_nothing_of_the_path() -> None:
    name = locks.lock_name("/srv/borg/../../etc/passwd\n")
    assert "/" not in name and "\n" not in name and name.endswith(".lock") and len(name) == 29


def test_two_writers_replacing_one_file_each_rename_a_whole_file(tmp_path: Path) -> None:
    """The agent and a job's hook both rewrite the metrics file: neither may trip over the
    other's temporary file, and the file is always one writer's whole content."""
    from offsite import durable

    target = tmp_path / "offsite.prom"
    errors: list[BaseException] = []

    def writer(mark: str) -> None:
        try:
            for _ in range(300):
                durable.replace(target, mark * 1000, mode=0o644)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(m,)) for m in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in ("a" * 1000, "b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["offsite.prom"]  # no temporary left

