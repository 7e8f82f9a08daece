"""`make deb`: the package builds, lintian finds no error, and it installs with apt into a
clean Debian 12 tree (debootstrap, the vm tier's cached base), where `offsite check` and
`offsite install --root` work; removing and purging it leave no unit behind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from offsite.run import Result, run

from .guest import ROOT, _base_rootfs


@contextmanager
def chroot_tree(where: Path) -> Iterator[Path]:
    """The debootstrapped Debian 12 tree, with /proc, /sys and /dev for apt and dpkg."""
    where.mkdir()
    run(["tar", "-C", where, "-xf", _base_rootfs()], timeout=600)
    shutil.copy("/etc/resolv.conf", where / "etc/resolv.conf")
    mounted: list[Path] = []
    try:
        for kind, name in (("proc", "proc"), ("sysfs", "sys")):
            run(["mount", "-t", kind, kind, where / name])
            mounted.append(where / name)
        run(["mount", "--bind", "/dev", where / "dev"])
        mounted.append(where / "dev")
        yield where
    finally:
        for point in reversed(mounted):
            run(["umount", "--lazy", point], check=False)


def inside(tree: Path, *argv: str, check: bool = True, timeout: float = 900) -> Result:
    return run(["chroot", tree, *argv], check=check, timeout=timeout,
               env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def test_the_package_builds_lintian_clean_and_installs_on_debian_12(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    built = run([ROOT / "packaging" / "build-deb", out], timeout=1800)
    assert "lintian reports no errors" in built.stdout, built.stdout + built.stderr
    deb = next(out.glob("offsite_*_amd64.deb"))
    with chroot_tree(tmp_path / "root") as tree:
        assert not (tree / "usr/bin/offsite").exists()
        shutil.copy(deb, tree / "tmp" / deb.name)
        inside(tree, "apt-get", "update", "-qq")
        inside(tree, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
               f"/tmp/{deb.name}")
        assert inside(tree, "offsite", "--version").stdout.strip().startswith("offsite")
        checked = inside(tree, "offsite", "check")
        assert "/etc/offsite/offsite.yaml" in checked.stdout, checked
        installed = inside(tree, "offsite", "install", "--root", "/tmp/r")
        assert (tree / "tmp/r/etc/systemd/system/offsite-nightly.timer").exists(), installed
        # what the package itself carries
        assert "offsite:" in (tree / "etc/group").read_text()
        assert (tree / "var/lib/offsite").stat().st_mode & 0o777 == 0o700
        assert (tree / "usr/lib/udev/rules.d/70-offsite-blinkstick.rules").exists()
        assert (tree / "usr/lib/systemd/system/offsite-agent.service").exists()
        assert (tree / "usr/share/man/man1/offsite.1.gz").exists()
        assert "complete -F _offsite offsite" in (
            tree / "usr/share/bash-completion/completions/offsite").read_text()
        conffiles = inside(tree, "dpkg-query", "-W", "-f=${Conffiles}", "offsite").stdout
        assert "/etc/offsite/offsite.yaml" in conffiles
        # removed: the conffile stays; purged: it goes, with the state
        inside(tree, "apt-get", "remove", "-y", "-qq", "offsite")
        assert not (tree / "usr/lib/systemd/system/offsite-agent.service").exists()
        assert (tree / "etc/offsite/offsite.yaml").exists()
        inside(tree, "apt-get", "purge", "-y", "-qq", "offsite")
        assert not (tree / "etc/offsite/offsite.yaml").exists()
        assert not (tree / "var/lib/offsite").exists()
