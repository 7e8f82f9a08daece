"""The persistent backup mount namespace (``offsite-namespace.service``).

A mount namespace in which the internal backup filesystems of the configuration, and
during a drive job the drive itself, are mounted and nowhere else; the rest of the host
tree is read-only there, except the job targets (repositories, pull destinations, drive
mount points), offsite's state and run directories and borg's key and cache directories;
/tmp is a tmpfs of its own. Jobs run inside it.

It is held by a process, not by a bind mount of its nsfs file: the kernel never copies
nsfs mounts into a new mount namespace, and every job unit gets one from systemd
(ProtectSystem= and friends), so a job could not see such a file. /proc/PID/ns/mnt of the
holder is reachable from any mount namespace. The service runs
``unshare --mount -- offsite namespace hold``: the holder seals the namespace it was
started in, records its PID and the namespace's inode in a file under /run, tells systemd
it is ready, and waits. Stopping the service (or a reboot) ends the namespace; a job's
``Requires=`` starts it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path

from offsite import state
from offsite.config.model import Config
from offsite.errors import Fatal
from offsite.run import Arg, CommandError, FdSecret, interactive, run
from offsite.units import systemd

log = logging.getLogger(__name__)

STATE_DIR = state.STATE_DIR
RUN_DIR = state.RUN_DIR
BORG_DIRS = (Path("/root/.cache/borg"), Path("/root/.config/borg"))
# Kernel and device trees keep their own rules; everything else goes read-only.
KEEP_AS_IS = ("/proc", "/sys", "/dev")
# Inside the namespace /tmp is a fresh tmpfs of the jobs' own (a mount point, not a file).
JOB_TMP = "/tmp"  # noqa: S108


def unescape_mountinfo(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (space, tab, newline and backslash as
    octal escapes, \\040) back to the path; other bytes, UTF-8 included, stay as they are."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> list[str]:
    """Mount points of this process's namespace, parents before children."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(unescape_mountinfo(line.split()[4]))
    return points


def _root_propagates() -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            optional = fields[6:fields.index("-")]
            return any(f.startswith(("shared:", "master:")) for f in optional)
    return True


def _ns_inode(pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


def writable_paths(cfg: Config) -> list[Path]:
    """What a job may write inside the namespace (the outermost of nested paths)."""
    paths = [m.where for m in cfg.namespace.mounts]
    paths += [r.path for r in cfg.repositories]
    paths += [j.destination for j in cfg.jobs if j.destination is not None]
    paths += [STATE_DIR, RUN_DIR, *BORG_DIRS]  # (a drive's mount point needs no bind:
    # the drive mounted on it is writable by itself)
    unique: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(path.is_relative_to(u) for u in unique):
            unique.append(path)
    return unique


def mount_points_of(cfg: Config) -> list[Path]:
    """Where drives and targets are mounted during their jobs (made when it is sealed)."""
    return sorted({d.mount for d in cfg.drives} | {t.mount for t in cfg.targets}, key=str)


def spec(cfg: Config) -> list[list[str]]:
    """What a namespace started from cfg is made of: its mounts, writable paths and mount
    points. A running namespace whose recorded spec differs must be started afresh."""
    mounts = [["mount", m.what, str(m.where), m.type or "", ",".join(m.options)]
              for m in cfg.namespace.mounts]
    return mounts + [["writable", str(p)] for p in writable_paths(cfg)] + \
        [["mountpoint", str(p)] for p in mount_points_of(cfg)]


def needs_restart(cfg: Config) -> bool:
    """True if the namespace runs but was made from a different configuration. (Restarting
    it stops the jobs running in it, so an unrelated change must not.)"""
    record = state.read(cfg.namespace.path)
    return bool(record) and record.get("spec") != spec(cfg)


def seal(cfg: Config) -> None:
    """In a new mount namespace: mount the backup filesystems, make the rest read-only."""
    if _root_propagates():
        # A shared / means the host's namespace (or one that would pass our mounts back
        # to it): sealing it would make the whole machine read-only.
        raise Fatal("refusing to seal a mount namespace whose / is shared with others",
                    "this runs as `unshare --mount --propagation private -- offsite "
                    "namespace hold`")
    # Mount points and offsite's own directories are made, a pull's destination (its
    # holding directory) too; repositories are not (a missing one must stay a clear error).
    # Made after the seal, a directory would stay read-only in here until it restarts.
    destinations = [j.destination for j in cfg.jobs if j.destination is not None]
    for path in [*(m.where for m in cfg.namespace.mounts), *mount_points_of(cfg),
                 STATE_DIR, RUN_DIR, *BORG_DIRS, *destinations]:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for m in cfg.namespace.mounts:
        argv: list[Arg] = ["mount"]
        if m.what.startswith("/") and Path(m.what).is_dir():
            argv.append("--bind")  # a directory of the host, shown at `where`
        if m.type:
            argv += ["-t", m.type]
        if m.options:
            argv += ["-o", ",".join(m.options)]
        run([*argv, "--", m.what, m.where])
    run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "offsite-tmp", JOB_TMP])
    writable = [p for p in writable_paths(cfg) if p.is_dir()]
    points = set(mount_points())
    for path in writable:
        if str(path) not in points:
            run(["mount", "--bind", "--", path, path])  # its own mount: stays writable
    keep = {str(p) for p in writable} | {JOB_TMP}
    for point in mount_points():
        if point in keep or any(point == k or point.startswith(k + "/") for k in KEEP_AS_IS):
            continue
        if any(point.startswith(str(p) + "/") for p in writable):
            continue  # below a writable path: leave it as it is
        try:
            run(["mount", "-o", "remount,bind,ro", "--", point])
        except CommandError as exc:
            log.warning("could not make %s read-only in the backup namespace: %s", point, exc)


def hold(cfg: Config) -> int:
    """The service's main process: seal this namespace, record it, wait until stopped."""
    seal(cfg)
    record = cfg.namespace.path
    state.write(record, {"pid": os.getpid(), "inode": _ns_inode(),
                         "borg_host_id": borg_host_id(), "spec": spec(cfg)})
    systemd.notify("READY=1", f"STATUS=backup namespace held by pid {os.getpid()}")
    log.info("the backup namespace is ready (pid %d)", os.getpid())
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    record.unlink(missing_ok=True)
    log.info("the backup namespace ends")
    return 0


def borg_host_id() -> str:
    """The host id borg 1.2 puts into its locks, computed as borg does, here in the host's
    network namespace. Job units have a private network (or none), where uuid.getnode()
    is random: a lock a killed job left would then look like another host's, and no borg
    would ever clear it. Jobs hand this to borg as BORG_HOST_ID."""
    name = socket.gethostname()
    fqdn = name
    with contextlib.suppress(OSError):
        for addr in socket.getaddrinfo(name, None, 0, 0, 0, socket.AI_CANONNAME):
            if addr[3]:
                fqdn = addr[3]
                break
    return f"{fqdn}@{uuid.getnode()}"


def recorded_borg_host_id(cfg: Config) -> str | None:
    value = state.read(cfg.namespace.path).get("borg_host_id")
    return value if isinstance(value, str) else None


def holder(cfg: Config) -> tuple[int, int] | None:
    """(pid, inode) of the live holder of the namespace, or None."""
    data = state.read(cfg.namespace.path)
    pid, inode = data.get("pid"), data.get("inode")
    if not isinstance(pid, int) or not isinstance(inode, int):
        return None
    try:
        if _ns_inode(pid) != inode:
            return None  # the PID was reused by another process
    except OSError:
        return None
    return pid, inode


def mount_tables(cfg: Config) -> str:
    """The mountinfo of this process's mount namespace and of the backup namespace (where
    jobs mount drives and targets), one after the other."""
    tables = [Path("/proc/self/mountinfo")]
    held = holder(cfg)
    if held is not None:
        tables.append(Path(f"/proc/{held[0]}/mountinfo"))
    text = ""
    for table in tables:
        with contextlib.suppress(OSError):  # the holder ended meanwhile: its mounts too
            text += table.read_text()
    return text


def inside(cfg: Config) -> bool:
    """True if this process already runs in the backup namespace."""
    found = holder(cfg)
    return found is not None and _ns_inode() == found[1]


def reenter(cfg: Config, argv: Sequence[Arg], fd_secret: FdSecret | None = None) -> int:
    """Run argv (an offsite command) inside the namespace, on our own stdout and stderr;
    fd_secret: handed to it on a pipe (the job's passphrases)."""
    found = holder(cfg)
    if found is None:
        raise Fatal("the backup namespace is not running",
                    "systemctl start offsite-namespace.service (job units do that themselves)")
    return interactive(["nsenter", f"--target={found[0]}", "--mount", "--",
                        *(str(a) for a in argv)], fd_secret=fd_secret)


def describe(cfg: Config) -> str:
    found = holder(cfg)
    if found is None:
        return "the backup namespace is not running"
    return json.dumps({"pid": found[0], "inode": found[1],
                       "enter": f"nsenter --target={found[0]} --mount"})
