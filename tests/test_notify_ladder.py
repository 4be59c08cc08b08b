"""The ladder as its readers meet it (issue #13), by email through the real SMTP sink: two
rungs that reach one person about one action on one day travel as one message — the higher
rung, naming both roles — and are never sent again; a message about an action for someone who
already has one going out that day waits for the next working day; the ladder's settings are
checked like every other rule setting."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from notify_servers import (
    SmtpServer,
    approve_and_start,
    emails,
    load_examples,
    make_runtime,
    play_mornings,
    rules_with,
    smtp_server,
    trust_loopback,
    write_channels,
)
from sqlmodel import col, select

from qip_flow.errors import InvalidDefinition
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import AuditEvent, Notification

A2 = "QIP-2026-014/A2"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def rt(database: Database, tmp_path: Path, smtp: SmtpServer,
       monkeypatch: pytest.MonkeyPatch) -> Runtime:
    trust_loopback(monkeypatch, tmp_path)
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(smtp.url(), "email")]))
    load_examples(rt)
    approve_and_start(rt)
    return rt


def test_two_rungs_for_one_person_on_one_day_are_one_message_naming_both_roles(
        rt: Runtime, smtp: SmtpServer) -> None:
    """Daniel Adeyemi is Adam Nowak's line manager and the plan's sponsor. Nothing is checked
    until Friday 27 March, when A2 is 10 working days overdue: the line manager's rung and the
    sponsor's both fall due for him. He receives one message — the sponsor's, the higher rung —
    saying he is told in both roles and covering the other rung; the other is kept, merged,
    and never sent on a later day. The audit trail records one escalation, covering both."""
    people = emails(rt)
    mails = play_mornings(rt, smtp, date(2026, 3, 27), date(2026, 4, 1))
    about = [(m.day, people[m.to], m.rule) for m in mails if m.about == A2 and m.kind != "digest"]
    to_daniel = [a for a in about if a[1] == "dadeyemi"]
    assert to_daniel == [(date(2026, 3, 27), "dadeyemi", "escalate.sponsor")]
    [mail] = [m for m in mails if m.about == A2 and m.rule == "escalate.sponsor"]
    assert ("You are told as the plan's senior sponsor and as Adam Nowak's line manager."
            in mail.text)
    line_manager = rt.rules.rules["escalate.line-manager"].description
    assert f"- {line_manager} (rule escalate.line-manager)" in mail.text  # the rung it covers
    assert mail.subject.startswith("Escalation: Retrain the night team")

    with rt.db.read() as session:
        rows = {n.rule_id: n for n in session.exec(select(Notification).where(
            Notification.entity_id == A2, Notification.recipient_id == "dadeyemi")).all()}
        events = session.exec(select(AuditEvent).where(AuditEvent.what == "escalated",
                                                       AuditEvent.entity_id == A2)).all()
    merged = rows["escalate.line-manager"]
    assert merged.state == "merged" and merged.detail["merged_into"] == rows[
        "escalate.sponsor"].key
    assert [(e.detail["to"], e.detail["rule"], e.detail["covers"]) for e in events] == [
        ("dadeyemi", "escalate.sponsor", ["escalate.line-manager"])]


def test_a_second_message_about_an_action_that_day_waits_for_the_next_working_day(
        rt: Runtime, smtp: SmtpServer) -> None:
    """Friday 13 March: A2's owner is told at 08:00 that it is due today. At 10:00 his manager
    approves a new date a week later, which asks for the 7-day reminder at once: it waits for
    Monday 16 March, the next working day, so the owner hears once on Friday."""
    people = emails(rt)
    mails = play_mornings(rt, smtp, date(2026, 3, 13), date(2026, 3, 13))
    rt.clock.set("2026-03-13T10:00")
    lifecycle.fire_event(rt, A2, "revise_due", by="dadeyemi", due=date(2026, 3, 20),
                         reason="Trainer ill; course moved a week")
    notifications.dispatch(rt)
    mails += smtp.take(date(2026, 3, 13))
    mails += play_mornings(rt, smtp, date(2026, 3, 16), date(2026, 3, 16))
    to_owner = [(m.day, m.rule) for m in mails if m.about == A2 and people[m.to] == "anowak"]
    assert to_owner == [(date(2026, 3, 13), "remind.due-today"),
                        (date(2026, 3, 16), "remind.due-7")]
    with rt.db.read() as session:
        waited = session.exec(select(Notification).where(
            Notification.rule_id == "remind.due-7", Notification.entity_id == A2,
            col(Notification.key).endswith("-r1"))).one()
    assert waited.detail["not_before"] == "2026-03-14T00:00:00+00:00"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("  at_risk_working_days: 10\n", "  at_risk_working_days: -1\n",
     "ladder.at_risk_working_days: Input should be greater than or equal to 0"),
    ("  digest_levels: [senior, board]\n", "  digest_levels: [senior, chair]\n",
     "ladder.digest_levels[1]: Input should be 'operational', 'manager', 'senior' or 'board'"),
    ("  digest_groups: [Board]\n", "  digest_groups: [Board, Board]\n",
     "ladder.digest_groups: a group is named twice; name each group once"),
    ("  digest_weekday: monday\n", "  digest_weekday: mondays\n", "delivery.digest_weekday: Input "
     "should be 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday' or 'sunday'"),
])
def test_the_ladder_settings_are_checked_with_their_file_and_line(
        database: Database, tmp_path: Path, old: str, new: str, message: str) -> None:
    folder = rules_with(tmp_path / "config", old, new)
    with pytest.raises(InvalidDefinition) as refused:
        _ = Runtime(db=database, config_dir=folder).rules
    details = "\n".join(refused.value.details or [refused.value.message])
    line = next(i for i, text in enumerate(
        (folder / "rules" / "reminders.yaml").read_text().splitlines(), 1) if text == new[:-1])
    assert f"reminders.yaml:{line}" in details and message in details, details
