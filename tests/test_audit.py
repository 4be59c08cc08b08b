"""The audit trail is append-only and tamper-evident: an untouched trail verifies, and an
edited or deleted event is found and named — through the service on both databases and
through `qip audit verify` on a SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa
from tamper import tamper

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading
from qip_flow.store import audit
from qip_flow.store.db import Database

EXAMPLES = SHIPPED_CONFIG / "examples"


def run_medication_plan(rt: Runtime) -> None:
    """A month of the post-inspection QIP: approval, start, an audit result, A1 done."""
    p = "QIP-2026-014"
    rt.clock.set("2026-01-22")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi", meeting="Quality committee 2026-01-22")
    lifecycle.fire_event(rt, p, "start", by="jpatel")
    rt.clock.set("2026-01-23")
    lifecycle.record_measurement(rt, p, "mar-complete", 80, source="weekly MAR audit")
    rt.clock.set("2026-02-12")
    lifecycle.fire_event(rt, f"{p}/A1", "complete", by="jpatel",
                         evidence=["Weekly MAR audit schedule|policies/mar-audit-v3.pdf"])
    lifecycle.fire_event(rt, f"{p}/A1", "verify", by="cevans")


def check(db: Database) -> audit.ChainCheck:
    with db.read() as session:
        return audit.verify(session)


def event_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(sa.text("select count(*) from auditevent")).scalar_one()


def test_an_untouched_trail_verifies(loaded: Runtime) -> None:
    """After loading and a month of work every event verifies, in order."""
    run_medication_plan(loaded)
    total = event_count(loaded.db)
    assert total >= 21 + 5  # the load, the five changes (and any the rules recorded)
    result = check(loaded.db)
    assert (result.ok, result.events, result.broken_at, result.problem) == (True, total, None, "")
    with loaded.db.read() as session:
        seqs = [e.seq for e in audit.history(session)]
    assert seqs == list(range(1, total + 1))


def test_editing_one_event_by_hand_is_detected_and_named(loaded: Runtime) -> None:
    """Changing the reason, the actor or the recorded move of event 5 breaks the chain there;
    putting the value back restores it."""
    run_medication_plan(loaded)
    with loaded.db.engine.connect() as conn:
        original = conn.execute(sa.text(
            "select reason, actor, to_state from auditevent where seq = 5")).one()
    for column, forged in (("reason", "x"), ("actor", "hwright"), ("to_state", "closed")):
        tamper(loaded.db, f"update auditevent set {column} = :v where seq = 5", v=forged)
        result = check(loaded.db)
        assert not result.ok, column
        assert (result.broken_at, result.events) == (5, 4), column
        assert result.problem.startswith("event 5 (person added on lokafor) was altered"), column
        tamper(loaded.db, f"update auditevent set {column} = :v where seq = 5",
            v=getattr(original, column))
        assert check(loaded.db).ok, column


def test_deleting_events_is_detected(loaded: Runtime) -> None:
    """Removing the newest event leaves a chain that still links but is shorter than the head
    records; removing one in the middle leaves a gap, named as the missing event."""
    run_medication_plan(loaded)
    total = event_count(loaded.db)
    tamper(loaded.db, "delete from auditevent where seq = :s", s=total)
    result = check(loaded.db)
    assert (result.ok, result.broken_at, result.events) == (False, total, total - 1)
    assert result.problem == (f"the chain ends at event {total - 1} but the head records {total} "
                              "events: events were deleted")

    tamper(loaded.db, "delete from auditevent where seq = 7")
    result = check(loaded.db)
    assert (result.ok, result.broken_at, result.events) == (False, 7, 6)
    assert result.problem == "event 7 is missing"


def test_audit_verify_command_names_the_altered_event(sqlite_db: Database) -> None:
    """After a hand edit of event 5, `qip audit verify` exits 1 and names the event (the
    intact case exits 0: see test_cli)."""
    rt = Runtime(db=sqlite_db, clock=Clock(), config_dir=SHIPPED_CONFIG)
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [EXAMPLES], actor="cevans")
    run_medication_plan(rt)
    tamper(sqlite_db, "update auditevent set reason = 'x' where seq = 5")
    sqlite_db.dispose()
    env = {**os.environ, "QIP_DATABASE_URL": sqlite_db.url, "COLUMNS": "1000"}
    broken = subprocess.run([sys.executable, "-m", "qip_flow", "audit", "verify"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert ("audit trail broken: event 5 (person added on lokafor) was altered; 4 events before "
            "it verify") in broken.stderr
    assert broken.returncode == 1
