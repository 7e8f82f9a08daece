"""The vm tier: a Debian guest under QEMU (tests/vm/guest.py). Skips with the reason when
QEMU or debootstrap is missing; under OFFSITE_REQUIRE_ALL=1 that skip is a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest import Guest, booted, tools_missing


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = tools_missing()
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    with booted(tmp_path) as g:
        yield g
