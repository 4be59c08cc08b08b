"""The synthetic portfolio behind the benchmarks (bench/portfolio.py): the size asked for, the
same rows for the same seed on every database, foreign keys that hold, ``next_check_at`` equal
to what the engine's schedule gives, and a benchmark day on which the tick has work to do."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import uuid
from datetime import UTC, date, datetime, time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_postgres_schema, make_postgres_database, require_postgres
from sqlmodel import SQLModel

from qip_flow.clock import Clock
from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.services.notifications import tick
from qip_flow.store.db import Database

BENCH = Path(__file__).resolve().parent.parent / "bench"
TODAY = date(2026, 11, 21)
TICK = datetime.combine(TODAY, time(8, 0), tzinfo=UTC)


@pytest.fixture(scope="module")
def portfolio() -> ModuleType:
    """bench/portfolio.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_portfolio", BENCH / "portfolio.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up here
    spec.loader.exec_module(module)
    return module


def digest(db: Database) -> str:
    """Every row of every table, in primary-key order, read back through the column types
    (but not the database's own random identity, which two databases never share)."""
    h = hashlib.sha256()
    with db.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            h.update(table.name.encode())
            columns = [c for c in table.columns if c.name != "database_id"]
            for row in conn.execute(sa.select(*columns).order_by(*table.primary_key.columns)):
                h.update(repr(tuple(row)).encode())
    return h.hexdigest()


def count(db: Database, sql: str) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def check_shape(db: Database, summary: Any, actions: int) -> None:
    total = count(db, "select count(*) from action")
    assert abs(total - actions) <= 15
    assert summary.counts["action"] == total
    assert summary.counts["plan"] == count(db, "select count(*) from plan")
    with db.engine.connect() as conn:
        per_plan = [n for (n,) in conn.execute(sa.text(
            "select count(a.id) from plan p left join action a on a.plan_id = p.id "
            "group by p.id"))]
        states = {s for (s,) in conn.execute(sa.text("select distinct state from plan"))}
        sources = {s for (s,) in conn.execute(sa.text("select distinct source_type from plan"))}
    assert per_plan and min(per_plan) >= 5 and max(per_plan) <= 15
    assert "in_progress" in states
    assert len(sources) >= 4
    assert count(db, "select count(*) from action a left join plan p on p.id = a.plan_id "
                     "where p.id is null") == 0
    assert count(db, "select count(*) from measurement m left join indicator i "
                     "on i.id = m.indicator_id where i.id is null") == 0
    assert count(db, "select count(*) from action where due < baseline_due") == 0
    assert count(db, "select count(*) from duerevision") > 0
    assert count(db, "select count(*) from signoff where purpose = 'approval'") > 0


def run_tick(db: Database) -> Any:
    """The benchmark day's tick, as ``qip --now TODAY tick`` runs it (no channels file)."""
    rt = Runtime(db=db, clock=Clock(TICK))
    return tick(rt, worker="test")


def test_sqlite_portfolio_is_reproducible_and_due_on_the_day(
        portfolio: ModuleType, tmp_path: Path) -> None:
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("a", "b", "exact", "other")}
    summary = portfolio.generate(urls["a"], 1000, 7, today=TODAY, chunk=300)
    portfolio.generate(urls["b"], 1000, 7, today=TODAY, chunk=700)
    portfolio.generate(urls["exact"], 1000, 7, today=TODAY, exact=True)
    portfolio.generate(urls["other"], 1000, 8, today=TODAY)
    dbs = {name: Database(url) for name, url in urls.items()}
    try:
        a = dbs["a"]
        check_shape(a, summary, 1000)
        with a.engine.connect() as conn:
            assert conn.exec_driver_sql("pragma foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("pragma foreign_key_check").fetchall() == []
        # the same seed gives the same rows whatever the chunking, and asking the schedule
        # plan by plan with every action's facts gives the same next_check_at
        assert digest(a) == digest(dbs["b"]) == digest(dbs["exact"])
        assert digest(a) != digest(dbs["other"])

        due = count(a, f"select count(*) from plan where next_check_at <= '{TICK:%Y-%m-%d %H:%M:%S}'")
        assert due == summary.plans_due >= 1
        result = run_tick(a)
        assert result.plans_checked == summary.plans_due
        assert result.notifications >= 1
        # merged: a rung another message to the same person that day covers (never sent)
        assert count(a, "select count(*) from notification where state != 'merged'") == \
            result.notifications
        assert run_tick(a).plans_checked == 0  # everything due was looked at, and rescheduled
    finally:
        for db in dbs.values():
            db.dispose()


def test_small_portfolio_has_its_share_due(portfolio: ModuleType, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    summary = portfolio.generate(url, 20, 3, today=TODAY)
    assert summary.counts["action"] == 20
    assert summary.plans_due >= 1  # even a tiny portfolio gives the tick something to do
    with pytest.raises(InvalidInput, match="already holds plans"):
        portfolio.generate(url, 20, 3, today=TODAY)


@pytest.mark.postgres
def test_postgres_portfolio_matches_sqlite(portfolio: ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    require_postgres()
    monkeypatch.chdir(tmp_path)  # the default channel's file would be written here
    schema = "qip_t_" + uuid.uuid4().hex[:12]
    db = make_postgres_database(schema)
    lite = Database(f"sqlite:///{tmp_path / 'lite.db'}")
    try:
        summary = portfolio.generate(db, 500, 11, today=TODAY, chunk=200)
        portfolio.generate(lite, 500, 11, today=TODAY)
        check_shape(db, summary, 500)
        assert digest(db) == digest(lite)
        # ids we assigned are behind the sequences: the application can add rows afterwards
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "insert into progressnote (action_id, by_id, at, text) "
                "select id, owner_id, now(), 'after the load' from action limit 1"))
        result = run_tick(db)
        assert result.plans_checked == summary.plans_due >= 1
        assert result.notifications >= 1
    finally:
        db.dispose()
        lite.dispose()
        drop_postgres_schema(schema)
