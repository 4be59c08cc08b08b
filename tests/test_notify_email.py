"""Reminders and escalations by email through a real SMTP server on loopback, on SQLite and on
PostgreSQL: the medication plan (QIP-2026-014) approved on 22 January and then left alone,
played one morning at a time — tick and dispatch at 08:00 — from 23 January to 23 April.

Expected days come from the working-day calendar the engine uses (England and Wales bank
holidays): the ladder counts working days, so Good Friday (3 April) and Easter Monday (6 April)
push the Board escalation about A2 from 10 to 14 April — and the Board, which takes the weekly
digest, reads it on Monday 20 April. The relay checks a password, given to the channels file
as ``${SMTP_PASS}``. Messages link to the action's page with a link signed for their reader
(``QIP_BASE_URL`` and the installation's key are set)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest
from notify_servers import (
    BOARD_MEMBER,
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
from qip_flow.services import assess, identity, lifecycle, loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import AuditEvent, Notification

PLAN = "QIP-2026-014"
A2, A3 = f"{PLAN}/A2", f"{PLAN}/A3"
A2_DUE, A3_DUE = date(2026, 3, 13), date(2026, 3, 27)
STARTED = date(2026, 1, 22)
FIRST, LAST = date(2026, 1, 23), date(2026, 4, 23)
BASE_URL = "https://qip.riverside-care.example"
SMTP_USER = "qipbot"
SMTP_PASS = "Rv3r!side-Smtp"  # '!' is written %21 in Apprise's own URLs

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


def quiet_nudge(last_update: date) -> tuple[date, str]:
    """The owner's nudge after 20 days without progress (remind.quiet), as decided."""
    return last_update + timedelta(days=20), "remind.quiet"


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
        mp.setenv("QIP_BASE_URL", BASE_URL)
        mp.setenv("QIP_SECRET_KEY", "s" * 40)
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
    """The owner is nudged first: after 20 quiet days, then 14, 7 and 1 working days before the
    due date, on the day, then once a week while overdue. Only once A2 is at risk (due within
    10 working days, the ladder's window) and quiet for 30 days is the owner's line manager
    told (not weeks earlier); then the line manager on the 5th working day overdue, the sponsor
    on the 10th — each message once, on that morning. The Board's rung (20th working day) waits
    for the Board's weekly digest."""
    cal = calendar()
    assert cal.add(A2_DUE, 20) == date(2026, 4, 14)  # not 10 April: Good Friday, Easter Monday
    at_risk = cal.add(A2_DUE, -10)
    assert at_risk == date(2026, 2, 27) and (at_risk - STARTED).days >= 30
    nudge = [(working_morning(d), r) for d, r in [quiet_nudge(STARTED)]]
    expected = Counter([(d, "anowak", rule) for d, rule in owner_ladder(A2_DUE, LAST) + nudge] + [
        (at_risk, "dadeyemi", "escalate.stalled"),  # anowak's line manager
        (cal.add(A2_DUE, 5), "dadeyemi", "escalate.line-manager"),
        (cal.add(A2_DUE, 10), "dadeyemi", "escalate.sponsor"),
    ])
    got = received(season.mails, A2, season.people)
    assert got == expected
    first_above = min(d for d, person, _ in got if person != "anowak")
    assert min(d for d, person, _ in got if person == "anowak") < first_above

    board = [m for m in season.mails if m.kind == "digest" and m.subject.startswith("Board")]
    monday = cal.add(A2_DUE, 20) + timedelta(days=6)
    assert sorted((m.day, season.people[m.to]) for m in board
                  if "Retrain the night team" in m.text) == [
        (monday, "hwright"), (monday, "oshaw")]


def test_a_second_tick_and_dispatch_the_same_morning_send_nothing(season: Season) -> None:
    """Every morning the second tick and dispatch (and the forced re-evaluation on mornings
    with mail about A2) neither enqueue nor send anything."""
    assert season.repeats == (LAST - FIRST).days + 1
    assert season.reevaluated >= 10
    assert season.problems == []


def test_escalations_are_in_the_audit_trail_once_per_person_told(season: Season) -> None:
    """Each escalation about A2 is an ``escalated`` audit event naming who was told and the
    rule, exactly once: those sent on their own, and the Board's rung held for its digest."""
    with season.rt.db.read() as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.what == "escalated",
                                                       AuditEvent.entity_id == A2)).all()
        digested = session.exec(select(Notification).where(
            Notification.entity_id == A2, Notification.kind == "escalation",
            Notification.state == "digested")).all()
    assert {(n.recipient_id, n.rule_id) for n in digested} == {
        ("hwright", "escalate.board"), ("oshaw", "escalate.board")}
    assert Counter((e.detail["to"], e.detail["rule"]) for e in events) == Counter(
        [(person, rule) for _, person, rule in received(season.mails, A2, season.people)
         if rule.startswith("escalate")] + [(n.recipient_id, n.rule_id) for n in digested])


def test_a_person_on_a_digest_gets_one_weekly_digest_instead_of_single_reminders(
        season: Season) -> None:
    """A3's owner (digest: true) receives no single reminder: on each Monday after reminders
    were held, one digest listing them; the held reminders are kept as digested."""
    to_megan = [m for m in season.mails if season.people[m.to] == "mjones"]
    held: Counter[date] = Counter()
    for d, _rule in [*owner_ladder(A3_DUE, LAST, decided=True), quiet_nudge(STARTED)]:
        held[d + timedelta(days=(7 - d.weekday()) % 7)] += 1
    assert [(m.day, m.subject) for m in to_megan] == [
        (working_morning(monday),
         f"Weekly digest for Megan Jones: {n} reminder{'s' if n != 1 else ''}")
        for monday, n in sorted(held.items())]
    after_due = next(m for m in to_megan if m.day == date(2026, 3, 30))
    for words in ("Reassess medicines competency of all 6 senior support… — due today "
                  "(Fri 27 March)", "— overdue (due Fri 27 March)"):
        assert words in after_due.text and words in after_due.html
    assert f"{BASE_URL}/actions/{A3}" in after_due.html  # each item links to its page
    with season.rt.db.read() as session:
        states = Counter(session.exec(select(Notification.state).where(
            Notification.recipient_id == "mjones")).all())
    assert states == {"digested": sum(held.values()), "sent": len(held)}


def test_an_escalation_asks_for_a_decision_and_says_who_was_told_when(season: Season) -> None:
    """The sponsor's escalation about A2 (27 March) is an email to his own address whose
    subject leads with the action's words and a UK date; its own text part and its HTML part
    say what is wanted of him, why he is told, the plan, action, owner and due date, the last
    update, who was already told and when — and link, with a button, to the action's page
    signed for him. No command line: he has none."""
    [mail] = [m for m in season.mails if m.about == A2 and m.rule == "escalate.sponsor"]
    assert mail.envelope_to == ["daniel.adeyemi@riverside-care.example"]
    assert mail.subject == ("Escalation: Retrain the night team and bank staff group (14 "
                            "named… — 10 working days overdue (due Fri 13 March)")
    assert mail.message.get_content_type() == "multipart/alternative"
    ask = season.rt.rules.rules["escalate.sponsor"].then.params["ask"]
    for part in (mail.text, mail.html):
        for fact in ("You are told as the plan", "senior sponsor", "What is wanted of you", ask, PLAN,
                     "Medication management after CQC inspection at Maple House",
                     "Retrain the night team and bank staff group",
                     "Staff on night shifts had not completed medicines refresher training",
                     "Friday 13 March 2026", "10 working days overdue", "Adam Nowak",
                     "no progress note; last change Thursday 22 January 2026",
                     "Already told", "Adam Nowak (owner): reminded",
                     "Daniel Adeyemi (line manager): told Fri 27 February, Fri 20 March",
                     "escalate.sponsor"):
            assert fact in part, f"the message does not say {fact!r}"
        assert "2026-03-13" not in part and "qip do" not in part
    assert "What is wanted of you:\n  " + ask in mail.text  # our own text, not a conversion
    link = next(line.split(": ", 1)[1] for line in mail.text.splitlines()
                if line.startswith("Open action A2: "))
    assert link.startswith(f"{BASE_URL}/link/") and f'href="{link}"' in mail.html
    token = link.rsplit("/", 1)[1]
    _, path = identity.redeem_deep_link(season.rt, unquote(token))
    assert path == f"/actions/{A2}"


def test_the_owners_reminders_lead_with_the_action_and_link_to_it(season: Season) -> None:
    weekly = [m for m in season.mails if m.about == A2 and m.rule == "remind.overdue-weekly"]
    assert {m.subject for m in weekly} == {
        "Reminder: Retrain the night team and bank staff group (14 named… — overdue (due Fri "
        "13 March)"}
    for mail in weekly:
        assert mail.to == "adam.nowak@riverside-care.example"
        assert "Update action A2: " + BASE_URL + "/link/" in mail.text
        assert ">Update action A2</a>" in mail.html
        assert "  Due:          Friday 13 March 2026 — " in mail.text
        assert "qip do" not in mail.text


def test_the_board_reads_its_rung_in_one_weekly_digest(season: Season) -> None:
    """On Monday 20 April each Board member receives the Board's weekly digest: the rung about
    A2 with the decision asked of the Board, each item linked to its page."""
    digests = {m.to: m for m in season.mails if m.day == date(2026, 4, 20)
               and m.subject.startswith("Board weekly digest")}
    assert set(digests) == {"helen.wright@riverside-care.example",
                            "olivia.shaw@riverside-care.example"}
    ask = season.rt.rules.rules["escalate.board"].then.params["ask"]
    for mail in digests.values():
        assert mail.subject.startswith("Board weekly digest for ")
        assert "Escalations for you to decide on" in mail.text and ask in mail.text
        assert ("Escalation: Retrain the night team and bank staff group (14 named… — 20 "
                "working days overdue (due Fri 13 March)") in mail.text
        assert f'href="{BASE_URL}/actions/{A2}"' in mail.html


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
    # the revision was the last change: 20 quiet days later (Sunday 19 April) the owner is
    # nudged, on the next working morning
    nudge = working_morning(quiet_nudge(date(2026, 3, 30))[0])
    assert after == Counter([(d, "anowak", r) for d, r in ladder] + [
        (nudge, "anowak", "remind.quiet"),
        (cal.add(new_due, 5), "dadeyemi", "escalate.line-manager"),
        (cal.add(new_due, 10), "dadeyemi", "escalate.sponsor")])

    with rt.db.read() as session:
        rows = session.exec(select(Notification).where(Notification.entity_id == A2)
                            .order_by(col(Notification.id))).all()
    revised_at = datetime.fromisoformat("2026-03-30T10:00+00:00")
    for n in rows:
        if n.rule_id != "remind.quiet":  # its occurrence is the last update's date
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
