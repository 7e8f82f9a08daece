"""The command line: parse arguments, call the module that does the work, map errors to exits."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from offsite import __version__
from offsite import config as configmod
from offsite import log as logmod
from offsite.errors import EXIT_FAILURE, EXIT_NOT_IMPLEMENTED, Fatal
from offsite.model import DriveTrigger, Job, Schedule
from offsite.run import CommandError

logger = logging.getLogger("offsite")

Handler = Callable[[argparse.Namespace], int]

# Commands whose work belongs to an issue not yet done: they say so and exit non-zero.
PLANNED: dict[str, tuple[str, str]] = {
    "plan": ("show what install would change (a diff of the units)", "unit generation, #3"),
    "install": ("render, verify and install the systemd units", "unit generation, #3"),
    "uninstall": ("remove exactly the units offsite installed", "unit generation, #3"),
    "exec": ("run one job (what the job units call)", "the off-site copy, #4"),
    "run": ("start a job through systemd and follow it", "the off-site copy, #4"),
    "drives": ("list drives, when each was last seen and copied", "the off-site copy, #4"),
    "agent": ("the long-running agent: udev, D-Bus, LED, history", "the agent, #5"),
    "status": ("jobs, last results, next runs, drives, LED", "the agent, #5"),
    "schedule": ("a 24-hour timeline of the jobs", "the agent, #5"),
    "led": ("show, test or clear the LED", "the agent, #5"),
    "notify": ("send the failure mail for a unit (OnFailure=)", "notifications, #6"),
}


def cmd_check(args: argparse.Namespace) -> int:
    path: Path = args.file or args.config
    cfg = configmod.load(path)
    print(
        f"{path}: OK: {len(cfg.drives)} drive(s), {len(cfg.repositories)} repositor"
        f"{'y' if len(cfg.repositories) == 1 else 'ies'}, {len(cfg.jobs)} job(s)"
    )
    for job in cfg.jobs:
        print(f"  {job.name}: {job.kind}, {describe_trigger(job)}")
    return 0


def describe_trigger(job: Job) -> str:
    if isinstance(job.trigger, Schedule):
        return f"on schedule {job.trigger.calendar!r}"
    if isinstance(job.trigger, DriveTrigger):
        return "when drive " + " or ".join(repr(d) for d in job.trigger.drives) + " is plugged"
    return "started by hand"


def cmd_demo(args: argparse.Namespace) -> int:
    from offsite import demo

    return demo.main()


def cmd_sandbox(args: argparse.Namespace) -> int:
    from offsite import sandbox

    return sandbox.main(args.command)


def planned(name: str, owner: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(f"offsite {name}: not implemented yet (belongs to {owner})", file=sys.stderr)
        return EXIT_NOT_IMPLEMENTED

    return handler


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

    p = sub.add_parser(
        "check", help="validate the configuration and report every problem at once",
        description="Validate the configuration. Exits 0 when it is good, 1 with every "
        "problem listed (file:line:column, key path, hint) when it is not.",
    )
    p.add_argument("file", nargs="?", type=Path, help="the file to check (default: -c FILE)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "demo", help="show offsite at work in a throw-away sandbox systemd",
        description="Boot a real systemd in a private namespace, plug a demo drive and show "
        "what offsite makes of it. Needs root. Leaves nothing behind.",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "sandbox", help="run a command in a throw-away sandbox systemd (for trying units)",
        description="Boot a real systemd as PID 1 of a private PID and mount namespace on a "
        "copy-on-write overlay of this machine's root, run COMMAND inside (default: a shell), "
        "then halt it. Nothing it writes reaches the host. Needs root.",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run inside")
    p.set_defaults(func=cmd_sandbox)

    for name, (summary, owner) in PLANNED.items():
        p = sub.add_parser(name, help=f"{summary} [not yet: {owner}]",
                           description=f"{summary}. Not implemented yet ({owner}).")
        p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=planned(name, owner))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logmod.setup(debug=args.debug)
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
    except KeyboardInterrupt:
        print("offsite: interrupted", file=sys.stderr)
        return 130
