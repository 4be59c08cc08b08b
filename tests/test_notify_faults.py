"""Faults between the outbox and the world: a relay that is down for a while, a webhook that
answers 500, 429 or 400, one that never recovers, and a dispatcher killed with SIGKILL in the
middle of a batch. Time moves only on the simulated clock; back-off is read from
rules/reminders.yaml (first retry after 2 minutes, doubling; 6 tries; 5-minute leases)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from notify_servers import (
    SmtpServer,
    WebhookReceiver,
    approve_and_start,
    clean_env,
    database_url,
    free_port,
    load_examples,
    make_runtime,
    morning,
    portfolio,
    qip_here,
    smtp_server,
    trust_loopback,
    webhook_receiver,
    write_channels,
)
from sqlmodel import col, select

from qip_flow.clock import as_aware
from qip_flow.runtime import Runtime
from qip_flow.services import notifications
from qip_flow.store.db import Database
from qip_flow.store.models import AuditEvent, Delivery, DeliveryAttempt, Notification, Person

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

DAY = date(2026, 2, 23)  # a working morning (Monday) after approval with several messages due
START = morning(DAY)


def messages(summary: notifications.TickSummary) -> int:
    """What a tick put in the outbox: the rules' messages and, on a Monday (the shipped
    digest day), the weekly digests."""
    return summary.notifications + summary.digests


def deliveries(rt: Runtime) -> list[Delivery]:
    with rt.db.read() as session:
        return list(session.exec(select(Delivery).order_by(col(Delivery.id))).all())


def attempts(rt: Runtime) -> dict[int, list[str]]:
    """Delivery id → the outcome of each try, in order."""
    out: dict[int, list[str]] = {}
    with rt.db.read() as session:
        for a in session.exec(select(DeliveryAttempt).order_by(col(DeliveryAttempt.id))).all():
            out.setdefault(a.delivery_id, []).append(a.outcome)
    return out


def identity(rt: Runtime) -> dict[int, tuple[str, str, str]]:
    """Delivery id → (recipient's address, item, rule): what the relay can see of it."""
    with rt.db.read() as session:
        people = {p.id: p.email or "" for p in session.exec(select(Person)).all()}
        rows = session.exec(select(Delivery, Notification).join(
            Notification, Notification.id == Delivery.notification_id)).all()
        return {d.id or 0: (people[n.recipient_id], n.entity_id, n.rule_id) for d, n in rows}


# --- email relay down for a while ----------------------------------------------------------


def test_a_relay_that_is_down_for_a_while_loses_nothing(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens on the relay's port for two tries: each delivery is retried with
    back-off (tries counted, the next try moving from 08:00 to 08:02 to 08:06, and nothing sent
    before it is due); the relay then starts on the same port and every message arrives, once."""
    trust_loopback(monkeypatch, tmp_path)
    relay = SmtpServer(free_port())
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(relay.url(), "email")]))
    load_examples(rt)
    approve_and_start(rt)
    rt.clock.set(START)
    made = messages(notifications.tick(rt))
    assert made >= 5

    first = notifications.dispatch(rt)
    assert (first.sent, first.retried, first.failed) == (0, made, 0)
    assert {(d.attempts, as_aware(d.next_attempt_at)) for d in deliveries(rt)} == {
        (1, START + timedelta(minutes=2))}
    assert all("127.0.0.1" in d.last_error for d in deliveries(rt))

    rt.clock.set(START + timedelta(minutes=1, seconds=59))
    assert notifications.dispatch(rt).as_dict()["retried"] == 0  # not due yet: not tried
    rt.clock.set(START + timedelta(minutes=2))
    assert notifications.dispatch(rt).retried == made
    assert {(d.attempts, as_aware(d.next_attempt_at)) for d in deliveries(rt)} == {
        (2, START + timedelta(minutes=6))}

    relay.start()
    try:
        rt.clock.set(START + timedelta(minutes=6))
        back = notifications.dispatch(rt)
    finally:
        relay.stop()
    assert (back.sent, back.retried, back.failed) == (made, 0, 0)
    assert [d.state for d in deliveries(rt)] == ["sent"] * made
    assert set(map(tuple, attempts(rt).values())) == {("failed", "failed", "sent")}
    arrived = Counter((m.to, m.item, m.rule) for m in relay.messages)
    assert arrived == Counter(identity(rt).values())
    assert max(arrived.values()) == 1


# --- email relay: one connection, refusals, drops --------------------------------------------


def queued_for_relay(database: Database, tmp_path: Path, relay: SmtpServer) -> Runtime:
    """The plan started and Monday's tick run: several emails routed to ``relay``."""
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(relay.url(), "email")]))
    load_examples(rt)
    approve_and_start(rt)
    rt.clock.set(START)
    assert messages(notifications.tick(rt)) >= 5
    notifications.route(rt, rt.clock.now())  # what dispatch does first: deliveries made now
    return rt


def test_a_dispatch_run_sends_every_email_on_one_connection(
        database: Database, tmp_path: Path) -> None:
    """Claimed in batches of three, the emails still go out on one SMTP connection (one
    handshake for the run, not one per message), each arriving once."""
    with smtp_server() as relay:
        rt = queued_for_relay(database, tmp_path, relay)
        made = len(deliveries(rt))
        summary = notifications.dispatch(rt, batch=3)
    assert (summary.sent, summary.connections, relay.connections) == (made, 1, 1)
    arrived = Counter((m.to, m.item, m.rule) for m in relay.messages)
    assert arrived == Counter(identity(rt).values())


def test_a_refused_recipient_fails_alone_retried_on_450_failed_on_550(
        database: Database, tmp_path: Path) -> None:
    """The relay refuses one address for now (450) and another for good (550): only their
    messages are held back — the first retried after two minutes, the second failed at once
    — while everyone else's go out on the same connection; once the first address is
    accepted again, its messages arrive, each once."""
    with smtp_server() as relay:
        rt = queued_for_relay(database, tmp_path, relay)
        addresses = Counter(address for address, _, _ in identity(rt).values())
        assert len(addresses) >= 3
        later, never = sorted(addresses)[:2]
        relay.refuse = {later: 450, never: 550}
        first = notifications.dispatch(rt)
        others = sum(n for a, n in addresses.items() if a not in (later, never))
        assert (first.sent, first.retried, first.failed) == (others, addresses[later],
                                                            addresses[never])
        assert (first.connections, relay.connections) == (1, 1)
        who = identity(rt)
        held = {who[d.id or 0][0]: (d.state, d.attempts) for d in deliveries(rt)
                if d.state != "sent"}
        assert held == {later: ("pending", 1), never: ("failed", 1)}
        assert all("refused (450)" in d.last_error for d in deliveries(rt)
                   if who[d.id or 0][0] == later)

        relay.refuse = {never: 550}
        rt.clock.advance(minutes=2)
        second = notifications.dispatch(rt)
    assert (second.sent, second.retried, second.failed) == (addresses[later], 0, 0)
    arrived = Counter((m.to, m.item, m.rule) for m in relay.messages)
    expected = Counter(v for v in identity(rt).values() if v[0] != never)
    assert arrived == expected


def test_a_connection_the_relay_drops_is_reopened_and_nothing_is_sent_twice(
        database: Database, tmp_path: Path) -> None:
    """A relay that takes two messages per connection and then hangs up: the dispatcher opens
    a new connection and sends the message again, so every message arrives, once."""
    with smtp_server(drop_at=2) as relay:
        rt = queued_for_relay(database, tmp_path, relay)
        made = len(deliveries(rt))
        summary = notifications.dispatch(rt)
    assert (summary.sent, summary.retried, summary.failed) == (made, 0, 0)
    assert summary.connections == relay.connections == -(-made // 2)
    arrived = Counter((m.to, m.item, m.rule) for m in relay.messages)
    assert arrived == Counter(identity(rt).values())
    assert set(map(tuple, attempts(rt).values())) == {("sent",)}


# --- webhooks ------------------------------------------------------------------------------


@pytest.fixture
def teams() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def rt(database: Database, tmp_path: Path, teams: WebhookReceiver,
       monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """Everyone's messages go to one Teams channel (tag ``all``); the plan is started and the
    tick of Monday 23 February (messages wait for working days) has put several messages in
    the outbox."""
    trust_loopback(monkeypatch, tmp_path)
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(teams.url("wf123456789", "sig987654321"), "all")]))
    teams.status = 200
    load_examples(rt)
    approve_and_start(rt)
    rt.clock.set(START)
    assert messages(notifications.tick(rt)) >= 5
    return rt


def delivered_cards(teams: WebhookReceiver) -> Counter[tuple[str, str]]:
    return Counter((h.title, h.card_text) for h in teams.hooks if h.delivered)


def test_a_webhook_answering_500_or_429_is_retried_and_delivers_exactly_once(
        rt: Runtime, teams: WebhookReceiver) -> None:
    """The first card meets a 500, the second a 429 (too many requests), the rest a 200: the
    two are retried after two minutes, not failed, and every card is delivered exactly once."""
    teams.answer(500, 429)
    first = notifications.dispatch(rt)
    assert (first.retried, first.failed) == (2, 0)
    retried = [d for d in deliveries(rt) if d.state == "pending"]
    assert sorted(d.last_error.split("error=")[-1][:3] for d in retried) == ["429", "500"]

    rt.clock.advance(minutes=2)
    second = notifications.dispatch(rt)
    assert (second.sent, second.retried, second.failed) == (2, 0, 0)
    assert all(d.state == "sent" for d in deliveries(rt))
    assert {d.id: d.attempts for d in deliveries(rt) if d.attempts > 1} == {
        d.id: 2 for d in retried}
    cards = delivered_cards(teams)
    assert len(cards) == len(deliveries(rt)) and set(cards.values()) == {1}
    assert len(teams.hooks) == len(deliveries(rt)) + 2


def test_a_webhook_answering_400_fails_at_once_and_an_operator_can_retry_it(
        rt: Runtime, teams: WebhookReceiver, database: Database,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A 400 will not get better by waiting: the delivery is failed after one try, listed by
    ``qip notifications --state failed``; ``qip notifications retry ID`` queues it again (an
    audited decision) and it is delivered when the receiver accepts it."""
    teams.answer(400)
    first = notifications.dispatch(rt)
    assert (first.failed, first.retried) == (1, 0)
    url, now = database_url(database), START.isoformat()
    code, out, err = qip_here(monkeypatch, capsys, "--db", url, "--now", now, "--json",
                              "notifications", "--state", "failed")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["state"] == "failed"
    [channel] = rows[0]["channels"]
    assert channel["state"] == "failed" and channel["attempts"] == 1
    assert "error=400" in channel["error"]

    code, out, err = qip_here(monkeypatch, capsys, "--db", url, "--now", now,
                              "notifications", "retry", str(rows[0]["id"]), "--by", "cevans")
    assert code == 0, err
    assert f"notification {rows[0]['id']}: 1 deliveries queued again" in out
    again = notifications.dispatch(rt)
    assert (again.sent, again.failed) == (1, 0)
    with rt.db.read() as session:
        n = session.get(Notification, rows[0]["id"])
        retried = session.exec(select(AuditEvent).where(
            AuditEvent.what == "notification retried")).all()
    assert n is not None and n.state == "sent"
    assert [(e.actor, e.entity_id) for e in retried] == [("cevans", str(n.id))]
    assert set(delivered_cards(teams).values()) == {1}
    assert len(delivered_cards(teams)) == len(deliveries(rt))


def test_a_delivery_that_keeps_failing_is_failed_after_six_tries_and_kept(
        rt: Runtime, teams: WebhookReceiver) -> None:
    """A receiver that always answers 503: each delivery is tried at 08:00, 08:02, 08:06,
    08:14, 08:30 and 09:02 — never before its time — and after the sixth try
    (``max_attempts`` in rules/reminders.yaml) it is failed, not dropped: the notification,
    its delivery and all six tries stay in the database, listed as failed."""
    settings = rt.rules.delivery
    assert (settings.max_attempts, settings.backoff_minutes) == (6, 2)
    teams.status = 503
    notifications.route(rt, rt.clock.now())  # what dispatch does first: channels chosen now
    count = len(deliveries(rt))
    for n in range(1, settings.max_attempts + 1):
        summary = notifications.dispatch(rt)
        if n == settings.max_attempts:
            break
        assert (summary.retried, summary.failed) == (count, 0)
        due = rt.clock.now() + timedelta(minutes=settings.backoff_minutes * 2 ** (n - 1))
        assert {as_aware(d.next_attempt_at) for d in deliveries(rt)} == {due}
        rt.clock.set(due - timedelta(seconds=1))
        assert notifications.dispatch(rt).retried == 0  # not before its time
        rt.clock.set(due)
    assert (summary.retried, summary.failed) == (0, count)
    assert rt.clock.now() == START + timedelta(minutes=2 + 4 + 8 + 16 + 32)
    assert [(d.state, d.attempts) for d in deliveries(rt)] == [("failed", 6)] * count
    assert all(outcomes == ["failed"] * 6 for outcomes in attempts(rt).values())
    with rt.db.read() as session:
        # a rung covered by another message that day is kept as merged, never sent
        states = session.exec(select(Notification.state).where(
            Notification.state != "merged")).all()
        listed = notifications.list_notifications(session, state="failed")
    assert states == ["failed"] * count and len(listed) == count
    assert len(teams.hooks) == 6 * count
    rt.clock.advance(days=1)
    assert notifications.dispatch(rt).as_dict()["sent"] == 0  # failed stays failed


# --- a dispatcher killed mid-batch ---------------------------------------------------------


def test_a_dispatcher_killed_mid_batch_loses_nothing_and_counts_its_duplicate(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`qip dispatch` sends a batch through a slow relay (0.3 s a message) and is killed with
    SIGKILL while the relay holds its answer to the third message (so the kill always lands
    inside a send). Until the dead worker's lease expires no one touches its claim; after that
    a new dispatcher marks the cut-off try interrupted, counts it, and sends everything: every
    notification arrives, at most one twice — the counted one."""
    env = clean_env(trust_loopback(monkeypatch, tmp_path))
    with smtp_server(delay=0.3, hold_at=3) as relay:
        channels = write_channels(tmp_path / "channels.yaml", [(relay.url(), "email")])
        rt = make_runtime(database, channels)
        portfolio(rt, tmp_path / "plans", 2)
        rt.clock.set(START)
        queued = messages(notifications.tick(rt))
        assert queued >= 10

        worker = subprocess.Popen(
            [sys.executable, "-m", "qip_flow", "--db", database_url(database),
             "--channels", str(channels), "--now", START.isoformat(), "--json", "dispatch"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert relay.wait_for(3), "the dispatcher sent nothing"
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            worker.wait(timeout=60)
        assert worker.returncode == -signal.SIGKILL
        relay.delay = 0.0
        relay.released.set()

        rt.clock.set(START + timedelta(minutes=4))  # the dead worker's lease still holds
        assert notifications.dispatch(rt, worker="restarted").as_dict()["sent"] == 0
        rt.clock.set(START + timedelta(minutes=6))
        summary = notifications.dispatch(rt, worker="restarted")

    assert summary.interrupted == 1 and summary.failed == 0
    assert all(d.state == "sent" for d in deliveries(rt)) and len(deliveries(rt)) == queued
    outcomes = Counter(o for tries in attempts(rt).values() for o in tries)
    assert outcomes["interrupted"] == 1 and outcomes["sent"] == queued
    arrived = Counter((m.to, m.item, m.rule) for m in relay.messages)
    expected = Counter(identity(rt).values())
    assert not expected - arrived  # nothing lost
    duplicates = sum((arrived - expected).values())
    assert duplicates <= outcomes["interrupted"] <= 1  # bounded and counted
