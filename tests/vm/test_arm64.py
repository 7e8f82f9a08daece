"""arm64 (a Raspberry Pi's Debian): the one Architecture: all package installs with apt
into an arm64 Debian 12 root, whose binaries qemu-user runs through a binfmt_misc entry
this test adds and removes again, and `offsite check`, `plan` and `install --root` run
there on arm64's python3 and Debian's arm64 libraries."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from offsite.run import run

from .guest import build_deb, chroot, in_chroot, plain_rootfs

QEMU = Path("/var/cache/offsite-dev/qemu/qemu-aarch64-static")  # scripts/setup unpacks it
BINFMT = Path("/proc/sys/fs/binfmt_misc")
ENTRY = "offsite-aarch64"
# an arm64 ELF executable, as Debian's qemu-user-static registers it
MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


@contextmanager
def arm64_runs_here() -> Iterator[None]:
    """arm64 executables run by qemu-aarch64-static (F: opened now, so inside a chroot
    too); the entry, and the binfmt_misc mount if this made it, removed afterwards."""
    if not QEMU.exists():
        pytest.fail(f"{QEMU} is missing: scripts/setup unpacks it (make setup)")
    mounted = added = False
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT])
        mounted = True
    try:
        if not (BINFMT / ENTRY).exists() and not (BINFMT / "qemu-aarch64").exists():
            (BINFMT / "register").write_text(f":{ENTRY}:M::{MAGIC}:{MASK}:{QEMU}:F")
            added = True
        yield
    finally:
        try:
            if added and (BINFMT / ENTRY).exists():
                (BINFMT / ENTRY).write_text("-1")
        finally:
            if mounted:
                run(["umount", BINFMT])


def test_the_package_runs_in_an_arm64_debian(tmp_path: Path) -> None:
    deb = build_deb(tmp_path / "dist")
    with arm64_runs_here():
        tarball = plain_rootfs("bookworm", "arm64")
        where = tmp_path / "root"
        where.mkdir()
        run(["tar", "-C", where, "-xf", tarball], timeout=600)
        with chroot(where) as tree:
            assert in_chroot(tree, "dpkg", "--print-architecture").stdout.strip() == "arm64"
            shutil.copy(deb, tree / "tmp" / deb.name)
            in_chroot(tree, "apt-get", "update", "-qq", timeout=1800)
            in_chroot(tree, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                      f"/tmp/{deb.name}", timeout=3600)
            machine = in_chroot(tree, "python3", "-c", "import platform; print(platform.machine())")
            assert machine.stdout.strip() == "aarch64"
            checked = in_chroot(tree, "offsite", "check", timeout=600)
            assert "/etc/offsite/offsite.yaml: OK" in checked.stdout, checked
            planned = in_chroot(tree, "offsite", "plan", "--root", "/tmp/r", timeout=600)
            assert "offsite-nightly.service" in planned.stdout, planned
            in_chroot(tree, "offsite", "install", "--root", "/tmp/r", timeout=600)
            unit = tree / "tmp/r/etc/systemd/system/offsite-nightly.service"
            assert "ExecStart=/usr/sbin/offsite " in unit.read_text()
    assert not (BINFMT / ENTRY).exists()
