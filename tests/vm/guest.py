"""Debian 12 and 13 guests under QEMU for what this machine's kernel lacks (device-mapper:
LUKS). `booted(workdir, suite)`: bookworm (12) unless a test asks for trixie (13).

The image: debootstrap of the packages below (cached by their list under CACHE), plus
offsite's own Debian package built here (`make deb`) and installed with apt, which brings
Debian's python3-pystemd, -dbus-fast, -pyudev, -usb and -yaml: every vm test runs offsite
as users run it, on those versions (rebuilt when the sources or the packaging change), as
a qcow2 base. Each boot gets a throw-away copy-on-write overlay, runs
`qemu-system-x86_64 -accel tcg`, and is controlled through QMP (hot-plug) and the guest
agent (commands, files). Teardown kills QEMU by its pid and removes the overlay, also after
an error; a QEMU left by a killed test run is found by its pid file and ended.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offsite_lab import wait

from offsite.run import Result, run, spawn

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/offsite-vm")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "cryptsetup", "kmod", "rsync",
            "borgbackup", "python3", "python3-venv", "linux-image-cloud-amd64",
            "qemu-guest-agent", "e2fsprogs", "util-linux", "mount",
            # other targets (cloud RAID, network block device over SSH)
            "mdadm", "nbd-client", "nbd-server", "openssh-server", "openssh-client")
SUITES = ("bookworm", "trixie")  # Debian 12, 13


def packages(suite: str) -> tuple[str, ...]:
    """What the guest of suite is debootstrapped with: Debian 13 has the cryptsetup
    generator and systemd-cryptsetup@.service in a package of their own; its guest also
    has Debian 13's borgmatic (1.9; test_debian13). Both also have Debian's standard
    kernel: USB (xHCI, usb-storage, uas, dummy_hcd, FunctionFS), which the cloud kernel
    lacks; booted by the USB tests only (booted(..., usb=True))."""
    if suite == "bookworm":
        return (*PACKAGES, "linux-image-amd64")
    return (*PACKAGES, "linux-image-amd64", "systemd-cryptsetup", "borgmatic")


BOOT_TIMEOUT = 240.0
MEMORY_MB = 1536


def tools_missing() -> str | None:
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install qemu-system-x86 qemu-utils debootstrap)"
    if os.geteuid() != 0:
        return "the vm tier needs root (debootstrap)"
    return None


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part + b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _building(name: str) -> contextlib.AbstractContextManager[None]:
    """Held while one cached thing (name) is looked for and built: two test processes
    (pytest-xdist's workers) that need the same image build it once, the second waits."""
    return _locked(CACHE / "locks" / f"{name}.lock")


def plain_rootfs(suite: str, arch: str = "amd64") -> Path:
    """A minimal debootstrapped Debian `suite` (bookworm, trixie) with apt, as a tarball
    cached by suite and architecture: where the package is installed as a user would, from
    nothing. (arm64 needs its binaries run by qemu-user: see test_arm64.)"""
    key = _digest(suite.encode(), arch.encode(), MIRROR.encode())
    tarball = CACHE / f"plain-{suite}-{arch}-{key}.tar"
    with _building(tarball.name):
        if not tarball.exists():
            _debootstrap_plain(suite, arch, key, tarball)
    return tarball


def _debootstrap_plain(suite: str, arch: str, key: str, tarball: Path) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"build-{suite}-{arch}-{key}"
    shutil.rmtree(work, ignore_errors=True)
    run(["debootstrap", f"--arch={arch}", "--variant=minbase", suite, work, MIRROR],
        timeout=3600)
    run(["tar", "-C", work, "-cf", f"{tarball}.tmp", "."], timeout=600)
    os.replace(f"{tarball}.tmp", tarball)
    shutil.rmtree(work, ignore_errors=True)


def _base_rootfs(suite: str = "bookworm") -> Path:
    """The debootstrapped tree, as a tarball cached by the package list."""
    key = _digest(" ".join(packages(suite)).encode(), MIRROR.encode(),
                  *([suite.encode()] if suite != "bookworm" else []))
    tarball = CACHE / (f"rootfs-{key}.tar" if suite == "bookworm" else f"rootfs-{suite}-{key}.tar")
    with _building(f"rootfs-{suite}"):
        if not tarball.exists():
            _debootstrap_base(suite, key, tarball)
    return tarball


def _debootstrap_base(suite: str, key: str, tarball: Path) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"build-{key}"
    shutil.rmtree(work, ignore_errors=True)
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(packages(suite)), suite,
         work, MIRROR], timeout=1800)
    (work / "etc/hostname").write_text("offsite-vm\n")
    (work / "etc/fstab").write_text("/dev/vda / ext4 rw 0 1\n")
    run(["chroot", work, "passwd", "-d", "root"])
    # no network in the guest: nothing should wait for it
    run(["chroot", work, "systemctl", "mask", "systemd-networkd-wait-online.service",
         "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
         # tests start these themselves, each with its own settings
         "mdmonitor.service", "mdcheck_start.timer", "mdcheck_continue.timer",
         "mdmonitor-oneshot.timer", "nbd-server.service", "ssh.service", "ssh.socket"],
        check=False)
    run(["tar", "-C", work, "-cf", f"{tarball}.tmp", "."], timeout=600)
    os.replace(f"{tarball}.tmp", tarball)
    shutil.rmtree(work, ignore_errors=True)
    for old in CACHE.glob("rootfs-*.tar"):  # an earlier package list's: one kept per suite
        same_suite = old.name.startswith(f"rootfs-{suite}-") if suite != "bookworm" else \
            not old.name.startswith(tuple(f"rootfs-{s}-" for s in SUITES))
        if same_suite and old != tarball:
            old.unlink()


LIB = "/usr/share/offsite/lib"  # where the package keeps offsite's modules


def python(code: str, *args: str) -> list[str]:
    """argv that runs code with the guest's python3 and the installed offsite's modules."""
    return ["/usr/bin/python3", "-c", f"import sys\nsys.path.insert(0, {LIB!r})\n{code}", *args]


def _sources_digest() -> str:
    files = sorted(p for d in ("src", "packaging", "udev", "examples") for p in (ROOT / d).rglob("*")
                   if p.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info")
                                              for part in p.parts))
    files.append(ROOT / "pyproject.toml")
    return _digest(*[p.read_bytes() for p in files])


def build_deb(out: Path) -> Path:
    """offsite's package, built by packaging/build-deb (lintian-checked) into out."""
    run([ROOT / "packaging" / "build-deb", out], timeout=1800)
    return next(out.glob("offsite_*_all.deb"))


@contextlib.contextmanager
def chroot(tree: Path) -> Iterator[Path]:
    """A Debian tree with /proc, /sys and /dev, and this machine's resolver, for apt."""
    shutil.copy("/etc/resolv.conf", tree / "etc/resolv.conf")
    mounted: list[Path] = []
    try:
        for kind, name in (("proc", "proc"), ("sysfs", "sys")):
            run(["mount", "-t", kind, kind, tree / name])
            mounted.append(tree / name)
        run(["mount", "--bind", "/dev", tree / "dev"])
        mounted.append(tree / "dev")
        yield tree
    finally:
        for point in reversed(mounted):
            run(["umount", "--lazy", point], check=False)


def in_chroot(tree: Path, *argv: str | Path, check: bool = True, timeout: float = 900) -> Result:
    return run(["chroot", tree, *argv], check=check, timeout=timeout,
               env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


@dataclass(frozen=True)
class Image:
    disk: Path
    kernel: Path  # the cloud kernel
    initrd: Path
    usb_kernel: Path  # Debian's standard kernel: USB host, dummy_hcd, FunctionFS
    usb_initrd: Path


def image(suite: str = "bookworm") -> Image:
    """The guest's base image with offsite installed; built when its inputs changed."""
    tarball = _base_rootfs(suite)
    key = _digest(tarball.name.encode(), _sources_digest().encode())
    out = CACHE / f"image-{suite}-{key}"
    with _building(f"image-{suite}"):
        if not (out / "base.qcow2").exists():
            _install_image(suite, tarball, out)
    return Image(out / "base.qcow2", out / "vmlinuz-cloud", out / "initrd-cloud",
                 out / "vmlinuz-standard", out / "initrd-standard")


def _install_image(suite: str, tarball: Path, out: Path) -> None:
    """The rootfs with offsite's package installed by apt, as out/base.qcow2 and the
    kernels beside it."""
    done = out / "base.qcow2"
    for old in CACHE.glob("image-*"):  # earlier sources': one is kept per suite
        if old.name.startswith(f"image-{suite}-") or not old.name.startswith(
                tuple(f"image-{s}-" for s in SUITES)):
            shutil.rmtree(old, ignore_errors=True)
    tree = out / "rootfs"
    tree.mkdir(parents=True)
    run(["tar", "-C", tree, "-xf", tarball], timeout=600)
    deb = build_deb(out / "deb")
    shutil.copy(deb, tree / "tmp" / deb.name)
    with chroot(tree):
        in_chroot(tree, "apt-get", "update", "-qq")
        in_chroot(tree, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                  f"/tmp/{deb.name}")
        in_chroot(tree, "apt-get", "clean")
    (tree / "tmp" / deb.name).unlink()
    (tree / "etc/resolv.conf").unlink(missing_ok=True)
    for flavour, kernel in _kernels(tree / "boot").items():
        shutil.copy(kernel, out / f"vmlinuz-{flavour}")
        shutil.copy(kernel.with_name(kernel.name.replace("vmlinuz", "initrd.img")),
                    out / f"initrd-{flavour}")
    raw = out / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(3 * 1024**3)
    run(["mkfs.ext4", "-q", "-F", "-d", tree, raw], timeout=600)
    run(["qemu-img", "convert", "-O", "qcow2", raw, f"{done}.tmp"], timeout=600)
    os.replace(f"{done}.tmp", done)
    raw.unlink()
    shutil.rmtree(tree)


def _kernels(boot: Path) -> dict[str, Path]:
    """The cloud kernel (most tests: it boots fastest) and, where the suite has it,
    Debian's standard one (USB)."""
    found = sorted(boot.glob("vmlinuz-*"))
    cloud = [k for k in found if k.name.endswith("-cloud-amd64")]
    standard = [k for k in found if not k.name.endswith("-cloud-amd64")]
    if not cloud:
        raise GuestError(f"the image lacks the cloud kernel: found {[k.name for k in found]}")
    return {"cloud": cloud[-1], **({"standard": standard[-1]} if standard else {})}


class GuestError(Exception):
    pass


class _Socket:
    """A JSON line protocol over a unix socket (QMP and the guest agent both speak it)."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout: float) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise GuestError("the connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        data: dict[str, Any] = json.loads(line)
        return data

    def close(self) -> None:
        self.sock.close()


@dataclass
class Guest:
    workdir: Path
    process: subprocess.Popen[bytes]
    qmp: _Socket
    plugged: dict[str, Path] = field(default_factory=dict)

    # -- QMP --------------------------------------------------------------------------------
    def command(self, name: str, **arguments: Any) -> Any:
        self.qmp.send({"execute": name, "arguments": arguments})
        while True:
            reply = self.qmp.receive(60)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise GuestError(f"QMP {name}: {reply['error'].get('desc')}")

    def plug(self, image: Path, node: str, bus: str = "virtio", wait: bool = True) -> str:
        """Hot-plug image as a disk, as a drive being plugged in; returns its device path in
        the guest (by its serial, which is node) once udev has made it (at once without
        wait). bus: "virtio", or on a guest booted with usb: "usb-storage" (USB mass
        storage, bulk-only) or "uas" (USB attached SCSI)."""
        self.command("blockdev-add", **{"node-name": node, "driver": "raw", "file": {
            "driver": "file", "filename": str(image)}})
        if bus == "virtio":
            self.command("device_add", driver="virtio-blk-pci", drive=node, id=f"dev-{node}",
                         serial=node)
            path = f"/dev/disk/by-id/virtio-{node}"
        elif bus == "usb-storage":
            self.command("device_add", driver="usb-storage", drive=node, id=f"dev-{node}",
                         serial=node)
            path = f"/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_{node}-0:0"
        elif bus == "uas":
            # QEMU leaves a hot-plugged usb-uas detached until told (its disk comes after it)
            self.command("device_add", driver="usb-uas", id=f"dev-{node}", serial=node)
            self.command("device_add", driver="scsi-hd", drive=node, id=f"disk-{node}",
                         bus=f"dev-{node}.0", serial=node)
            self.command("qom-set", path=f"/machine/peripheral/dev-{node}", property="attached",
                         value=True)
            path = f"/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_{node}-0:0"
        else:
            raise ValueError(f"no such bus: {bus}")
        self.plugged[node] = image
        if wait:
            self.wait_until(f"{path} to appear", lambda: self.run(
                ["test", "-e", path], check=False).returncode == 0, 120)
        return path

    def unplug(self, node: str, timeout: float = 60.0) -> None:
        """Pull the drive out (its USB device, for a USB drive), and wait until QEMU lets
        go of its image."""
        self.command("device_del", id=f"dev-{node}")
        deadline = time.monotonic() + timeout
        mine = re.compile(rf"(^|/)(dev|disk)-{re.escape(node)}($|/)")
        while any(mine.search(d.get("qdev") or "") for d in self.command("query-block")):
            if time.monotonic() > deadline:
                raise GuestError(f"the guest did not release {node}")
            time.sleep(0.3)
        # the device is gone before QEMU lets go of its node: delete it once it may be
        # (a node left behind makes the next plug under the same name fail as a duplicate)
        while True:
            try:
                self.command("blockdev-del", **{"node-name": node})
                break
            except GuestError:
                nodes = self.command("query-named-block-nodes", flat=True)
                if not any(n.get("node-name") == node for n in nodes):
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self.plugged.pop(node, None)

    # -- the guest agent ------------------------------------------------------------------
    def _agent(self, name: str, timeout: float = 60.0, **arguments: Any) -> Any:
        qga = _Socket(self.workdir / "qga.sock", timeout)
        try:
            # A caller that gave up waiting (a boot-time ping) leaves its reply queued in
            # the channel, and the next caller would read it as its own: sync on a fresh
            # token first and drop whatever comes before its echo.
            token = secrets.randbelow(2**31)
            qga.send({"execute": "guest-sync", "arguments": {"id": token}})
            while True:
                try:
                    if qga.receive(timeout).get("return") == token:
                        break
                except ValueError:  # a reply cut off when its caller hung up
                    continue
            qga.send({"execute": name, "arguments": arguments} if arguments else {"execute": name})
            reply = qga.receive(timeout)
        finally:
            qga.close()
        if "error" in reply:
            raise GuestError(f"guest agent {name}: {reply['error'].get('desc')}")
        return reply["return"]

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 300.0,
            input: str | None = None) -> Result:
        """Run argv in the guest and wait for it (as root, through the guest agent)."""
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input.encode()).decode()
        pid = self._agent("guest-exec", **args)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self._agent("guest-exec-status", pid=pid)
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise GuestError(f"{argv} did not finish within {timeout:g} s in the guest")
            time.sleep(0.2)
        out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
        code = int(status.get("exitcode", -1 if status.get("signal") else 0))
        result = Result(tuple(argv), code, out, err)
        if check and code != 0:
            raise GuestError(f"in the guest, {' '.join(argv)} failed with exit code {code}:\n"
                             f"{err or out}")
        return result

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        self.run(["sh", "-c", f"mkdir -p \"$(dirname '{path}')\" && base64 -d > '{path}' && "
                  f"chmod {mode:o} '{path}'"], input=base64.b64encode(data).decode())

    def wait_until(self, what: str, predicate: Any, timeout: float = 120.0) -> None:
        wait.wait_until(what, predicate, timeout, every=0.5, error=GuestError)


RUNNING = CACHE / "running"  # <test process pid>-<QEMU pid>: each QEMU a test process started


def _end_stale() -> None:
    """QEMUs left by a killed test run: ended by the pids they recorded (if still ours).
    Those of a test process still alive (another worker of this run) are left alone."""
    for record in RUNNING.glob("*-*"):
        owner, _, pid = record.name.partition("-")
        if Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError, ValueError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"qemu-system-x86_64" in cmdline and b"offsite-vm" in cmdline:
                os.kill(int(pid), signal.SIGKILL)
        record.unlink(missing_ok=True)


def _qemu(img: Image, usb: bool, disk: Path, workdir: Path, *extra: str) -> list[str]:
    """The one QEMU command line of a guest: a boot and a restore must describe the same
    machine (the saved state names devices, not files)."""
    # no SVM: the guest would load kvm_amd, and a guest saved while that module loads
    # (cross-CPU code patching) came back with a double fault once (Debian 13's kernel)
    return ["qemu-system-x86_64", "-name", "offsite-vm", "-accel", "tcg", "-machine", "pc",
            "-cpu", "qemu64,-svm", "-m", str(MEMORY_MB), "-smp", "2", "-nographic", "-no-reboot",
            "-kernel", str(img.usb_kernel if usb else img.kernel),
            "-initrd", str(img.usb_initrd if usb else img.initrd),
            *(["-device", "qemu-xhci,id=xhci"] if usb else []),
            "-append", "root=/dev/vda rw console=ttyS0 quiet",
            "-drive", f"file={disk},if=virtio,format=qcow2",
            "-qmp", f"unix:{workdir}/qmp.sock,server=on,wait=off",
            "-chardev", f"socket,path={workdir}/qga.sock,server=on,wait=off,id=qga0",
            "-device", "virtio-serial", "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-serial", f"file:{workdir}/console.log", "-monitor", "none", "-display", "none",
            *extra]


@contextlib.contextmanager
def _running(argv: list[str], workdir: Path) -> Iterator[Guest]:
    """QEMU started with argv and its QMP connected; killed (by its pid) on the way out."""
    _end_stale()
    process = spawn(argv, stdout=workdir / "qemu.out")
    RUNNING.mkdir(parents=True, exist_ok=True)
    record = RUNNING / f"{os.getpid()}-{process.pid}"
    record.touch()
    qmp = None
    try:
        qmp = _Socket(workdir / "qmp.sock", 30)
        qmp.receive(30)  # the greeting
        qmp.send({"execute": "qmp_capabilities"})
        qmp.receive(30)
        yield Guest(workdir, process, qmp)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        record.unlink(missing_ok=True)
        if qmp is not None:
            qmp.close()


def _wait_for_boot(guest: Guest) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            guest._agent("guest-ping", timeout=5)
            state = guest.run(["systemctl", "is-system-running", "--wait"], check=False,
                              timeout=BOOT_TIMEOUT).stdout.strip()
            break
        except (OSError, GuestError):
            if time.monotonic() > deadline or guest.process.poll() is not None:
                console = guest.workdir / "console.log"
                raise GuestError("the guest did not boot; its console: "
                                 + console.read_text(errors="replace")[-3000:]) from None
            time.sleep(1)
    if state not in ("running", "degraded"):
        raise GuestError(f"the guest reached {state!r}")


@dataclass(frozen=True)
class _Frozen:
    """A guest stopped just after its boot: its disk (an overlay on the image, never written
    again) and its memory and devices as QEMU saved them."""
    disk: Path
    state: Path


_frozen: dict[tuple[Path, bool], _Frozen] = {}  # by image and kernel


def _run_owner() -> int:
    """The process whose test run this is: pytest itself, or under pytest-xdist the
    controller whose workers (its children) share the run's frozen boots."""
    return os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()


def _frozen_dir() -> Path:
    """This test run's frozen boots, removed when it ends (discard_frozen); those of a
    killed run are removed the next time (their owner's pid is gone)."""
    mine = CACHE / f"frozen-{_run_owner()}"
    if not mine.exists():
        for other in CACHE.glob("frozen-*"):
            pid = other.name.removeprefix("frozen-")
            if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
                shutil.rmtree(other, ignore_errors=True)
        mine.mkdir(parents=True, exist_ok=True)
        if _run_owner() == os.getpid():
            atexit.register(discard_frozen)
    return mine


def discard_frozen() -> None:
    """The run's frozen boots removed, by the process that owns the run: at the end of its
    test session (vm conftest), and at its exit for one that stops before that."""
    _frozen.clear()
    if _run_owner() == os.getpid():
        shutil.rmtree(CACHE / f"frozen-{os.getpid()}", ignore_errors=True)


def _freeze(img: Image, usb: bool) -> _Frozen:
    """Boot once (per image and kernel, per test run) and keep the booted machine: every
    guest after it starts from that moment instead of booting again (1 s instead of 30).
    Two workers of a run share it: the first to need it boots it, the other waits."""
    key = (img.disk, usb)  # an image rebuilt meanwhile (its sources changed) boots again
    if key not in _frozen:
        name = f"{img.disk.parent.name}-{'usb' if usb else 'cloud'}"
        workdir = _frozen_dir() / name
        frozen = _Frozen(workdir / "disk.qcow2", workdir / "state")
        with _locked(_frozen_dir() / f"{name}.lock"):
            if not (workdir / "saved").exists():
                shutil.rmtree(workdir, ignore_errors=True)  # a save that failed half-way
                workdir.mkdir()
                _boot_and_save(img, usb, workdir, frozen)
                (workdir / "saved").touch()
        _frozen[key] = frozen
    return _frozen[key]


def _boot_and_save(img: Image, usb: bool, workdir: Path, frozen: _Frozen) -> None:
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img.disk, frozen.disk])
    with _running(_qemu(img, usb, frozen.disk, workdir), workdir) as guest:
        _wait_for_boot(guest)
        # saved quiet: udev's events handled, no module still loading
        guest.run(["udevadm", "settle", "--timeout=120"], timeout=150)
        guest.wait_until("modules to finish loading", lambda: " Loading " not in guest.run(
            ["cat", "/proc/modules"]).stdout, 60)
        guest.command("migrate-set-parameters", **{"max-bandwidth": 2**40})
        guest.command("stop")
        guest.command("migrate", uri=f"exec:cat > {frozen.state}")
        _wait_migration(guest, "saving the booted guest")


def _wait_migration(guest: Guest, what: str) -> None:
    deadline = time.monotonic() + 120
    while (status := guest.command("query-migrate").get("status")) != "completed":
        if status == "failed" or time.monotonic() > deadline:
            raise GuestError(f"{what}: migration {status}: {guest.command('query-migrate')}")
        time.sleep(0.1)


@contextlib.contextmanager
def _started(img: Image, usb: bool, workdir: Path, frozen: _Frozen | None) -> Iterator[Guest]:
    """A guest on an overlay of its own: restored from frozen, or booted (frozen None)."""
    overlay = workdir / "overlay.qcow2"
    base = frozen.disk if frozen else img.disk
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay])
    try:
        extra = ("-incoming", "defer") if frozen else ()
        with _running(_qemu(img, usb, overlay, workdir, *extra), workdir) as guest:
            if frozen:
                guest.command("migrate-incoming", uri=f"exec:cat {frozen.state}")
                _wait_migration(guest, "restoring the booted guest")
                guest.command("cont")
                # (not guest-set-time: it also runs hwclock, which Debian 13 does not install)
                guest.run(["date", "--set", f"@{time.time():.6f}"], timeout=60)
            else:
                _wait_for_boot(guest)
            yield guest
    finally:
        overlay.unlink(missing_ok=True)


@contextlib.contextmanager
def booted(workdir: Path, suite: str = "bookworm", usb: bool = False) -> Iterator[Guest]:
    """A booted guest; with usb, on Debian's standard kernel with an xHCI controller that
    plug(..., bus="usb-storage" or "uas") plugs USB disks into.

    The first guest of a suite (and kernel) in a test run boots and is saved (_freeze);
    every guest, that one too, is a new QEMU restored from it onto an overlay of its own:
    each test has a machine nothing else ran on, booted once for the run. Its clock is set
    to the host's on the way in (it was stopped meanwhile). A restore that does not answer
    (its console is kept as console-restore.log) is replaced by a boot, with a warning
    (in pytest's summary)."""
    img = image(suite)
    if usb and not img.usb_kernel.exists():
        raise GuestError(f"the {suite} guest has no kernel with USB (see packages())")
    frozen = _freeze(img, usb)
    with contextlib.ExitStack() as stack:
        try:
            guest = stack.enter_context(_started(img, usb, workdir, frozen))
        except (GuestError, OSError) as exc:
            stack.close()
            console = workdir / "console.log"
            if console.exists():
                console.rename(workdir / "console-restore.log")
            warnings.warn(f"restoring the booted {suite} guest failed ({exc}); booted it "
                          "instead", RuntimeWarning, stacklevel=1)
            guest = stack.enter_context(_started(img, usb, workdir, None))
        yield guest
