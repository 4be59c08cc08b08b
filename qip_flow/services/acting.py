"""An action's owner answering through the API (or the pages' own scripts): record progress,
add evidence, complete, ask for a new date. Each asks the one policy first (a token's service
account is never an action's owner, so it is refused), then fires the workflow event as the
plan's one writer; ``expected_version`` refuses it with a 409 when the plan changed since the
caller saw it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlmodel import select

from qip_flow.config.limits import MAX_TEXT, check_text
from qip_flow.errors import InvalidInput, NotFound, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle
from qip_flow.services.lifecycle import EventResult, changing, get_entity, get_plan
from qip_flow.services.policy import Act, Actor, Policy
from qip_flow.store import audit
from qip_flow.store.models import Action, DueRequest

#: the workflow event each owner's act fires
EVENTS = {Act.RECORD_PROGRESS: "update", Act.COMPLETE: "complete", Act.ADD_EVIDENCE: "add_evidence"}


def authorise(rt: Runtime, actor: Actor, act: Act, action_id: str) -> Action:
    """The action, when the policy lets ``actor`` do ``act`` to it."""
    with rt.db.read() as session:
        _, row = get_entity(session, action_id)
        if not isinstance(row, Action):
            raise NotFound(f"'{action_id}' is a plan, not an action")
        plan = get_plan(session, row.plan_id)
        Policy(session, rt.rules.access, rt.clock.now()).decide(actor, act, plan, row).check()
        return row


def act_on_action(rt: Runtime, actor: Actor, action_id: str, act: Act, *,
                  note: str | None = None, evidence: Sequence[str] = (),
                  expected_version: int | None = None) -> EventResult:
    """Progress, evidence or completion by the action's owner."""
    if act not in EVENTS:
        raise InvalidInput(f"{act.value} is not an owner's event")
    if note is not None:
        check_text(note, field="note", limit=MAX_TEXT)
    authorise(rt, actor, act, action_id)
    return lifecycle.fire_event(rt, action_id, EVENTS[act], by=actor.person.id, note=note,
                                evidence=evidence, expected_version=expected_version)


def request_new_date(rt: Runtime, actor: Actor, action_id: str, new_due: date, reason: str,
                     *, expected_version: int | None = None) -> dict[str, Any]:
    """The owner asks for a new due date, with a reason; someone else decides it (approving
    fires ``revise_due`` as the approver). One pending request per action."""
    if not reason.strip():
        raise InvalidInput("reason: say why the action needs a new date")
    check_text(reason, field="reason", limit=MAX_TEXT)
    authorise(rt, actor, Act.REQUEST_NEW_DATE, action_id)
    now = rt.clock.now()
    with changing(rt, action_id, expected_version=expected_version) as session:
        action = session.get(Action, action_id)
        assert action is not None
        if action.state not in ("open", "in_progress"):
            raise Refused(f"{action_id} is {action.state}: a new date is asked for an open or "
                          "in-progress action")
        if new_due == action.due:
            raise InvalidInput(f"new_due: {new_due} is the date it is due already")
        if new_due < now.date():
            raise InvalidInput(f"new_due: {new_due} has passed (today is {now.date()})")
        pending = session.exec(select(DueRequest).where(DueRequest.action_id == action_id,
                                                        DueRequest.state == "pending")).first()
        if pending is not None:
            raise Refused(f"{action_id} already has a new date waiting for a decision "
                          f"({pending.new_due}, asked {pending.at:%Y-%m-%d})")
        request = DueRequest(action_id=action_id, requested_by_id=actor.person.id,
                             new_due=new_due, reason=reason.strip(), at=now)
        session.add(request)
        session.flush()
        audit.append(session, at=now, actor=actor.person.id, entity_type="action",
                     entity_id=action_id, what="new date requested", reason=reason.strip(),
                     detail={"due": action.due.isoformat() if action.due else None,
                             "new_due": new_due.isoformat(), "request": request.id,
                             "door": actor.door})
        return {"id": request.id, "action": action_id, "new_due": new_due.isoformat(),
                "reason": request.reason, "state": request.state, "at": now.isoformat()}
