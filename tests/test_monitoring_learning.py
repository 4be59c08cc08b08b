"""Monitoring that must happen and learning that is retained, played by Harbour Homes'
governance lead at the command line on SQLite and PostgreSQL, with a real SMTP server on
loopback: a record-keeping plan stepped down into six months of monthly audits reminds the
audit's owner when a month goes unmeasured and escalates to the sponsor two weeks later; it
cannot close with months missing; the learning summary reaches the service's managers and the
safeguarding panel; learning reviews recur at 3 and 12 months, each with what it found. And
messages are held to working hours on working days (a Saturday, Christmas Day)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from harbour import approved_and_started, deliver_all, mail_to, make_lead
from notify_servers import SmtpServer, smtp_server
from sqlmodel import col, select

from qip_flow.store.db import Database
from qip_flow.store.models import Delivery, LearningReview, Notification, Plan

PLAN = "HH-2026-003"
TITLE = "Care records at Quay House after the provider audit"  # subjects lead with it


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def plan_row(db: Database) -> Plan:
    with db.read() as session:
        plan = session.get(Plan, PLAN)
        assert plan is not None
        return plan


def test_monitoring_must_happen_and_learning_is_shared_and_reviewed_again(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], smtp: SmtpServer) -> None:
    lead = make_lead(database, tmp_path, monkeypatch, capsys, smtp)
    approved_and_started(lead)
    deliver_all(lead, "2026-02-20", [("A1", "ebell")])
    lead.ok("2026-02-20", "do", PLAN, "begin_sustaining", "--by", "ncole")
    for day, value in (("2026-02-23", 96), ("2026-03-23", 97), ("2026-04-23", 96),
                       ("2026-05-22", 98)):
        lead.ok(day, "measure", PLAN, "records-audit", str(value), "--by", "sfox")
    (evidence,) = [str(e["id"]) for e in
                   json.loads(lead.ok("2026-05-26", "--json", "show", PLAN))["recorded_evidence"]]
    lead.ok("2026-05-26", "signoff", PLAN, "--for", "step_down", "--by", "tmorgan",
            "--meeting", "Quality committee 2026-05-26", "--evidence", evidence,
            "--residual-risk", "Reviews slip when staff change :: monthly records audit")
    plan = plan_row(database)
    assert plan.state == "monitoring" and plan.monitoring_cadence_days == 30
    mail_to(smtp)

    def morning(day: str) -> list[tuple[str, str]]:
        lead.ok(day, "tick")
        lead.ok(day, "dispatch")
        return [m for m in mail_to(smtp) if "measurement" in m[1]]

    # the first month (26 May – 25 June) passes with no audit: its owner is reminded the
    # next working morning, the sponsor two weeks later, each once — the sponsor, a senior
    # person, in the weekly digest (the rung is `digestible`) on Monday 13 July
    assert morning("2026-06-24") == []
    assert morning("2026-06-25") == [(
        "sam.fox@harbour.example",
        f"Reminder: {TITLE} — the records-audit measurement due by Thu 25 June is missing")]
    assert morning("2026-07-08") == []
    assert morning("2026-07-09") == []  # held for the sponsor's weekly digest
    lead.ok("2026-07-13", "tick")
    lead.ok("2026-07-13", "dispatch")
    [digest] = [m for m in smtp.take() if m.to == "tom.morgan@harbour.example"]
    assert digest.subject.startswith("Weekly digest for Tom Morgan: 1 escalation")
    assert (f"Escalation: {TITLE} — the records-audit measurement due by Thu 25 June is "
            "still missing") in digest.text
    assert morning("2026-07-14") == []

    # July onwards measured monthly; after six months the plan still cannot close: June is
    # missing. `qip explain` says so.
    for day in ("2026-07-20", "2026-08-20", "2026-09-21", "2026-10-20", "2026-11-20"):
        lead.ok(day, "measure", PLAN, "records-audit", "97", "--by", "sfox")
    lead.ok("2026-11-20", "learning", PLAN, "--by", "ncole", "--summary",
            "Reviews follow changes in needs, not the calendar", "--embedded-in",
            "Supervision template")
    lead.ok("2026-11-20T10:00", "dispatch")
    learning = [m for m in mail_to(smtp) if m[1].startswith("Learning:")]
    summary = (f"Learning: {TITLE} — Reviews follow changes in needs, not the calendar "
               "Embedded in: Supervision template.")
    # the panel's senior member reads it in his weekly digest (the share is `digestible`)
    assert learning == [(a, summary) for a in (
        "nadia.cole@harbour.example",  # the service's manager
        "priya.grant@harbour.example")]  # the panel
    lead.ok("2026-11-23", "tick")
    lead.ok("2026-11-23", "dispatch")
    [digest] = [m for m in smtp.take() if m.to == "tom.morgan@harbour.example"]
    assert "Learning shared with you" in digest.text and summary in digest.text

    explained = json.loads(lead.ok("2026-11-30", "--json", "explain", PLAN))
    kept = next(c for c in explained["closure"]["criteria"] if c["rule"] == "closure.monitoring-kept-up")
    assert kept["met"] is False
    assert explained["facts"]["monitoring_measurements_missing"] == 1
    closure = ("close", PLAN, "--by", "tmorgan", "--meeting", "Panel 2026-11-30", "--evidence",
               evidence, "--evidence-note", "Six monthly audits", "--no-residual-risk",
               "--learning-embedded", "Supervision template")
    code, _, err = lead("2026-11-30", *closure)
    assert code == 1 and "monitoring kept up" in err, err

    # the June audit was done but not recorded: recorded for its day, the plan closes
    lead.ok("2026-11-30", "measure", PLAN, "records-audit", "96", "--on", "2026-06-15",
            "--by", "sfox", "--reason", "The June audit sheet was found in the office")
    lead.ok("2026-11-30", *closure)
    plan = plan_row(database)
    assert plan.state == "closed" and plan.learning_review_due == date(2027, 2, 28)

    # learning reviews recur: 3 months, then 12 months after closure, then none
    lead.ok("2027-03-01", "learning-review", PLAN, "--by", "tmorgan", "--found",
            "Supervision notes show reviews after every change in needs")
    assert plan_row(database).learning_review_due == date(2027, 11, 30)
    lead.ok("2027-11-30", "learning-review", PLAN, "--by", "tmorgan", "--found",
            "Still alive: the December audit found no out-of-date plan")
    assert plan_row(database).learning_review_due is None
    with database.read() as session:
        reviews = session.exec(select(LearningReview).order_by(col(LearningReview.id))).all()
    assert [(r.due, r.by_id, r.found[:14]) for r in reviews] == [
        (date(2027, 2, 28), "tmorgan", "Supervision no"),
        (date(2027, 11, 30), "tmorgan", "Still alive: t")]


def test_messages_wait_for_the_next_working_morning(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], smtp: SmtpServer) -> None:
    """A1 is due on Friday 27 February: the first weekly overdue reminder is decided on
    Saturday 28 February and goes out on Monday 2 March at 08:00. A reminder decided on
    Christmas Day waits until Tuesday 29 December (Boxing Day is substituted to Monday 28)."""
    lead = make_lead(database, tmp_path, monkeypatch, capsys, smtp)
    approved_and_started(lead)
    lead.ok("2026-02-28", "tick")
    lead.ok("2026-02-28", "dispatch")
    assert mail_to(smtp) == []
    lead.ok("2026-03-02T07:59", "dispatch")
    assert mail_to(smtp) == []
    lead.ok("2026-03-02", "dispatch")
    assert mail_to(smtp) == [("ed.bell@harbour.example",
                              "Reminder: Add a review trigger to the 40 care plans by 27 "
                              "February — overdue (due Fri 27 February)")]

    lead.ok("2026-12-25", "tick")
    lead.ok("2026-12-25", "dispatch")  # routed to their channels now (at dispatch), and held
    assert mail_to(smtp) == []
    with database.read() as session:
        held = session.exec(select(Delivery).join(
            Notification, col(Notification.id) == Delivery.notification_id).where(
            col(Notification.created_at) >= datetime(2026, 12, 25, tzinfo=UTC))).all()
    assert held and {d.next_attempt_at for d in held} == {datetime(2026, 12, 29, 8, tzinfo=UTC)}
