"""The audit trail proves it is complete, against someone who can edit the database by hand
(tests/tamper.py): each way of cutting, rewriting or side-stepping the trail that a probe found
"intact" is tried here, on SQLite and PostgreSQL, and `qip audit verify` must name it. An
untouched trail must still pass, and a legitimate restore must be recordable."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import EXAMPLES, snapshot
from tamper import tamper
from test_audit import event_count, run_medication_plan

from qip_flow import SHIPPED_CONFIG, reports
from qip_flow.clock import Clock
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import integrity, lifecycle, loading, notifications
from qip_flow.services.replay import Difference
from qip_flow.store import audit, checkpoints, keys
from qip_flow.store.db import Database

A2 = "QIP-2026-014/A2"


@pytest.fixture
def trail(loaded: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """A month of the medication plan, then a checkpoint. The key and the checkpoint file sit
    beside a SQLite database by default; for PostgreSQL they are named by the environment."""
    monkeypatch.delenv("QIP_SECRET_KEY", raising=False)
    if not loaded.db.is_sqlite:
        monkeypatch.setenv("QIP_KEY_FILE", str(tmp_path / "keys" / "qip.key"))
        monkeypatch.setenv("QIP_CHECKPOINT_FILE", str(tmp_path / "checkpoints.jsonl"))
    keys.ensure_key(loaded.db)
    run_medication_plan(loaded)
    integrity.checkpoint(loaded)
    return loaded


def problems(rt: Runtime, **options: bool) -> list[str]:
    found = integrity.verify(rt, **options)
    assert found.ok is not (found.problems or found.behind), "ok must agree with the problems"
    return found.problems + found.behind


def head(db: Database) -> tuple[int, str]:
    with db.engine.connect() as conn:
        return tuple(conn.execute(sa.text("select seq, hash from audithead")).one())


def cut_last_event(db: Database) -> None:
    """Delete the newest event and move the head back onto the one before, hash and all: the
    chain and its head then agree, and only a checkpoint knows better."""
    total = event_count(db)
    tamper(db, "delete from auditevent where seq = :s", s=total)
    tamper(db, "update audithead set seq = :s, hash = (select hash from auditevent where "
           "seq = :s)", s=total - 1)


def test_an_untouched_trail_verifies_with_its_checkpoints_and_its_tables(trail: Runtime) -> None:
    """Two checkpoints, more work between them: every checkpoint matches, the replay finds the
    tables as the trail tells them."""
    first = event_count(trail.db)
    lifecycle.fire_event(trail, A2, "start", by="jpatel")
    lifecycle.fire_event(trail, A2, "revise_due", by="dadeyemi", due=date(2026, 4, 30),
                         reason="pharmacy supplier changed")
    lifecycle.record_measurement(trail, "QIP-2026-014", "mar-complete", 91, by="jpatel")
    integrity.checkpoint(trail)
    found = integrity.verify(trail, deep=True)
    assert found.ok, found.problems + found.behind
    assert [c.events for c in found.checked] == [first, event_count(trail.db)]
    assert found.deep is not None and found.deep.differences == []
    assert found.deep.notes == []  # loaded with this version: every due date is in the trail


def test_deleting_the_last_event_and_lowering_the_head_count_is_caught(trail: Runtime) -> None:
    """Lowering only the count leaves the head naming a hash no event has; moving the hash too
    leaves the checkpoint holding more events than the trail."""
    total = event_count(trail.db)
    tamper(trail.db, "delete from auditevent where seq = :s", s=total)
    tamper(trail.db, "update audithead set seq = :s", s=total - 1)
    assert problems(trail)[0].startswith(
        f"the head records event {total - 1} with hash ")
    assert "the end of the trail was rewritten" in problems(trail)[0]

    tamper(trail.db, "update audithead set hash = (select hash from auditevent where seq = :s)",
           s=total - 1)
    assert problems(trail) == [
        f"the trail has {total - 1} events but checkpoint line 1 ({_at(trail, 1)}, command) "
        f"recorded {total}: events were deleted, or an older backup was restored (then run "
        "`qip audit verify --after-restore`)"]


def test_cutting_the_tail_and_carrying_on_is_caught_by_the_hash_at_the_checkpoint(
        trail: Runtime) -> None:
    """After the cut, new work brings the count back up: the count matches the checkpoint but
    the hash there does not."""
    total = event_count(trail.db)
    cut_last_event(trail.db)
    lifecycle.fire_event(trail, A2, "start", by="jpatel")
    assert event_count(trail.db) >= total
    found = problems(trail)
    assert len(found) == 1 and found[0].startswith(f"at event {total} the chain's hash is ")
    assert "checkpoint line 1" in found[0] and "the trail was rewritten" in found[0]


def test_deleting_the_head_row_is_caught_and_nothing_more_is_recorded(trail: Runtime) -> None:
    tamper(trail.db, "delete from audithead")
    assert problems(trail)[0] == (
        "the chain head (table audithead, row 1) is missing: it was deleted; restore the "
        f"database from a backup; the {event_count(trail.db)} events themselves verify")
    before = snapshot(trail.db)
    with pytest.raises(Refused, match=r"chain head .* is missing"):
        lifecycle.fire_event(trail, A2, "start", by="jpatel")
    with pytest.raises(Refused, match=r"chain head .* is missing"):
        integrity.checkpoint(trail)
    assert snapshot(trail.db) == before


def test_deleting_every_event_after_a_checkpoint_is_caught(trail: Runtime) -> None:
    """An empty trail with a head at zero is what a new database looks like; the checkpoint
    says this one was not new."""
    total = event_count(trail.db)
    tamper(trail.db, "delete from auditevent")
    tamper(trail.db, "update audithead set seq = 0, hash = 'genesis'")
    assert problems(trail) == [
        f"the trail is empty but checkpoint line 1 ({_at(trail, 1)}, command) recorded {total}: "
        "events were deleted, or an older backup was restored (then run `qip audit verify "
        "--after-restore`)"]


def test_editing_state_tables_is_named_by_the_deep_check(trail: Runtime) -> None:
    """A plan closed by hand, an action marked verified by hand, its due date moved and the
    plan re-rated: the chain is intact (nothing in it changed), the replay names each field."""
    with trail.db.engine.connect() as conn:
        due, rag = conn.execute(sa.text(
            "select a.due, p.rag from action a join plan p on p.id = a.plan_id "
            "where a.id = :a"), {"a": A2}).one()
    tamper(trail.db, "update plan set state = 'closed', rag = 'red' "
           "where id = 'QIP-2026-014'")
    tamper(trail.db, "update action set state = 'verified', due = :d, verified_by_id = 'cevans' "
           "where id = :a", d=date(2027, 1, 1), a=A2)
    assert problems(trail) == []  # the trail itself is untouched
    found = integrity.verify(trail, deep=True)
    assert not found.ok
    assert found.deep is not None
    assert found.deep.differences == [
        Difference("plan", "QIP-2026-014", "state", "in_progress", "closed"),
        Difference("plan", "QIP-2026-014", "rag", rag, "red"),
        Difference("action", A2, "state", "open", "verified"),
        Difference("action", A2, "due", date.fromisoformat(str(due)), date(2027, 1, 1)),
        Difference("action", A2, "verified_by_id", None, "cevans"),
    ]
    assert found.deep.differences[0].describe() == (
        "plan QIP-2026-014, state: the trail says 'in_progress', the table says 'closed'")


def test_reattributing_a_signoff_is_named_by_the_deep_check(trail: Runtime) -> None:
    """The approval signed by dadeyemi at senior level, rewritten as the board's."""
    tamper(trail.db, "update signoff set by_id = 'hwright', level = 'board', "
           "meeting_reference = 'Board 2026-01-22' where plan_id = 'QIP-2026-014'")
    found = integrity.verify(trail, deep=True)
    assert found.deep is not None
    with trail.db.engine.connect() as conn:
        row_id = conn.execute(sa.text("select id from signoff")).scalar_one()
    assert found.deep.differences == [
        Difference("signoff", str(row_id), "by_id", "dadeyemi", "hwright"),
        Difference("signoff", str(row_id), "level", "senior", "board"),
        Difference("signoff", str(row_id), "meeting_reference", "Quality committee 2026-01-22",
                   "Board 2026-01-22"),
    ]


def test_changed_evidence_and_measurements_are_named_by_the_deep_check(trail: Runtime) -> None:
    tamper(trail.db, "update evidence set reference = 'policies/none.pdf'")
    tamper(trail.db, "update measurement set value = 99")
    found = integrity.verify(trail, deep=True)
    assert found.deep is not None
    assert [(d.table, d.field, d.trail, d.table_says) for d in found.deep.differences] == [
        ("evidence", "label", "Weekly MAR audit schedule (policies/mar-audit-v3.pdf)",
         "Weekly MAR audit schedule (policies/none.pdf)"),
        ("measurement", "value", 80, 99.0),
    ]


def test_a_tampered_checkpoint_line_is_caught(trail: Runtime) -> None:
    """Lowering a checkpoint's count (to hide a cut) breaks its MAC; so does a garbled line."""
    cut_last_event(trail.db)
    path = checkpoints.checkpoint_file(trail.db)
    line = json.loads(path.read_text())
    line["events"] -= 1
    line["hash"] = head(trail.db)[1]
    path.write_text(json.dumps(line) + "\n" + "not json\n")
    assert problems(trail) == [
        f"{path}, line 1: the checkpoint's MAC does not match: the line was edited, or the "
        "secret key is not the one it was written with",
        f"{path}, line 2: not a checkpoint (edited, or another file)"]


def test_checkpoints_checked_with_the_wrong_key_fail(trail: Runtime,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A forger without the key cannot write a line that verifies; and a verifier with the
    wrong key says so rather than trusting the file."""
    monkeypatch.setenv("QIP_SECRET_KEY", "f" * 64)
    path = checkpoints.checkpoint_file(trail.db)
    assert problems(trail) == [
        f"{path}, line 1: the checkpoint's MAC does not match: the line was edited, or the "
        "secret key is not the one it was written with"]
    monkeypatch.setenv("QIP_SECRET_KEY", "too short")
    with pytest.raises(InvalidInput, match="QIP_SECRET_KEY: the secret key has 9 characters"):
        integrity.verify(trail)


def test_a_missing_key_file_with_checkpoints_fails(trail: Runtime) -> None:
    keys.key_file(trail.db).unlink()
    assert problems(trail) == [
        f"{checkpoints.checkpoint_file(trail.db)} holds 1 checkpoint(s) but there is no secret "
        "key to check them (QIP_SECRET_KEY, or the key file qip.key): restore the key file"]


def test_a_changed_database_identity_orphans_no_checkpoint(trail: Runtime) -> None:
    """Renaming the database in its head would make every checkpoint "someone else's"."""
    with trail.db.engine.connect() as conn:
        identity = conn.execute(sa.text("select database_id from audithead")).scalar_one()
    tamper(trail.db, "update audithead set database_id = 'feedfacefeedface'")
    assert problems(trail) == [
        f"{checkpoints.checkpoint_file(trail.db)}: 1 checkpoint(s) belong to another database "
        f"(id {identity}, first at line 1; this one is feedfacefeedface): the file is another "
        "database's, or this database's identity was changed"]


def test_after_restore_is_refused_when_the_trail_has_other_faults(trail: Runtime) -> None:
    cut_last_event(trail.db)
    tamper(trail.db, "update auditevent set reason = 'x' where seq = 5")
    before = snapshot(trail.db)
    lines = checkpoints.checkpoint_file(trail.db).read_text()
    with pytest.raises(Refused, match="faults that a restore does not explain"):
        integrity.verify(trail, after_restore=True, by="cevans")
    assert snapshot(trail.db) == before
    assert checkpoints.checkpoint_file(trail.db).read_text() == lines


def test_the_key_is_never_written_to_the_database_or_the_checkpoints(trail: Runtime) -> None:
    key = keys.secret_key(trail.db)
    assert key is not None and len(key) == 64
    assert oct(keys.key_file(trail.db).stat().st_mode & 0o777) == "0o600"
    assert key.decode() not in repr(snapshot(trail.db))
    assert key.decode() not in checkpoints.checkpoint_file(trail.db).read_text()


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_postgres_refuses_update_and_delete_of_the_audit_trail(trail: Runtime) -> None:
    """The application's own connection cannot change or remove an event, or move the head
    back; appending goes on as before."""
    refused = [
        "update auditevent set reason = 'x' where seq = 5",
        "delete from auditevent where seq = (select max(seq) from auditevent)",
        "truncate auditevent",
        "delete from audithead",
        "update audithead set seq = seq - 1",
        "update audithead set database_id = 'other'",
        "truncate audithead",
    ]
    before = snapshot(trail.db)
    for statement in refused:
        with pytest.raises(sa.exc.ProgrammingError, match=r"append-only|only moves forward"), \
                trail.db.engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert snapshot(trail.db) == before
    lifecycle.fire_event(trail, A2, "start", by="jpatel")
    assert integrity.verify(trail).ok


# --- through the command line, on a SQLite file -----------------------------------------------


def qip(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QIP_SECRET_KEY", "QIP_KEY_FILE", "QIP_CHECKPOINT_FILE")}
    env.update(QIP_DATABASE_URL=str(db), COLUMNS="1000")
    return subprocess.run([sys.executable, "-m", "qip_flow", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=db.parent)


def sqlite_copy(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as read, closing(sqlite3.connect(target)) as write:
        read.backup(write)


@pytest.mark.slow
def test_restoring_an_older_copy_of_the_sqlite_file_fails_until_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`qip init` makes the key (0600) beside the database; the tick writes a checkpoint and
    the board pack prints it; an older copy of the file put back is refused by `qip audit
    verify` (exit 1) until `--after-restore` records it in the trail and writes a new
    checkpoint."""
    for name in ("QIP_SECRET_KEY", "QIP_KEY_FILE", "QIP_CHECKPOINT_FILE"):
        monkeypatch.delenv(name, raising=False)
    db = tmp_path / "qip.db"
    assert qip(db, "init", "--simulation").returncode == 0
    assert oct((tmp_path / "qip.key").stat().st_mode & 0o777) == "0o600"
    rt = Runtime(db=Database(str(db)), clock=Clock(), config_dir=SHIPPED_CONFIG)
    rt.clock.set("2026-01-22")
    loading.load_files(rt, [EXAMPLES], actor="cevans")
    sqlite_copy(db, tmp_path / "backup.db")  # as `sqlite3 qip.db ".backup backup.db"`
    lifecycle.sign_off(rt, "QIP-2026-014", "approval", by="dadeyemi")
    notifications.tick(rt)
    written = json.loads((tmp_path / checkpoints.CHECKPOINT_FILE_NAME).read_text())
    assert written["source"] == "tick" and written["events"] > 21
    board = reports.text("board", reports.gather(rt, "board"), "md")
    assert (f"The newest audit checkpoint, kept outside the database and keyed, was written "
            f"2026-01-22 09:00 UTC at {written['events']} events, hash `{written['hash']}`."
            in board)
    rt.db.dispose()

    sqlite_copy(tmp_path / "backup.db", db)  # as `sqlite3 qip.db ".restore backup.db"`
    broken = qip(db, "audit", "verify")
    assert broken.returncode == 1
    assert (f"audit trail broken: the trail has 21 events but checkpoint line 1 (2026-01-22 "
            f"09:00, tick) recorded {written['events']}: events were deleted, or an older backup "
            "was restored" in broken.stderr)

    recorded = qip(db, "audit", "verify", "--after-restore", "--by", "cevans")
    assert recorded.returncode == 0, recorded.stderr
    assert (f"restore recorded: trail at 21 events, newest checkpoint said {written['events']}; "
            "new checkpoint at 22 events") in recorded.stdout
    with rt.db.read() as session:
        last = audit.history(session)[-1]
    assert (last.actor, last.what, last.reason) == (
        "cevans", "restored from backup",
        f"restored from backup; trail at 21 events, newest checkpoint said {written['events']}")
    again = qip(db, "audit", "verify", "--deep")
    assert again.returncode == 0, again.stderr
    assert "audit trail intact: 22 events verified; 1 checkpoint(s) match" in again.stdout


def _at(rt: Runtime, line: int) -> str:
    text = checkpoints.checkpoint_file(rt.db).read_text().splitlines()[line - 1]
    return json.loads(text)["at"][:16].replace("T", " ")
