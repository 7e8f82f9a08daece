"""A throw-away real systemd: PID 1 of a private PID and mount namespace.

It boots on a copy-on-write overlay of the host root (see data/sandbox-boot.sh), with its
own journald, D-Bus system bus and systemd-udevd. Drives are loop devices over image
files, so plugging is ``losetup`` and unplugging is ``losetup -d``. Used by the system
tests, by ``offsite demo`` and by ``offsite sandbox`` for people trying units.

Only one sandbox runs at a time (they share /dev and udev): a lock file serialises
them. Teardown detaches the loop devices, halts systemd by its PID, and removes what the
sandbox's udevd and systemd left in the host's /dev/disk and cgroup tree. A state file
lets the next sandbox clean up after one whose owner was killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from offsite import locks
from offsite.errors import Fatal
from offsite.run import Arg, CommandError, Result, interactive, run, spawn
from offsite_lab import wait

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/offsite-sandbox")
LOCK_FILE = STATE_DIR / "lock"
STATE_FILE = STATE_DIR / "state.json"
# Host trees the sandbox's udevd and systemd write into; restored on teardown.
DEV_DISK = Path("/dev/disk")
CGROUP2_CANDIDATES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
IMAGES_INSIDE = Path("/var/lib/offsite-sandbox")
# Directories the boot script mounts afresh inside (not temporary files of ours).
REMOUNTED = (Path("/tmp"), Path("/run"))  # noqa: S108
BOOT_TIMEOUT = 60.0
HALT_TIMEOUT = 15.0


def _host_cgroup2() -> Path | None:
    for path in CGROUP2_CANDIDATES:
        if (path / "cgroup.procs").exists() and (path / "cgroup.controllers").exists():
            return path
    return None


def _tree(root: Path | None) -> list[str]:
    """Every path under root (relative), for a before/after comparison."""
    if root is None or not root.exists():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            out.append(os.path.normpath(os.path.join(rel, name)))
    return sorted(out)


def _dirs(root: Path | None) -> list[str]:
    if root is None or not root.exists():
        return []
    return sorted(
        os.path.normpath(os.path.relpath(os.path.join(d, n), root))
        for d, names, _ in os.walk(root)
        for n in names
    )


def _remove_new(root: Path, before: Sequence[str], *, dirs_only: bool = False) -> None:
    """Remove what appeared under root since `before`: deepest first, empty dirs only."""
    old = set(before)
    new = [p for p in (_dirs(root) if dirs_only else _tree(root)) if p not in old]
    for rel in sorted(new, key=lambda p: p.count("/"), reverse=True):
        path = root / rel
        try:
            if path.is_symlink() or (path.is_file() and not dirs_only):
                path.unlink()
            elif path.is_dir():
                path.rmdir()
        except OSError as exc:  # busy cgroup, or a dir someone else filled meanwhile
            log.debug("left %s in place: %s", path, exc.strerror)
    if not dirs_only and not before and root.exists():
        with contextlib.suppress(OSError):
            root.rmdir()


@dataclass
class Sandbox:
    workdir: Path
    pid1: int  # host PID of the sandbox's systemd
    outer_pid: int  # host PID of unshare (its parent)
    console: Path  # systemd's console output
    loops: list[str] = field(default_factory=list)

    # -- looking in ---------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The sandbox's / as seen from the host."""
        return Path(f"/proc/{self.pid1}/root")

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.root}/run/dbus/system_bus_socket"

    def host_path(self, inside: Arg) -> Path:
        return self.root / str(inside).lstrip("/")

    def write(self, inside: Arg, text: str | bytes, mode: int = 0o644) -> Path:
        path = self.host_path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        path.chmod(mode)
        return path

    # -- running things inside ------------------------------------------------------------
    def run(self, argv: Sequence[Arg], *, check: bool = True, timeout: float = 120.0,
            env: dict[str, str] | None = None, input: str | None = None) -> Result:
        """Run a command in the sandbox's mount and PID namespaces (not under its systemd)."""
        return run(["nsenter", "-t", str(self.pid1), "-m", "-p", "--", *argv], check=check,
                   timeout=timeout, env=env, input=input)

    def systemctl(self, *args: str, check: bool = True) -> Result:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def systemd_run(self, argv: Sequence[Arg], *, check: bool = True, timeout: float = 120.0,
                    properties: Sequence[str] = (), pipe: bool = True) -> Result:
        """Run a command as a transient service of the sandbox's systemd and wait for it.

        With pipe its output comes back to us; without, it goes to the journal as a
        service's output does.
        """
        props = [f"--property={p}" for p in properties]
        return self.run(["systemd-run", "--quiet", "--wait", "--collect",
                         *(["--pipe"] if pipe else []), *props, "--", *argv],
                        check=check, timeout=timeout)

    def processes(self, unit: str) -> list[tuple[int, list[bytes]]]:
        """(host pid, argv) of each process in the unit's control group now (none when the
        unit is not running)."""
        group = self.show(unit, "ControlGroup")
        try:
            pids = self.host_path(f"/sys/fs/cgroup{group}/cgroup.procs").read_text().split() \
                if group else []
        except OSError:
            return []
        out = []
        for pid in pids:
            try:
                out.append((int(pid), Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")))
            except OSError:
                continue  # ended meanwhile
        return out

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--property", prop, "--value", "--", unit).stdout.strip()

    def journal(self, *matches: str, unit: str | None = None) -> str:
        args = ["journalctl", "--no-pager", "--quiet", "-o", "cat"]
        if unit:
            args += ["--unit", unit]
        return self.run([*args, *matches]).stdout

    def entries(self, *matches: str) -> list[dict[str, str]]:
        """Journal entries inside, with all their fields (journalctl -o json); first makes
        journald store everything logged so far (a unit may end before its last lines are)."""
        self.run(["journalctl", "--sync"], check=False)
        out = self.run(["journalctl", "--no-pager", "-o", "json", *matches]).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def start_results(self, unit: str) -> list[str]:
        """How each start job of unit ended (done, failed, ...), from systemd's own log.

        Read from the journal because a finished static unit is unloaded, and with it the
        properties `systemctl show` would report."""
        return [e["JOB_RESULT"] for e in self.entries("_PID=1", f"UNIT={unit}", "JOB_TYPE=start")
                if "JOB_RESULT" in e]

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait for a condition inside, failing with a message naming `what`."""
        wait.wait_until(what, predicate, timeout, error=lambda text: Fatal(f"sandbox: {text}"))

    def wait_for_state(self, unit: str, states: Sequence[str], timeout: float = 30.0) -> str:
        seen = ""

        def reached() -> bool:
            nonlocal seen
            seen = self.show(unit, "ActiveState")
            return seen in states

        self.wait_until(f"{unit} to become {' or '.join(states)} (last: {seen})", reached, timeout)
        return seen

    def install_unit(self, name: str, text: str, *, enable: bool = False) -> None:
        self.write(f"/etc/systemd/system/{name}", text)
        self.systemctl("daemon-reload")
        if enable:
            self.systemctl("enable", "--", name)

    # -- drives ---------------------------------------------------------------------------
    def make_drive(self, name: str, uuid: str, *, size_mb: int = 64, fstype: str = "ext4",
                   label: str = "") -> Path:
        """An image file with a filesystem of the given UUID; returns its path inside."""
        inside = IMAGES_INSIDE / f"{name}.img"
        image = self.host_path(inside)
        image.parent.mkdir(parents=True, exist_ok=True)
        with image.open("wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        argv: list[Arg]
        if fstype == "ext4":
            argv = ["mkfs.ext4", "-q", "-U", uuid, *(["-L", label] if label else []), image]
        elif fstype == "xfs":
            argv = ["mkfs.xfs", "-q", "-m", f"uuid={uuid}", *(["-L", label] if label else []),
                    image]
        else:
            raise Fatal(f"sandbox: cannot make a {fstype} drive")
        run(argv)
        return inside

    def plug(self, image_inside: Path) -> str:
        """Attach the image as a loop device (a drive being plugged in); returns /dev/loopN."""
        device = self.run(["losetup", "--find", "--show", "--", str(image_inside)]).stdout.strip()
        self.loops.append(device)
        self._save_state()
        return device

    def unplug(self, device: str) -> None:
        self.run(["losetup", "--detach", device])
        self.loops.remove(device)
        self._save_state()

    # -- bookkeeping ----------------------------------------------------------------------
    def _save_state(self, extra: dict[str, object] | None = None) -> None:
        state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
        state.update({"pid1": self.pid1, "outer_pid": self.outer_pid, "loops": self.loops,
                      "workdir": str(self.workdir), "console": str(self.console)})
        state.update(extra or {})
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(STATE_FILE)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _is_our_systemd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"--unit=offsite-sandbox.target" in cmdline


def _detach_loop(device: str) -> None:
    with contextlib.suppress(CommandError):
        run(["losetup", "--detach", device], timeout=30)


def _halt(pid1: int) -> None:
    if _alive(pid1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signal.SIGRTMIN + 3)  # systemd's "halt" in a container
        if not _wait_gone(pid1, HALT_TIMEOUT):
            log.warning("sandbox systemd %d did not halt in %g s; killing it", pid1, HALT_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)  # takes the whole PID namespace with it
            _wait_gone(pid1, HALT_TIMEOUT)


def _restore_host(state: dict[str, object]) -> None:
    """Undo what a sandbox's udevd and systemd wrote into the shared /dev and cgroup tree."""
    dev_before = state.get("dev_disk_before")
    if isinstance(dev_before, list):
        _remove_new(DEV_DISK, dev_before)
    cgroup_root = state.get("cgroup_root")
    cgroups_before = state.get("cgroups_before")
    if isinstance(cgroup_root, str) and isinstance(cgroups_before, list):
        _remove_new(Path(cgroup_root), cgroups_before, dirs_only=True)


def _recover_stale() -> None:
    """Clean up after a sandbox whose owner died without tearing it down."""
    if not STATE_FILE.exists():
        return
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        STATE_FILE.unlink(missing_ok=True)
        return
    log.warning("cleaning up after an earlier sandbox (systemd pid %s)", state.get("pid1"))
    pid1 = state.get("pid1")
    for device in state.get("loops", []):
        _detach_loop(str(device))
    if isinstance(pid1, int) and _is_our_systemd(pid1):
        _halt(pid1)
    _restore_host(state)
    workdir = state.get("workdir")
    if isinstance(workdir, str):
        with contextlib.suppress(OSError):
            os.rmdir(workdir)
    console = state.get("console")
    if isinstance(console, str) and Path(console).name.startswith("offsite-sandbox-"):
        Path(console).unlink(missing_ok=True)
    STATE_FILE.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(timeout: float = 600.0) -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with locks.file_lock(LOCK_FILE, timeout) as got:
        if not got:
            raise Fatal("sandbox: another sandbox has held the lock for "
                        f"{timeout:g} s ({LOCK_FILE})")
        yield


def _require_root() -> None:
    if os.geteuid() != 0:
        raise Fatal("the sandbox needs root (it boots systemd in new namespaces)",
                    "run it as root, e.g. sudo make demo")
    if not Path("/lib/systemd/systemd").exists():
        raise Fatal("systemd is not installed", "apt-get install systemd udev dbus")


def _find_pid1(outer: int, proc_poll: Callable[[], int | None], timeout: float) -> int:
    """The host PID of the systemd that unshare forked (once the boot script exec'd it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_poll() is not None:
            raise Fatal("sandbox: the boot script exited before systemd started")
        for child in _children(outer):
            if _comm(child) == "systemd":
                return child
        time.sleep(0.02)
    raise Fatal(f"sandbox: systemd did not start within {timeout:g} s")


def _own_trees() -> list[Path]:
    """Where this offsite and its Python live, when the overlay of / would not show them
    (another filesystem, or under /tmp and /run, which the sandbox mounts afresh)."""
    root_dev = os.stat("/").st_dev
    package = Path(__file__).resolve().parent
    source = package.parents[1] if package.parent.name == "lab" else package  # the checkout
    trees: list[Path] = []
    for tree in (source, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()):
        hidden = any(tree.is_relative_to(d) for d in REMOUNTED)
        if (hidden or os.stat(tree).st_dev != root_dev) and not any(
            tree.is_relative_to(t) for t in trees
        ):
            trees.append(tree)
    return trees


@contextlib.contextmanager
def booted(timeout: float = BOOT_TIMEOUT, keep: Mapping[str, Path] | None = None
           ) -> Iterator[Sandbox]:
    """Boot a sandbox, yield it, and always tear it down (also on error or Ctrl-C).

    keep: directories inside (e.g. /var/lib/offsite) backed by host directories, so what
    the sandbox writes there survives into the next sandbox booted with the same keep (a
    reboot)."""
    _require_root()
    with _locked():
        _recover_stale()
        cgroup_root = _host_cgroup2()
        before: dict[str, object] = {
            "dev_disk_before": _tree(DEV_DISK),
            "cgroup_root": str(cgroup_root) if cgroup_root else None,
            "cgroups_before": _dirs(cgroup_root),
        }
        workdir = Path(tempfile.mkdtemp(prefix="offsite-sandbox-"))
        console = Path(tempfile.mkstemp(prefix="offsite-sandbox-", suffix=".log")[1])
        script = resources.files("offsite_lab") / "data" / "sandbox-boot.sh"
        sandbox: Sandbox | None = None
        proc = None
        try:
            with resources.as_file(script) as script_path:
                # --kill-child: if unshare dies, its child (our systemd) gets SIGKILL; with
                # die_with_parent, unshare itself dies with this process. Nothing outlives us.
                proc = spawn(["unshare", "--pid", "--mount", "--fork", "--mount-proc",
                              "--kill-child=SIGKILL", "sh", script_path, workdir, *_own_trees(),
                              *[f"{host}={inside}" for inside, host in (keep or {}).items()]],
                             stdout=console)
                pid1 = _find_pid1(proc.pid, proc.poll, timeout)
            sandbox = Sandbox(workdir, pid1, proc.pid, console)
            sandbox._save_state(before)
            private = sandbox.host_path("/run/systemd/private")
            sandbox.wait_until("systemd's control socket", private.exists, timeout)
            result = sandbox.run(["systemctl", "is-system-running", "--wait"], check=False,
                                 timeout=timeout)
            state = result.stdout.strip() or result.stderr.strip()
            if state != "running":
                failed = sandbox.systemctl("--failed", "--plain", "--no-legend", check=False)
                raise Fatal(f"sandbox: systemd reached {state!r}, not 'running'; failed units:\n"
                            f"{failed.stdout}", f"its console output is in {console}")
            log.debug("sandbox systemd is pid %d (%s)", pid1, workdir)
            yield sandbox
        finally:
            if sandbox is not None:
                for device in list(sandbox.loops):
                    _detach_loop(device)
                # let the sandbox's udevd handle the removals before it goes away
                with contextlib.suppress(CommandError, Fatal):
                    sandbox.run(["udevadm", "settle", "--timeout=10"], timeout=15)
                _halt(sandbox.pid1)
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=HALT_TIMEOUT)
            _restore_host(before)
            with contextlib.suppress(OSError):
                workdir.rmdir()
            with contextlib.suppress(OSError):
                console.unlink()
            STATE_FILE.unlink(missing_ok=True)


def main(command: Sequence[str]) -> int:
    """``offsite-lab sandbox [COMMAND...]``: boot, run COMMAND (or a shell) inside, halt."""
    argv = list(command) or ["/bin/bash", "-l"]
    if argv and argv[0] == "--":
        argv = argv[1:]
    with booted() as sandbox:
        print(f"sandbox: systemd is running as host pid {sandbox.pid1}; "
              f"its files are under {sandbox.root}", flush=True)
        code = interactive(["nsenter", "-t", str(sandbox.pid1), "-m", "-p", "--", *argv])
    print("sandbox: halted; nothing was left behind", flush=True)
    return code
