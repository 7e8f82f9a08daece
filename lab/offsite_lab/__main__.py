"""``offsite-lab demo`` and ``offsite-lab sandbox [COMMAND...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from offsite.errors import Fatal


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="offsite-lab", description="offsite's demo and sandbox "
                                     "(from the source tree; not part of the installed program)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("demo", help="show offsite at work in a throw-away sandbox systemd",
                   description="Boot a real systemd in a private namespace, plug a demo drive "
                   "and show what offsite makes of it. Needs root. Leaves nothing behind.")
    p = sub.add_parser("sandbox", help="run a command in a throw-away sandbox systemd",
                       description="Boot a real systemd as PID 1 of a private PID and mount "
                       "namespace on a copy-on-write overlay of this machine's root, run "
                       "COMMAND inside (default: a shell), then halt it. Needs root.")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="command to run inside")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from offsite_lab import demo

            return demo.main()
        from offsite_lab import sandbox

        return sandbox.main(args.argv)
    except Fatal as exc:
        print(f"offsite-lab: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"    hint: {exc.hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
