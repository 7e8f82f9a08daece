"""`make bench`: run every benchmark under bench/ and print one table of all figures, each
with its anchor measured in the same run, the ratio and the goal. Exit 1 if a goal was
missed or a benchmark failed."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from table import OUT, Figure, load, render

from offsite.run import interactive

HERE = Path(__file__).resolve().parent
SCRIPTS = ("check_scale.py", "install_scale.py", "plug_latency.py", "mirror_copy.py",
           "plug_to_safe.py", "push_copy.py", "agent.py", "usb_plug.py")


def main() -> int:
    figures: list[Figure] = []
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for script in SCRIPTS:
            out = Path(tmp) / f"{script}.jsonl"
            print(f"== {script}", flush=True)
            code = interactive([sys.executable, HERE / script], env={OUT: str(out)})
            got = load(out)
            if code != 0 and not got:
                failed.append(script)
            figures += got
    print("\n== all benchmarks, one run\n")
    print(render(figures), end="")
    missed = [f"{f.bench}: {f.name}" for f in figures if f.ok is False]
    if failed:
        print("benchmarks that failed: " + ", ".join(failed))
    if missed:
        print("goals missed: " + "; ".join(missed))
    return 1 if failed or missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
