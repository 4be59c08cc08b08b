"""The tick's floor (bench/tick_baseline.py) is only a floor if it does the tick's work: on the
same portfolio it must write the same outbox rows — key, recipient and held/queued/merged state
— as ``qip tick``, on SQLite and on PostgreSQL, and leave no plan due."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
from sqlalchemy import text

from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import notifications
from qip_flow.store.db import Database
from tests.conftest import PG_URL, drop_postgres_schema, make_postgres_database, require_postgres

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import portfolio
import tick_baseline

TODAY = date(2026, 11, 24)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def twins(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, str]]:
    """Two copies of one generated portfolio: an open database for the tick, and the URL of
    the other for the floor."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / name}.db" for name in ("qip", "floor")]
        dbs = [Database(u) for u in urls]
        schemas: list[str] = []
    else:
        require_postgres()
        schemas = ["qip_tick_" + uuid.uuid4().hex[:10] for _ in range(2)]
        dbs = [make_postgres_database(s) for s in schemas]
        urls = [f"{PG_URL}?options=-csearch_path%3D{s}" for s in schemas]
    for db in dbs:
        portfolio.generate(db, 1500, 7, today=TODAY, due_share=0.25)
    try:
        yield dbs[0], urls[1]
        dbs[1].dispose()
    finally:
        for db in dbs:
            db.dispose()
        for schema in schemas:
            drop_postgres_schema(schema)


def written(db: Database) -> set[tuple[str, str | None, str]]:
    with db.read() as session:
        return {tuple(r) for r in session.execute(text(  # type: ignore[misc]
            "select key, recipient_id, state from notification"))}


def still_due(db: Database, now: datetime) -> int:
    with db.read() as session:
        return session.execute(text("select count(*) from plan where next_check_at <= :now"),
                               {"now": now.replace(tzinfo=None) if db.is_sqlite else now}
                               ).scalar_one()


def test_floor_and_tick_write_the_same_rows(twins: tuple[Database, str]) -> None:
    db, floor_url = twins
    now = datetime.combine(TODAY, time(8, 0), tzinfo=UTC)
    result = tick_baseline.run(floor_url, TODAY)
    rt = Runtime(db=db, clock=Clock(now))
    summary = notifications.tick(rt, worker="test")
    ours = written(db)
    floor_db = Database(floor_url)
    try:
        theirs, left = written(floor_db), still_due(floor_db, now)
    finally:
        floor_db.dispose()
    states = {s for _, _, s in ours}
    assert {"queued", "held", "merged"} <= states, states  # every path of the ladder is walked
    assert any(k.startswith("escalate.") for k, _, _ in ours)
    assert ours == theirs
    assert summary.notifications == result["notifications"] > 0
    assert still_due(db, now) == left == 0


def test_a_large_group_message_names_ten_others_and_counts_the_rest() -> None:
    from qip_flow.services.notices import also_told

    few = [f"P{i}" for i in range(10)]
    assert also_told(few) == few
    many = [f"P{i}" for i in range(571)]
    assert also_told(many) == [*many[:10], "and 561 others"]
