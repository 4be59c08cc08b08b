"""Run every benchmark with one command and write their tables under bench/results/.

    python3 dev.py qip --help >/dev/null   # once: builds .venv
    .venv/bin/python bench/run.py          # the standard sizes (about 15 minutes here)
    .venv/bin/python bench/run.py --full   # also the tick at 1M actions (much longer)

Each benchmark prints one table beside its baseline and saves it as bench/results/NAME.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="include 1M actions in the tick")
    parser.add_argument("--only", help="comma-separated: tick,tick-postgres,reevaluate,"
                                       "decisions,dispatch,load,workers,api,web,cli")
    args = parser.parse_args()
    sizes = "10000,100000,1000000" if args.full else "10000,100000"
    steps = {
        "tick": ["tick.py", "--sizes", sizes, "--backends", "sqlite", "--name", "tick-sqlite"],
        "tick-postgres": ["tick.py", "--sizes", sizes, "--backends", "postgres",
                          "--name", "tick-postgres"],
        "reevaluate": ["reevaluate.py"],
        "decisions": ["decisions.py"],
        "dispatch": ["dispatch.py"],
        "load": ["load.py"],
        "workers": ["workers.py"],
        "api": ["api.py"],
        "web": ["web.py"],  # 20 people for 60 s against the pages, 100k actions
        "cli": ["cli.py"],  # qip plans/show/explain/audit beside the floor, demo and 100k
    }
    chosen = args.only.split(",") if args.only else list(steps)
    failed = []
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.call([sys.executable, str(BENCH / steps[name][0]), *steps[name][1:]]):
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
