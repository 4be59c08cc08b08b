"""What each web page shows, read for one signed-in person: My work, an action, a plan, the
portfolio. Plain dicts (like ``queries``), so a page renders them and a test reads them; each
asks the one policy whether the person may see the item and which forms to offer them."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlmodel import Session, col, or_, select

from qip_flow.decide.calendar import calendar
from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.services import queries
from qip_flow.services.assess import is_live
from qip_flow.services.lifecycle import get_entity, get_plan
from qip_flow.services.policy import Act, Actor, Permission, Policy
from qip_flow.store.models import Action, DueRequest, Finding, Notification, Person, Plan

#: the forms an action page may offer, each behind its question to the policy
ACTION_FORMS = (Act.RECORD_PROGRESS, Act.ADD_EVIDENCE, Act.COMPLETE, Act.REQUEST_NEW_DATE,
                Act.ACKNOWLEDGE, Act.DECIDE_NEW_DATE, Act.VERIFY, Act.REASSIGN)


def policy_for(rt: Runtime, session: Session) -> Policy:
    return Policy(session, rt.rules.access, rt.clock.now())


def _finished_action_states(rt: Runtime) -> set[str]:
    wf = rt.workflows.defs["action"]
    return {s.name for s in wf.states if s.final}


def due_in_words(due: date | None, today: date) -> dict[str, Any]:
    """How late an action is in working days (bank holidays and weekends left out)."""
    if due is None:
        return {"overdue": False, "working_days": None, "words": "no due date"}
    days = calendar().between(due, today)
    if days > 0:
        return {"overdue": True, "working_days": days,
                "words": f"{days} working day{'s' * (days != 1)} overdue"}
    if due < today:  # due on a weekend or bank holiday just passed
        return {"overdue": True, "working_days": 0, "words": "overdue"}
    left = calendar().between(today, due)
    return {"overdue": False, "working_days": -left,
            "words": "due today" if due == today else
            f"due in {left} working day{'s' * (left != 1)}"}


def _action_row(action: Action, plan: Plan, today: date) -> dict[str, Any]:
    return {"id": action.id, "ref": action.ref, "description": action.description,
            "state": action.state, "due": action.due.isoformat() if action.due else None,
            "plan": plan.id, "plan_title": plan.title, "owner": action.owner_id,
            **due_in_words(action.due, today)}


def my_work(rt: Runtime, actor: Actor) -> dict[str, Any]:
    """My actions on live plans (overdue first, with working days), what waits for my approval (new dates,
    verifications, sign-offs) and the escalations sent to me."""
    person, today = actor.person, rt.clock.now().date()
    finished = _finished_action_states(rt)
    # listing what waits for the person asks as if they had just signed in: acting on it asks
    # again, with the sign-in they really have
    deciding = Actor(person, door=actor.door, full_signin_at=rt.clock.now())
    with rt.db.read() as session:
        policy = policy_for(rt, session)
        mine = session.exec(select(Action, Plan).join(Plan, col(Plan.id) == Action.plan_id)
                            .where(Action.owner_id == person.id,
                                   col(Action.state).not_in(finished))).all()
        rows = [_action_row(a, p, today) for a, p in mine if is_live(rt, p.state)]
        rows.sort(key=lambda r: (not r["overdue"], r["due"] or "9999", r["id"]))

        managed = list(session.exec(select(Person.id).where(
            Person.line_manager_id == person.id)).all())
        near = select(Action, Plan).join(Plan, col(Plan.id) == Action.plan_id).where(or_(
            col(Action.owner_id).in_(managed), Plan.owner_id == person.id,
            Plan.sponsor_id == person.id))
        verify = [_action_row(a, p, today) for a, p in session.exec(
            near.where(Action.state == "completed").order_by(col(Action.id))).all()
            if policy.decide(deciding, Act.VERIFY, p, a)]
        dates = []
        for request, action, plan in session.exec(
                select(DueRequest, Action, Plan).join(Action, col(Action.id) == DueRequest.action_id)
                .join(Plan, col(Plan.id) == Action.plan_id)
                .where(DueRequest.state == "pending").order_by(col(DueRequest.id))).all():
            if policy.decide(deciding, Act.DECIDE_NEW_DATE, plan, action, request=request):
                dates.append({**_action_row(action, plan, today), "request": request.id,
                              "new_due": request.new_due.isoformat(), "reason": request.reason,
                              "requested_by": request.requested_by_id})
        signoffs = [{"plan": p.id, "title": p.title, "state": p.state, "purpose": purpose}
                    for p, purpose in _signoffs_waiting(rt, session, policy, person)]
        escalations = [
            {"id": n.id, "entity": n.entity_id, "plan": n.plan_id, "subject": n.subject,
             "at": n.created_at.isoformat(), "rule": n.rule_id}
            for n in session.exec(select(Notification).where(
                Notification.recipient_id == person.id, Notification.kind == "escalation",
                Notification.state != "merged")  # a rung another message that day covered
                .order_by(col(Notification.id).desc()).limit(50)).all()]
    return {"person": person.id, "name": person.name, "today": today.isoformat(),
            "actions": rows, "new_dates": dates, "verifications": verify,
            "signoffs": signoffs, "escalations": escalations}


def _signoffs_waiting(rt: Runtime, session: Session, policy: Policy,
                      person: Person) -> list[tuple[Plan, str]]:
    """Plans at a state where a sign-off is the next step and the person could give it: the
    sponsor approves a draft; closure and step-down go to whoever holds the authority the
    plan's criteria name (the guards judge the rest when they sign)."""
    waiting: list[tuple[Plan, str]] = []
    by_state = signoff_steps(rt)
    plans = session.exec(select(Plan).where(col(Plan.state).in_(list(by_state)))
                         .order_by(col(Plan.id))).all()
    for plan in plans:
        for purpose in by_state[plan.state]:
            approves = purpose == "approval" and plan.sponsor_id == person.id
            closes = purpose == "closure" and plan.owner_id != person.id \
                and policy.could_sign(person, plan)
            if approves or closes:
                waiting.append((plan, purpose))
    return waiting


def signoff_steps(rt: Runtime) -> dict[str, list[str]]:
    """Plan state → the sign-offs (approval, closure, step_down) that are its next step, from
    the plan workflow in force (variations aside: they can come at any time)."""
    by_state: dict[str, list[str]] = {}
    for event in rt.workflows.defs["plan"].events:
        if event.signoff and event.signoff != "variation":
            for state in event.source:
                by_state.setdefault(state, []).append(event.signoff)
    return by_state


def _forms(policy: Policy, actor: Actor, plan: Plan, action: Action,
           request: DueRequest | None) -> dict[str, Permission]:
    return {act.name.lower(): policy.decide(actor, act, plan, action, request=request)
            for act in ACTION_FORMS}


def action_page(rt: Runtime, actor: Actor, action_id: str) -> dict[str, Any]:
    """What the action is, why (the finding and its root causes), who owns it, when it is due
    and every revision, progress notes, evidence, and the forms the person may use."""
    today = rt.clock.now().date()
    with rt.db.read() as session:
        _, row = get_entity(session, action_id)
        if not isinstance(row, Action):
            raise InvalidInput(f"{action_id} is a plan, not an action: open /plans/{action_id}")
        plan = get_plan(session, row.plan_id)
        policy = policy_for(rt, session)
        policy.decide(actor, Act.VIEW, plan, row).check()
        names = {p.id: p.name for p in session.exec(select(Person)).all()}
        detail = queries.action_detail(session, row, names)
        finding = session.get(Finding, row.finding_id) if row.finding_id else None
        requests = session.exec(select(DueRequest).where(DueRequest.action_id == row.id)
                                .order_by(col(DueRequest.id))).all()
        pending = next((r for r in requests if r.state == "pending"), None)
        return {
            **detail, **due_in_words(row.due, today),
            "plan": {"id": plan.id, "title": plan.title, "state": plan.state, "rag": plan.rag},
            "why": {"finding": finding.description if finding else None,
                    "source_reference": finding.source_reference if finding else "",
                    "root_causes": list(finding.root_causes) if finding else []},
            "date_requests": [queries.row_dict(r) for r in requests],
            "pending_request": pending.id if pending else None,
            "can": _forms(policy, actor, plan, row, pending),
        }


def plan_page(rt: Runtime, actor: Actor, plan_id: str) -> dict[str, Any]:
    """The plan's state, RAG and its reason, actions, indicators, closure criteria met or unmet
    with their facts (``qip explain``), its history from the audit trail, and whether the
    person may try to sign it off."""
    from qip_flow.services.assess import explain

    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        policy = policy_for(rt, session)
        policy.decide(actor, Act.VIEW, plan).check()
        shown = queries.show(session, plan_id)
        sign = policy.decide(actor, Act.SIGN_OFF, plan)
    explained = explain(rt, plan_id)
    return {**shown, "rag_reason": explained["rag"]["reason"], "rag_rules": explained["rag"]["rules"],
            "closure": explained["closure"], "closure_rules_note": explained["closure_rules_note"],
            "can": {"sign_off": sign}}


def portfolio(rt: Runtime, actor: Actor, *, service: str | None = None,
              theme: str | None = None, state: str | None = None,
              rag: str | None = None) -> list[dict[str, Any]]:
    """The plans the person may see, filtered as ``qip plans`` filters them."""
    states = [s.name for s in rt.workflows.defs["plan"].states]
    with rt.db.read() as session:
        visible = policy_for(rt, session).visible_plan_ids(actor)
        rows = queries.list_plans(session, state=state, service=service, theme=theme, rag=rag,
                                  states=states)
    return rows if visible is None else [r for r in rows if r["id"] in visible]
