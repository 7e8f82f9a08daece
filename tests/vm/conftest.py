"""The vm tier: a Debian guest under QEMU (tests/vm/guest.py). Skips with the reason when
QEMU or debootstrap is missing; under OFFSITE_REQUIRE_ALL=1 that skip is a failure."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests import tiers

from .guest import Guest, booted, tools_missing

# The vm tests' modules, longest first (as measured in CI: the power cut ran 5-13 min, the
# package's modules 1-2 min): two workers end near together when the long ones start
# early, instead of one running a long test on alone at the end. Unnamed ones go last.
LONGEST_FIRST = ("test_powercut", "test_flakey", "test_targets", "test_drill", "test_usb",
                 "test_debian13", "test_luks", "test_jobs", "test_arm64",
                 "test_package_life", "test_package")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.mark(items, "vm", pytest.mark.vm, tools_missing())
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    vm = [i for i in items if "tests/vm/" in str(i.fspath)]
    others = [i for i in items if "tests/vm/" not in str(i.fspath)]
    vm.sort(key=lambda i: rank.get(i.path.stem, len(rank)))  # stable: the module's order kept
    items[:] = others + vm


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed vm test's report carries what the guest's systemd saw (its failed units,
    offsite's units and the journal's last lines): a guest that is gone afterwards cannot be
    asked again, and a failure seen once in CI must be readable from the report alone."""
    report = yield
    g = getattr(item, "funcargs", {}).get("guest")
    if report.when == "call" and report.failed and isinstance(g, Guest):
        for title, argv in (
                ("guest: failed units", ["systemctl", "list-units", "--failed", "--no-pager"]),
                ("guest: offsite's units", ["systemctl", "list-units", "--all", "--no-pager",
                                            "offsite*", "systemd-cryptsetup*", "*.mount"]),
                # without the guest agent's own lines: a test polling the guest fills the
                # journal's end with them
                ("guest: journal", ["sh", "-c", "journalctl -b --no-pager -o short-monotonic"
                                    " | awk '/^\\[/ { agent = / qemu-ga\\[/ } !agent' | tail -n 400"])):
            try:
                out = g.run(argv, check=False, timeout=60)
                text = out.stdout + out.stderr
            except Exception as exc:  # the guest may be the thing that failed
                text = f"(could not ask the guest: {exc})"
            report.sections.append((title, text))
    return report


@pytest.fixture
def guest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Guest]:
    """A booted Debian 12 guest; Debian 13 for a test parametrized with
    `@pytest.mark.parametrize("guest", ["trixie"], indirect=True)`; "SUITE+usb": on Debian's
    standard kernel with a USB controller (plug(..., bus="usb-storage"))."""
    suite, _, extra = getattr(request, "param", "bookworm").partition("+")
    with booted(tmp_path, suite, usb=extra == "usb") as g:
        yield g
