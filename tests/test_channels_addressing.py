"""Channels are addressed by name or tag, never by their place in the file; a malformed channel
refuses the file with its line; channels are chosen at dispatch, not when a message is queued;
a channel several recipients read receives one message naming them, while each person's email
still goes to each person — exactly once, also with several workers. With the real SMTP sink
and the HTTPS receiver standing in for Teams, on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import contents, line_with
from notify_servers import (
    NO_LEADERS_DIGEST,
    ORGANISATION,
    PLANS,
    Hook,
    SmtpServer,
    WebhookReceiver,
    approve_and_start,
    emails,
    load_examples,
    make_runtime,
    medication_copies,
    morning,
    publish_rules,
    qip_here,
    rules_with,
    smtp_server,
    trust_loopback,
    webhook_receiver,
    write_channels,
)
from sqlmodel import col, select

from qip_flow.errors import InvalidDefinition
from qip_flow.notify.channels import Channels, person_tags
from qip_flow.runtime import Runtime
from qip_flow.services import loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import Delivery, Notification, Person

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

LADDER = morning(date(2026, 4, 14))  # every rung of the ladder is due for some action
SENIOR_FLOW, BOARD_FLOW = "seniorflow0001", "boardflow0002"
BOARD = ("Chloe Evans", "Helen Wright", "Ruth Mensah")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def teams() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


def board_of_three(folder: Path) -> Path:
    """The example organisation with two more people on the Board."""
    text = ORGANISATION.read_text(encoding="utf-8")
    for person in ("rmensah", "cevans"):
        start = text.index(f"  - id: {person}\n")
        end = text.index("    groups: [", start)
        text = text[:end] + "    groups: [Board, " + text[end + len("    groups: ["):]
    path = folder / "organisation.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def started_portfolio(rt: Runtime, folder: Path, copies: int) -> Runtime:
    """The organisation (Board of three) and ``copies`` started copies of the medication
    plan, left without progress since 22 January. Leaders take no weekly digest here, so the
    Board's rung goes out as it is decided (a shared channel's one message is the point)."""
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [board_of_three(folder), PLANS,
                            *medication_copies(folder / "plans", copies)], actor="test")
    rt = publish_rules(rt, rules_with(folder / "config", *NO_LEADERS_DIGEST))
    for n in range(copies):
        approve_and_start(rt, f"QIP-2026-{101 + n}")
    return rt


def expected_channels(rt: Runtime, channels: Channels) -> Counter[tuple[str, str]]:
    """(channel name, subject) for every message, worked out from the recipients' tags alone —
    what the file means, whatever its order."""
    with rt.db.read() as session:
        people = {p.id: p for p in session.exec(select(Person)).all()}
        rows = session.exec(select(Notification).where(  # merged: covered, never sent
            Notification.state != "merged")).all()
    wanted: set[tuple[str, str, str]] = set()
    for n in rows:
        person = people[n.recipient_id or ""]
        for channel in channels.for_person(
                person_tags(person.id, person.level, person.groups or []), None):
            wanted.add((channel.name, n.message_key or n.key, n.subject))
    return Counter((name, subject) for name, _, subject in wanted)


# --- by name, never by position ---------------------------------------------------------------


def test_reordering_the_channels_file_changes_nothing_about_who_gets_what(
        database: Database, tmp_path: Path, smtp: SmtpServer, teams: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Seniors' and the Board's Teams channels, both on one receiver (told apart by their
    workflow ids). The first dispatch meets a receiver answering 500, so every card is still
    pending when the file is rewritten in another order; the retries go, each to the channel
    its recipients are tagged for, and each card arrives once."""
    trust_loopback(monkeypatch, tmp_path)
    services = {"email": (smtp.url(), "email"),
                "senior": (teams.url(SENIOR_FLOW, "sigsenior01"), "role:senior"),
                "board": (teams.url(BOARD_FLOW, "sigboard002"), "group:board")}
    first = write_channels(tmp_path / "first.yaml",
                           [services["email"], services["senior"], services["board"]])
    rt = started_portfolio(make_runtime(database, first), tmp_path, 1)
    rt.clock.set(LADDER)
    assert notifications.tick(rt).escalations >= 3
    teams.status = 500
    notifications.dispatch(rt)
    assert teams.hooks and not [h for h in teams.hooks if h.delivered]

    reordered = write_channels(tmp_path / "reordered.yaml",
                               [services["board"], services["email"], services["senior"]])
    rt = Runtime(db=database, clock=rt.clock, config_dir=rt.config_dir,
                 channels_file=str(reordered))
    rt.clock.set(LADDER + timedelta(minutes=2))
    teams.status = 202
    again = notifications.dispatch(rt)
    assert again.failed == 0

    flow_of = {"teams:role:senior": SENIOR_FLOW, "teams:group:board": BOARD_FLOW}
    got = Counter((h.path.split("/")[2], h.title) for h in teams.hooks if h.delivered)
    expected = expected_channels(rt, rt.channels)
    assert got == Counter({(flow_of[name], subject): n for (name, subject), n in
                           expected.items() if name in flow_of})
    assert {flow for flow, _ in got} == {SENIOR_FLOW, BOARD_FLOW}
    with rt.db.read() as session:
        names = set(session.exec(select(Delivery.channel)).all())
    assert names == {"email", "teams:role:senior", "teams:group:board"}


# --- malformed channels -----------------------------------------------------------------------


GOOD = ("  - mailto://127.0.0.1:2525?from=qip@riverside-care.example:\n"
        "      - tag: email\n")
MALFORMED = {
    "unknown scheme": ("  - nosuchservice://127.0.0.1/x:\n      - tag: role:senior\n",
                       "nosuchservice", "Apprise cannot use this nosuchservice:// URL"),
    "malformed workflows URL": ("  - workflows://:\n      - tag: group:board\n",
                                "workflows://", "Apprise cannot use this workflows:// URL"),
    "no tag": ("  - json://127.0.0.1:9000/hook\n", "json://", "no tag"),
    "duplicate name": ("  - json://127.0.0.1:9000/a:\n      - tag: role:senior\n"
                       "        name: quality\n"
                       "  - json://127.0.0.1:9000/b:\n      - tag: role:board\n"
                       "        name: quality\n", "json://127.0.0.1:9000/b",
                       "a channel named 'quality' is already on line"),
    "email tag on a webhook": ("  - json://127.0.0.1:9000/c:\n      - tag: email\n",
                               "json://127.0.0.1:9000/c", "the `email` tag marks the SMTP relay"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_channel_refuses_the_file_with_its_line(
        case: str, sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`qip dispatch` with a channels file holding one bad service among good ones exits 2,
    naming the file, the line and what is wrong — nothing is dropped silently and nothing in
    the database changes (the queued messages stay queued)."""
    rt = make_runtime(sqlite_db, None)
    load_examples(rt)
    approve_and_start(rt)
    rt.clock.set(LADDER)
    assert notifications.tick(rt).notifications > 0
    bad, marker, problem = MALFORMED[case]
    path = tmp_path / "channels.yaml"
    path.write_text("version: 1\nurls:\n" + GOOD + bad, encoding="utf-8")
    line = line_with(path.read_text(encoding="utf-8"), marker)
    database = tmp_path / "qip.db"
    before = contents(database)
    code, out, err = qip_here(monkeypatch, capsys, "--db", str(database), "--channels",
                              str(path), "--now", LADDER.isoformat(), "dispatch")
    assert code == 2, out + err
    assert f"{path}:{line}: {problem}" in err
    assert "Traceback" not in err
    assert contents(database) == before
    with pytest.raises(InvalidDefinition):
        Channels.load(path, default_file=tmp_path / "x.log")


def test_channels_are_known_by_name_or_tags_and_the_operators_tag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented example: a `name:` names a channel; without one its kind and tags do;
    `operators` marks where failing plans are reported; the default file carries everything."""
    example = Path(__file__).parent.parent / "docs" / "channels.example.yaml"
    for name in ("SMTP_USER", "SMTP_PASSWORD", "TEAMS_WORKFLOW_ID", "TEAMS_SIGNATURE",
                 "TEAMS_QUALITY_ID", "TEAMS_QUALITY_SIGNATURE", "OPS_WEBHOOK_TOKEN"):
        monkeypatch.setenv(name, f"x{name.lower()}0")
    channels = Channels.load(example, default_file=tmp_path / "x.log")
    names = {c.name: c for c in channels.channels}
    assert set(names) == {"email", "board-teams", "teams:role:senior", "operators"}
    assert [c.name for c in channels.for_operators()] == ["operators"]
    default = Channels.load(None, default_file=tmp_path / "x.log")
    assert [c.name for c in default.for_operators()] == ["file"]


def test_sending_email_needs_no_apprise_once_the_channels_file_is_read(
        database: Database, tmp_path: Path, smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Apprise reads the channels file (the relay's URL); sending email is qip_flow's own
    smtplib sender: with Apprise made impossible to import or reach after the file is read,
    every email of the morning still arrives."""
    import qip_flow.notify.channels as channels_module

    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(smtp.url(), "email")]))
    load_examples(rt)
    approve_and_start(rt)
    rt.clock.set(LADDER)
    notifications.tick(rt)
    assert [c.kind for c in rt.channels.channels] == ["email"]  # the file is read here

    def no_apprise() -> None:
        raise AssertionError("sending email reached for Apprise")

    monkeypatch.setitem(sys.modules, "apprise", None)  # `import apprise` now fails
    monkeypatch.setattr(channels_module, "_apprise", no_apprise)
    summary = notifications.dispatch(rt)
    assert summary.sent >= 5 and (summary.failed, summary.retried) == (0, 0)
    assert len(smtp.messages) == summary.sent


# --- chosen at dispatch -----------------------------------------------------------------------


def test_messages_queued_before_any_channels_file_go_where_the_file_says_once_given(
        database: Database, tmp_path: Path, smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tick runs with no channels file, and some messages were even routed to the default
    file before it was given (as older versions did at queueing). Once the relay is configured,
    dispatch delivers every message by email — none fails "no longer configured" — the file
    deliveries are marked rerouted, and each delivery names the channel used at send time."""
    trust_loopback(monkeypatch, tmp_path)
    before = make_runtime(database, None)
    monkeypatch.chdir(tmp_path)
    load_examples(before)
    approve_and_start(before)
    before.clock.set(LADDER)
    notifications.tick(before)
    with before.db.read() as session:  # not those held for a weekly digest, nor merged ones
        queued = len(session.exec(select(Notification).where(
            Notification.state == "queued")).all())
    assert queued >= 5
    assert notifications.route(before, LADDER, limit=2) >= 2  # routed to the file, unsent

    after = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                                  [(smtp.url(), "email")]))
    after.clock.set(LADDER + timedelta(hours=1))
    summary = notifications.dispatch(after)
    assert (summary.sent, summary.failed) == (queued, 0)
    with after.db.read() as session:
        states = Counter(session.exec(select(Notification.state).where(
            col(Notification.state).not_in(["merged", "held"]))).all())
        deliveries = session.exec(select(Delivery)).all()
    assert states == {"sent": queued}
    assert Counter(d.channel for d in deliveries if d.state == "sent") == {"email": queued}
    assert {d.state for d in deliveries if d.channel == "file"} == {"rerouted"}
    assert not (tmp_path / "qip-notifications.log").exists()
    assert len(smtp.messages) == queued


# --- shared channels --------------------------------------------------------------------------


def board_setup(database: Database, tmp_path: Path, smtp: SmtpServer,
                teams: WebhookReceiver, copies: int) -> Runtime:
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml", [
        (smtp.url(), "email"), (teams.url(BOARD_FLOW, "sigboard002"), "group:board")]))
    rt = started_portfolio(rt, tmp_path, copies)
    rt.clock.set(LADDER)
    return rt


def board_hooks(teams: WebhookReceiver) -> list[Hook]:
    return [h for h in teams.hooks
            if h.delivered and "(rule escalate.board)" in h.facts.get("Why", "")]


def board_cards(teams: WebhookReceiver) -> list[str]:
    return [h.card_text for h in board_hooks(teams)]


def test_a_shared_board_channel_receives_one_message_naming_its_recipients(
        database: Database, tmp_path: Path, smtp: SmtpServer, teams: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two plans' actions are 20 working days overdue: the Board (three people) is told of
    each. The Board's Teams channel receives one card per action naming the three, whose
    button opens the action's page (a full sign-in: a link signed for one of them is never
    posted where others read it); each board member still gets their own email, with a link
    signed for them. A second dispatch sends nothing more."""
    trust_loopback(monkeypatch, tmp_path)
    monkeypatch.setenv("QIP_BASE_URL", "https://qip.riverside-care.example")
    monkeypatch.setenv("QIP_SECRET_KEY", "k" * 40)  # links are signed with the installation's key
    rt = board_setup(database, tmp_path, smtp, teams, 2)
    notifications.tick(rt)
    summary = notifications.dispatch(rt)
    assert summary.failed == 0
    with rt.db.read() as session:
        board = session.exec(select(Notification).where(
            Notification.rule_id == "escalate.board")).all()
        rows = session.exec(select(Delivery).where(Delivery.channel == "teams:group:board")).all()
    decisions = {n.message_key for n in board}
    assert len(decisions) >= 2 and len(board) == 3 * len(decisions)
    cards = board_cards(teams)
    assert len(cards) == len(decisions)
    for card in cards:
        assert f"For: {', '.join(BOARD)}" in card
    for hook in board_hooks(teams):
        [button] = hook.buttons
        assert button["type"] == "Action.OpenUrl"
        assert button["url"].startswith("https://qip.riverside-care.example/actions/QIP-2026-")
    leads = [d for d in rows if d.carried_by_id is None]
    carried = [d for d in rows if d.carried_by_id is not None]
    assert {d.state for d in rows} == {"sent"}
    assert len(carried) >= 2 * len(decisions) and {d.carried_by_id for d in carried} <= {
        d.id for d in leads}
    assert {n.state for n in board} == {"sent"}
    to = emails(rt)
    mailed = Counter(to[m.to] for m in smtp.messages if m.rule == "escalate.board")
    assert mailed == {"hwright": len(decisions), "rmensah": len(decisions),
                      "cevans": len(decisions)}
    assert all("https://qip.riverside-care.example/link/" in m.text
               for m in smtp.messages if m.rule == "escalate.board")

    rt.clock.advance(minutes=30)
    assert notifications.dispatch(rt).sent == 0
    assert len(board_cards(teams)) == len(decisions)


def test_a_failed_shared_message_is_retried_for_every_recipient_it_carries(
        database: Database, tmp_path: Path, smtp: SmtpServer, teams: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Board's channel answers 400: each shared card fails for all three recipients at
    once; `retry` on any one of them sends that card again — once, for all three."""
    trust_loopback(monkeypatch, tmp_path)
    rt = board_setup(database, tmp_path, smtp, teams, 1)
    notifications.tick(rt)
    teams.status = 400
    notifications.dispatch(rt)
    with rt.db.read() as session:
        board = session.exec(select(Notification).where(
            Notification.rule_id == "escalate.board")).all()
    assert len(board) % 3 == 0 and {n.state for n in board} == {"partial"}  # email went
    teams.status = 202
    carried = next(n for n in board if n.recipient_id == "cevans")
    assert notifications.retry(rt, carried.id or 0, by="cevans") == 1
    assert notifications.dispatch(rt).sent == 1
    assert len(board_cards(teams)) == 1
    with rt.db.read() as session:
        states = {n.recipient_id: n.state for n in session.exec(select(Notification).where(
            Notification.message_key == carried.message_key)).all()}
    assert states == {"hwright": "sent", "rmensah": "sent", "cevans": "sent"}


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_send_a_shared_message_once(
        tmp_path: Path, smtp: SmtpServer, teams: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three worker processes tick and dispatch four plans at once on PostgreSQL: each
    decision reaches the Board's channel exactly once, naming the three, and every email
    arrives exactly once."""
    from conftest import require_postgres
    from notify_servers import scratch_database
    from test_notify_workers import start_together

    require_postgres()
    trust_loopback(monkeypatch, tmp_path)
    with scratch_database("postgres", tmp_path) as pg:
        rt = board_setup(pg, tmp_path, smtp, teams, 4)
        reports = start_together("work", 3, pg, tmp_path, tmp_path / "channels.yaml")
        with rt.db.read() as session:
            decisions = set(session.exec(select(Notification.message_key).where(
                Notification.rule_id == "escalate.board")).all())
            total = len(session.exec(select(Notification).where(  # merged: never sent
                Notification.state != "merged")).all())
        to = emails(rt)
    assert sum(r["tick"]["notifications"] for r in reports) == total
    cards = board_cards(teams)
    assert len(decisions) >= 4 and len(cards) == len(decisions)
    assert all(f"For: {', '.join(BOARD)}" in c for c in cards)
    mails = Counter((to[m.to], m.item, m.rule) for m in smtp.messages)
    assert sum(mails.values()) == total and set(mails.values()) == {1}
