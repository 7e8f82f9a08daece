"""`make deb`: one Architecture: all package, the same bytes from two builds, lintian
clean; installed with apt into clean Debian 12 and Debian 13 trees (debootstrap), where it
runs on those releases' own Python libraries: every module imports, `offsite check` and
`offsite install --root` work. Removing keeps the configuration; purging keeps, and names,
what cannot be made again. (Upgrade and removal on a running system: test_package_life.)"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from offsite.run import run

from .guest import LIB, _base_rootfs, build_deb, chroot, in_chroot

IMPORT_ALL = (
    "import importlib, pkgutil, sys\n"
    f"sys.path.insert(0, {LIB!r})\n"
    "import offsite\n"
    "names = [m.name for m in pkgutil.walk_packages(offsite.__path__, 'offsite.')\n"
    "         if not m.name.endswith('__main__')]\n"
    "for name in names:\n"
    "    importlib.import_module(name)\n"
    "import pystemd, dbus_fast, pyudev, usb, yaml, blinkstick\n"
    "from importlib.metadata import version\n"
    "print(len(names), 'modules;', sys.version.split()[0],\n"
    "      *(f'{d} {version(d)}' for d in ('pystemd', 'dbus-fast', 'pyudev', 'pyusb', 'PyYAML')))\n"
)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built twice: the two must be the same bytes."""
    first = build_deb(tmp_path_factory.mktemp("dist1"))
    again = build_deb(tmp_path_factory.mktemp("dist2"))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, again)]
    assert digests[0] == digests[1], "two builds of the same tree differ"
    return first


@contextmanager
def fresh(suite: str, where: Path) -> Iterator[Path]:
    where.mkdir()
    # the guests' own debootstrapped trees (cached; offsite's Python libraries are not in
    # them: apt brings those with the package)
    run(["tar", "-C", where, "-xf", _base_rootfs(suite)], timeout=600)
    with chroot(where) as tree:
        yield tree


def test_the_package_is_one_for_every_architecture(deb: Path) -> None:
    fields = run(["dpkg-deb", "--field", deb, "Architecture", "Depends"]).stdout
    assert "Architecture: all" in fields
    assert "python3-pystemd" in fields and "python3-dbus-fast" in fields
    assert "systemd-cryptsetup | systemd (<< 256~)" in fields
    listing = run(["dpkg-deb", "--contents", deb]).stdout
    assert "./usr/sbin/offsite" in listing and "./usr/share/man/man8/offsite.8.gz" in listing
    assert "./usr/share/offsite/prometheus/offsite-alerts.yml" in listing
    assert ".so" not in listing and "/usr/bin/" not in listing  # no compiled code, root only


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_the_package_installs_and_runs_on_debians_own_libraries(deb: Path, tmp_path: Path,
                                                                suite: str) -> None:
    with fresh(suite, tmp_path / "root") as tree:
        shutil.copy(deb, tree / "tmp" / deb.name)
        in_chroot(tree, "apt-get", "update", "-qq")
        in_chroot(tree, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                  f"/tmp/{deb.name}")
        imported = in_chroot(tree, "python3", "-c", IMPORT_ALL).stdout
        print(suite, imported)
        assert "modules;" in imported
        assert in_chroot(tree, "offsite", "--version").stdout.strip().startswith("offsite")
        checked = in_chroot(tree, "offsite", "check")
        assert "/etc/offsite/offsite.yaml" in checked.stdout, checked
        installed = in_chroot(tree, "offsite", "install", "--root", "/tmp/r")
        unit = tree / "tmp/r/etc/systemd/system/offsite-nightly.service"
        assert "ExecStart=/usr/sbin/offsite " in unit.read_text(), installed
        # what the package itself carries
        assert "offsite:" in (tree / "etc/group").read_text()
        assert (tree / "var/lib/offsite").stat().st_mode & 0o777 == 0o700
        assert (tree / "usr/lib/udev/rules.d/70-offsite-blinkstick.rules").exists()
        assert (tree / "usr/lib/systemd/system/offsite-agent.service").exists()
        assert "complete -F _offsite offsite" in (
            tree / "usr/share/bash-completion/completions/offsite").read_text()
        conffiles = in_chroot(tree, "dpkg-query", "-W", "-f=${Conffiles}", "offsite").stdout
        assert "/etc/offsite/offsite.yaml" in conffiles

        # removed: the configuration stays (and a copy beside the state)
        in_chroot(tree, "apt-get", "remove", "-y", "-qq", "offsite")
        assert not (tree / "usr/lib/systemd/system/offsite-agent.service").exists()
        assert (tree / "etc/offsite/offsite.yaml").exists()
        assert (tree / "var/lib/offsite/offsite.yaml.saved").exists()
        # purged: what can be made again goes; header backups and keys stay, said where
        for kept in ("luks-headers/0000.img", "ssh/far/push"):
            (tree / "var/lib/offsite" / kept).parent.mkdir(parents=True, exist_ok=True)
            (tree / "var/lib/offsite" / kept).write_text("irreplaceable\n")
        (tree / "var/lib/offsite/history.db").write_text("x")
        purged = in_chroot(tree, "apt-get", "purge", "-y", "offsite")
        assert "kept in /var/lib/offsite" in purged.stdout and "luks-headers" in purged.stdout
        assert not (tree / "etc/offsite/offsite.yaml").exists()
        assert not (tree / "var/lib/offsite/history.db").exists()
        assert (tree / "var/lib/offsite/luks-headers/0000.img").exists()
        assert (tree / "var/lib/offsite/ssh/far/push").exists()
        assert (tree / "var/lib/offsite/offsite.yaml.saved").exists()
