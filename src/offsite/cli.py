"""The command line: parse arguments, call the module that does the work, map errors to exits."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from offsite import __version__, run, state, unitnames
from offsite import log as logmod
from offsite.config import reader as configmod
from offsite.config.model import (
    Config,
    DriveTrigger,
    DriveType,
    Job,
    JobKind,
    Schedule,
    Target,
    TargetType,
)
from offsite.errors import EXIT_FAILURE, Fatal
from offsite.jobs import borgmatic as borgmaticmod
from offsite.jobs import execute, hooks, mirror, namespace, pullkeys, push, pushkeys, secrets
from offsite.notify import notices, spool
from offsite.run import CommandError
from offsite.targets import cloudraid, nbd, registry
from offsite.units import install, render
from offsite.units.render import Rendered
from offsite.views import drives, follow

T = TypeVar("T")
logger = logging.getLogger("offsite")


def cmd_check(args: argparse.Namespace) -> int:
    path: Path = args.file or args.config
    cfg = configmod.load(path)
    print(
        f"{path}: OK: {len(cfg.drives)} drive(s), {len(cfg.repositories)} repositor"
        f"{'y' if len(cfg.repositories) == 1 else 'ies'}, {len(cfg.jobs)} job(s)"
    )
    for job in cfg.jobs:
        print(f"  {job.name}: {job.kind}, {describe_trigger(job)}")
    from offsite.targets import enroll

    for warning in enroll.drive_warnings([(d.name, d.uuid) for d in cfg.drives
                                          if d.type is DriveType.LUKS]):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    found = _borgmatic_findings(cfg, path)
    borgmatic = [j.name for j in cfg.jobs if j.kind is JobKind.BORGMATIC]
    if borgmatic and install.enabled_unmasked(Path("/"), unitnames.BORGMATIC_TIMER):
        print(f"{path}: note: {unitnames.BORGMATIC_TIMER} (Debian's own nightly borgmatic) is "
              f"enabled here; job {borgmatic[0]} runs borgmatic too, so `offsite install` "
              "masks it (and `offsite uninstall` unmasks it)", file=sys.stderr)
    return EXIT_FAILURE if found.errors else 0


def _borgmatic_findings(cfg: Config, path: Path) -> borgmaticmod.Findings:
    """The installed borgmatic's verdict on the configurations offsite's jobs run, printed
    (warnings and errors) under the offsite configuration's name."""
    found = borgmaticmod.findings(cfg, borgmaticmod.validate(list(borgmaticmod.configs_of(cfg)))
                                  if any(j.kind is JobKind.BORGMATIC for j in cfg.jobs) else {})
    for warning in found.warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    for error in found.errors:
        print(f"{path}: error: {error}", file=sys.stderr)
    return found


def describe_trigger(job: Job) -> str:
    if isinstance(job.trigger, Schedule):
        return f"on schedule {job.trigger.calendar!r}"
    if isinstance(job.trigger, DriveTrigger):
        return "when drive " + " or ".join(repr(d) for d in job.trigger.drives) + " is plugged"
    return "started by hand"


def _offsite_bin(args: argparse.Namespace) -> Path:
    """The offsite executable the units will run: --offsite-bin, or the one running now."""
    if getattr(args, "offsite_bin", None) is not None:
        return Path(args.offsite_bin)
    me = Path(sys.argv[0])
    if me.name == "offsite" and me.exists():
        return me.absolute()
    found = shutil.which("offsite")
    if found:
        return Path(found)
    raise Fatal("cannot tell where the offsite command is installed",
                "pass --offsite-bin /path/to/offsite")


def _rendered(args: argparse.Namespace) -> tuple[Rendered, Config]:
    config_path = Path(os.path.abspath(args.config))
    cfg = configmod.load(config_path)
    return render.render(cfg, _offsite_bin(args), config_path), cfg


def cmd_plan(args: argparse.Namespace) -> int:
    rendered, _ = _rendered(args)
    changes = install.plan(args.root, rendered)
    if not changes:
        print("No changes: the installed units match the configuration.")
        return 0
    sys.stdout.write(install.diff_text(changes, args.root / install.UNIT_DIR))
    counts = {a: sum(1 for c in changes if c.action is a) for a in install.Action}
    print(f"\n{counts[install.Action.ADD]} to add, {counts[install.Action.CHANGE]} to change, "
          f"{counts[install.Action.REMOVE]} to remove. Run `offsite install` to apply.")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    rendered, cfg = _rendered(args)
    source = cfg.source
    live = args.root == Path("/")
    # only when its mounts or writable paths changed: a restart stops the jobs inside it
    restart = live and namespace.needs_restart(cfg)
    if live and _borgmatic_findings(cfg, source).errors:
        raise Fatal("borgmatic would refuse the configuration a job of this one runs "
                    "(above); nothing was installed",
                    "mend the borgmatic configuration (`borgmatic config validate` checks it)")
    outcome = install.install(rendered, args.root, live=live, check=not args.no_verify,
                              restart_namespace=restart)
    if not outcome.changes:
        print("No changes: the installed units already match the configuration.")
        return 0
    for change in outcome.changes:
        print(f"{change.action:>7} {args.root / install.UNIT_DIR / change.name}")
    masked, unmasked = install.masks(outcome.changes)
    for unit in masked:
        print(f"Masked {unit}: Debian's borgmatic package runs borgmatic from it every night; "
              "offsite's borgmatic job runs it now, so it would run twice. `offsite "
              "uninstall` unmasks it.")
    for unit in unmasked:
        print(f"Unmasked {unit}: no offsite job runs borgmatic any more.")
    tail = "systemd reloaded once; timers started." if live else "systemd was not contacted (--root)."
    print(f"Installed from {source}: {len(outcome.changes)} change(s). {tail}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    outcome = install.uninstall(args.root, live=args.root == Path("/") and not args.offline)
    for change in outcome.changes:
        print(f" remove {args.root / install.UNIT_DIR / change.name}")
    for unit in install.masks(outcome.changes)[1]:
        print(f"Unmasked {unit} (offsite had masked it while its job ran borgmatic); it runs "
              "again if its package enabled it.")
    print(f"Removed {len(outcome.changes)} file(s) offsite had installed.")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    offsite = _offsite_bin(args)
    # systemd's stop (KillMode=mixed) reaches only the unit's main process: each of the two
    # processes below hands it on to its child, so the work inside the namespace (borg,
    # rsync) gets it too, ends cleanly, and the cleanup after it runs
    run.forward_stops()
    entering = False
    try:
        job = execute.find(cfg, args.job)
        passphrases = secrets.received()
        if passphrases is None:  # not handed over: we are the unit's own process
            passphrases = secrets.for_job(cfg, job)
        if not namespace.inside(cfg):
            # Jobs run in the backup namespace: go in, and run this same command there.
            entering = True
            again: list[str | Path] = [offsite, "--config", cfg.source, "exec"]
            again += ["--drive", args.drive] if args.drive else []
            return namespace.reenter(cfg, [*again, "--", args.job],
                                     secrets.handover(passphrases))
        return execute.execute(cfg, args.job, args.drive, offsite, passphrases=passphrases)
    except run.Stopped as stop:
        if not entering:  # (the process inside has said it)
            logger.warning("job %s stopped (%s) before it finished", args.job, stop.signal_name,
                           extra=logmod.fields(job=args.job))
            execute.tell_hook(stopped=stop.signal_name)
        run.die_of(stop.signum)
    except (Fatal, CommandError) as exc:
        # Logged with JOB= so that `journalctl JOB=name` (and the failure mail) says why.
        logger.error("job %s failed: %s", args.job, exc, extra=logmod.fields(job=args.job))
        hint = getattr(exc, "hint", None)
        if hint:
            logger.info("what to do: %s", hint, extra=logmod.fields(job=args.job))
        execute.tell_hook(error=str(exc))
        return EXIT_FAILURE


def cmd_run(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    return follow.run_job(cfg, _job_arg(cfg, args.job), args.drive)


def cmd_release(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    try:
        if args.target:
            mount, what = cfg.target(args.name).mount, f"target {args.name}"
        else:
            mount, what = cfg.drive(args.name).mount, f"drive {args.name}"
    except StopIteration:
        kind = "target" if args.target else "drive"
        raise Fatal(f"no {kind} named {args.name!r} in {cfg.source}") from None
    if not namespace.inside(cfg):
        if namespace.holder(cfg) is None:
            return 0  # no namespace, no mount in it
        again: list[str | Path] = [_offsite_bin(args), "--config", cfg.source, "release"]
        return namespace.reenter(cfg, [*again, *(["--target"] if args.target else []),
                                       "--", args.name])
    execute.release(mount, what)
    return 0


def _target_arg(cfg: Config, name: str) -> Target:
    return _named(cfg, cfg.targets, name, "target")


def cmd_target(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    if args.action == "status" and args.name is None:
        every = [registry.status(t) for t in cfg.targets]
        if args.json:
            print(json.dumps(every, indent=1))
        else:
            sys.stdout.write("".join(registry.as_text(f) for f in every) or "no targets\n")
        return 0
    if args.name is None:
        raise Fatal(f"offsite target {args.action} needs a target name")
    target = _target_arg(cfg, args.name)
    if args.action == "status":
        facts = registry.status(target)
        sys.stdout.write(json.dumps(facts, indent=1) + "\n" if args.json
                         else registry.as_text(facts))
        return 0
    if args.action == "assemble":
        registry.assemble(target)
    elif args.action == "disassemble":
        registry.teardown(target)
    elif args.action == "key":
        if target.kind is not TargetType.NBD:
            raise Fatal(f"target {target.name} is a {target.kind}; only NBD targets have a key")
        if not args.allowed_from:
            raise Fatal("offsite target key needs --from ADDRESS (the address this machine "
                        "connects from, as the far side sees it)")
        key = nbd.ensure_key(target)
        print(nbd.authorized_line(target, Path(f"{key}.pub").read_text(), args.allowed_from))
    elif args.action == "create":
        print(registry.kind(target).create(target))
    elif target.kind is not TargetType.CLOUD_RAID:
        raise Fatal(f"offsite target {args.action} is for cloud RAID targets; "
                    f"{target.name} is a {target.kind} target")
    elif args.action == "repair":
        made = cloudraid.repair(target)
        for path in made:
            print(f"new member {path}: added and rebuilt at the next assembly")
        if not made:
            print(f"target {target.name}: every member has its image; nothing to repair")
    elif args.action == "grow":
        print(cloudraid.grow(target))
    elif args.action == "take-over":
        count = cloudraid.take_over(target)
        print(f"target {target.name}: {count} member marker(s) now name this computer")
    return 0


def cmd_mirror_copy(args: argparse.Namespace) -> int:
    try:
        result = mirror.copy(args.source, args.destination, mirror.ThrottledProgress(args.job))
    except Fatal as exc:
        # for the job (its parent's parent, under borg with-lock) to give as its reason
        summary = state.this_run_summary()
        if summary is not None:
            state.update(summary, copy_error=str(exc))
        raise
    print(f"copied {result.bytes_copied} bytes in {result.steps} step(s), {result.seconds:.1f} s")
    return 0


def cmd_push_copy(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    job = _job_arg(cfg, args.job)
    try:
        sent = push.push_repository(cfg, job, args.repository)
    except Fatal as exc:
        # for the job (its parent's parent, under borg with-lock) to give as its reason
        summary = state.this_run_summary()
        if summary is not None:
            state.update(summary, copy_error=str(exc), copy_hint=exc.hint)
        raise
    print(f"sent {sent} bytes")
    return 0


def cmd_namespace(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    if args.action == "hold":
        return namespace.hold(cfg)
    print(namespace.describe(cfg))
    return 0 if namespace.holder(cfg) else EXIT_FAILURE


def cmd_drives(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    now = time.time()
    found = drives.rows(cfg, drives.load_records(cfg), now)
    far = drives.target_rows(cfg, drives.load_target_records(cfg), now) + \
        drives.push_rows(cfg, drives.load_push_records(cfg), now)
    if args.json:
        sys.stdout.write(drives.as_json(found, far) + "\n")
    else:
        sys.stdout.write(drives.table(found, now) if found or not far else "")
        sys.stdout.write(("\n" if found else "") + drives.target_table(far, now) if far else "")
    return 0


def _job_arg(cfg: Config, name: str) -> Job:
    return _named(cfg, cfg.jobs, name, "job")


def _named(cfg: Config, items: Sequence[T], name: str, what: str) -> T:
    """The job (target, ...) of that name, or a message listing the names there are."""
    for item in items:
        if getattr(item, "name", None) == name:
            return item
    known = ", ".join(str(getattr(i, "name", "")) for i in items) or "none"
    raise Fatal(f"no {what} named {name!r} in {cfg.source}", f"known {what}s: {known}")


def cmd_hook(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    job = _job_arg(cfg, args.job)
    if args.when == "start":
        hooks.start(cfg, job, args.drive)
    else:
        hooks.finish(cfg, job, args.drive)
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    if args.action == "failure":
        if not args.unit:
            raise Fatal("notify failure needs the failed unit's name",
                        "offsite-notify@.service passes it: offsite notify failure %i")
        notices.failure(cfg, args.unit)
    elif args.action == "flush":
        done = notices.flush(cfg, force=args.now)
        print(f"{done.sent} sent, {done.failed} failed (kept), {done.waiting} waiting")
    elif args.action == "stale":
        found = notices.check_stale(cfg)
        print(f"{len(found)} stale: " + ", ".join(i.what for i in found) if found else "nothing stale")
    elif args.action == "test":
        # through the installed outbox unit when there is one: the way every mail goes
        unit = Path("/") / install.UNIT_DIR / unitnames.OUTBOX_SERVICE
        through = unit.exists() and os.geteuid() == 0 and not args.here
        why = notices.test_mail(cfg, through_unit=through)
        if why is not None:
            raise Fatal(f"the test mail was not sent: {why}; it stays in the spool",
                        "offsite notify spool; journalctl -u offsite-outbox.service; "
                        "offsite notify flush --now")
        by = f" by {unitnames.OUTBOX_SERVICE}" if through else ""
        print("test mail sent to " + ", ".join(cfg.notify.email.to if cfg.notify.email else ())
              + by)
    else:  # spool
        for entry in spool.entries():
            error = entry.data.get("last_error") or "not tried yet"
            print(f"{entry.path.name}  tries={entry.data.get('attempts', 0)}  "
                  f"{entry.subject!r}\n    {error}")
        print(f"{len(spool.entries())} message(s) in {spool.SPOOL_DIR}")
    return 0


def cmd_repo(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    repo = _named(cfg, cfg.repositories, args.name, "repository")
    passphrases = secrets.received()
    if passphrases is None:  # by hand: from the files and credentials themselves
        passphrases = secrets.from_files(cfg, (repo.name,))
    if not namespace.inside(cfg):
        again: list[str | Path] = [_offsite_bin(args), "--config", cfg.source, "repo", "test"]
        return namespace.reenter(cfg, [*again, "--", repo.name], secrets.handover(passphrases))
    print(execute.open_repository(cfg, repo.name, passphrases))
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from offsite.jobs import recovery

    files: dict[str | None, Path] = {}
    for given in args.passphrase_file or ():
        name, _, path = given.rpartition("=")
        files[name or None] = Path(path)

    def ask(repository: str) -> str:
        path = files.get(repository, files.get(None))
        if path is not None:
            return path.read_text().rstrip("\n")
        import getpass

        return getpass.getpass(f"Passphrase of repository {repository}: ")

    for line in recovery.recover(args.device, ask, args.extract_to, args.archive,
                                 args.repository or (), args.luks_key_file):
        print(line)
    if args.extract_to is None:
        print("to restore: offsite recover DEVICE --extract-to DIR [--archive NAME]")
    return 0


def cmd_ssh_key(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    job = _job_arg(cfg, args.job)
    if job.pull is not None:
        keys = pullkeys.authorized_keys(job, args.allowed_from)
        user, host = job.pull.user, job.pull.host
    elif job.to is not None:
        keys = pushkeys.authorized_keys(job, args.allowed_from)
        user, host = job.to.user, job.to.host
    else:
        raise Fatal(f"job {job.name} is a {job.kind} job; only pull and push jobs have SSH keys")
    print(f"# {len(keys)} key(s) of job {job.name} in {pullkeys.key_dir(job)}; add these lines "
          f"to ~{user}/.ssh/authorized_keys on {host}. Each key can do one thing only, and "
          "only from " + args.allowed_from + ".", file=sys.stderr)
    if job.to is not None:
        print(f"# The first sends (write-only, into {job.to.path}); the second only reads "
              "there, for a restore-test of the pushed copy: leave it out if none runs. "
              f"{job.to.path} must exist and belong to {user}.", file=sys.stderr)
    for line in keys:
        print(line)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from offsite.agent import daemon

    return daemon.main(configmod.load(args.config))


def cmd_status(args: argparse.Namespace) -> int:
    from offsite.views import status

    cfg = configmod.load(args.config)
    now = time.time()
    found = status.collect(cfg, now)
    sys.stdout.write(status.as_json(found) + "\n" if args.json else status.render_text(found, now))
    return EXIT_FAILURE if any(j.result == "failed" for j in found.jobs) else 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from offsite.views import schedule

    cfg = configmod.load(args.config)
    now = time.time()
    entries = schedule.collect(cfg, now)
    sys.stdout.write(schedule.as_json(entries) + "\n" if args.json
                     else schedule.render_text(entries, now))
    return 0


def cmd_led(args: argparse.Namespace) -> int:
    from offsite import state
    from offsite.agent import daemon, ledstate, stick
    from offsite.units import systemd

    cfg = configmod.load(args.config)
    if args.action == "clear":
        state.write(daemon.LED_CLEARED, {"cleared": time.time()})
        told = systemd.signal_main(unitnames.AGENT_UNIT, signal.SIGHUP)
        print("Failures so far no longer light the LED red" +
              ("; the agent shows the new state." if told else
               " (the agent is not running; it shows the state when it starts)."))
        return 0
    led = stick.Stick(cfg.notify.led)
    index = cfg.notify.led.failure_index
    for name in (*ledstate.STATES[:-1], "off"):
        # a failure on its own LED, when there is one
        lights = ((index if name == "failed" and index is not None else cfg.notify.led.index,
                   name),)
        ok = led.show(lights)
        print(f"{name:<14} {cfg.notify.led.color(name) if name != 'off' else '':<8} "
              f"{'shown' if ok else 'NOT shown (see the warning above)'}")
        time.sleep(1.0)
    systemd.signal_main(unitnames.AGENT_UNIT, signal.SIGHUP)  # back to what it should show
    return 0 if led.shown is not None else EXIT_FAILURE


def cmd_drive(args: argparse.Namespace) -> int:
    from offsite.targets import enroll

    if args.action == "eject":
        return _eject(args)
    lines = enroll.enroll(args.device, args.name, args.keyfile, args.passphrase_file, args.mount)
    print("Enrolled. Add this to the configuration, then `offsite plan` and `offsite install`:")
    print(lines, end="")
    return 0


def _eject(args: argparse.Namespace) -> int:
    from offsite.targets import devices, eject

    cfg = configmod.load(args.config)
    drive = _named(cfg, cfg.drives, args.name, "drive")
    if not drive.eject:
        logger.info("drive %s stays attached (eject: false)", drive.name)
        return 0
    said = eject.eject(devices.drive_device(drive), f"drive {drive.name}",
                       namespace.mount_tables(cfg))
    logger.info("%s", said, extra=logmod.fields(drive=drive.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offsite",
        description="A backup agent that lives in systemd: off-site copies to drives you "
        "plug in, nightly borgmatic, weekly borg check, an LED and failure mail.",
    )
    parser.add_argument("--version", action="version", version=f"offsite {__version__}")
    parser.add_argument(
        "-c", "--config", type=Path, default=configmod.DEFAULT_PATH, metavar="FILE",
        help=f"the configuration file (default: {configmod.DEFAULT_PATH})",
    )
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # -c also after the command (offsite check -c FILE); SUPPRESS keeps the global default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                        help=f"the configuration file (default: {configmod.DEFAULT_PATH})")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging and tracebacks")

    p = sub.add_parser(
        "check", parents=[common], help="validate the configuration and report every problem at once",
        description="Validate the configuration. Exits 0 when it is good, 1 with every "
        "problem listed (file:line:column, key path, hint) when it is not.",
    )
    p.add_argument("file", nargs="?", type=Path, help="the file to check (default: -c FILE)")
    p.set_defaults(func=cmd_check)

    def root_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                       help="work on the tree under DIR without talking to systemd (packaging)")

    def bin_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--offsite-bin", metavar="PATH",
                       help="the offsite executable the units run (default: this one)")

    p = sub.add_parser(
        "plan", parents=[common], help="show what install would add, change and remove, touching nothing",
        description="Render the units from the configuration and print a diff against what "
        "is installed. Changes nothing.",
    )
    root_option(p)
    bin_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "install", parents=[common], help="render, verify and install the systemd units; reload systemd once",
        description="Render the units, check them with systemd-analyze verify, move them into "
        "/etc/systemd/system, remove units offsite installed earlier that the configuration "
        "no longer wants, reload systemd once and start the timers. A configuration with "
        "any problem installs nothing.",
    )
    root_option(p)
    bin_option(p)
    p.add_argument("--no-verify", action="store_true",
                   help="skip systemd-analyze verify (when the offsite path does not exist here)")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser(
        "uninstall", parents=[common], help="remove exactly the units offsite installed",
        description="Stop and remove every unit and link offsite installed (as recorded in "
        "its manifest) and nothing else; reload systemd once.",
    )
    root_option(p)
    p.add_argument("--offline", action="store_true", help="remove the files without "
                   "contacting systemd (no systemd running: a chroot, the package's removal "
                   "in one)")
    p.set_defaults(func=cmd_uninstall)

    p = sub.add_parser(
        "exec", parents=[common], help="run one job now, in this process (what the job units call)",
        description="Run JOB: take its locks (waiting while another job uses the same "
        "repository or path), then do its work. Normally run by offsite-JOB.service.",
    )
    p.add_argument("--drive", help="the drive that started this job (drive-started jobs)")
    p.add_argument("job", help="the job's name in the configuration")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser(
        "namespace", parents=[common],
        help="show the private backup mount namespace (status), or hold it (the service)",
        description="status: which process holds the backup namespace and how to enter it. "
        "hold: what offsite-namespace.service runs under `unshare --mount`: mount the "
        "backup filesystems inside this new namespace, make the rest of the tree read-only "
        "there, and wait until stopped.",
    )
    p.add_argument("action", choices=["status", "hold"], nargs="?", default="status")
    p.set_defaults(func=cmd_namespace)

    p = sub.add_parser(
        "drives", parents=[common], help="each drive's last copy, its age, and which is due",
        description="List the configured drives: when each was last seen and last copied, "
        "how much that copy wrote, which drive of a rotation group is due next, and which "
        "copies are older than their stale_after.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_drives)

    p = sub.add_parser(
        "run", parents=[common], help="start a job through systemd and follow it to the end",
        description="Start JOB's unit through systemd (as its timer or drive would) and show "
        "what it logs, with a progress line for copies, until it ends. Exits 0 if it "
        "succeeded. A drive job with no drive of its group plugged in is skipped (exit 0).",
    )
    p.add_argument("--drive", help="for a drive job: which drive (default: a plugged one)")
    p.add_argument("job", help="the job's name in the configuration")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "release", parents=[common],
        help="unmount a drive a job left mounted in the backup namespace (internal)",
        description="Unmount DRIVE inside the backup namespace if a drive job that was killed "
        "or lost its drive left it mounted. Drive job units run this after every run.",
    )
    p.add_argument("--target", action="store_true", help="NAME is a target, not a drive")
    p.add_argument("name", help="the drive's (or target's) name in the configuration")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser(
        "target", parents=[common],
        help="cloud RAID and NBD targets: create, assemble, disassemble, status, repair",
        description="Targets other than a USB drive. create: write a cloud RAID's member "
        "images (random data), its array, LUKS and filesystem. assemble/disassemble: what "
        "the target unit runs around a job (degraded if a member is missing). status: "
        "members, markers and health. repair: a fresh image for each missing member, "
        "rebuilt at the next assembly. grow: add the members listed beyond the set's size "
        "(md reshape, then LUKS and ext4 grown). take-over: claim a set another computer used (after "
        "it stopped). key: an NBD target's SSH key and the far side's authorized_keys line.",
    )
    p.add_argument("action", choices=["create", "assemble", "disassemble", "status", "repair",
                                      "grow", "take-over", "key"])
    p.add_argument("name", nargs="?", help="the target's name in the configuration")
    p.add_argument("--from", dest="allowed_from", metavar="ADDRESS",
                   help="key: the address this machine connects from")
    p.add_argument("--json", action="store_true", help="status: machine-readable output")
    p.set_defaults(func=cmd_target)

    p = sub.add_parser(
        "mirror-copy", parents=[common],
        help="copy a borg repository so that an interruption leaves a usable copy (internal)",
        description="Mirror the borg repository SOURCE into DESTINATION in an order that "
        "leaves, after every step, a repository borg accepts. Run it under `borg with-lock "
        "SOURCE` so the source holds still; the mirror job does that.",
    )
    p.add_argument("--job", help="the job this copy is part of (for the journal's JOB= field)")
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p.set_defaults(func=cmd_mirror_copy)

    p = sub.add_parser(
        "notify", parents=[common], help="mail: failure report, spool flush, staleness check, test",
        description="failure UNIT: report a failed job unit by mail (what offsite-notify@."
        "service runs; status, this run's journal, failures in a row). flush: send the "
        "spooled mail that is due (--now: all of it; what offsite-outbox.service runs). stale: "
        "alert about drives without a recent copy and jobs without a recent success (daily, "
        "offsite-stale.timer). test: send a test mail now, through offsite-outbox.service "
        "as every mail goes (--here: from this process). spool: list what waits in the spool.",
    )
    p.add_argument("action", choices=["failure", "flush", "stale", "test", "spool"])
    p.add_argument("--here", action="store_true",
                   help="test: send from this process, not through offsite-outbox.service")
    p.add_argument("unit", nargs="?", help="failure: the failed unit")
    p.add_argument("--now", action="store_true", help="flush: try every message, due or not")
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser(
        "repo", parents=[common], help="prove that a repository's passphrase opens it",
        description="test NAME: read the repository's passphrase from where the configuration "
        "says (a file, an encrypted credential, a command, the borgmatic configuration), open "
        "the repository with it inside the backup namespace and name its latest archive. A "
        "wrong passphrase says so. Run as root.",
    )
    p.add_argument("action", choices=["test"])
    p.add_argument("name", help="the repository's name in the configuration")
    bin_option(p)
    p.set_defaults(func=cmd_repo)

    p = sub.add_parser(
        "recover", parents=[common],
        help="on any machine: open an off-site drive read-only and list or extract its copies",
        description="The day the machine is gone: open DEVICE (asking for its LUKS passphrase, "
        "the slot you keep away from the machine), mount it read-only, give borg a base "
        "directory of its own (no keys, cache or configuration of this machine), import the "
        "keys the drive carries, and list each repository's archives (asking for each "
        "passphrase); with --extract-to, extract the latest archive (or --archive) of each "
        "into DIR/REPOSITORY. Needs no configuration; nothing on the drive is changed.",
    )
    p.add_argument("device", type=Path, help="the drive, e.g. /dev/sdb (or its partition)")
    p.add_argument("--extract-to", type=Path, metavar="DIR", help="extract into DIR/REPOSITORY")
    p.add_argument("--archive", help="the archive to extract (default: the latest)")
    p.add_argument("--repository", action="append", metavar="NAME",
                   help="only this repository (again for more)")
    p.add_argument("--passphrase-file", action="append", metavar="[REPOSITORY=]FILE",
                   help="a repository's passphrase from FILE instead of a prompt (without "
                   "REPOSITORY=: for every repository not named otherwise)")
    p.add_argument("--luks-key-file", type=Path, metavar="FILE",
                   help="open the drive with this key instead of a passphrase prompt")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser(
        "push-copy", parents=[common],
        help="push one repository of a push job to its far side (internal)",
        description="Send repository REPOSITORY of push job JOB into a new tree on the far "
        "side and switch to it in one step. Run it under `borg with-lock` so the repository "
        "holds still; the push job does that.",
    )
    p.add_argument("job")
    p.add_argument("repository")
    p.set_defaults(func=cmd_push_copy)

    p = sub.add_parser(
        "ssh-key", parents=[common],
        help="create a pull or push job's SSH keys; print the far side's authorized_keys lines",
        description="Create the key pairs of pull job JOB (once; kept in /var/lib/offsite/ssh) "
        "and print one authorized_keys line per key for the far side: `restrict`, `from=` "
        "ADDRESS, and a forced command: a read-only rsync of one listed path (rrsync -ro), "
        "or the job's before/after command; for a push job a write-only rsync into its far "
        "directory (rrsync -wo) and a read-only one for restore tests (rrsync -ro). A stolen "
        "key can do that one thing and nothing else. Lines go to stdout, the explanation to "
        "stderr.",
    )
    p.add_argument("job", help="a pull or push job's name")
    p.add_argument("--from", dest="allowed_from", required=True, metavar="ADDRESS",
                   help="the address (or pattern, e.g. 192.0.2.0/24) the far side sees this "
                   "machine connect from")
    p.set_defaults(func=cmd_ssh_key)

    p = sub.add_parser(
        "hook", parents=[common], help="record a job's run and ping its health URL (internal)",
        description="What job units run before (start) and after (finish) their job: record the "
        "run in the history, ping the job's health URL, and after a success send the recovery "
        "or success mail. Reads INVOCATION_ID, SERVICE_RESULT, EXIT_CODE, EXIT_STATUS.",
    )
    p.add_argument("when", choices=["start", "finish"])
    p.add_argument("--drive", help="the drive that started the job")
    p.add_argument("job")
    p.set_defaults(func=cmd_hook)

    p = sub.add_parser(
        "drive", parents=[common], help="enroll a LUKS drive; eject a drive",
        description="enroll DEVICE: add a keyslot opened by a random root-only keyfile "
        "(created if missing; default /etc/offsite/keys/NAME.key), back up the LUKS header to "
        "/var/lib/offsite/luks-headers/UUID.img (root only), and print the configuration "
        "lines for the drive. Asks for an existing passphrase unless --passphrase-file. "
        "eject NAME: flush, stop and take out the drive so it is safe to unplug (what "
        "offsite does when a drive's job ends; refused while it is mounted or unlocked).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("enroll", parents=[common], help="enroll a LUKS drive")
    q.add_argument("device", type=Path, help="the drive's LUKS device, e.g. /dev/sdb")
    q.add_argument("--name", required=True, help="the drive's name in the configuration")
    q.add_argument("--keyfile", type=Path, help="the keyfile (default /etc/offsite/keys/NAME.key)")
    q.add_argument("--passphrase-file", type=Path, help="a file with a key that opens it now")
    q.add_argument("--mount", type=Path, default=Path("/mnt/offsite"),
                   help="where the drive is mounted in the backup namespace")
    q = actions.add_parser("eject", parents=[common],
                           help="stop a drive offsite is done with: safe to unplug")
    q.add_argument("name", help="the drive's name in the configuration")
    p.set_defaults(func=cmd_drive)

    p = sub.add_parser(
        "agent", parents=[common], help="watch drives and jobs, drive the LED (the service)",
        description="What offsite-agent.service runs: watch udev for drives, systemd (D-Bus) "
        "for offsite's units, light the LED, write the metrics. Type=notify with a watchdog.",
    )
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser(
        "status", parents=[common], help="each job's last result and next run, drives, the LED",
        description="Each job with its last result, when, how long it took and when it runs "
        "next; each drive with its last copy; the LED. Failures first. Exits 1 if a job's "
        "last run failed.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "schedule", parents=[common], help="when each job runs on a 24-hour clock, overlaps flagged",
        description="A 24-hour timeline of the scheduled jobs (from systemd's own reading of "
        "their calendars) with how long each usually takes (from the history); runs that "
        "overlap within the next 7 days are flagged.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser(
        "led", parents=[common], help="clear a red LED, or test the LED's colours",
        description="clear: failures so far no longer light the LED red (a new failure "
        "does). test: show each state's colour for a second, then give the LED back to the "
        "agent.",
    )
    p.add_argument("action", choices=["clear", "test"])
    p.set_defaults(func=cmd_led)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logmod.setup(debug=args.debug,
                 identifier=unitnames.identifier(args.command, getattr(args, "action", None)))
    try:
        result: int = args.func(args)
        return result
    except configmod.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''}; nothing was changed.", file=sys.stderr)
        return EXIT_FAILURE
    except (Fatal, CommandError) as exc:
        if args.debug:
            raise
        print(f"offsite: error: {exc}", file=sys.stderr)
        hint = getattr(exc, "hint", "")
        if hint:
            print(f"    hint: {hint}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a file or directory we could not read or write
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"offsite: error: {exc.strerror or exc}{where}", file=sys.stderr)
        if isinstance(exc, PermissionError):
            print("    hint: this needs root (it writes systemd units and state)", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("offsite: interrupted", file=sys.stderr)
        return 130
