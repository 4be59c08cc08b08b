"""Leaders get one message, not twenty (issue #13): on the digest day the rules name, each
senior person receives one weekly digest — what waits for their approval, their plans that
changed RAG, the week's special causes, the rungs held for them — and each governance group
that takes one, its own: the rungs sent to the group, one email per member and one card in the
group's Teams channel. Each goes through the outbox once a week, however often the tick runs.
With the real SMTP sink and the HTTPS receiver standing in for Teams."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from notify_servers import (
    BOARD_MEMBER,
    SmtpServer,
    WebhookReceiver,
    approve_and_start,
    load_examples,
    make_runtime,
    morning,
    smtp_server,
    trust_loopback,
    webhook_receiver,
    write_channels,
)
from sqlmodel import select

from qip_flow.runtime import Runtime
from qip_flow.services import digests, lifecycle, loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import DueRequest, Notification

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

BASE_URL = "https://qip.riverside-care.example"
PLAN = "QIP-2026-014"
A1, A2 = f"{PLAN}/A1", f"{PLAN}/A2"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def teams() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def rt(database: Database, tmp_path: Path, smtp: SmtpServer, teams: WebhookReceiver,
       monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The examples and a second Board member; mail through the relay, the Board's Teams
    channel tagged group:board; links to the pages at BASE_URL."""
    trust_loopback(monkeypatch, tmp_path)
    monkeypatch.setenv("QIP_BASE_URL", BASE_URL)
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml", [
        (smtp.url(), "email"), (teams.url("boardflow01", "sigboard001"), "group:board")]))
    load_examples(rt)
    extra = tmp_path / "board.yaml"
    extra.write_text("people:\n" + BOARD_MEMBER, encoding="utf-8")
    loading.load_files(rt, [extra], actor="cevans")
    approve_and_start(rt)
    return rt


def day(rt: Runtime, when: date, times: int = 1) -> None:
    rt.clock.set(morning(when))
    for _ in range(times):
        notifications.tick(rt)
        notifications.dispatch(rt)


def concern_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every indicator's latest point reads as a special cause of concern: the fact the
    Making Data Count module adds (``special_cause_concern``), which the digest lists."""
    real = digests.indicator_run

    def with_concern(*args: Any, **kwargs: Any) -> Any:
        run = real(*args, **kwargs)
        return replace(run, facts={**run.facts, "special_cause_concern": True})

    monkeypatch.setattr(digests, "indicator_run", with_concern)


def test_a_senior_person_reads_one_weekly_digest_of_what_waits_for_them(
        rt: Runtime, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Monday 16 March, for Daniel Adeyemi (senior; the plan's sponsor and A2's owner's line
    manager): a new date Adam Nowak asked for waits for his approval, A1 — completed by Jaya
    Patel — waits to be verified, the plan changed RAG in the week and its audit's latest
    point is a special cause of concern. One digest lists them, each item linked to its page;
    a second tick that morning, and the next hour's, make no other."""
    concern_everywhere(monkeypatch)
    rt.clock.set("2026-03-10T10:00")
    lifecycle.fire_event(rt, A1, "complete", by="jpatel",
                         evidence=["Weekly MAR audit schedule|policies/mar-audit-v3.pdf"])
    lifecycle.record_measurement(rt, PLAN, "mar-complete", 91, by="jpatel")
    with rt.db.write() as session:
        session.add(DueRequest(action_id=A2, requested_by_id="anowak", new_due=date(2026, 4, 24),
                               reason="External trainer cancelled",
                               at=datetime(2026, 3, 11, 9, tzinfo=UTC)))
    day(rt, date(2026, 3, 13))
    smtp.take()
    day(rt, date(2026, 3, 16), times=2)
    rt.clock.set(datetime(2026, 3, 16, 9, tzinfo=UTC))
    notifications.tick(rt)
    notifications.dispatch(rt)
    [digest] = [m for m in smtp.take() if m.kind == "digest"
                and m.to == "daniel.adeyemi@riverside-care.example"]
    assert digest.subject.startswith("Weekly digest for Daniel Adeyemi: ")
    assert "approvals waiting" in digest.subject and "special cause" in digest.subject
    text = digest.text
    for words in ("Waiting for your approval", f"New date for {A2}: Friday 24 April 2026",
                  "asked by anowak: External trainer cancelled", f"Verify {A1}: Change MAR "
                  "audit frequency", "Special causes this week",
                  "MAR charts fully completed at weekly audit (QIP-2026-014): special cause of "
                  "concern", f"Open My work: {BASE_URL}/"):
        assert words in text, words
    assert f'href="{BASE_URL}/actions/{A2}"' in digest.html
    assert f'href="{BASE_URL}/actions/{A1}"' in digest.html
    with rt.db.read() as session:
        rows = session.exec(select(Notification).where(Notification.kind == "digest",
                                                       Notification.recipient_id == "dadeyemi")
                            ).all()
    assert [n.key for n in rows] == ["digest|dadeyemi|2026-W12"]


def test_a_leader_with_nothing_new_gets_no_digest(rt: Runtime, smtp: SmtpServer) -> None:
    """Helen Wright (board) sponsors no live plan and nothing waits for her on Monday 2
    February: no digest."""
    day(rt, date(2026, 2, 2))
    assert not [m for m in smtp.take() if m.kind == "digest"
                and m.to == "helen.wright@riverside-care.example"]


def test_the_board_reads_its_rungs_in_one_group_digest(
        rt: Runtime, smtp: SmtpServer, teams: WebhookReceiver) -> None:
    """A2 is 20 working days overdue on Tuesday 14 April: the Board's rung waits. On Monday
    20 April each Board member receives the Board's weekly digest by email, and the Board's
    Teams channel receives it once, naming both, with a button to My work; the held rungs are
    digested. Ticking twice sends nothing twice."""
    day(rt, date(2026, 4, 14))
    assert not [m for m in smtp.take() if m.rule == "escalate.board"]
    assert not [h for h in teams.hooks if h.delivered]
    day(rt, date(2026, 4, 20), times=2)
    board = [m for m in smtp.take() if m.subject.startswith("Board weekly digest")]
    assert sorted(m.to for m in board) == ["helen.wright@riverside-care.example",
                                           "olivia.shaw@riverside-care.example"]
    for mail in board:
        assert "Escalations for you to decide on" in mail.text
        assert "Decide at Board level" in mail.text
        assert "Retrain the night team" in mail.text
    [card] = [h for h in teams.hooks if h.delivered]
    assert card.title.startswith("Board weekly digest for ")
    assert "For: Helen Wright, Olivia Shaw" in card.card_text
    [button] = card.buttons
    assert button == {"type": "Action.OpenUrl", "title": "Open My work", "url": f"{BASE_URL}/"}
    with rt.db.read() as session:
        held = session.exec(select(Notification.state).where(
            Notification.rule_id == "escalate.board")).all()
    assert held and set(held) == {"digested"}
