"""The sandboxing of offsite's units: what every unit gets, what a job unit and a helper
unit get, each option with the reason it is there (written above it in the unit file).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from offsite import state
from offsite.config.model import Drive, Job, JobKind, Target
from offsite.targets import assembly, devices
from offsite.units.syntax import path_list

Option = tuple[str, str, str]  # key, value, why

# What every offsite unit gets: none of it is needed by borg, rsync, ssh or Python.
BASE_HARDENING: tuple[Option, ...] = (
    ("NoNewPrivileges", "yes", "nothing offsite runs needs setuid or file capabilities"),
    ("ProtectKernelTunables", "yes", "no job changes /proc/sys or /sys"),
    ("ProtectKernelModules", "yes", "no job loads kernel modules"),
    ("ProtectKernelLogs", "yes", "no job reads the kernel log"),
    ("ProtectControlGroups", "yes", "no job changes cgroups"),
    ("ProtectClock", "yes", "no job sets the clock"),
    ("ProtectHostname", "yes", "no job sets the host name"),
    ("RestrictRealtime", "yes", "backups never need realtime scheduling"),
    ("RestrictSUIDSGID", "yes", "no job creates setuid or setgid files"),
    ("LockPersonality", "yes", "no job changes its execution domain"),
    ("MemoryDenyWriteExecute", "yes", "Python, borg and rsync need no writable code pages"),
    ("SystemCallArchitectures", "native", "no 32-bit syscalls on a 64-bit host"),
    ("KeyringMode", "private", "no sharing of the kernel keyring with other units"),
    ("UMask", "0077", "whatever a job creates is private to root"),
    ("ProtectProc", "invisible", "a job sees only its own processes in /proc"),
)


# Options of BASE_HARDENING that do not set up a mount namespace for the unit.
NO_MOUNT_NAMESPACE = frozenset({
    "NoNewPrivileges", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
    "MemoryDenyWriteExecute", "SystemCallArchitectures", "KeyringMode", "UMask",
})


def job_options(job: Job, drives: Sequence[Drive], repo_paths: Sequence[Path],
                   target: Target | None = None) -> list[Option]:
    # Health pings and mail leave through offsite-outbox.service, not from the job.
    network = job.kind in (JobKind.PULL, JobKind.PUSH, JobKind.BORGMATIC) or job.of_push is not None
    families = "AF_UNIX AF_INET AF_INET6" if network else "AF_UNIX"
    # '-': a path that does not exist yet is no reason to refuse to start (the job says why)
    writable: list[str | Path] = [f"-{p}" for p in repo_paths]
    if job.destination is not None:
        writable.append(f"-{job.destination}")
    writable += ["-/root/.cache/borg", "-/root/.config/borg"]
    options: list[Option] = [
        *BASE_HARDENING,
        ("CapabilityBoundingSet",
         "CAP_SYS_ADMIN CAP_SYS_CHROOT CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_FOWNER "
         "CAP_CHOWN CAP_FSETID",
         "enter and mount in the backup namespace (SYS_ADMIN, SYS_CHROOT); read every file "
         "for a backup and keep owners and modes when copying (DAC_*, FOWNER, CHOWN, FSETID)"),
        ("ProtectSystem", "strict",
         "read-only host tree until the job enters the backup namespace, which then is the "
         "protection (it is read-only but for the job's targets)"),
        ("ReadWritePaths", path_list(writable), "the job's targets and borg's cache and keys"),
        ("StateDirectory", "offsite", "history and markers in /var/lib/offsite"),
        ("RuntimeDirectory", "offsite", "locks and the namespace file in /run/offsite"),
        ("RuntimeDirectoryPreserve", "yes", "shared by all offsite units; kept between jobs"),
        ("ProcSubset", "pid", "a job reads nothing in /proc but processes"),
        ("ProtectHome", "read-only", "backups read /home; nothing writes there"),
        ("PrivateTmp", "yes", "borg's temporary files stay private"),
        ("RestrictNamespaces", "mnt", "only a mount namespace: the backup namespace"),
        ("RestrictAddressFamilies", families,
         "the journal and D-Bus" + ("; ssh needs IP" if network else "")),
        ("SystemCallFilter", "@system-service @mount setns",
         "what a service needs, plus mounting and entering the backup namespace"),
        ("SystemCallErrorNumber", "EPERM", "a refused call fails cleanly instead of killing borg"),
        ("PrivateIPC", "yes", "no SysV IPC is shared with the host"),
    ]
    if not network:
        options.append(("PrivateNetwork", "yes", "this kind of job never uses the network"))
        options.append(("IPAddressDeny", "any", "and may not reach any address"))
    if drives:
        options.append(("DevicePolicy", "closed", "only the drive itself, nothing else in /dev"))
        allow = " ".join(sorted({devices.filesystem_device(d) for d in drives}))
        options.append(("DeviceAllow", f"{allow} rw", "the drive's filesystem, to mount it"))
    elif target is not None:
        options.append(("DevicePolicy", "closed", "only the target's unlocked device"))
        options.append(("DeviceAllow", f"{assembly.filesystem_device(target)} rw",
                        "the target's filesystem, to mount it"))
    else:
        options.append(("PrivateDevices", "yes", "a job without a drive needs no device"))
    return options


def format_options(options: Iterable[Option]) -> str:
    lines = []
    for key, value, why in options:
        lines.append(f"# {why}")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


# The queues of the local MTAs offsite is tested with (tests/system/test_mta.py): the
# sendmail of each writes there, as root or through its own setuid/setgid helper.
MTA_QUEUES = ("/var/spool/postfix/maildrop", "/var/spool/postfix/public",
              "/var/spool/nullmailer")


def helper_options(network: bool, sendmail: bool = False) -> list[Option]:
    """offsite's own helper units: they read the journal and systemd's state, write under
    /var/lib/offsite, and (the mail unit only) reach the mail server."""
    options: list[Option] = [
        opt for opt in BASE_HARDENING if not (sendmail and opt[0] == "NoNewPrivileges")
    ]
    if sendmail:
        options.append(("NoNewPrivileges", "no",
                        "relaxed: the local sendmail (postfix's postdrop) is setgid"))
    options += [
        ("CapabilityBoundingSet", "", "root's files are readable without capabilities"),
        ("ProtectSystem", "strict", "writes only its state"),
        ("ReadWritePaths", str(state.STATE_DIR), "the history and the mail spool"),
        *([("ReadWritePaths", path_list(f"-{p}" for p in MTA_QUEUES),
            "where the local sendmail queues a message (postfix's maildrop and the pickup "
            "FIFO, nullmailer's queue and trigger); '-': whichever is installed")]
          if sendmail else []),
        ("ProtectHome", "read-only",
         "offsite's Python may live under /root (a virtualenv); nothing is written there"),
        ("PrivateTmp", "yes", "nothing shared through /tmp"),
        ("PrivateDevices", "yes", "no devices"),
        ("RestrictNamespaces", "yes", "no namespaces"),
        ("SystemCallFilter", "@system-service", "what a service needs"),
        ("SystemCallErrorNumber", "EPERM", "a refused call fails cleanly"),
        ("PrivateIPC", "yes", "no SysV IPC"),
    ]
    if network:
        options.append(("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6" +
                        (" AF_NETLINK" if sendmail else ""),
                        "the mail server and health pings, D-Bus, the journal" +
                        ("; postfix's sendmail lists the interfaces (getifaddrs)"
                         if sendmail else "")))
    else:
        options += [("RestrictAddressFamilies", "AF_UNIX", "D-Bus and the journal only"),
                    ("PrivateNetwork", "yes", "it writes the spool; offsite-outbox.service sends"),
                    ("IPAddressDeny", "any", "and may not reach any address")]
    return options
