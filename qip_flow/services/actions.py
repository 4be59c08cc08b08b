"""What people do to an action besides firing one workflow event: record progress (starting an
action still open), ask for a new date and have it approved or refused by someone else, hand the
action to another owner, and acknowledge an escalation. Each use case is one transaction with
its audit event, as the plan's one writer (``lifecycle.changing``): a refusal changes nothing.

The web pages and the API call these after the policy (``services/policy.py``) has said the
person may try; the workflow's guards and the checks here still judge the change itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.config.limits import check_day, check_text
from qip_flow.decide.calendar import calendar
from qip_flow.errors import InvalidInput, NotFound, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import notifications
from qip_flow.services.lifecycle import (
    EventResult,
    changing,
    fire_in_session,
    get_entity,
    get_person,
    get_plan,
)
from qip_flow.store import audit
from qip_flow.store.models import Acknowledgement, Action, DueRequest, Notification, Person
from qip_flow.workflow.subject import EventInputs


def _action(session: Session, action_id: str) -> Action:
    _, row = get_entity(session, action_id)
    if not isinstance(row, Action):
        raise InvalidInput(f"{action_id} is a plan, not an action")
    return row


def _text(value: str, *, field: str, missing: str) -> str:
    text = check_text(value.strip(), field=field)
    if not text:
        raise InvalidInput(f"{field}: {missing}")
    return text


def _touched(action: Action, person: Person, now: Any) -> None:
    """The action heard from someone; only its owner's word stops the escalations."""
    action.last_update_at = now
    if person.id == action.owner_id:
        action.owner_update_at = now


def record_progress(rt: Runtime, action_id: str, *, by: str, note: str,
                    via: dict[str, str] | None = None) -> EventResult:
    """A progress note from the owner; an action still ``open`` is started first (writing
    progress on it means the work has begun), both in one transaction."""
    note = _text(note, field="note", missing="say what has been done")
    now = rt.clock.now()
    with changing(rt, action_id) as session:
        action, person = _action(session, action_id), get_person(session, by)
        start = rt.workflows.defs["action"].event("start")
        if start is not None and action.state in start.source and start.dest:
            fire_in_session(rt, session, action.id, "start",
                            EventInputs(by=person, now=now, via=dict(via or {})),
                            reassess_after=False)
        return fire_in_session(rt, session, action.id, "update",
                               EventInputs(by=person, now=now, note=note, via=dict(via or {})))


# --- new dates -----------------------------------------------------------------------------


def _revisable(rt: Runtime, action: Action) -> None:
    revise = rt.workflows.defs["action"].event("revise_due")
    if revise is None:
        raise Refused("the action workflow has no revise_due event, so due dates cannot change")
    if action.state not in revise.source:
        raise Refused(f"{action.id} is {action.state.replace('_', ' ')}: a new date can be "
                      f"asked for only while it is {' or '.join(revise.source)}")


def request_new_date(rt: Runtime, action_id: str, *, by: str, new_due: date, reason: str,
                     via: dict[str, str] | None = None,
                     expected_version: int | None = None) -> DueRequest:
    """The owner asks for a new due date, with a reason; someone else decides it
    (:func:`decide_new_date`). One request waits at a time."""
    check_day(new_due, field="new_due")
    reason = _text(reason, field="reason", missing="say why the action needs a new date")
    now = rt.clock.now()
    with changing(rt, action_id, expected_version=expected_version) as session:
        action, person = _action(session, action_id), get_person(session, by)
        _revisable(rt, action)
        if new_due == action.due:
            raise InvalidInput(f"new_due: {new_due:%-d %B %Y} is already the due date; give "
                               "the date you are asking for")
        if new_due < now.date():
            raise InvalidInput(f"new_due: {new_due:%-d %B %Y} is in the past; give a date from "
                               f"today ({now.date():%-d %B %Y}) on")
        waiting = session.exec(select(DueRequest).where(
            DueRequest.action_id == action.id, DueRequest.state == "pending")).first()
        if waiting is not None:
            raise Refused(f"a new date ({waiting.new_due:%-d %B %Y}) asked for on "
                          f"{waiting.at:%-d %B %Y} is still waiting for a decision; wait for "
                          "it, or ask the person deciding it")
        request = DueRequest(action_id=action.id, requested_by_id=person.id, new_due=new_due,
                             reason=reason, at=now)
        session.add(request)
        session.flush()
        _touched(action, person, now)
        audit.append(session, at=now, actor=person.id, entity_type="action", entity_id=action.id,
                     what="new date asked", reason=reason,
                     detail={"request": request.id, "new_due": new_due.isoformat(),
                             "due": action.due.isoformat() if action.due else None,
                             **({"via": via} if via else {})})
        return request


def pending_request(session: Session, request_id: int) -> DueRequest:
    request = session.get(DueRequest, request_id)
    if request is None:
        raise NotFound(f"there is no request for a new date numbered {request_id}")
    return request


def decide_new_date(rt: Runtime, request_id: int, *, by: str, approve: bool, reason: str = "",
                    via: dict[str, str] | None = None) -> DueRequest:
    """Approve (the action's ``revise_due`` event, fired as the approver, whose guards keep the
    separation of duties) or refuse, with a reason, a request for a new date."""
    with rt.db.read() as session:
        action_id = pending_request(session, request_id).action_id
    reason = reason.strip()
    if not approve:
        reason = _text(reason, field="reason", missing="say why the new date is refused, so "
                       "the owner knows what to do next")
    check_text(reason, field="reason")
    now = rt.clock.now()
    with changing(rt, action_id) as session:
        request = pending_request(session, request_id)
        if request.state != "pending":
            who = session.get(Person, request.decided_by_id) if request.decided_by_id else None
            raise Refused(f"this request was already {request.state}"
                          + (f" by {who.name}" if who else "")
                          + (f" on {request.decided_at:%-d %B %Y}" if request.decided_at else ""))
        person, action = get_person(session, by), _action(session, action_id)
        if approve:
            _revisable(rt, action)
            fire_in_session(rt, session, action.id, "revise_due", EventInputs(
                by=person, now=now, due=request.new_due, reason=request.reason,
                note=reason or None, via=dict(via or {})))
        else:
            audit.append(session, at=now, actor=person.id, entity_type="action",
                         entity_id=action.id, what="new date refused", reason=reason,
                         detail={"request": request.id, "new_due": request.new_due.isoformat(),
                                 **({"via": via} if via else {})})
            action.last_update_at = now
        request.state = "approved" if approve else "refused"
        request.decided_by_id, request.decided_at, request.decision_reason = person.id, now, reason
        return request


# --- reassigning ---------------------------------------------------------------------------


def reassign(rt: Runtime, action_id: str, *, by: str, new_owner: str, reason: str,
             via: dict[str, str] | None = None) -> Action:
    """Hand an action to another owner, with a reason; the reminders and escalations follow
    the new owner from now on."""
    from qip_flow.services.assess import reassess

    reason = _text(reason, field="reason", missing="say why the action changes hands")
    now = rt.clock.now()
    with changing(rt, action_id) as session:
        action, person = _action(session, action_id), get_person(session, by)
        owner = get_person(session, new_owner, flag="new_owner")
        final = {s.name for s in rt.workflows.defs["action"].states if s.final}
        if action.state in final:
            raise Refused(f"{action.id} is {action.state}: a finished action keeps its owner")
        if owner.id == action.owner_id:
            raise InvalidInput(f"new_owner: {owner.name} already owns {action.id}; choose "
                               "someone else")
        previous = action.owner_id
        action.owner_id, action.last_update_at = owner.id, now
        audit.append(session, at=now, actor=person.id, entity_type="action", entity_id=action.id,
                     what="reassigned", reason=reason,
                     detail={"from": previous, "to": owner.id, **({"via": via} if via else {})})
        session.flush()
        reassess(rt, session, get_plan(session, action.plan_id))
        return action


# --- acknowledging an escalation -----------------------------------------------------------


@dataclass
class Acknowledged:
    """What acknowledging did: the owner's own acknowledgement is their word on the action (it
    stops the escalations once the due date has passed); someone an escalation went to pauses
    the next rung until ``paused_until`` and the owner is told."""

    action_id: str
    by_owner: bool
    paused_until: date | None = None
    owner_told: bool = False


def acknowledge(rt: Runtime, action_id: str, *, by: str,
                via: dict[str, str] | None = None) -> Acknowledged:
    now = rt.clock.now()
    with changing(rt, action_id) as session:
        action, person = _action(session, action_id), get_person(session, by)
        inputs = EventInputs(by=person, now=now, via=dict(via or {}))
        if person.id == action.owner_id:
            inputs.reason = "the owner acknowledged the reminders and escalations"
            fire_in_session(rt, session, action.id, "acknowledge", inputs)
            return Acknowledged(action.id, by_owner=True)
        escalation = session.exec(select(Notification).where(
            Notification.entity_id == action.id, Notification.recipient_id == person.id,
            Notification.kind == "escalation").order_by(col(Notification.id).desc())).first()
        if escalation is None:
            raise Refused(f"no escalation about {action.id} was sent to {person.name}, so there "
                          "is nothing to acknowledge")
        earlier = session.exec(select(Acknowledgement).where(
            Acknowledgement.notification_id == escalation.id)).first()
        if earlier is not None:
            raise Refused(f"{person.name} acknowledged this escalation on "
                          f"{earlier.at:%-d %B %Y}; the next escalation waits until "
                          f"{earlier.paused_until:%-d %B %Y}")
        grace = rt.rules.acknowledgement.grace_working_days
        paused_until = calendar().add(now.date(), grace)
        row = Acknowledgement(action_id=action.id, by_id=person.id,
                              notification_id=escalation.id or 0, at=now,
                              paused_until=paused_until)
        session.add(row)
        session.flush()  # the ladder, reassessed with the event below, sees the pause
        inputs.reason = (f"acknowledged the escalation '{escalation.subject}'; the next "
                         f"escalation waits {grace} working days, until {paused_until:%-d %B %Y}")
        fire_in_session(rt, session, action.id, "acknowledge", inputs)
        told = notifications.tell_owner_of_acknowledgement(
            rt, session, action, get_plan(session, action.plan_id), person, row, escalation, now)
        return Acknowledged(action.id, by_owner=False, paused_until=paused_until,
                            owner_told=told is not None)
