"""A poison row costs one plan, not the tick; and an upgrade leaves every live plan scheduled.

A plan whose stored data makes evaluation raise (written by direct SQL, as a bad import or a
hand edit would) is recorded with its error, skipped, counted, reported once to the operators'
channel and tried again on every tick, while every other plan of its batch is decided and its
reminders reach the real SMTP sink. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from notify_servers import (
    SmtpServer,
    WebhookReceiver,
    approve_and_start,
    database_url,
    emails,
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
from sqlalchemy import text
from sqlmodel import SQLModel, select

from qip_flow.runtime import Runtime
from qip_flow.services import failures, notifications
from qip_flow.store import governance
from qip_flow.store.db import Database
from qip_flow.store.models import Notification, Plan, PlanFailure

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

DAY = date(2026, 2, 23)  # a Monday (messages wait for working days): several reminders due
POISONED = "QIP-2026-102"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def ops() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def rt(database: Database, tmp_path: Path, smtp: SmtpServer, ops: WebhookReceiver,
       monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """Four started copies of the medication plan (QIP-2026-101 … 104); mail through the
    relay, and the operators' Teams channel (tagged ``operators``)."""
    trust_loopback(monkeypatch, tmp_path)
    channels = write_channels(tmp_path / "channels.yaml", [
        (smtp.url(), "email"), (ops.url("opsflow0123", "opssig4567"), "operators")])
    rt = make_runtime(database, channels)
    portfolio(rt, tmp_path / "plans", 4)
    return rt


def poison(db: Database, plan_id: str = POISONED) -> None:
    """Pinned closure criteria whose sign-off is a word, not a mapping: the plan loads, but
    building its facts raises."""
    with db.engine.begin() as conn:
        conn.execute(text("update plan set closure_criteria = :c where id = :id"), {
            "id": plan_id, "c": json.dumps({"pinned_at": "2026-01-22", "signoff": "board"})})


def mend(db: Database, plan_id: str = POISONED) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("update plan set closure_criteria = :c where id = :id"), {
            "id": plan_id, "c": json.dumps({"pinned_at": "2026-01-22",
                                            "signoff": {"level": "senior"}})})


def plans_mailed(rt: Runtime, smtp: SmtpServer) -> set[str]:
    """The plans the relay has received a message about (from the subject's action id)."""
    return {m.about.split("/")[0] for m in smtp.take() if m.about}


def test_a_poisoned_plan_costs_only_itself_and_is_reported_once_and_retried(
        rt: Runtime, smtp: SmtpServer, ops: WebhookReceiver) -> None:
    """Of four started plans one has a corrupt row: the tick checks the other three and their
    reminders go out; the fifth is recorded (error, first and last failure, one attempt),
    counted, and reported once to the operators' channel. The next tick tries it again
    (two attempts, no second report); once the row is mended, it evaluates, its failure is
    resolved and its reminders go out."""
    poison(rt.db)
    rt.clock.set(morning(DAY))
    summary = notifications.tick(rt, batch=200)
    assert summary.plans_failed == 1 and summary.plans_checked == 3
    assert summary.notifications >= 6
    [failed] = summary.failing
    assert failed["plan"] == POISONED and failed["attempts"] == 1
    assert "AttributeError" in failed["error"] and "facts.py" in failed["error"]
    sent = notifications.dispatch(rt)
    # + the report, + the weekly digests (23 February is a Monday, the shipped digest day)
    assert sent.failed == 0 and sent.sent == summary.notifications + summary.digests + 1
    mailed = plans_mailed(rt, smtp)
    assert POISONED not in mailed and mailed == {"QIP-2026-101", "QIP-2026-103", "QIP-2026-104"}
    [report] = [h for h in ops.hooks if h.delivered]
    assert f"The tick cannot evaluate {POISONED}" in report.title
    assert "AttributeError" in report.card_text and "qip notifications --failing" in report.card_text

    rt.clock.set(morning(DAY + timedelta(days=1)))
    again = notifications.tick(rt)
    assert again.plans_failed == 1 and again.failing[0]["attempts"] == 2
    notifications.dispatch(rt)
    assert len(ops.hooks) == 1  # one report per failure, not one per tick
    with rt.db.read() as session:
        row = session.get(PlanFailure, POISONED)
        plan = session.get(Plan, POISONED)
    assert row is not None and row.attempts == 2 and row.resolved_at is None
    assert row.first_failed_at == morning(DAY) and row.last_failed_at == morning(DAY) + \
        timedelta(days=1)
    assert plan is not None and plan.check_claimed_by is None  # free for the next tick
    assert plan.next_check_at is not None and plan.next_check_at <= morning(DAY)

    mend(rt.db)
    mended = notifications.tick(rt)
    assert mended.plans_failed == 0 and mended.plans_checked >= 1 and mended.notifications >= 1
    notifications.dispatch(rt)
    assert POISONED in plans_mailed(rt, smtp)
    with rt.db.read() as session:
        row = session.get(PlanFailure, POISONED)
        assert row is not None and row.resolved_at == morning(DAY) + timedelta(days=1)
        assert failures.failing(session) == []


def test_failing_plans_are_shown_by_tick_and_notifications(
        rt: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`qip tick` counts the skipped plan and names it with its error; `qip notifications`
    lists it above the outbox, and `--failing --json` gives it to a monitoring script."""
    poison(rt.db)
    base = ("--db", database_url(database), "--channels", str(tmp_path / "channels.yaml"),
            "--now", morning(DAY).isoformat())
    code, out, err = qip_here(monkeypatch, capsys, *base, "tick")
    assert code == 0, err
    assert "plans failed 1" in out
    assert f"plan {POISONED} skipped" in err and "AttributeError" in err
    code, out, err = qip_here(monkeypatch, capsys, *base, "--json", "notifications", "--failing")
    assert code == 0, err
    [row] = json.loads(out)
    assert row["plan"] == POISONED and row["attempts"] == 1 and "AttributeError" in row["error"]
    code, out, err = qip_here(monkeypatch, capsys, *base, "notifications")
    assert code == 0, err
    assert "plans the tick cannot evaluate" in out and POISONED in out


def test_without_an_operators_channel_the_report_is_kept_failed_and_the_rest_is_sent(
        database: Database, tmp_path: Path, smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A channels file with no `operators` channel: the report cannot be delivered, so it
    stays in the outbox as failed, saying why; everyone else's mail goes out."""
    trust_loopback(monkeypatch, tmp_path)
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(smtp.url(), "email")]))
    portfolio(rt, tmp_path / "plans", 2)
    poison(rt.db)
    rt.clock.set(morning(DAY))
    summary = notifications.tick(rt)
    assert summary.plans_failed == 1
    sent = notifications.dispatch(rt)
    assert sent.sent == summary.notifications + summary.digests and sent.failed == 0
    with rt.db.read() as session:
        [report] = notifications.list_notifications(session, state="failed")
    assert report["to"] == "operators" and report["about"] == POISONED
    assert "no channel is named or tagged `operators`" in report["problem"]


def test_a_row_that_cannot_be_loaded_is_narrowed_to_its_plan(
        database: Database, tmp_path: Path, smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategic-risk list that is not a list breaks the query that loads the whole batch's
    plans, before any one plan is decided: the batch is halved until the plan is found; it
    alone is skipped and the other three are sent."""
    trust_loopback(monkeypatch, tmp_path)
    rt = make_runtime(database, write_channels(tmp_path / "channels.yaml",
                                               [(smtp.url(), "email")]))
    portfolio(rt, tmp_path / "plans", 4)
    with database.engine.begin() as conn:
        conn.execute(text("update plan set risk_ids = '5' where id = :id"), {"id": POISONED})
    rt.clock.set(morning(DAY))
    summary = notifications.tick(rt)
    assert (summary.plans_failed, summary.plans_checked) == (1, 3)
    assert summary.failing[0]["plan"] == POISONED
    assert "risk_ids" in summary.failing[0]["error"]
    notifications.dispatch(rt)
    mailed = plans_mailed(rt, smtp)
    assert POISONED not in mailed and len(mailed) == 3


# --- upgrades ---------------------------------------------------------------------------------


def test_after_upgrading_from_schema_0001_every_live_plan_is_checked_by_the_next_tick(
        database: Database, tmp_path: Path, smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' medication plan, started, is copied into a database created at schema
    0001 (its columns only; 0001 had no next check time). `qip init` upgrades it; the next
    tick, with no `qip reassess`, checks the plan and its reminders reach the relay."""
    trust_loopback(monkeypatch, tmp_path)
    source = make_runtime(database, None)
    load_examples(source)
    approve_and_start(source)

    old = _database_like(database, tmp_path)
    try:
        cfg = old._alembic()
        with old.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        _copy_rows(database, old)
        with old.engine.connect() as conn:
            assert "next_check_at" not in {c["name"] for c in sa.inspect(conn).get_columns("plan")}
        old.init()
        # the upgraded copy then plays a simulated morning: mark it as a simulation (an
        # upgraded database has no `simulation` row, which makes it a real record)
        with old.engine.begin() as conn:
            conn.execute(sa.text("insert into databasesetting (key, value) values (:k, 'true')"),
                         {"k": governance.SIMULATION})
        with old.read() as session:
            unscheduled = session.exec(select(Plan.id).where(
                Plan.state == "in_progress", Plan.next_check_at == None)).all()  # noqa: E711
        assert unscheduled == []

        rt = make_runtime(old, write_channels(tmp_path / "channels.yaml",
                                              [(smtp.url(), "email")]))
        rt.clock.set(morning(DAY))
        summary = notifications.tick(rt)
        assert summary.plans_checked >= 1 and summary.notifications >= 3
        assert notifications.dispatch(rt).sent == summary.notifications + summary.digests
        to = emails(rt)
        got = smtp.take()
        assert {m.about.split("/")[0] for m in got if m.about} == {"QIP-2026-014"}
        assert {to[m.to] for m in got} >= {"jpatel"}
        with rt.db.read() as session:
            assert session.exec(select(Notification)).all()
    finally:
        old.dispose()
        if not old.is_sqlite:
            from conftest import drop_postgres_schema
            drop_postgres_schema(old.schema_name)  # type: ignore[attr-defined]


def _database_like(db: Database, folder: Path) -> Database:
    """An empty database of the same kind as ``db``."""
    if db.is_sqlite:
        return Database(f"sqlite:///{folder / 'old.db'}")
    from conftest import make_postgres_database, postgres_schema_url

    _, schema = postgres_schema_url()
    old = make_postgres_database(schema)
    old.schema_name = schema  # type: ignore[attr-defined]
    return old


def _copy_rows(source: Database, target: Database) -> None:
    """Every row of the tables ``target`` has, with the columns it has."""
    with source.engine.connect() as read, target.engine.begin() as write:
        inspector = sa.inspect(write)
        existing = set(inspector.get_table_names())
        for table in SQLModel.metadata.sorted_tables:
            if table.name not in existing:
                continue
            old = sa.Table(table.name, sa.MetaData(), autoload_with=write)
            rows = [{k: v for k, v in row._mapping.items() if k in old.c}
                    for row in read.execute(table.select())]
            if rows:
                write.execute(old.insert(), rows)
