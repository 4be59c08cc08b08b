"""The services behind the action page, on SQLite and PostgreSQL: an uploaded file kept by its
SHA-256 with its row and audit event, a new date asked for and decided, an action handed on,
and an escalation acknowledged (the ladder waits, the owner is told); each refusal changes
nothing."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from conftest import snapshot
from notify_servers import approve_and_start
from sqlmodel import select

from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import actions, evidence, notifications
from qip_flow.store import evidence_files
from qip_flow.store.models import Acknowledgement, Action, DueRequest, Evidence, Notification

PLAN = "QIP-2026-014"
A1, A2, A3 = f"{PLAN}/A1", f"{PLAN}/A2", f"{PLAN}/A3"
PDF = b"%PDF-1.4\n%%EOF\n"
WEB = {"door": "web", "signin": "oidc"}


@pytest.fixture
def started(loaded: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("QIP_EVIDENCE_DIR", str(tmp_path / "evidence"))
    monkeypatch.delenv("QIP_UPLOAD_LIMIT", raising=False)
    monkeypatch.chdir(tmp_path)
    approve_and_start(loaded)
    loaded.clock.set("2026-03-25T10:00")
    return loaded


def test_an_uploaded_file_is_kept_by_its_hash_with_its_row(started: Runtime,
                                                           tmp_path: Path) -> None:
    result = evidence.add_file(started, A3, by="mjones", source=io.BytesIO(PDF),
                               filename="C:\\Users\\megan\\records.pdf", description="Records",
                               event="complete", via=WEB)
    assert (result.move.source, result.move.dest) == ("open", "completed")
    with started.db.read() as session:
        row = session.exec(select(Evidence).where(Evidence.action_id == A3)).one()
    assert (row.filename, row.media_type, row.size, row.reference) == \
        ("records.pdf", "application/pdf", len(PDF), "records.pdf")
    assert evidence_files.path_of(tmp_path / "evidence", row.sha256 or "").read_bytes() == PDF
    assert evidence.check_files(started) == (1, [])
    before = snapshot(started.db)
    with pytest.raises(Refused):  # not the owner's to complete twice: nothing kept
        evidence.add_file(started, A3, by="mjones", source=io.BytesIO(b"%PDF-other"),
                          filename="x.pdf", description="Again", event="complete")
    assert snapshot(started.db) == before
    assert len([p for p in (tmp_path / "evidence").rglob("*") if p.is_file()]) == 1


def test_a_new_date_is_asked_for_once_and_decided_by_someone_else(started: Runtime) -> None:
    asked = actions.request_new_date(started, A1, by="jpatel", new_due=date(2026, 4, 30),
                                     reason="Tool replaced", via=WEB)
    before = snapshot(started.db)
    with pytest.raises(Refused, match="still waiting for a decision"):
        actions.request_new_date(started, A1, by="jpatel", new_due=date(2026, 5, 1),
                                 reason="again")
    with pytest.raises(Refused, match="cannot approve"):  # the workflow's own guard
        actions.decide_new_date(started, asked.id or 0, by="jpatel", approve=True)
    with pytest.raises(InvalidInput, match="reason"):
        actions.decide_new_date(started, asked.id or 0, by="rmensah", approve=False)
    assert snapshot(started.db) == before
    decided = actions.decide_new_date(started, asked.id or 0, by="rmensah", approve=True,
                                      reason="Fair", via=WEB)
    assert (decided.state, decided.decided_by_id) == ("approved", "rmensah")
    with started.db.read() as session:
        action = session.get(Action, A1)
        assert action is not None and action.due == date(2026, 4, 30)
        assert session.exec(select(DueRequest)).one().decision_reason == "Fair"
    with pytest.raises(Refused, match="already approved by Ruth Mensah"):
        actions.decide_new_date(started, asked.id or 0, by="dadeyemi", approve=False, reason="x")


def test_reassigning_moves_the_reminders_to_the_new_owner(started: Runtime) -> None:
    actions.reassign(started, A2, by="dadeyemi", new_owner="lokafor", reason="Leave", via=WEB)
    with started.db.read() as session:
        action = session.get(Action, A2)
        assert action is not None and action.owner_id == "lokafor"
    with pytest.raises(InvalidInput, match="already owns"):
        actions.reassign(started, A2, by="dadeyemi", new_owner="lokafor", reason="x")


def test_acknowledging_an_escalation_pauses_the_ladder(started: Runtime) -> None:
    notifications.tick(started, worker="test")  # A2: 8 working days overdue on 25 March
    with pytest.raises(Refused, match="no escalation about"):
        actions.acknowledge(started, A2, by="jpatel")
    done = actions.acknowledge(started, A2, by="dadeyemi", via=WEB)
    assert (done.by_owner, done.paused_until, done.owner_told) == \
        (False, date(2026, 4, 1), True)
    with started.db.read() as session:
        assert session.exec(select(Acknowledgement)).one().by_id == "dadeyemi"
        told = session.exec(select(Notification).where(
            Notification.kind == "acknowledgement")).one()
        assert told.recipient_id == "anowak" and "1 April 2026" in told.subject
    started.clock.set("2026-03-27T08:00")
    notifications.tick(started, worker="test")
    with started.db.read() as session:
        rules = set(session.exec(select(Notification.rule_id).where(
            Notification.entity_id == A2, Notification.kind == "escalation")).all())
    assert "escalate.sponsor" not in rules
    assert actions.acknowledge(started, A2, by="anowak").by_owner
