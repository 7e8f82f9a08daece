"""Test tiers, how they share the machine's two lanes, and the rule that, under
OFFSITE_REQUIRE_ALL=1 (CI), a skip is a failure.

`make test` runs pytest with two workers (pytest-xdist, `--dist loadgroup`): the system
tier's sandboxes run one after another on one worker (their checks of what a sandbox left
on the host assume no other sandbox runs meanwhile); the unit tests are one group too; each
vm test is a unit of its own, so two guests (each mostly one busy vCPU) run side by side."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRE_ALL = os.environ.get("OFFSITE_REQUIRE_ALL") == "1"


GROUPS = {"system", "unit"}  # tests/<folder>/: one xdist group each, named by the folder


@pytest.hookimpl(tryfirst=True)  # before xdist's, which names each item by its group
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(item.config.rootpath).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in GROUPS:
            item.add_marker(pytest.mark.xdist_group(parts[1]))


def pytest_sessionfinish() -> None:
    """The vm tier's booted-and-saved guests of this run removed (here: under xdist only
    the controller, which owns them, loads this file and outlives its workers)."""
    try:
        from tests.vm.guest import discard_frozen
    except ImportError:  # this file run elsewhere (test_require_all copies it): no vm tier
        return
    discard_frozen()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under OFFSITE_REQUIRE_ALL=1, which makes a skip a failure: {reason}"
