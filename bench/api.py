"""Measurements per second through the API, against the 100k-action portfolio.

bench/portfolio.py writes the portfolio into a fresh SQLite file; an administrator issues a
token (``measurements:write`` over every plan); ``qip serve`` runs in its own process on a free
loopback port. Then 1,000 measurements — of the indicators of the portfolio's live plans, each
with its own idempotency key and date — are pushed twice over one keep-alive HTTP connection:
in batches of 100 (10 requests) and one by one (1,000 requests). Each push is what the API
does for a feed: the token checked, every item checked, the plans locked, one audit event per
measurement, the idempotency keys kept, each touched plan re-rated.

The floor is the same inserts by raw SQL in this process (SQLAlchemy Core, on a copy of the
file): the measurement rows and their idempotency keys, in one transaction per batch of 100 and
per measurement, with none of the checking, auditing or re-rating. The ratio says how much the
API costs over it. Target (issue 14): at least 1,000 measurements/s in batches, and within 5×
the floor.

    python bench/api.py [--actions 100000] [--count 1000] [--batch 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import machine, run_child, table  # noqa: E402

SECRET = "bench-" + "k" * 40


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _indicators(db_url: str, wanted: int) -> list[str]:
    """Indicators of live plans, a few plans' worth, in a stable order."""
    from sqlmodel import select as select_rows

    from qip_flow.store.db import Database
    from qip_flow.store.models import Indicator, Plan

    db = Database(db_url)
    with db.read() as session:
        rows = session.exec(select_rows(Indicator.id).join(Plan, Plan.id == Indicator.plan_id)
                            .where(Plan.state == "in_progress").order_by(Indicator.id)
                            .limit(wanted)).all()
    db.dispose()
    return [str(r) for r in rows]


def _token(db_url: str) -> str:
    """An administrator (the portfolio's first person, given the role) issues the token."""
    from qip_flow.clock import Clock
    from qip_flow.runtime import Runtime
    from qip_flow.services import tokens
    from qip_flow.store.db import Database

    db = Database(db_url)
    with db.engine.begin() as conn:
        first = conn.execute(text("select id from person order by id limit 1")).scalar_one()
        conn.execute(text("update person set roles = :r where id = :p"),
                     {"r": '["administrator"]', "p": first})
    os.environ["QIP_SECRET_KEY"] = SECRET
    rt = Runtime(db=db, clock=Clock())
    made, _ = tokens.create(rt, name="bench-feed", scopes=["measurements:write"], plans=["all"],
                            by=first)
    db.dispose()
    return made


def _pushes(indicators: list[str], count: int, start: date) -> list[dict[str, Any]]:
    """``count`` measurements: each indicator in turn, on successive days back from ``start``
    (dated back, so each carries the reason the rules ask of a late value)."""
    out = []
    for n in range(count):
        indicator = indicators[n % len(indicators)]
        day = start - timedelta(days=n // len(indicators))
        out.append({"indicator": indicator, "value": 80 + n % 20, "date": day.isoformat(),
                    "idempotency_key": f"bench-{uuid.uuid4().hex}",
                    "reason": "bench: recorded late"})
    return out


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else samples[0]


def _over_api(url: str, token: str, items: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            body = {"measurements": chunk} if batch > 1 else chunk[0]
            t0 = time.perf_counter()
            answer = client.post("/api/v1/measurements", json=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if answer.status_code != 201 or answer.json()["recorded"] != len(chunk):
                raise RuntimeError(f"push {i // batch} answered {answer.status_code}: "
                                   f"{answer.text[:500]}")
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": len(items) / seconds, "p95_ms": _p95(latencies) * 1000,
            "requests": len(latencies)}


def _floor(db_url: str, items: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """The same rows by raw SQL: measurements and their keys, one transaction per push."""
    from qip_flow.store.db import Database
    from qip_flow.store.models import Measurement, MeasurementKey

    db = Database(db_url)
    latencies: list[float] = []
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        t0 = time.perf_counter()
        with db.engine.begin() as conn:
            for item in chunk:
                new_id = conn.execute(insert(Measurement).values(
                    indicator_id=item["indicator"], on=date.fromisoformat(item["date"]),
                    value=item["value"], source="", reaudit=False, recorded_by_id=None, at=now,
                    backdated=True, backdate_reason=item["reason"])).inserted_primary_key[0]
                conn.execute(insert(MeasurementKey).values(
                    key=f"floor|{item['idempotency_key']}", measurement_id=new_id,
                    fingerprint="-" * 64, at=now))
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    db.dispose()
    return {"seconds": seconds, "rate": len(items) / seconds, "p95_ms": _p95(latencies) * 1000}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=1000, help="measurements per run")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--indicators", type=int, default=50,
                        help="indicators the feed measures (of live plans)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qip-bench-api-"))
    process: subprocess.Popen[str] | None = None
    try:
        db_file = work / "qip.db"
        url = f"sqlite:///{db_file}"
        run_child([str(BENCH / "portfolio.py"), "--db", url, "--actions", str(args.actions),
                   "--json"])
        token = _token(url)
        indicators = _indicators(url, args.indicators)
        floor_file = work / "floor.db"
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{db_file}{suffix}").exists():
                shutil.copy(f"{db_file}{suffix}", f"{floor_file}{suffix}")
        port = _free_port()
        server = f"http://127.0.0.1:{port}"
        log = (work / "serve.log").open("w")
        env = {**os.environ, "QIP_SECRET_KEY": SECRET, "QIP_API_RATE": "1000000",
               "QIP_BASE_URL": server}
        process = subprocess.Popen([sys.executable, "-m", "qip_flow", "--db", str(db_file),
                                    "serve", "--port", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, text=True, cwd=work)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{server}/api/v1/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        today = datetime.now(UTC).date()
        # the feed's plans were re-rated before (by the tick): one untimed push re-rates them
        # once here, so the portfolio's standing escalations are not counted as the feed's
        _over_api(server, token, _pushes(indicators, len(indicators), today), len(indicators))
        batched_items = _pushes(indicators, args.count, today - timedelta(days=1))
        single_items = _pushes(indicators, args.count, today - timedelta(days=400))
        batched = _over_api(server, token, batched_items, args.batch)
        single = _over_api(server, token, single_items, 1)
        floor_batched = _floor(f"sqlite:///{floor_file}", batched_items, args.batch)
        floor_single = _floor(f"sqlite:///{floor_file}", single_items, 1)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, api, floor in ((f"batches of {args.batch}", batched, floor_batched),
                              ("one by one", single, floor_single)):
        rows.append([label, round(api["rate"]), round(api["p95_ms"], 1), round(floor["rate"]),
                     round(floor["p95_ms"], 2), round(floor["rate"] / api["rate"], 1)])
    met = batched["rate"] >= 1000
    within = floor_batched["rate"] / batched["rate"] <= 5
    table("api", f"API measurements: {args.count:,} pushed against {args.actions:,} actions "
          "(SQLite)", ["push", "measurements/s", "p95 ms per request", "floor (raw SQL) /s",
                       "floor p95 ms", "floor ÷ API"], rows, notes=[
              f"The feed measures {len(indicators)} indicators of live plans; each measurement "
              "has its own idempotency key and date.",
              "The floor inserts the same measurement and key rows by raw SQL, one transaction "
              "per push, with no checks, audit events or re-rating.",
              f"Target: ≥ 1,000 measurements/s in batches ({'met' if met else 'NOT met'}); "
              f"≤ 5× the floor ({'met' if within else 'NOT met'}).",
              f"Machine: {machine()}; load average at the end "
              f"{os.getloadavg()[0]:.1f} (other work on the machine slows both sides alike)."])
    return {"batched": batched, "single": single, "floor_batched": floor_batched,
            "floor_single": floor_single}


if __name__ == "__main__":
    main()
