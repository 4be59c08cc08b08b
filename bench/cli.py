"""CLI latency: how long a person waits for ``qip plans``, ``show``, ``explain`` and ``audit``,
beside the floor every command pays — ``python -c 'import sqlmodel, typer'``, the libraries the
command line is built on — measured in the same run.

Each command runs in a fresh process, as a person or a cron job runs it: on the demo database
(``qip demo``) and on a synthetic portfolio (``bench/portfolio.py``, 100,000 actions by default).
The floor and the commands take turns (interleaved), ``--runs`` rounds (5); the table gives the
median wall time, the median peak RSS of each process (from ``wait4``) and the ratio of the
median to the floor's median. Output goes to a file, not a terminal (Rich draws the same table).

Target (issue 15): ``plans``, ``show`` and ``explain`` on the demo database ≤ 1.6× the floor.

    .venv/bin/python bench/cli.py                       # builds the demo and a 100k portfolio
    .venv/bin/python bench/cli.py --portfolio /tmp/p.db # reuse a portfolio already generated
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import table  # noqa: E402

TARGET = 1.6  # × the floor, for the demo database
TARGETED = ("plans", "show", "explain")
FLOOR = [sys.executable, "-c", "import sqlmodel, typer"]


def qip() -> list[str]:
    """The ``qip`` a person runs: the script beside this Python, else ``python -m qip_flow``."""
    script = Path(sys.executable).with_name("qip")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qip_flow"]


@dataclass
class Case:
    """One command line on one database, and its measurements."""
    name: str
    database: str
    args: list[str]
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    @property
    def peak_mb(self) -> float:
        return statistics.median(self.peaks_mb)


def run_once(case: Case, cwd: Path, out: Path) -> None:
    """Run ``case`` once in a fresh process: its wall time and peak RSS (the child's own)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QIP_") or k == "QIP_CACHE_DIR"}  # the cache is where it is set
    with out.open("wb") as sink:
        start = time.perf_counter()
        child = subprocess.Popen(case.args, stdout=sink, stderr=subprocess.PIPE, cwd=cwd, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0 or (case.args != FLOOR and out.stat().st_size == 0):
        raise RuntimeError(f"{' '.join(case.args)} exited {child.returncode}:\n{err[-3000:]}")
    case.walls.append(wall)
    case.cpus.append(usage.ru_utime + usage.ru_stime)
    case.peaks_mb.append(usage.ru_maxrss / 1024)


def compile_qip_flow() -> None:
    """Compile qip_flow's bytecode, as ``pip install`` does: where PYTHONDONTWRITEBYTECODE is
    set (it is on this machine) and qip_flow is installed editable, every run would otherwise
    compile each module it imports from source, a cost no installed qip_flow pays."""
    import qip_flow

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(qip_flow.__file__).parent)], check=True)


def demo_database(folder: Path) -> Path:
    """A fresh demo database (the seeds' scenarios played on a simulated clock)."""
    subprocess.run([*qip(), "demo", "--dir", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder / "qip.db"


def portfolio_database(path: Path, actions: int) -> Path:
    subprocess.run([sys.executable, str(BENCH / "portfolio.py"), "--db", f"sqlite:///{path}",
                    "--actions", str(actions), "--seed", "1"], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def a_plan(db: Path, prefer: str | None = None) -> str:
    """``prefer`` if the database holds it, else the plan in the middle of the id order."""
    with sqlite3.connect(db) as conn:
        if prefer and conn.execute("select 1 from plan where id = ?", (prefer,)).fetchone():
            return prefer
        count = conn.execute("select count(*) from plan").fetchone()[0]
        return conn.execute("select id from plan order by id limit 1 offset ?",
                            (count // 2,)).fetchone()[0]


def cases_for(label: str, db: Path, plan: str) -> list[Case]:
    base = [*qip(), "--db", str(db)]
    return [Case("plans", label, [*base, "plans"]),
            Case("show", label, [*base, "show", plan]),
            Case("explain", label, [*base, "explain", plan]),
            Case("audit", label, [*base, "audit", plan])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--actions", type=int, default=100_000, help="portfolio size")
    parser.add_argument("--portfolio", type=Path, help="a portfolio SQLite file already made "
                        "(copied, not changed)")
    parser.add_argument("--no-portfolio", action="store_true", help="the demo database only")
    parser.add_argument("--name", default="cli", help="results file name under bench/results/")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="qip-bench-cli-"))
    try:
        compile_qip_flow()
        load_before = os.getloadavg()
        demo = demo_database(work / "demo")
        cases = cases_for("demo", demo, a_plan(demo, "QIP-2026-014"))
        plans_in: dict[str, int] = {}
        if not args.no_portfolio:
            big = work / "portfolio.db"
            if args.portfolio:
                shutil.copyfile(args.portfolio, big)
            else:
                portfolio_database(big, args.actions)
            cases += cases_for(f"{args.actions // 1000}k actions", big, a_plan(big))
            with sqlite3.connect(big) as conn:
                plans_in["portfolio"] = conn.execute("select count(*) from plan").fetchone()[0]
        floor = Case("floor", "–", FLOOR)
        out = work / "out.txt"
        for _ in range(args.runs):  # interleaved: the floor beside every command, every round
            for case in [floor, *cases]:
                run_once(case, work, out)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows: list[list[object]] = [["python -c 'import sqlmodel, typer'", "–", floor.wall,
                                 floor.cpu, floor.peak_mb, 1.0, 1.0, "floor"]]
    for case in cases:
        ratio = case.wall / floor.wall
        verdict = (("yes" if ratio <= TARGET else f"NO (+{(ratio / TARGET - 1) * 100:.0f} %)")
                   if case.database == "demo" and case.name in TARGETED else "–")
        rows.append([f"qip {case.name}", case.database, case.wall, case.cpu, case.peak_mb,
                     round(ratio, 2), round(case.cpu / floor.cpu, 2), verdict])
    notes = [
        f"Medians of {args.runs} runs, each a fresh process, the floor and the commands "
        "interleaved in each round; CPU (user + system) and peak RSS of each process from "
        "wait4; output to a file; qip_flow's bytecode compiled first, as an installed package "
        "has it. ratio = the command's median / the floor's median. Target: plans, show, "
        f"explain on the demo database ≤ {TARGET}× the floor in wall time (the CPU ratio is "
        "the same question asked less noisily on a shared machine).",
        f"Load average (1, 5, 15 min) before {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after {', '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} cores "
        "(the machine is shared: other work slows every row alike).",
    ]
    if plans_in:
        notes.append(f"The portfolio: {args.actions:,} actions in {plans_in['portfolio']:,} "
                     "plans; `qip plans` shows the first page of them (`--all` for every one).")
    table(args.name, "CLI latency: read commands beside the floor of their libraries",
          ["command", "database", "wall s", "CPU s", "peak RSS MB", "ratio (wall)",
           "ratio (CPU)", "target met"],
          rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
