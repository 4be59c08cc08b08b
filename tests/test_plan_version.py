"""A plan's version: one more for each transaction that records a change to the plan or its
parts, with who and when — so a person acting on what they saw earlier is told the plan was
changed by someone else, and when, instead of overwriting it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from conftest import EXAMPLES, snapshot

from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading
from qip_flow.store.db import Database
from qip_flow.store.models import Plan

PLAN = "QIP-2026-014"


def version(rt: Runtime) -> tuple[int, str | None, datetime | None]:
    with rt.db.read() as session:
        plan = session.get(Plan, PLAN)
        assert plan is not None
        return plan.version, plan.changed_by, plan.changed_at


def test_each_recorded_change_bumps_the_version_with_who_and_when(loaded: Runtime) -> None:
    """Loaded, approved, an action started, a measurement: one version each, naming the
    person; loading the same file again records nothing and leaves the version alone."""
    assert version(loaded) == (1, "test", datetime(2026, 1, 15, 9, tzinfo=UTC))
    loading.load_files(loaded, [EXAMPLES], actor="someone else")
    assert version(loaded)[0] == 1
    loaded.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(loaded, PLAN, "approval", by="dadeyemi")
    assert version(loaded) == (2, "dadeyemi", datetime(2026, 1, 22, 10, tzinfo=UTC))
    loaded.clock.set("2026-01-23T11:00")
    lifecycle.fire_event(loaded, f"{PLAN}/A2", "start", by="anowak")
    assert version(loaded) == (3, "anowak", datetime(2026, 1, 23, 11, tzinfo=UTC))
    lifecycle.record_measurement(loaded, PLAN, "mar-complete", 81, by="jpatel")
    assert version(loaded)[:2] == (4, "jpatel")


def test_a_change_made_on_an_older_version_is_refused_naming_who_and_when(
        loaded: Runtime) -> None:
    """A senior leader approves the plan as she saw it at version 1; meanwhile the sponsor
    approved it. She is told who changed it and when, and nothing changes."""
    loaded.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(loaded, PLAN, "approval", by="dadeyemi")
    before = snapshot(loaded.db)
    with pytest.raises(Refused) as refused:
        lifecycle.fire_event(loaded, PLAN, "start", by="jpatel", expected_version=1)
    assert str(refused.value) == (
        f"plan {PLAN} was changed by dadeyemi at 2026-01-22 10:00 UTC since you saw it "
        "(version 1, now 2); look at it again and try again")
    assert snapshot(loaded.db) == before
    lifecycle.fire_event(loaded, PLAN, "start", by="jpatel", expected_version=2)
    assert version(loaded)[:2] == (3, "jpatel")


def test_the_migration_numbers_existing_plans_from_their_history(loaded: Runtime) -> None:
    """Upgrading a database that already holds plans: each starts at version 1, changed by
    whoever the audit trail last names on it, at that time."""
    loaded.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(loaded, PLAN, "approval", by="dadeyemi")
    db: Database = loaded.db
    cfg = db._alembic()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert version(loaded) == (1, "qip-rules", datetime(2026, 1, 22, 10, tzinfo=UTC))
    with db.read() as session:
        never = session.get(Plan, "QIP-2026-009")
        assert never is not None
        assert (never.version, never.changed_by) == (1, "test")
        assert never.changed_at == datetime(2026, 1, 15, 9, tzinfo=UTC)
