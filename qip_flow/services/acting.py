"""An action's owner answering through the API (or the pages' own scripts): record progress,
add evidence, complete, ask for a new date. Each asks the one policy first (a token's service
account is never an action's owner, so it is refused), then fires the workflow event as the
plan's one writer; ``expected_version`` refuses it with a 409 when the plan changed since the
caller saw it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from qip_flow.config.limits import MAX_TEXT, check_text
from qip_flow.errors import InvalidInput, NotFound
from qip_flow.runtime import Runtime
from qip_flow.services import actions, lifecycle
from qip_flow.services.lifecycle import EventResult, get_entity, get_plan
from qip_flow.services.policy import Act, Actor, Policy
from qip_flow.store.models import Action

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
                                evidence=evidence, expected_version=expected_version,
                                via={"door": actor.door})


def request_new_date(rt: Runtime, actor: Actor, action_id: str, new_due: date, reason: str,
                     *, expected_version: int | None = None) -> dict[str, Any]:
    """The owner asks for a new due date, with a reason; someone else decides it (see
    ``services.actions``, which the pages use too)."""
    authorise(rt, actor, Act.REQUEST_NEW_DATE, action_id)
    request = actions.request_new_date(rt, action_id, by=actor.person.id, new_due=new_due,
                                       reason=reason, via={"door": actor.door},
                                       expected_version=expected_version)
    return {"id": request.id, "action": request.action_id, "new_due": request.new_due.isoformat(),
            "reason": request.reason, "state": request.state, "at": request.at.isoformat()}
