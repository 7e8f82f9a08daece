"""The vm tier: a Debian guest under QEMU (tests/vm/guest.py). Skips with the reason when
QEMU or debootstrap is missing; under OFFSITE_REQUIRE_ALL=1 that skip is a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import tiers

from .guest import Guest, booted, tools_missing


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.mark(items, "vm", pytest.mark.vm, tools_missing())


@pytest.fixture
def guest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Guest]:
    """A booted Debian 12 guest; Debian 13 for a test parametrized with
    `@pytest.mark.parametrize("guest", ["trixie"], indirect=True)`."""
    with booted(tmp_path, getattr(request, "param", "bookworm")) as g:
        yield g
