"""The web pages under load: 20 people at once on loopback, for 60 s, against `qip serve`
(a real process) over the 100,000-action portfolio (bench/portfolio.py).

Each person has their own session and their own items: My work (``/``), the Action page of an
action they own, the Plan page of its plan and the Plans portfolio they may see; two of them
are governance leads, who see every plan. Every person loops over the pages in turn, waiting a
moment between requests as a reader does (``--think``, 1 s on average; 0 hammers the server),
and every request is timed from the client. ``/healthz`` (the checks of ``qip health``) is
asked in the same loop as the floor: the cheapest page of the same server, under the same load.
Per page: requests, p50 and p95 latency, requests/s, and p95 beside the floor's p95. Target:
p95 ≤ 150 ms and ≤ 5× the floor's p95. A page that answers 404 (the Action page before the
action pages are merged) is reported as missing, not measured.

    python bench/web.py                                  # 100,000 actions, 20 people, 60 s
    python bench/web.py --actions 2000 --duration 5      # a smoke run
    python bench/web.py --db /tmp/p100k.db               # reuse a portfolio already generated
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import run_child, table  # noqa: E402

PAGES = ("floor", "my work", "action", "plan", "plans")
TARGET_MS, TARGET_RATIO = 150.0, 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(db_file: Path, users: int, leads: int, seed: int) -> list[dict[str, str]]:
    """Upgrade the portfolio's schema, give it a key, and open a session for each person:
    people who own actions (and so have work, an action and a plan), the first ``leads`` of
    them governance leads. Returns each person's session token and paths."""
    from sqlmodel import col, func, select

    from qip_flow.clock import Clock
    from qip_flow.runtime import Runtime
    from qip_flow.services import identity
    from qip_flow.store.db import Database
    from qip_flow.store.keys import ensure_key
    from qip_flow.store.models import Action, Person

    db = Database(f"sqlite:///{db_file}")
    db.init()
    ensure_key(db)
    rt = Runtime(db=db, clock=Clock())
    rng = random.Random(seed)
    with db.read() as session:
        owners = list(session.exec(select(Action.owner_id).where(
            col(Action.owner_id).is_not(None)).group_by(Action.owner_id)
            .having(func.count() >= 3).order_by(Action.owner_id)).all())
    chosen = rng.sample(owners, min(users, len(owners)))
    people = []
    with db.write(gated=False) as session:
        for i, person_id in enumerate(chosen):
            action = session.exec(select(Action).where(Action.owner_id == person_id)
                                  .order_by(col(Action.id))).first()
            assert action is not None
            if i < leads:
                person = session.get(Person, person_id)
                assert person is not None
                person.roles = sorted({*(person.roles or []), "governance_lead"})
            people.append({"person": person_id, "action": action.id, "plan": action.plan_id,
                           "lead": "yes" if i < leads else ""})
    for p in people:
        p["token"] = identity.open_session(rt, p["person"], "oidc")
    db.dispose()
    return people


def paths(person: dict[str, str]) -> dict[str, str]:
    return {"floor": "/healthz", "my work": "/", "action": f"/actions/{person['action']}",
            "plan": f"/plans/{person['plan']}", "plans": "/plans"}


async def run_load(url: str, people: list[dict[str, str]], duration: float, think: float,
                   seed: int) -> dict[str, Any]:
    """Every person's loop, for ``duration`` seconds after one warm-up round each."""
    import httpx

    timings: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    limits = httpx.Limits(max_connections=len(people) * 2)

    clients = [httpx.AsyncClient(base_url=url, cookies={"qip_session": p["token"]},
                                 timeout=60, limits=limits) for p in people]

    async def warm_up(client: httpx.AsyncClient, person: dict[str, str]) -> None:
        for path in paths(person).values():  # caches, connections, charts
            await client.get(path)

    async def person_loop(client: httpx.AsyncClient, person: dict[str, str], rng: random.Random,
                          until: float) -> None:
        mine = paths(person)
        order = list(PAGES)
        rng.shuffle(order)
        i = 0
        while time.monotonic() < until:
            page = order[i % len(order)]
            i += 1
            started = time.perf_counter()
            answer = await client.get(mine[page])
            took = (time.perf_counter() - started) * 1000
            statuses[page][answer.status_code] += 1
            # /healthz answers 503 while no scheduler runs: the same work, so it counts
            if answer.status_code == 200 or (page == "floor" and answer.status_code == 503):
                timings[page].append(took)
            if think:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * think)

    try:
        await asyncio.gather(*(warm_up(c, p) for c, p in zip(clients, people, strict=True)))
        started = time.monotonic()
        until = started + duration
        await asyncio.gather(*(person_loop(c, p, random.Random(seed + i), until)
                               for i, (c, p) in enumerate(zip(clients, people, strict=True))))
    finally:
        for client in clients:
            await client.aclose()
    elapsed = time.monotonic() - started
    return {"timings": dict(timings), "elapsed": elapsed,
            "statuses": {k: dict(v) for k, v in statuses.items()}}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user + system), from /proc (0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(db_file: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIP_")}
    env["QIP_BASE_URL"] = f"http://127.0.0.1:{port}"
    return subprocess.Popen([sys.executable, "-m", "qip_flow", "--db", str(db_file), "serve",
                             "--port", str(port)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, env=env, cwd=db_file.parent)


def wait_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"qip serve exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/healthz", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError("qip serve did not answer within 120 s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--leads", type=int, default=2, help="of the users, governance leads")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean seconds between one person's requests (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, help="a portfolio already generated (copied, not "
                                                "changed); else one is generated")
    parser.add_argument("--name", default="web", help="results file name under bench/results/")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qip-bench-web-") as tmp:
        work = Path(tmp)
        db_file = work / "qip.db"
        if args.db:
            shutil.copy(args.db, db_file)
            generated: dict[str, Any] = {}
        else:
            generated = run_child([str(BENCH / "portfolio.py"), "--db", f"sqlite:///{db_file}",
                                   "--actions", str(args.actions), "--seed", str(args.seed),
                                   "--json"])
        people = prepare(db_file, args.users, args.leads, args.seed)
        port, log = free_port(), work / "serve.log"
        url = f"http://127.0.0.1:{port}"
        process = serve(db_file, port, log)
        try:
            wait_up(url, process, log)
            cpu_before = cpu_seconds(process.pid)
            result = asyncio.run(run_load(url, people, args.duration, args.think, args.seed))
            server_cpu = cpu_seconds(process.pid) - cpu_before
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        errors = [line for line in log.read_text().splitlines() if "Traceback" in line]

    timings, statuses, elapsed = result["timings"], result["statuses"], result["elapsed"]
    floor = timings.get("floor") or [float("nan")]
    floor_p95 = percentile(floor, 0.95)
    rows, summary = [], {}
    for page in PAGES:
        got = timings.get(page, [])
        codes = statuses.get(page, {})
        if not got:
            rows.append([page, 0, "–", "–", "–", "–", "–",
                         f"missing (answers {', '.join(map(str, sorted(codes))) or 'nothing'})"])
            summary[page] = {"statuses": codes, "missing": True}
            continue
        p50, p95 = statistics.median(got), percentile(got, 0.95)
        ratio = p95 / floor_p95 if floor_p95 else float("inf")
        ok = page == "floor" or (p95 <= TARGET_MS and ratio <= TARGET_RATIO)
        rows.append([page, len(got), p50, p95, max(got), len(got) / elapsed,
                     ratio if page != "floor" else 1.0, "yes" if ok else "NO"])
        summary[page] = {"requests": len(got), "p50_ms": p50, "p95_ms": p95,
                         "rps": len(got) / elapsed, "ratio": ratio, "statuses": codes, "ok": ok}
    portfolio_words = (f"{generated.get('counts', {}).get('action', args.actions):,} actions, "
                       f"{generated.get('counts', {}).get('plan', '?'):,} plans"
                       if generated else f"the portfolio in {args.db.name}")
    notes = [f"{args.users} people ({args.leads} governance leads) on loopback for "
             f"{args.duration:g} s, each waiting {args.think:g} s on average between requests "
             f"({'none: the server saturated' if not args.think else 'as a reader does'}); "
             f"{portfolio_words}; SQLite; one `qip serve` process.",
             "floor = /healthz (the checks of `qip health`; 503 here, as no scheduler runs), "
             "asked in the same loop; ratio = "
             "the page's p95 / the floor's p95. Target: p95 ≤ 150 ms and ≤ 5× the floor.",
             f"The server used {server_cpu:.1f} s of CPU in {elapsed:.0f} s "
             f"({100 * server_cpu / elapsed:.0f} % of one core; warm-up included), "
             f"{1000 * server_cpu / max(1, sum(sum(c.values()) for c in statuses.values())):.1f}"
             f" ms a request on average; load average at the end "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine "
             "slows every page alike).",
             f"All {sum(sum(c.values()) for c in statuses.values()):,} answers by status: "
             + "; ".join(f"{p} {dict(sorted(statuses.get(p, {}).items()))}" for p in PAGES)
             + (f". Server errors logged: {len(errors)}" if errors else ".")]
    table(args.name, "Web pages under load: latency per page beside the floor",
          ["page", "requests", "p50 ms", "p95 ms", "max ms", "requests/s", "p95 / floor p95",
           "target met"], rows, notes)
    return {"pages": summary, "errors": errors, "elapsed": elapsed, "server_cpu": server_cpu}


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome["errors"] else 0)
