"""Shared by every benchmark: time and peak memory of a step, one table printed and saved
under bench/results/ with the date and the machine, so anyone can reproduce and compare."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {mem_gib:.0f} GiB, {cpu}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    value: Any = None


def measure(step: Callable[[], Any]) -> Measured:
    """Wall time of ``step`` in this process, and this process's peak RSS after it."""
    start = time.perf_counter()
    value = step()
    seconds = time.perf_counter() - start
    return Measured(seconds, peak_rss_mb(), value)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | Path | None = None) -> dict[str, Any]:
    """Run a benchmark step in a fresh process (so its peak memory is its own), in ``cwd`` if
    given — never by changing this process's directory; the child prints one JSON object on
    its last line."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False,
                         env={**os.environ, **(env or {})}, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(name: str, title: str, columns: list[str], rows: list[list[Any]],
          notes: Sequence[str] = ()) -> str:
    """Print a Markdown table and save it as bench/results/<name>.md (and .json)."""
    def cell(v: Any) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "", f"Measured {when} on {machine()}.", "",
             "| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if notes:
        lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    print(text)
    if not os.environ.get("QIP_BENCH_NO_SAVE"):
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {"title": title, "measured": when, "machine": machine(), "columns": columns,
             "rows": rows, "notes": list(notes)}, indent=2, default=str), encoding="utf-8")
    return text
