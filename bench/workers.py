"""Several workers on PostgreSQL: 1, 2 and 4 `qip run --once` processes share one tick and one
dispatch of a 100k-action portfolio (a busier day than usual, so there is work to share). The
table shows how throughput scales and proves nothing is decided or sent twice: every
notification key is unique (a database constraint) and no delivery was tried successfully
more than once.

    python bench/workers.py --actions 100000 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from common import run_child, table  # noqa: E402
from tick import PG, _pg, _schema_url  # noqa: E402


def counts(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    from qip_flow.store.db import normalise_url

    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        one = conn.execute(text(
            "select (select count(*) from delivery),"
            " (select count(*) from delivery where state = 'sent'),"
            " (select count(*) from (select delivery_id from deliveryattempt"
            "   where outcome = 'sent' group by delivery_id having count(*) > 1) d)")).one()
    engine.dispose()
    return {"deliveries": one[0], "sent": one[1], "sent_twice": one[2]}


def run(workers: int, actions: int, seed: int, today: str, share: float) -> list[object]:
    schema = f"qw_{uuid.uuid4().hex[:8]}"
    _pg(f'create schema "{schema}"')
    url = _schema_url(schema)
    try:
        run_child([str(BENCH / "portfolio.py"), "--db", url, "--actions", str(actions),
                   "--seed", str(seed), "--today", today, "--due-share", str(share), "--json"])
        with tempfile.TemporaryDirectory(prefix="qip-workers-") as tmp:
            start = time.perf_counter()
            procs = [subprocess.Popen(
                [sys.executable, "-m", "qip_flow", "--db", url, "--now", f"{today}T08:00",
                 "run", "--once", "--file-outbox"], cwd=tmp, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
                for _ in range(workers)]
            errors = [p.communicate()[1] for p in procs]
            seconds = time.perf_counter() - start
            if any(p.returncode for p in procs):
                raise RuntimeError(b"\n".join(errors).decode()[-3000:])
        c = counts(url)
    finally:
        _pg(f'drop schema if exists "{schema}" cascade')
    return [workers, actions, c["deliveries"], c["sent"], float(seconds),
            float(c["sent"] / seconds), c["sent_twice"],
            "yes" if c["sent"] == c["deliveries"] and not c["sent_twice"] else "NO"]


def main(argv: list[str] | None = None) -> list[list[object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--today", default="2026-11-24")
    parser.add_argument("--due-share", type=float, default=0.05)
    args = parser.parse_args(argv)
    rows = [run(int(n), args.actions, args.seed, args.today, args.due_share)
            for n in args.workers.split(",")]
    base = rows[0][4]
    for row in rows:
        row.insert(5, float(base / row[4]))
    table("workers", f"Several workers on PostgreSQL ({PG.split('@')[-1]})",
          ["workers", "actions", "deliveries", "sent", "seconds", "speed-up", "messages/s",
           "sent twice", "all sent once"], rows,
          notes=[f"Each worker is `qip run --once` (one tick, one dispatch) started together; "
                 f"due share {args.due_share}; messages go to the default file channel, so the "
                 "table measures qip_flow, not a mail server. Process start-up is included. "
                 "Reminders held for a weekly digest have no delivery yet."])
    return rows


if __name__ == "__main__":
    main()
