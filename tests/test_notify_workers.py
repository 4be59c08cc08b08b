"""Several workers on one PostgreSQL database at once (the deployment PostgreSQL is for): they
tick and dispatch the same portfolio against one loopback SMTP relay. Each worker is its own
process, reaching the test schema through ``?options=-csearch_path=…``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import require_postgres
from notify_servers import (
    Mail,
    clean_env,
    database_url,
    make_runtime,
    morning,
    portfolio,
    scratch_database,
    smtp_server,
    trust_loopback,
    write_channels,
)
from sqlmodel import func, select

from qip_flow.runtime import Runtime
from qip_flow.services import assess, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import AuditEvent, Delivery, Notification, Person

pytestmark = pytest.mark.postgres

NOW = morning(date(2026, 4, 14))  # every rung of the ladder is due for some action
COPIES = 4

# A worker process: it gets ready (imports, rules compiled, channels read), waits for the
# starting signal so that all workers begin together, then either ticks and dispatches like
# `qip run --once` but in small batches (one plan, four deliveries at a time, so that the
# workers' claims interleave; the command's batches of 50 would let the first worker take
# everything), or evaluates every live plan without claiming it, as `qip reassess` does.
WORKER = """
import json, sys, time
from pathlib import Path
from qip_flow.clock import Clock, parse_when
from qip_flow.runtime import Runtime
from qip_flow.services import assess, notifications
from qip_flow.store.db import Database
mode, url, now, channels, ready, go = sys.argv[1:7]
rt = Runtime(db=Database(url), clock=Clock(parse_when(now)), channels_file=channels or None)
rt.decide, rt.channels
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
if mode == "evaluate":
    out = {"made": assess.reassess_all(rt).notifications}
else:
    out = {"tick": notifications.tick(rt, batch=1).as_dict(),
           "dispatch": notifications.dispatch(rt, batch=4).as_dict()}
print(json.dumps(out))
"""


def start_together(mode: str, count: int, db: Database, folder: Path,
                   channels: Path | None = None) -> list[dict[str, Any]]:
    """``count`` worker processes released at the same moment; what each reported."""
    env = clean_env({"SSL_CERT_FILE": str(folder / "loopback-ca.pem")})
    ready = [folder / f"{mode}-ready-{n}" for n in range(count)]
    go = folder / f"{mode}-go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, mode, database_url(db),
                               NOW.isoformat(), str(channels or ""), str(r), str(go)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in ready]
    while not all(r.exists() for r in ready) and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    go.touch()
    reports = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        reports.append(json.loads(stdout))
    return reports


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Database]:
    require_postgres()
    with scratch_database("postgres", tmp_path) as db:
        yield db


@pytest.fixture
def rt(pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """Four started copies of the medication plan, left without progress since 22 January."""
    trust_loopback(monkeypatch, tmp_path)
    rt = make_runtime(pg, None)
    portfolio(rt, tmp_path / "plans", COPIES)
    return rt


def test_three_workers_ticking_and_dispatching_at_once_send_each_message_once(
        rt: Runtime, pg: Database, tmp_path: Path) -> None:
    """Three worker processes tick and dispatch the same portfolio on the same morning at the
    same time: every plan is checked once, every message is enqueued once and reaches the
    relay exactly once, and the sent deliveries match the messages received one for one."""
    with smtp_server(delay=0.01) as relay:
        channels = write_channels(tmp_path / "channels.yaml", [(relay.url(), "email")])
        reports = start_together("work", 3, pg, tmp_path, channels)
        received: list[Mail] = list(relay.messages)

    ticks = [r["tick"] for r in reports]
    sends = [r["dispatch"] for r in reports]
    with rt.db.read() as session:
        # a rung covered by another message to the same person that day is kept as merged
        # (never sent); the Board's rung is held for its weekly digest
        states = Counter(session.exec(select(Notification.state)).all())
        escalations = session.exec(select(func.count()).select_from(Notification).where(
            Notification.kind == "escalation", Notification.state != "merged")).one()
        audited = session.exec(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.what == "escalated")).one()
        people = {p.id: p.email for p in session.exec(select(Person)).all()}
        rows = session.exec(select(Delivery, Notification).join(
            Notification, Notification.id == Delivery.notification_id)).all()
    made = sum(states.values()) - states["merged"]
    total = made - states["held"]
    assert total > 25 and states["held"] > 0
    assert sum(t["plans_checked"] for t in ticks) == COPIES
    assert sum(t["notifications"] for t in ticks) == made
    assert escalations == audited
    assert all(d.state == "sent" for d, _ in rows) and len(rows) == total
    assert sum(s["sent"] for s in sends) == total
    assert sum(s["interrupted"] + s["failed"] for s in sends) == 0

    sent = Counter((people[n.recipient_id], n.entity_id, n.rule_id) for _, n in rows)
    got = Counter((m.to, m.item, m.rule) for m in received)
    assert got == sent
    assert set(got.values()) == {1}


def test_two_evaluations_at_once_enqueue_each_message_once(
        rt: Runtime, pg: Database, tmp_path: Path) -> None:
    """Two processes evaluate every plan at the same moment without claiming them: where both
    decide the same message, the unique key lets one insert it and the other skip it — no
    error, no message twice, each counted once, each escalation audited once — and a tick
    afterwards finds nothing missing."""
    made = sum(r["made"] for r in start_together("evaluate", 2, pg, tmp_path))
    with rt.db.read() as session:
        keys = session.exec(select(Notification.key)).all()
        merged = session.exec(select(func.count()).select_from(Notification).where(
            Notification.state == "merged")).one()  # rungs covered by another message
        escalations = session.exec(select(func.count()).select_from(Notification).where(
            Notification.kind == "escalation", Notification.state != "merged")).one()
        audited = session.exec(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.what == "escalated")).one()
    assert len(keys) > 50 and len(set(keys)) == len(keys)
    assert made == len(keys) - merged
    assert audited == escalations

    rt.clock.set(NOW)
    assert notifications.tick(rt).notifications == 0
    assert assess.reassess_all(rt).notifications == 0
