"""The system tier: a real systemd booted as PID 1 of a private namespace (root only)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from offsite_lab import sandbox as sandboxmod

from tests import tiers

from . import repos
from .hosttraces import HostTraces


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the system tier needs root (it boots systemd in new namespaces)"
    for tool in ("unshare", "nsenter", "losetup", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/lib/systemd/systemd") or shutil.which("udevadm") is None:
        return "systemd and udev are not installed (apt-get install systemd udev dbus)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.mark(items, "system", pytest.mark.system, _why_not())


@pytest.fixture
def sandbox() -> Iterator[sandboxmod.Sandbox]:
    """A booted sandbox holding the tier's repository passphrase file (repos.SECRET): its
    repositories are encrypted unless a test says otherwise."""
    with sandboxmod.booted() as booted:
        repos.write_secret(booted)
        yield booted


@pytest.fixture
def host() -> Iterator[HostTraces]:
    """The host's traces, taken as the test begins; the canaries go whatever the test did."""
    taken = HostTraces()
    yield taken
    taken.discard()
