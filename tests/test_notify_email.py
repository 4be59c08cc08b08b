"""Reminders and escalations by email through a real SMTP server on loopback, on SQLite and on
PostgreSQL: the medication plan (QIP-2026-014) approved on 22 January and then left alone,
played one morning at a time — tick and dispatch at 08:00 — from 23 January to 23 April.

Expected days come from the working-day calendar the engine uses (England and Wales bank
holidays): the ladder counts working days, so Good Friday (3 April) and Easter Monday (6 April)
push the Board escalation about A2 from 10 to 14 April. The relay checks a password, given
to the channels file as ``${SMTP_PASS}``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from notify_servers import (
    Mail,
    SmtpServer,
    approve_and_start,
    dump,
    emails,
    load_examples,
    make_runtime,
    play_mornings,
    scratch_database,
    smtp_server,
    trust_loopback,
    write_channels,
)
from sqlmodel import col, func, select

from qip_flow.decide.calendar import calendar
from qip_flow.notify.channels import Channels
from qip_flow.runtime import Runtime
from qip_flow.services import assess, lifecycle, loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import AuditEvent, Notification

PLAN = "QIP-2026-014"
A2, A3 = f"{PLAN}/A2", f"{PLAN}/A3"
A2_DUE, A3_DUE = date(2026, 3, 13), date(2026, 3, 27)
STARTED = date(2026, 1, 22)
FIRST, LAST = date(2026, 1, 23), date(2026, 4, 23)
SMTP_USER = "qipbot"
SMTP_PASS = "Rv3r!side-Smtp"  # '!' is written %21 in Apprise's own URLs

BOARD_MEMBER = """\
  - id: oshaw
    name: Olivia Shaw
    email: olivia.shaw@riverside-care.example
    role: Chair of the Board
    level: board
    groups: [Board]
"""
MEGAN_WANTS_A_DIGEST = """\
  - id: mjones
    name: Megan Jones
    email: megan.jones@riverside-care.example
    role: Senior Support Worker, Maple House
    level: operational
    line_manager: jpatel
    digest: true
"""


def email_runtime(db: Database, folder: Path, smtp: SmtpServer,
                  monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """A runtime whose only channel is the loopback relay, password from the environment."""
    trust_loopback(monkeypatch, folder)
    monkeypatch.setenv("SMTP_PASS", SMTP_PASS)
    channels = write_channels(folder / "channels.yaml",
                              [(smtp.url(user=SMTP_USER, password="${SMTP_PASS}"), "email")])
    return make_runtime(db, channels)


def owner_ladder(due: date, last: date, *, decided: bool = False) -> list[tuple[date, str]]:
    """(day, rule) of the owner's reminders about an action due on ``due``, ticking daily;
    one decided on a weekend or a bank holiday goes out on the next working morning (the day
    it was decided, with ``decided``)."""
    cal = calendar()
    steps = [(cal.add(due, -14), "remind.due-14"), (cal.add(due, -7), "remind.due-7"),
             (cal.add(due, -1), "remind.due-1"), (due, "remind.due-today")]
    weekly = [due + timedelta(days=max(1, 7 * week)) for week in range(60)]
    ladder = steps + [(d, "remind.overdue-weekly") for d in weekly if d <= last]
    return ladder if decided else [(working_morning(d), rule) for d, rule in ladder]


def working_morning(day: date) -> date:
    """The day a message decided on ``day`` goes out (the shipped rules' working days)."""
    cal = calendar()
    return day if cal.is_working_day(day) else cal.add(day, 1)


def count_notifications(rt: Runtime) -> int:
    with rt.db.read() as session:
        return session.exec(select(func.count()).select_from(Notification)).one()


def received(mails: list[Mail], about: str,
             people: dict[str, str]) -> Counter[tuple[date | None, str, str]]:
    """(day, person, rule) of each message about an action."""
    return Counter((m.day, people[m.to], m.rule) for m in mails if m.about == about)


# --- one season, played once per database --------------------------------------------------


@dataclass
class Season:
    rt: Runtime
    mails: list[Mail]
    people: dict[str, str]
    repeats: int = 0
    reevaluated: int = 0
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def season(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Season]:
    """Three months of mornings with no progress on A2 or A3; a second Board member; A3's
    owner on a weekly digest. Each morning, after the tick and dispatch, a second tick and
    dispatch run (and, on mornings with mail about A2, a forced re-evaluation of the plan)."""
    folder = tmp_path_factory.mktemp(f"season-{request.param}")
    with pytest.MonkeyPatch.context() as mp, smtp_server(password=SMTP_PASS) as smtp, \
            scratch_database(request.param, folder) as db:
        rt = email_runtime(db, folder, smtp, mp)
        load_examples(rt)
        extra = folder / "board-and-digest.yaml"
        extra.write_text("people:\n" + BOARD_MEMBER + MEGAN_WANTS_A_DIGEST, encoding="utf-8")
        loading.load_files(rt, [extra], actor="cevans")  # a new board member: an administrator
        approve_and_start(rt)
        result = Season(rt, [], emails(rt))

        def again(day: date, new: list[Mail]) -> None:
            before = count_notifications(rt)
            notifications.tick(rt, worker="second")
            if any(m.about == A2 for m in new):
                assess.reassess_all(rt, [PLAN])  # the same decisions again: the keys exist
                result.reevaluated += 1
            notifications.dispatch(rt, worker="second")
            result.repeats += 1
            if smtp.take(day):
                result.problems.append(f"{day}: the second tick and dispatch sent mail")
            if count_notifications(rt) != before:
                result.problems.append(f"{day}: the second tick enqueued more")

        result.mails = play_mornings(rt, smtp, FIRST, LAST, after=again)
        yield result


def test_the_ladder_about_a2_reaches_each_person_on_its_day(season: Season) -> None:
    """The owner gets the 14-, 7- and 1-working-day reminders, due-today, then one a week while
    overdue; the owner's line manager is told on the 5th working day overdue, the sponsor on
    the 10th, each Board member on the 20th, and the sponsor after 30 days without an update —
    each message once, on that morning."""
    cal = calendar()
    assert cal.add(A2_DUE, 20) == date(2026, 4, 14)  # not 10 April: Good Friday, Easter Monday
    expected = Counter([(d, "anowak", rule) for d, rule in owner_ladder(A2_DUE, LAST)] + [
        (cal.add(A2_DUE, 5), "dadeyemi", "escalate.line-manager"),  # anowak's line manager
        (cal.add(A2_DUE, 10), "dadeyemi", "escalate.sponsor"),
        (cal.add(A2_DUE, 20), "hwright", "escalate.board"),
        (cal.add(A2_DUE, 20), "oshaw", "escalate.board"),
        (working_morning(STARTED + timedelta(days=30)), "dadeyemi", "escalate.stalled"),
    ])
    assert received(season.mails, A2, season.people) == expected


def test_a_second_tick_and_dispatch_the_same_morning_send_nothing(season: Season) -> None:
    """Every morning the second tick and dispatch (and the forced re-evaluation on mornings
    with mail about A2) neither enqueue nor send anything."""
    assert season.repeats == (LAST - FIRST).days + 1
    assert season.reevaluated >= 10
    assert season.problems == []


def test_escalations_are_in_the_audit_trail_once_per_person_told(season: Season) -> None:
    """Each escalation about A2 is an ``escalated`` audit event naming who was told and the
    rule, exactly once."""
    with season.rt.db.read() as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.what == "escalated",
                                                       AuditEvent.entity_id == A2)).all()
    assert Counter((e.detail["to"], e.detail["rule"]) for e in events) == Counter(
        (person, rule) for _, person, rule in received(season.mails, A2, season.people)
        if rule.startswith("escalate"))


def test_a_person_on_a_digest_gets_one_weekly_digest_instead_of_single_reminders(
        season: Season) -> None:
    """A3's owner (digest: true) receives no single reminder: on each Monday after reminders
    were held, one digest listing them; the held reminders are kept as digested."""
    to_megan = [m for m in season.mails if season.people[m.to] == "mjones"]
    held: Counter[date] = Counter()
    for d, _rule in owner_ladder(A3_DUE, LAST, decided=True):
        held[d + timedelta(days=(7 - d.weekday()) % 7)] += 1
    assert [(m.day, m.subject) for m in to_megan] == [
        (working_morning(monday),
         f"[Weekly digest] {n} reminder{'s' if n != 1 else ''} for Megan Jones")
        for monday, n in sorted(held.items())]
    after_due = next(m for m in to_megan if m.day == date(2026, 3, 30))
    assert f"{A3} is due today" in after_due.html
    assert f"{A3} is 1 days overdue" in after_due.html
    with season.rt.db.read() as session:
        states = Counter(session.exec(select(Notification.state).where(
            Notification.recipient_id == "mjones")).all())
    assert states == {"digested": sum(held.values()), "sent": len(held)}


def test_messages_say_what_which_plan_why_by_when_who_else_and_how_to_answer(
        season: Season) -> None:
    """The Board escalation about A2 is an e-mail to each Board member's own address with an
    ESCALATION subject and an HTML part, naming the action, the plan and its finding, the rule
    and why, the due date and owner, the other Board member told, and the commands to update
    or acknowledge; the owner's reminders say when it was due and how to record progress."""
    board = {m.to: m for m in season.mails if m.about == A2 and m.rule == "escalate.board"}
    assert set(board) == {"helen.wright@riverside-care.example",
                          "olivia.shaw@riverside-care.example"}
    why = season.rt.rules.rules["escalate.board"].description
    for address, other in (("helen.wright@riverside-care.example", "Olivia Shaw"),
                           ("olivia.shaw@riverside-care.example", "Helen Wright")):
        mail = board[address]
        assert mail.envelope_to == [address]
        assert mail.subject == f"Board escalation: {A2} is 20 working days overdue"
        assert mail.message.get_content_type() == "multipart/alternative"
        for fact in (PLAN, "Medication management after CQC inspection at Maple House",
                     "Retrain the night team and bank staff group",  # what
                     "Staff on night shifts had not completed medicines refresher training",
                     why, "escalate.board", "2026-03-13", "Adam Nowak",  # why, by when, owner
                     "Also told", other, f"qip do {A2} acknowledge", f"qip do {A2} update"):
            assert fact in mail.html, f"{address}: the message does not say {fact!r}"
        assert "2026-03-13" in mail.text and why in mail.text

    weekly = [m for m in season.mails if m.about == A2 and m.rule == "remind.overdue-weekly"]
    assert [m.subject for m in weekly][:2] == [
        f"[Reminder] {A2} is 1 days overdue (due 2026-03-13)",
        f"[Reminder] {A2} is 7 days overdue (due 2026-03-13)"]
    for mail in weekly:
        assert mail.to == "adam.nowak@riverside-care.example"
        assert f"qip do {A2} update --by anowak" in mail.html
        assert f"qip do {A2} acknowledge --by anowak" in mail.html


def test_the_smtp_password_is_used_but_never_stored(season: Season) -> None:
    """Every message reached the relay logged in with the password from the environment, and
    the password is nowhere in the database, neither as written nor URL-encoded."""
    assert season.mails and all(m.login == SMTP_USER for m in season.mails)
    everything = dump(season.rt.db)
    assert "Adam Nowak" in everything  # the dump does hold the messages
    assert SMTP_PASS not in everything and "Rv3r%21side" not in everything


# --- the ladder stops and starts again -----------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server(password=SMTP_PASS) as server:
        yield server


@pytest.fixture
def rt(database: Database, tmp_path: Path, smtp: SmtpServer,
       monkeypatch: pytest.MonkeyPatch) -> Runtime:
    rt = email_runtime(database, tmp_path, smtp, monkeypatch)
    load_examples(rt)
    approve_and_start(rt)
    return rt


def test_owner_acknowledgement_stops_the_ladder_and_a_revised_date_restarts_it(
        rt: Runtime, smtp: SmtpServer) -> None:
    """After the line manager has been told (20 March) the owner acknowledges (23 March): no
    more escalations about A2, while the weekly reminder still comes. A senior manager then
    approves a new due date (30 March → 8 April): the ladder starts again, its keys carrying
    r1, up to the line manager (15 April) and the sponsor (22 April)."""
    people = emails(rt)
    cal = calendar()
    mails = play_mornings(rt, smtp, date(2026, 3, 12), date(2026, 3, 23))
    rt.clock.set("2026-03-23T10:00")
    lifecycle.fire_event(rt, A2, "acknowledge", by="anowak")
    mails += play_mornings(rt, smtp, date(2026, 3, 24), date(2026, 3, 30))
    rt.clock.set("2026-03-30T10:00")
    new_due = date(2026, 4, 8)
    lifecycle.fire_event(rt, A2, "revise_due", by="dadeyemi", due=new_due,
                         reason="External trainer cancelled; new course date booked")
    mails += play_mornings(rt, smtp, date(2026, 3, 31), LAST)

    got = received(mails, A2, people)
    assert got[(cal.add(A2_DUE, 5), "dadeyemi", "escalate.line-manager")] == 1
    between = sorted(k for k in got if date(2026, 3, 23) < k[0] <= date(2026, 3, 30))
    assert between == [(date(2026, 3, 27), "anowak", "remind.overdue-weekly")]  # no sponsor
    # 5 working days before the new date when it was approved: the 7-day reminder at once
    # (enqueued at 10:00, sent the next morning), then the rest of the ladder
    ladder = [(date(2026, 3, 31), "remind.due-7")] + [
        (d, r) for d, r in owner_ladder(new_due, LAST) if d > date(2026, 3, 31)]
    after = Counter({k: n for k, n in got.items() if k[0] and k[0] > date(2026, 3, 30)})
    assert after == Counter([(d, "anowak", r) for d, r in ladder] + [
        (cal.add(new_due, 5), "dadeyemi", "escalate.line-manager"),
        (cal.add(new_due, 10), "dadeyemi", "escalate.sponsor")])

    with rt.db.read() as session:
        rows = session.exec(select(Notification).where(Notification.entity_id == A2)
                            .order_by(col(Notification.id))).all()
    revised_at = datetime.fromisoformat("2026-03-30T10:00+00:00")
    for n in rows:
        assert n.key.endswith("-r1") == (n.created_at >= revised_at), n.key
    assert [n.key for n in rows if n.kind == "escalation"] == [
        f"escalate.stalled|{A2}|dadeyemi|stalled-2026-01-22",
        f"escalate.line-manager|{A2}|dadeyemi|overdue-5-r0",
        f"escalate.line-manager|{A2}|dadeyemi|overdue-5-r1",
        f"escalate.sponsor|{A2}|dadeyemi|overdue-10-r1"]


def test_a_line_manager_acknowledging_does_not_silence_the_ladder(
        rt: Runtime, smtp: SmtpServer) -> None:
    """The escalation invites the line manager to acknowledge it. Seeing an escalation is not
    an update from the owner (the rule: "with no update from the owner"), so the sponsor is
    still told on the 10th working day overdue."""
    cal = calendar()
    told = cal.add(A2_DUE, 5)
    play_mornings(rt, smtp, told, told)
    rt.clock.set(f"{told.isoformat()}T10:00")
    lifecycle.fire_event(rt, A2, "acknowledge", by="dadeyemi")
    mails = play_mornings(rt, smtp, cal.add(A2_DUE, 10), cal.add(A2_DUE, 10))
    assert [(m.to, m.rule) for m in mails if m.about == A2 and m.rule.startswith("escalate")] == [
        ("daniel.adeyemi@riverside-care.example", "escalate.sponsor")]


def test_redaction_masks_the_password_as_it_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets come from the environment as people write them; an error text that repeats
    the password comes back masked, whatever characters the password has."""
    monkeypatch.setenv("SMTP_PASS", SMTP_PASS)
    path = write_channels(tmp_path / "channels.yaml", [(
        f"mailto://{SMTP_USER}:${{SMTP_PASS}}@127.0.0.1:2525?from=qip@riverside-care.example",
        "email")])
    channels = Channels.load(path, default_file=tmp_path / "out.log")
    masked = channels.redact(f"535 authentication failed for {SMTP_USER}:{SMTP_PASS}")
    assert SMTP_PASS not in masked
