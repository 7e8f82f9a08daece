"""Marking a test tier's items, and skipping them with the reason the tier cannot run
(under OFFSITE_REQUIRE_ALL=1 the root conftest turns that skip into a failure)."""

from __future__ import annotations

import pytest


def mark(items: list[pytest.Item], folder: str, marker: pytest.MarkDecorator,
         reason: str | None) -> None:
    for item in items:
        if f"tests/{folder}/" in str(item.fspath):
            item.add_marker(marker)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
