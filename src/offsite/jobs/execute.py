"""``offsite exec JOB``: what a job unit runs. Takes the job's locks, then does its work.

Each kind's work is a function from the model to argv lists run through offsite.run;
borg's exit code 1 (warning) is a warning, not a failure. Kinds whose work belongs to a
later part of offsite say so and fail.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from offsite import locks, quantities, state, unitnames
from offsite.config.model import Config, Drive, DriveTrigger, DriveType, Job, JobKind, OnWarning, Target
from offsite.errors import EXIT_SKIPPED, EXIT_WARNING, Fatal
from offsite.jobs import borgjson, mirror, namespace, pull, push, recovery, restoretest, secrets
from offsite.log import fields
from offsite.run import CommandError, lines, run
from offsite.targets import assembly, devices, registry

log = logging.getLogger(__name__)

BORG_WARNING = 1


def resources(cfg: Config, job: Job) -> list[str]:
    """What a job touches: no two jobs sharing any of these run at once (drives of a
    rotation group share their mount point, so they take turns there too)."""
    touched = [str(cfg.repository(name).path) for name in job.repositories]
    if job.destination is not None:
        touched.append(str(job.destination))
    touched += [str(p) for p in job.reads]
    if isinstance(job.trigger, DriveTrigger):
        touched += [str(cfg.drive(name).mount) for name in job.trigger.drives]
    if job.target is not None:
        touched.append(str(cfg.target(job.target).mount))
    far = job.name if job.kind is JobKind.PUSH else job.of_push
    if far is not None:  # a push and a restore test of its copy take turns
        touched.append(f"push:{far}")
    return touched


def borg_check_argv(repository: Path, verify_data: bool) -> list[str]:
    return ["borg", "check", *(["--verify-data"] if verify_data else []), "--", str(repository)]


def opens_argv(repository: Path) -> list[str]:
    """A quick borg command that needs the key: the latest archive's name."""
    return ["borg", "list", "--last", "1", "--short", "--", str(repository)]


def borgmatic_argv(config: Path | None) -> list[str]:
    # check is its own job (with several configurations borgmatic would check each one)
    return ["borgmatic", *(["--config", str(config)] if config else []), "--verbosity", "1",
            "create", "prune"]


def _run_borg(job: Job, argv: list[str], warning_ok: bool = True, repository: str = "",
              access: secrets.BorgAccess | None = None, what: str = "") -> bool:
    """Run borg with --log-json --progress, its messages and progress going to the journal
    as they come; True if it ended with a warning (exit 1). warning_ok=False: exit 1 is a
    failure (`borg check` exits 1 when it found errors). access: how borg opens the
    repository (its passphrase)."""
    access = access or secrets.BorgAccess()
    reader = borgjson.Reader()

    def on_line(line: str) -> None:
        said = reader.feed(line, time.monotonic())
        if said is not None:
            level, message, extra = said
            log.log(level, "%s", message, extra=fields(job=job.name, **extra))

    try:
        result = lines([argv[0], "--log-json", "--progress", *argv[1:]], on_line,
                       ok_codes=(0, BORG_WARNING) if warning_ok else (0,), timeout=job.timeout,
                       env=access.env, fd_secret=access.fd_secret)
    except CommandError as exc:
        refused = borgjson.passphrase_refused(reader.msgids, repository, access.source) or \
            borgjson.tam_refused([*reader.errors, exc.stderr], repository, argv[-1])
        if refused is not None:
            raise Fatal(*refused) from exc
        why = "; ".join(reader.errors[-3:]) or str(exc)
        raise Fatal(f"{what or ' '.join(argv[:2])} failed (exit code {exc.returncode}): {why}") \
            from exc
    return result.returncode == BORG_WARNING


def _run_borgmatic(job: Job, argv: list[str]) -> None:
    """borgmatic judges borg's warnings itself (1.7 logs them and exits 0): any exit code
    but 0 is a failure."""
    try:
        lines(argv, lambda line: log.info("%s", line, extra=fields(job=job.name)),
              timeout=job.timeout)
    except CommandError as exc:
        raise Fatal(str(exc)) from exc


@dataclass(frozen=True)
class Done:
    """How a job's work ended when it did not fail."""

    warned: bool = False  # borg's exit 1, rsync's 24
    bytes: int | None = None  # what it copied, when it copies


@dataclass(frozen=True)
class Context:
    cfg: Config
    job: Job
    drive: str | None  # the drive that started the job, if a drive did
    offsite: Path  # this offsite executable (run again under borg with-lock)
    passphrases: dict[str, str] = field(default_factory=dict)  # by repository (secrets.py)

    def access(self, repository: str) -> secrets.BorgAccess:
        return secrets.access(self.cfg.repository(repository), self.passphrases)


def _borg_check(ctx: Context) -> Done:
    cfg, job = ctx.cfg, ctx.job
    warned = False
    for name in job.repositories:
        repo = cfg.repository(name)
        access = ctx.access(name)
        # the key first: a wrong passphrase fails now, not after hours of checking segments
        _run_borg(job, opens_argv(repo.path), repository=name, access=access,
                  what=f"opening repository {name}")
        log.info("checking repository %s (%s)", name, repo.path, extra=fields(job=job.name))
        # borg check's exit 1 means it found errors: never a mere warning
        warned |= _run_borg(job, borg_check_argv(repo.path, job.verify_data), warning_ok=False,
                            repository=name, access=access)
    return Done(warned)


def _borgmatic(ctx: Context) -> Done:
    cfg, job = ctx.cfg, ctx.job
    configs = {cfg.repository(name).borgmatic_config for name in job.repositories}
    for config in sorted(configs, key=str) if None not in configs else [None]:
        log.info("borgmatic create and prune%s", f" with {config}" if config else "",
                 extra=fields(job=job.name))
        _run_borgmatic(job, borgmatic_argv(config))
    return Done()


def _pull(ctx: Context) -> Done:
    return Done(warned=pull.pull(ctx.job))


def _push(ctx: Context) -> Done:
    try:
        sent, warned = push.push(ctx.cfg, ctx.job, ctx.offsite, ctx.passphrases)
    except Fatal as exc:
        push.note(ctx.job.name, ok=False, detail=str(exc))
        raise
    push.note(ctx.job.name, ok=True, sent=sent)
    return Done(warned=warned, bytes=sent)


def _restore_test(ctx: Context) -> Done:
    if ctx.job.of_push is not None:
        return _restore_test_far(ctx, ctx.cfg.job(ctx.job.of_push))
    for name in ctx.job.repositories:
        restoretest.test_repository(ctx.cfg.repository(name).path, ctx.job.sample, ctx.job.name,
                                    ctx.access(name), name)
    return Done()


def _restore_test_far(ctx: Context, push_job: Job) -> Done:
    """The restore test, run on the copy a push job sent: fetched back with the read key,
    then borg check of every byte of it and the sample extracted and compared, by a borg of
    its own (the copy has the source's repository id)."""
    job = ctx.job
    got = 0
    with tempfile.TemporaryDirectory(prefix="offsite-far-") as scratch:
        here = Path(scratch)
        for name in job.repositories:
            got += push.fetch(ctx.cfg, job, push_job, name, here)
            with tempfile.TemporaryDirectory(prefix="offsite-far-borg-") as base:
                access = _copy_access(ctx, name, here / name, here / recovery.DIRECTORY, base)
                what = f"the copy of {name} that {push_job.name} pushed"
                log.info("checking %s, every byte of it", what, extra=fields(job=job.name))
                _run_borg(job, borg_check_argv(here / name, False), warning_ok=False,
                          repository=name, access=access, what=f"borg check of {what}")
                restoretest.test_repository(here / name, job.sample, job.name, access, name)
            shutil.rmtree(here / name)
    log.info("the far copy is proven: %s received that differed from the local repositories",
             quantities.format_size(got), extra=fields(job=job.name))
    return Done(bytes=got)


def _copy_access(ctx: Context, name: str, copy: Path, notes: Path,
                 base: str) -> secrets.BorgAccess:
    """How a borg of its own (BORG_BASE_DIR=base) opens a copy of repository name: its
    passphrase, and a keyfile repository's key from the copy's recovery notes."""
    access = ctx.access(name)
    env = {**access.env, "BORG_BASE_DIR": base}
    key = notes / "keys" / f"{name}.key"
    if key.is_file() and not recovery.is_repokey((copy / "config").read_text(errors="replace")):
        env["BORG_KEY_FILE"] = str(key)
    return secrets.BorgAccess(env, access.fd_secret, access.source)


def _plugged_drive(ctx: Context) -> Drive | None:
    """The drive to copy to: the one that started the job, else a plugged one of its group."""
    if ctx.drive is not None:
        candidates = [ctx.cfg.drive(ctx.drive)]
    elif isinstance(ctx.job.trigger, DriveTrigger):
        candidates = [ctx.cfg.drive(n) for n in ctx.job.trigger.drives]
    else:
        raise Fatal(f"job {ctx.job.name} has no drive")
    for drive in candidates:
        if Path(devices.filesystem_device(drive)).exists():
            return drive
    return None


def _mirror(ctx: Context) -> Done:
    """Mount the drive (only in this namespace), copy each repository, sync, unmount."""
    if ctx.job.target is not None:
        return _mirror_to_target(ctx, ctx.cfg.target(ctx.job.target))
    drive = _plugged_drive(ctx)
    job = ctx.job
    if drive is None:
        names = ", ".join(repr(d) for d in (job.trigger.drives if isinstance(
            job.trigger, DriveTrigger) else ()))
        log.warning("skipped: drive %s is not plugged in; nothing to do", names,
                    extra=fields(job=job.name))
        raise Skip(f"drive {names} is not plugged in")
    record = state.drive_file(drive.uuid)
    state.update(record, name=drive.name, last_seen=time.time())
    last_checked = state.read(record).get("last_checked")
    check = not isinstance(last_checked, int | float) or \
        time.time() - last_checked >= drive.check_every
    copied, read_back = _copy_to(ctx, devices.filesystem_device(drive), drive.mount,
                                 f"drive {drive.name}", check=check)
    now = time.time()
    # "read back" means bytes were: a copy that wrote nothing new leaves the last one
    state.update(record, last_copy=now, last_copy_bytes=copied, last_job=job.name,
                 **({"last_read_back": now, "last_read_back_bytes": read_back}
                    if read_back else {}),
                 **({"last_checked": now} if check else {}))
    log.info("drive %s holds a complete copy; it is unmounted%s", drive.name,
             " and is locked when this job ends" if drive.type is DriveType.LUKS
             else " and safe to remove",
             extra=fields(job=job.name, drive=drive.name))
    return Done(bytes=copied)


def _copy_to(ctx: Context, device: str, mount: Path, what: str,
             check: bool = False) -> tuple[int, int]:
    """Mount device at mount (only in this namespace), copy each repository, sync, (check:
    borg check of the copies on it), unmount; the bytes copied and the bytes read back."""
    job = ctx.job
    _release_stale(mount, what)
    run(["mount", "-o", "nodev,nosuid,noexec", "--", device, mount])
    copied = read_back = 0
    try:
        for name in job.repositories:
            repo = ctx.cfg.repository(name)
            log.info("copying repository %s to %s", name, what, extra=fields(job=job.name))
            copied += mirror.copy_locked(repo.path, mount / name, ctx.offsite, job.name)
            read_back += mirror.marker_bytes(mount / name, "bytes_read_back")
        log.info("%s: %s of new files read back from it and found as written", what,
                 quantities.format_size(read_back), extra=fields(job=job.name))
        recovery.write(ctx.cfg, job, mount, what, ctx.passphrases)
        run(["sync", "--file-system", "--", mount])
        if check:
            for name in job.repositories:
                _check_copy(ctx, name, mount, what)
    finally:
        run(["umount", "--", mount], check=False)
    return copied, read_back


def _check_copy(ctx: Context, name: str, mount: Path, what: str) -> None:
    """borg check of the copy on the drive (every segment read back), by a borg of its own:
    the copy has the source's repository id, and must never meet the source's cache or
    security records. A keyfile repository's key comes from the drive's recovery folder."""
    job = ctx.job
    copy = mount / name
    log.info("checking the copy of %s on %s, every byte of it", name, what,
             extra=fields(job=job.name))
    with tempfile.TemporaryDirectory(prefix="offsite-drive-check-") as base:
        _run_borg(job, borg_check_argv(copy, False), warning_ok=False, repository=name,
                  access=_copy_access(ctx, name, copy, mount / recovery.DIRECTORY, base),
                  what=f"borg check of the copy of {name} on {what}")
    log.info("the copy of %s on %s passed borg check", name, what, extra=fields(job=job.name))


def _mirror_to_target(ctx: Context, target: Target) -> Done:
    """The target unit assembled and unlocked it before this job (Wants=, After=); it
    takes it down again after. A target that could not be assembled fails the job with
    the assembly's reason, so the failure mail says it."""
    job = ctx.job
    device = assembly.filesystem_device(target)
    if not Path(device).exists():
        health = state.read(assembly.health_file(target))
        why = health.get("detail") if health.get("state") in ("refused", "failed") else None
        raise Fatal(f"target {target.name} is not assembled: "
                    + (str(why) if why else f"see journalctl -u {unitnames.target_unit(target.name)}"))
    copied, _read_back = _copy_to(ctx, device, target.mount, f"target {target.name}")
    state.update(assembly.health_file(target), last_copy=time.time(), last_copy_bytes=copied,
                 last_job=job.name)
    trouble = registry.kind(target).degraded_now(target)
    if trouble:
        raise Fatal(f"the copy to target {target.name} is complete ({copied} bytes), but the "
                    f"target is DEGRADED: {trouble}. Put the member's file back (the next run "
                    f"resyncs it), or make a new one: offsite target repair {target.name}")
    log.info("target %s holds a complete copy; it is unmounted and is locked when this job "
             "ends", target.name, extra=fields(job=job.name))
    return Done(bytes=copied)


def release(mount: Path, what: str) -> bool:
    """Unmount a drive or target in this namespace if a job left it mounted (killed before
    it could unmount). Lazily: the device under it may be gone. True if there was a mount.

    A job running now holds the mount point's lock and owns what is mounted there: then
    nothing is touched (that job clears a stale mount itself before it mounts).
    """
    with locks.try_held(str(mount), f"release of {what}") as free:
        return free and _release_stale(mount, what)


def _release_stale(mount: Path, what: str) -> bool:
    """Called with the mount point's lock held: anything mounted there is stale."""
    if str(mount) not in namespace.mount_points():
        return False
    log.warning("%s (%s) is still mounted from a job that did not finish; unmounting it",
                mount, what)
    run(["umount", "--lazy", "--", mount])
    return True


class Skip(Exception):
    """Nothing to do, and that is not a failure (a drive that is not plugged in)."""


WORK: dict[JobKind, Callable[[Context], Done]] = {
    JobKind.BORG_CHECK: _borg_check,
    JobKind.BORGMATIC: _borgmatic,
    JobKind.MIRROR: _mirror,
    JobKind.PULL: _pull,
    JobKind.PUSH: _push,
    JobKind.RESTORE_TEST: _restore_test,
}


def tell_hook(**values: object) -> None:
    """Leave facts about this run (bytes copied, why it failed) for the unit's stop hook."""
    summary = state.this_run_summary()
    if summary is not None:
        state.update(summary, **values)


def open_repository(cfg: Config, name: str, passphrases: Mapping[str, str]) -> str:
    """Open a repository with its passphrase (inside the namespace); what to tell a person."""
    repo = cfg.repository(name)
    access = secrets.access(repo, passphrases)
    try:
        latest = run(["borg", "--log-json", *opens_argv(repo.path)[1:]], env=access.env,
                     fd_secret=access.fd_secret).stdout.strip()
    except CommandError as exc:
        refused = borgjson.passphrase_refused(borgjson.msgids_of(exc.stderr), name, access.source)
        if refused is not None:
            raise Fatal(*refused) from exc
        raise Fatal(f"cannot open repository {name} ({repo.path}): {exc}") from exc
    how = f"with the passphrase from {access.source}" if access.source else "without a passphrase"
    return f"repository {name} ({repo.path}) opens {how}; latest archive: {latest or 'none yet'}"


def find(cfg: Config, name: str) -> Job:
    try:
        return cfg.job(name)
    except StopIteration:
        known = ", ".join(j.name for j in cfg.jobs)
        raise Fatal(f"no job named {name!r} in {cfg.source}", f"known jobs: {known}") from None


def execute(cfg: Config, name: str, drive: str | None, offsite: Path,
            lock_dir: Path = locks.LOCK_DIR, passphrases: Mapping[str, str] | None = None) -> int:
    job = find(cfg, name)
    started = time.monotonic()
    host_id = namespace.recorded_borg_host_id(cfg)
    if host_id and "BORG_HOST_ID" not in os.environ:
        os.environ["BORG_HOST_ID"] = host_id  # handed on to every borg this job runs
    invocation = os.environ.get("INVOCATION_ID", "")
    with locks.held(resources(cfg, job), job.name, job.timeout, lock_dir):
        log.info("job %s (%s) started%s", job.name, job.kind,
                 f", run {invocation}" if invocation else "",
                 extra=fields(job=job.name, drive=drive))
        try:
            done = WORK[job.kind](Context(cfg, job, drive, offsite, dict(passphrases or {})))
        except Skip:
            return EXIT_SKIPPED
        # said while the locks are held: the next job's "started" comes after this line
        if done.bytes is not None:
            tell_hook(bytes=done.bytes)
        if done.warned and job.on_warning is OnWarning.FAIL:
            raise Fatal(f"job {job.name} ended with warnings, and on_warning is fail")
        outcome = "finished with warnings" if done.warned else "succeeded"
        log.info("job %s %s in %.1f s", job.name, outcome, time.monotonic() - started,
                 extra=fields(job=job.name))
    return EXIT_WARNING if done.warned else 0
