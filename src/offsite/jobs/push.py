"""A push job: the off-site copy sent over SSH to a machine that lets the sender do
nothing else (pushkeys: one write-only key, confined to one directory by rrsync).

On the far side, in the job's directory DIR, each borg repository NAME is kept the way a
drive keeps it (see mirror.py), so that an interruption at any moment leaves a copy:

    DIR/NAME                a symlink to the tree with the last complete copy
    DIR/NAME.offsite/<T>/   the trees, T a UTC time stamp of the push that began it
    DIR/files/PATH/         the plain directories (rsync, deletions after every transfer)
    DIR/offsite-recovery/   the keys, configuration and RECOVERY.txt, as on a drive

1. rsync fills a new tree, with the unchanged files hard links to the current tree
   (--link-dest), every file written to a temporary name, fsync'd, renamed in; a push that
   is interrupted leaves its tree, and the next push goes on filling the same tree;
2. the completion marker goes into the new tree;
3. rsync sends the symlink DIR/NAME -> NAME.offsite/<T>, which it writes under a
   temporary name and renames over the old one: one atomic switch;
4. the other trees are deleted.

The key cannot read, so what the far side holds is known from what this side did: the
record (state.STATE_DIR/push/JOB.json) keeps, per repository, the tree the symlink names
and the tree being filled. Without the record (a reinstalled machine) a push begins a new
tree without hard links and deletes the others after the switch: slower, never wrong.
"""

from __future__ import annotations

import logging
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from offsite import durable, quantities, state
from offsite.config.model import Config, Job
from offsite.config.schema import PUSH_FILES
from offsite.errors import Fatal
from offsite.jobs import mirror, pushkeys, recovery
from offsite.log import fields
from offsite.run import CommandError, interactive, lines
from offsite.sshkeys import SSH_DIR, known_hosts

log = logging.getLogger(__name__)

RECORDS = state.STATE_DIR / "push"
RSYNC_VANISHED = 24  # a plain directory's file vanished while it was sent
# borg's own files that never belong in a copy (the lock with-lock holds while we copy)
NOT_COPIED = ("/lock.exclusive", "/lock.roster")


# -- pure: argv and what went wrong ------------------------------------------------------


def trees(name: str) -> str:
    """Where a repository's trees live, relative to the far directory."""
    return f"{name}{mirror.TREES_SUFFIX}"


def far_files(path: Path) -> str:
    """Where a plain directory goes, relative to the far directory: files/srv/x for /srv/x."""
    return f"{PUSH_FILES}/{str(path).strip('/')}"


def rsync_argv(job: Job, rsh: list[str], *options: str) -> list[str]:
    """rsync over the push key, with the job's bandwidth and compression settings, every
    file fsync'd as it arrives, and the totals at the end (for the bytes sent)."""
    to = job.to
    assert to is not None  # noqa: S101 - push jobs only
    return ["rsync", "--fsync", "--numeric-ids", "--stats", "--rsh", shlex.join(rsh),
            *([f"--bwlimit={max(1, to.bandwidth // 1024)}"] if to.bandwidth else []),
            *(["--compress"] if to.compress else []), *options]


def tree_options(previous: str | None, name: str) -> list[str]:
    """rsync options that fill a new tree of repository name from the source."""
    link = [f"--link-dest=/{trees(name)}/{previous}"] if previous else []
    return ["--recursive", "--links", "--perms", "--times", "--delete", "--mkpath",
            "--info=progress2",
            *(f"--exclude={p}" for p in NOT_COPIED), *link]


def switch_options(name: str, tree: str) -> list[str]:
    """rsync options that send DIR/NAME (a symlink to the new tree) and then delete the
    trees in NAME.offsite/ but the new one, touching nothing else in DIR."""
    return ["--recursive", "--links", "--times", "--delete-after",
            f"--filter=P /{trees(name)}/{tree}/", f"--include=/{name}",
            f"--include=/{trees(name)}/", "--exclude=/*"]


# rsync --info=progress2: "  1,234,567  45%   10.50MB/s    0:00:12 (xfr#3, to-chk=5/9)"
_PROGRESS = re.compile(r"^\s*([\d,.]+)\s+(\d{1,3})%\s+(\S+/s)\s+(\d+:\d{2}:\d{2})")


@dataclass(frozen=True)
class Progress:
    done: int  # bytes so far (of this transfer, unchanged files counted as done)
    percent: int
    rate: str  # as rsync says it: 10.50MB/s
    left: str  # rsync's estimate: 0:00:12


def progress(line: str) -> Progress | None:
    """One of rsync's --info=progress2 lines; None for any other line."""
    found = _PROGRESS.match(line)
    if found is None:
        return None
    return Progress(int(re.sub(r"[,.]", "", found.group(1))), int(found.group(2)),
                    found.group(3), found.group(4))


def progress_text(p: Progress) -> str:
    total = p.done * 100 // p.percent if p.percent else None
    of = f" of about {quantities.format_size(total)}" if total else ""
    return (f"push: {quantities.format_size(p.done)}{of} ({p.percent}%), {p.rate}, "
            f"{p.left} left")


_SENT = re.compile(r"^Total bytes sent:\s*([\d,.]+)")


def bytes_sent(output: list[str]) -> int:
    """What rsync says it sent (its --stats), 0 when it did not say."""
    for line in output:
        found = _SENT.match(line.strip())
        if found:
            return int(re.sub(r"[,.]", "", found.group(1)))
    return 0


# What ssh and rsync say when the far side cannot be used, and what it means to a person.
_REASONS = (
    (("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed",
      "Host key for"),
     "the far side's host key is not the one this job knows: someone may be in between, "
     "or the far side was reinstalled",
     "compare the key with the far side's /etc/ssh/ssh_host_ed25519_key.pub; if it really "
     "changed, put the new one in host_key (or remove {known_hosts})"),
    (("Permission denied (publickey", "Permission denied, please try again",
      "Too many authentication failures"),
     "the far side refused the job's key (not in authorized_keys, or from= does not match "
     "this machine's address)",
     "add the lines `offsite ssh-key {job} --from ADDRESS` prints to the far side's "
     "authorized_keys of user {user}"),
    (("No space left on device", "Disk quota exceeded"),
     "the far side is full",
     "make room in {path} on {host} (or give it a bigger disk); the previous copy there is "
     "complete and stays until a new one is"),
    (("Connection refused", "Connection timed out", "No route to host",
      "Network is unreachable", "Could not resolve hostname", "Name or service not known",
      "Temporary failure in name resolution", "connect to host"),
     "cannot reach {host} port {port}",
     "is the far side on, and its sshd listening there? The previous copy there is "
     "complete"),
    (("Another instance of rrsync",),
     "a transfer of an earlier run is still open on {host} (its connection was cut, and "
     "the far side has not noticed yet)",
     "it ends when the far side notices (ssh's keepalive: minutes); the next run goes on "
     "where the cut one stopped"),
    (("rrsync error", "has been disabled on this server"),
     "the far side's rrsync refused what was asked",
     "the authorized_keys line must be the one `offsite ssh-key {job}` prints"),
    (("Connection reset", "Broken pipe", "connection unexpectedly closed",
      "Timeout, server", "Connection closed by", "error in rsync protocol data stream"),
     "the connection to {host} was lost mid-transfer",
     "the next run goes on where this one stopped; the previous copy there is complete"),
)


def reason(job: Job, output: str) -> tuple[str, str] | None:
    """(why, what to do) for what ssh or rsync printed, None if it is none of the known."""
    to = job.to
    assert to is not None  # noqa: S101 - push jobs only
    values = {"host": to.host, "port": to.port, "user": to.user, "path": to.path,
              "job": job.name, "known_hosts": known_hosts(job)}
    for needles, why, hint in _REASONS:
        if any(n in output for n in needles):
            return why.format(**values), hint.format(**values)
    return None


# -- the record of what the far side holds -----------------------------------------------


@dataclass(frozen=True)
class Trees:
    complete: str | None = None  # the tree DIR/NAME names, as far as this side knows
    pending: str | None = None  # the tree an interrupted push began filling
    # a switch to `complete` was sent and did not say it was done: DIR/NAME may name it or
    # the tree before. Either way `complete` is whole and is never written to again: the
    # next push links to it from a new tree, and its switch removes both.
    switching: bool = False


def record(job: str, records: Path = RECORDS) -> Path:
    return records / f"{job}.json"


def trees_of(job: str, name: str, records: Path = RECORDS) -> Trees:
    entry = state.read(record(job, records)).get("repositories", {}).get(name, {})
    return Trees(entry.get("complete"), entry.get("pending"), entry.get("switching") is True)


def _remember(job: str, name: str, trees: Trees, records: Path, sent: int | None = None) -> None:
    data = state.read(record(job, records))
    repos = dict(data.get("repositories", {}))
    repos[name] = {"complete": trees.complete, "pending": trees.pending,
                   "switching": trees.switching, **({"sent": sent} if sent is not None else {})}
    records.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.update(record(job, records), repositories=repos)


def note(job: str, ok: bool, detail: str | None = None, sent: int | None = None,
         records: Path = RECORDS) -> None:
    """How the last push ended, for `offsite drives` (a success: when, and bytes sent)."""
    records.mkdir(parents=True, exist_ok=True, mode=0o700)
    values: dict[str, object] = {"state": "ok" if ok else "failed", "detail": detail}
    if ok:
        values.update(last_copy=time.time(), last_copy_bytes=sent)
    state.update(record(job, records), **values)


def new_tree(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


# -- doing it ----------------------------------------------------------------------------


PROGRESS_EVERY = 5.0  # seconds between progress lines in the journal


def _rsync(job: Job, argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> tuple[int, int]:
    """Run rsync; (its exit code, bytes sent). Its progress goes to the journal every few
    seconds (for `offsite run`). Fatal with the reason a person can act on."""
    said: list[str] = []
    last = [0.0]

    def on_line(line: str) -> None:
        moving = progress(line)
        if moving is not None:  # (a line of its own: \r ends a line here too)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or moving.percent == 100:
                last[0] = now
                total = moving.done * 100 // moving.percent if moving.percent else 0
                log.info("%s", progress_text(moving), extra={"fields": {
                    "PROGRESS_BYTES": str(moving.done), "PROGRESS_TOTAL": str(total),
                    "JOB": job.name}})
            return
        said.append(line)
        if line.strip() and not line.startswith((
                "Number of", "Total ", "Literal data", "Matched data", "File list", "sent ",
                "total size")):
            log.info("rsync: %s", line, extra=fields(job=job.name))

    try:
        result = lines(argv, on_line, ok_codes=ok, timeout=job.timeout)
    except CommandError as exc:
        known = reason(job, "\n".join([*said, exc.stderr]))
        if known is not None:
            raise Fatal(f"{what} failed: {known[0]}", known[1]) from exc
        raise Fatal(f"{what} failed: {exc}") from exc
    return result.returncode, bytes_sent(said)


def _ready(job: Job, key: str, lines: str) -> None:
    """Fatal, saying what to do, if the job's key is not made yet; else the far side's
    host key pinned where ssh looks for it (when the configuration pins one)."""
    to = job.to
    assert to is not None  # noqa: S101 - push jobs only
    if not pushkeys.key_path(job, key).exists():
        raise Fatal(f"job {job.name} has no {key} key yet",
                    f"run `offsite ssh-key {job.name} --from ADDRESS` and add {lines} to "
                    f"~{to.user}/.ssh/authorized_keys on {to.host}")
    pinned = pushkeys.known_hosts_line(to)
    if pinned:
        durable.replace(known_hosts(job), pinned)


def push(cfg: Config, job: Job, offsite: Path, passphrases: dict[str, str]) -> tuple[int, bool]:
    """The whole push; (bytes sent, whether a plain directory's files vanished)."""
    to = job.to
    if to is None:
        raise Fatal(f"job {job.name} has no far side (to:)")
    _ready(job, pushkeys.PUSH, "the lines it prints")
    sent = 0
    for name in job.repositories:
        sent += push_locked(cfg, job, name, offsite)
    warned = False
    rsh = pushkeys.ssh_command(job, pushkeys.PUSH)
    for path in job.paths:
        if not path.is_dir():
            raise Fatal(f"{path} is not a directory: nothing to push from it")
        log.info("pushing %s to %s:%s/%s", path, to.host, to.path, far_files(path),
                 extra=fields(job=job.name))
        code, n = _rsync(job, rsync_argv(job, rsh, "--archive", "--hard-links",
                                         "--delete-delay", "--mkpath", "--info=progress2",
                                         f"{path}/",
                                         f"{to.host}:{far_files(path)}/"),
                         f"pushing {path}", ok=(0, RSYNC_VANISHED))
        sent += n
        if code == RSYNC_VANISHED:
            log.warning("some files of %s vanished while they were sent", path,
                        extra=fields(job=job.name))
            warned = True
    if job.repositories:
        _push_recovery(cfg, job, passphrases)
    return sent, warned


def push_locked(cfg: Config, job: Job, name: str, offsite: Path) -> int:
    """Push one repository under `borg with-lock`, so borg cannot change it meanwhile
    (``offsite push-copy``, run by borg, does the work); the bytes sent."""
    src = cfg.repository(name).path
    before = trees_of(job.name, name).complete
    summary = state.this_run_summary()
    if summary is not None:
        state.update(summary, copy_error=None, copy_hint=None)
    code = interactive(["borg", f"--lock-wait={mirror.LOCK_WAIT}", "with-lock", "--", str(src),
                        str(offsite), "--config", str(cfg.source), "push-copy", "--",
                        job.name, name])
    after = trees_of(job.name, name)
    if code != 0 or after.pending is not None or after.switching or after.complete == before:
        told = state.read(summary) if summary is not None else {}
        if told.get("copy_error"):  # the child's own words, and what to do
            raise Fatal(str(told["copy_error"]), str(told.get("copy_hint") or ""))
        raise Fatal(f"pushing repository {name} failed: exit code {code}, its own message is "
                    "in the journal", f"the far side still holds the previous complete copy "
                    f"of {name}")
    sent = state.read(record(job.name)).get("repositories", {}).get(name, {}).get("sent", 0)
    return int(sent) if isinstance(sent, int) else 0


def push_repository(cfg: Config, job: Job, name: str, keys: Path = SSH_DIR,
                    records: Path = RECORDS) -> int:
    """Steps 1-4 for one repository (the source held still by the caller); bytes sent.
    keys, records: where the job's keys and the record of the far trees are kept."""
    to = job.to
    assert to is not None  # noqa: S101 - push jobs only
    src = cfg.repository(name).path
    if not (src / "config").is_file() or not (src / "data").is_dir():
        raise Fatal(f"{src} is not a borg repository (no config file or data directory)")
    known = trees_of(job.name, name, records)
    tree = known.pending or new_tree(time.time())
    _remember(job.name, name, Trees(known.complete, tree), records)
    rsh = pushkeys.ssh_command(job, pushkeys.PUSH, keys)
    where = f"{trees(name)}/{tree}"
    log.info("pushing repository %s to %s:%s/%s%s", name, to.host, to.path, where,
             f" (unchanged files linked to {known.complete})" if known.complete else "",
             extra=fields(job=job.name))
    _code, sent = _rsync(job, rsync_argv(job, rsh, *tree_options(known.complete, name),
                                         f"{src}/", f"{to.host}:{where}/"),
                         f"pushing repository {name}")
    with tempfile.TemporaryDirectory(prefix="offsite-push-") as staging:
        stage = Path(staging)
        (stage / mirror.MARKER).write_text(mirror.marker(mirror.scan(src), sent))
        log.info("all of %s sent; its completion marker next", name,
                 extra=fields(job=job.name))
        _rsync(job, rsync_argv(job, rsh, "--times", f"{stage / mirror.MARKER}",
                               f"{to.host}:{where}/"), f"completing the copy of {name}")
        (stage / name).symlink_to(where)
        (stage / trees(name)).mkdir()
        log.info("switching %s:%s/%s to the new copy", to.host, to.path, name,
                 extra=fields(job=job.name))
        _remember(job.name, name, Trees(tree, None, switching=True), records, sent)
        # one rsync: the symlink (written under a temporary name, renamed over the old),
        # then, after it (--delete-after), the trees it no longer names
        _rsync(job, rsync_argv(job, rsh, *switch_options(name, tree), f"{stage}/",
                               f"{to.host}:"), f"switching {name} to the new copy")
    _remember(job.name, name, Trees(tree, None), records, sent)
    log.info("%s:%s/%s now names the copy in %s; the older trees are gone", to.host, to.path,
             name, where, extra=fields(job=job.name))
    return sent


def _push_recovery(cfg: Config, job: Job, passphrases: dict[str, str]) -> None:
    """The keys, configuration and RECOVERY.txt, as a drive carries them."""
    to = job.to
    assert to is not None  # noqa: S101 - push jobs only
    with tempfile.TemporaryDirectory(prefix="offsite-push-") as staging:
        recovery.write(cfg, job, Path(staging), f"{to.host}:{to.path}", passphrases,
                       far=f"{to.path} on {to.host}")
        rsh = pushkeys.ssh_command(job, pushkeys.PUSH)
        _rsync(job, rsync_argv(job, rsh, "--recursive", "--times", "--perms",
                               "--delete-delay", "--mkpath",
                               f"{staging}/{recovery.DIRECTORY}/",
                               f"{to.host}:{recovery.DIRECTORY}/"),
               "sending the recovery notes")


# -- proving the far copy: a restore test fetches it with the read key -------------------


def fetch_argv(job: Job, name: str, basis: Path, into: Path) -> list[str]:
    """rsync of the far copy of repository name (what DIR/NAME names) into `into`, with the
    read key: --checksum has the far side read and checksum every file it holds, and files
    whose checksum matches the local repository's are copied from it here instead of sent."""
    to = job.to
    assert to is not None  # noqa: S101 - push jobs only
    return ["rsync", "--recursive", "--times", "--perms", "--checksum", "--stats",
            f"--copy-dest={basis}", "--rsh", shlex.join(pushkeys.ssh_command(job, pushkeys.READ)),
            f"{to.host}:{name}/", f"{into}/"]


def fetch(cfg: Config, tester: Job, push_job: Job, name: str, into: Path) -> int:
    """The far copy of name and the far recovery notes, fetched into `into`/name and
    `into`/offsite-recovery; Fatal if the far copy lacks its completion marker or a file it
    lists. The bytes received (what differed from the local repository)."""
    to = push_job.to
    assert to is not None  # noqa: S101 - push jobs only
    _ready(push_job, pushkeys.READ, "its second line")
    log.info("fetching the copy of %s from %s:%s/%s, every file checksummed there",
             name, to.host, to.path, name, extra=fields(job=tester.name))
    _code, got = _rsync(push_job, fetch_argv(push_job, name, cfg.repository(name).path,
                                             into / name),
                        f"fetching the far copy of {name}")
    rsh = pushkeys.ssh_command(push_job, pushkeys.READ)
    _rsync(push_job, ["rsync", "--recursive", "--rsh", shlex.join(rsh),
                      f"{to.host}:{recovery.DIRECTORY}/", f"{into / recovery.DIRECTORY}/"],
           "fetching the far recovery notes")
    problems = mirror.verify(into / name)
    if problems:
        raise Fatal(f"the far copy of {name} on {to.host} is not complete: " + "; ".join(problems))
    return got
