"""Escalations in Microsoft Teams through Power Automate Workflows: a real HTTPS receiver on
loopback with a self-signed certificate (``?verify=no``), on SQLite and PostgreSQL. The Teams
channel is tagged ``role:senior``; its workflow id and signature come from the environment and
must never be kept anywhere qip_flow writes or prints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from notify_servers import (
    MEDICATION,
    SmtpServer,
    WebhookReceiver,
    approve_and_start,
    database_url,
    dump,
    load_examples,
    make_runtime,
    morning,
    qip_here,
    sent_deliveries,
    smtp_server,
    trust_loopback,
    webhook_receiver,
    write_channels,
)
from sqlmodel import select

from qip_flow.runtime import Runtime
from qip_flow.services import loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import Person

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

A2 = "QIP-2026-014/A2"
WORKFLOW_ID = "a6c0ffee5e1f4b0d9e3b7d2c1f0e9a8b"
SIGNATURE = "Sig-Q7mZ9xK2pL4vN8rT1wY6uB3eH5jD0cF"
SECRETS = (WORKFLOW_ID, SIGNATURE)
LONG_DESCRIPTION = ("Retrain the night team and bank staff group (14 named staff) in medicines "
                    "administration, " + "covering each named medicine, its timing, its "
                    "recording on the MAR chart and what to do when a dose is missed, " * 30)


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
    """The medication plan with a very long A2, approved and started; mail through the relay,
    senior people also in Teams."""
    trust_loopback(monkeypatch, tmp_path)
    monkeypatch.setenv("TEAMS_WORKFLOW", WORKFLOW_ID)
    monkeypatch.setenv("TEAMS_SIGNATURE", SIGNATURE)
    channels = write_channels(tmp_path / "channels.yaml", [
        (smtp.url(), "email"),
        (teams.url("${TEAMS_WORKFLOW}", "${TEAMS_SIGNATURE}"), "role:senior")])
    rt = make_runtime(database, channels)
    load_examples(rt)
    long_plan = tmp_path / MEDICATION.name
    long_plan.write_text(MEDICATION.read_text(encoding="utf-8").replace(
        "    description: Retrain the night team and bank staff group (14 named staff) in "
        "medicines administration\n", f"    description: {LONG_DESCRIPTION}\n"), encoding="utf-8")
    loading.load_files(rt, [long_plan], actor="test")
    approve_and_start(rt)
    return rt


def teams_channel(rt: Runtime) -> str:
    return next(c.name for c in rt.channels.channels if c.kind == "teams")


def test_an_escalation_to_a_senior_person_reaches_teams_as_an_adaptive_card(
        rt: Runtime, teams: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """On 20 March the line manager (a senior person) is told that A2 is 5 working days
    overdue: the workflow's trigger URL receives, signed, an Adaptive Card (1.4) that qip_flow
    built — not Apprise's Markdown conversion: a red (attention) title that leads with the
    action's words, the decision asked for, a FactSet of what, who, by when and who was told,
    and an ``Action.OpenUrl`` button to the action's page (the channel is shared by everyone
    tagged role:senior, so the page itself, never a link signed for one reader). The action's
    description alone is far longer than a card: every value is cut, the card stays small.
    Only senior people's messages go to Teams."""
    monkeypatch.setenv("QIP_BASE_URL", "https://qip.riverside-care.example")
    assert len(LONG_DESCRIPTION) > 3000
    rt.clock.set(morning(date(2026, 3, 20)))
    notifications.tick(rt)
    summary = notifications.dispatch(rt)
    assert summary.failed == 0 and summary.retried == 0

    cards = [h for h in teams.hooks if h.delivered]
    card = next(h for h in cards if "(rule escalate.line-manager)" in h.facts.get("Why", "")
                and h.facts.get("Action", "").startswith("A2 "))
    assert card.path == f"/workflows/{WORKFLOW_ID}/triggers/manual/paths/invoke"
    assert card.query["sig"] == [SIGNATURE]
    [attachment] = card.payload["attachments"]
    assert card.payload["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = card.card
    assert content["type"] == "AdaptiveCard" and float(content["version"]) >= 1.4
    [heading] = [b for b in content["body"] if b["type"] == "Container"]
    assert heading["style"] == "attention" and heading["items"][0]["color"] == "Attention"
    assert card.title.startswith("Escalation: Retrain the night team and bank staff")
    assert card.title.endswith("— 5 working days overdue (due Fri 13 March)")
    assert "Chase the owner today" in card.card_text  # what is wanted of the reader
    facts = card.facts
    assert facts["Plan"].startswith("QIP-2026-014 Medication management")
    assert facts["Action"].startswith("A2 Retrain the night team") and len(facts["Action"]) <= 300
    assert facts["Owner"] == "Adam Nowak"
    assert facts["Due"] == "Friday 13 March 2026 — 5 working days overdue"
    assert "Adam Nowak (owner): reminded" in facts["Already told"]
    assert "(rule escalate.line-manager)" in facts["Why"]
    [button] = card.buttons
    assert button == {"type": "Action.OpenUrl", "title": "Open action A2",
                      "url": f"https://qip.riverside-care.example/actions/{A2}"}
    assert "qip do" not in card.raw  # no command line for people who have none
    assert len(card.raw.encode()) < 8000  # Teams takes up to 28 KB

    with rt.db.read() as session:
        levels = {p.id: p.level for p in session.exec(select(Person)).all()}
    on_teams = sent_deliveries(rt, teams_channel(rt))
    assert len(on_teams) == len(cards) >= 2
    assert {levels[n.recipient_id] for _, n in on_teams} == {"senior"}
    assert all(len(h.raw.encode()) < 8000 for h in cards)


def test_the_workflow_id_and_signature_are_never_kept_or_printed(
        rt: Runtime, teams: WebhookReceiver, database: Database,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The receiver fails every way it can — 500, then 400, then it is gone — and the workflow
    id and signature appear nowhere in the database (notifications, deliveries and their
    errors, attempts, the audit trail) nor in ``qip notifications``, plain or ``--json``."""
    rt.clock.set(morning(date(2026, 3, 20)))
    notifications.tick(rt)
    teams.status = 500
    first = notifications.dispatch(rt)
    teams.status = 400
    rt.clock.advance(minutes=2)
    second = notifications.dispatch(rt)
    assert first.retried >= 2 and second.failed == first.retried  # 400: failed at once
    rt.clock.set(morning(date(2026, 3, 27)))
    notifications.tick(rt)
    teams.stop()  # nothing answers any more
    third = notifications.dispatch(rt)
    assert third.retried >= 1

    errors = [d.last_error for d, _ in sent_deliveries(rt, teams_channel(rt)) if d.last_error]
    assert any("error=500" in e for e in errors) or any("error=400" in e for e in errors)
    assert len(errors) >= first.retried + third.retried
    everything = dump(rt.db)
    for secret in SECRETS:
        assert secret not in everything

    url = database_url(database)
    code, listing, err = qip_here(monkeypatch, capsys, "--db", url, "--json", "notifications")
    assert code == 0, err
    rows = json.loads(listing)
    assert any(c["error"] for r in rows for c in r["channels"] if c["channel"].startswith("teams"))
    code, table, err = qip_here(monkeypatch, capsys, "--db", url, "notifications", "--state",
                                "failed")
    assert code == 0, err
    for secret in SECRETS:
        assert secret not in listing + table + err
    assert teams.hooks and all(h.query["sig"] == [SIGNATURE] for h in teams.hooks)  # in use

    # and a text that does carry them — a URL in an error — comes back masked
    leaked = (f"POST https://127.0.0.1:{teams.port}/workflows/{WORKFLOW_ID}/triggers/manual/"
              f"paths/invoke?api-version=2016-06-01&sig={SIGNATURE} failed")
    masked = rt.channels.redact(leaked)
    assert all(secret not in masked for secret in SECRETS) and "****" in masked
