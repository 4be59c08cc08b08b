"""What each web page shows, read for one signed-in person: My work, an action, a plan, the
portfolio. Plain dicts (like ``queries``), so a page renders them and a test reads them; each
asks the one policy whether the person may see the item and which forms to offer them."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import and_
from sqlmodel import Session, col, func, or_, select

from qip_flow.clock import as_aware
from qip_flow.decide.calendar import calendar
from qip_flow.errors import InvalidInput, NotFound
from qip_flow.runtime import Runtime
from qip_flow.services import queries
from qip_flow.services.assess import RULES_ACTOR, is_live
from qip_flow.services.identity import item_path
from qip_flow.services.lifecycle import get_entity, get_plan
from qip_flow.services.policy import REPORTS, Act, Actor, Permission, Policy
from qip_flow.store.models import (
    Acknowledgement,
    Action,
    DueRequest,
    Evidence,
    Finding,
    Indicator,
    Measurement,
    Notification,
    Person,
    Plan,
    Service,
)

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
            "path": item_path(action.id), **due_in_words(action.due, today)}


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
        # actions of the people they manage, or on plans they own or sponsor: each side by
        # its own index (one OR across the join would read every completed action)
        theirs = select(Plan.id).where(or_(Plan.owner_id == person.id,
                                           Plan.sponsor_id == person.id))
        near = select(Action, Plan).join(Plan, col(Plan.id) == Action.plan_id).where(or_(
            col(Action.owner_id).in_(managed), col(Action.plan_id).in_(theirs)))
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
        signoffs = [{"plan": p.id, "title": p.title, "state": p.state, "purpose": purpose,
                     "path": item_path(p.id)}
                    for p, purpose in _signoffs_waiting(rt, session, policy, person)]
        sent = session.exec(select(Notification).where(
            Notification.recipient_id == person.id, Notification.kind == "escalation",
            Notification.state != "merged")  # a rung another message that day covered
            .order_by(col(Notification.id).desc()).limit(50)).all()
        acks = session.exec(select(Acknowledgement).where(
            Acknowledgement.by_id == person.id,
            col(Acknowledgement.action_id).in_({n.entity_id for n in sent}))
            .order_by(col(Acknowledgement.id))).all() if sent else []

        def acknowledged(n: Notification) -> Acknowledgement | None:
            """The person's first acknowledgement of the action since this escalation."""
            return next((a for a in acks if a.action_id == n.entity_id
                         and as_aware(a.at) >= as_aware(n.created_at)), None)

        escalations = []
        for n in sent:
            ack = acknowledged(n)
            escalations.append({
                "id": n.id, "entity": n.entity_id, "plan": n.plan_id, "subject": n.subject,
                "at": n.created_at.isoformat(), "rule": n.rule_id,
                "path": item_path(n.entity_id),
                "acknowledged_on": ack.at.date().isoformat() if ack else None,
                "paused_until": ack.paused_until.isoformat() if ack else None})
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
    approving = [s for s, purposes in by_state.items() if "approval" in purposes]
    closing = [s for s, purposes in by_state.items() if "closure" in purposes]
    # the few plans that could be the person's, asked of the database (a portfolio holds
    # thousands at these states): the drafts they sponsor, the plans they could close
    signable = policy.could_sign_ids(person, closing) if closing else set()
    plans = session.exec(select(Plan).where(or_(
        and_(col(Plan.state).in_(approving), Plan.sponsor_id == person.id),
        col(Plan.id).in_(sorted(signable)))).order_by(col(Plan.id))).all()
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
    """Each form's answer from the policy. A person in a full session whose sign-in is no
    longer recent still sees the approvals and verifications that are theirs (acting on one
    asks them to sign in again); a link's session never does."""
    listing = actor if actor.scope is not None else Actor(
        actor.person, door=actor.door, full_signin_at=policy.now)
    return {act.name.lower(): policy.decide(listing, act, plan, action, request=request)
            for act in ACTION_FORMS}


def _action_of(session: Session, action_id: str) -> Action:
    _, row = get_entity(session, action_id)
    if not isinstance(row, Action):
        raise NotFound(f"{action_id} is a plan, not an action: open {item_path(action_id)}")
    return row


def permission(rt: Runtime, actor: Actor, act: Act, action_id: str, *,
               request_id: int | None = None) -> Permission:
    """May ``actor`` do ``act`` to this action (deciding request ``request_id``)? What a
    page asks before it calls a service."""
    with rt.db.read() as session:
        row = _action_of(session, action_id)
        plan = get_plan(session, row.plan_id)
        request = session.get(DueRequest, request_id) if request_id is not None else None
        if request_id is not None and (request is None or request.action_id != row.id):
            raise NotFound(f"there is no request for a new date numbered {request_id} on "
                           f"{row.id}")
        return policy_for(rt, session).decide(actor, act, plan, row, request=request)


def _named(rows: list[dict[str, Any]], names: dict[str, str], *keys: str) -> list[dict[str, Any]]:
    for row in rows:
        for key in keys:
            row[key.removesuffix("_id") + "_name"] = names.get(row.get(key) or "", row.get(key))
    return rows


def action_page(rt: Runtime, actor: Actor, action_id: str) -> dict[str, Any]:
    """What the action is, why (the finding and its root causes), who owns it, when it is due
    and every revision, progress notes, evidence, the escalations about it, and the forms the
    person may use."""
    from qip_flow.store.evidence_files import ALLOWED, in_words

    today = rt.clock.now().date()
    with rt.db.read() as session:
        row = _action_of(session, action_id)
        plan = get_plan(session, row.plan_id)
        policy = policy_for(rt, session)
        policy.decide(actor, Act.VIEW, plan, row).check()
        detail = queries.action_detail(session, row, {})
        requests = session.exec(select(DueRequest).where(DueRequest.action_id == row.id)
                                .order_by(col(DueRequest.id))).all()
        acks = session.exec(select(Acknowledgement).where(Acknowledgement.action_id == row.id)
                            .order_by(col(Acknowledgement.id))).all()
        # the names this page shows, read by id (a portfolio's organisation has thousands)
        names = policy.names([
            row.owner_id, row.completed_by_id, row.verified_by_id, plan.owner_id,
            plan.sponsor_id, *(n["by_id"] for n in detail["notes"]),
            *(r["approved_by_id"] for r in detail["revisions"]),
            *(e["by_id"] for e in detail["evidence"]),
            *(i for r in requests for i in (r.requested_by_id, r.decided_by_id)),
            *(a.by_id for a in acks)])
        detail["owner_name"] = names.get(row.owner_id or "", "")
        _named(detail["notes"], names, "by_id")
        _named(detail["revisions"], names, "approved_by_id")
        for item in _named(detail["evidence"], names, "by_id"):
            item["kind"] = ALLOWED.get(item.get("media_type") or "", ((), ""))[1]
            item["size_words"] = in_words(item["size"]) if item.get("size") else ""
        finding = session.get(Finding, row.finding_id) if row.finding_id else None
        pending = next((r for r in requests if r.state == "pending"), None)
        told = session.exec(select(Notification).where(
            Notification.entity_id == row.id, Notification.recipient_id == actor.person.id,
            col(Notification.kind).in_(["reminder", "escalation"]))
            .order_by(col(Notification.id))).all()
        escalation = next((n for n in reversed(told) if n.kind == "escalation"), None)
        mine = next((a for a in acks if escalation and a.notification_id == escalation.id), None)
        can = _forms(policy, actor, plan, row, pending)
        return {
            **detail, **due_in_words(row.due, today),
            "path": item_path(row.id),
            "today": today.isoformat(),
            "plan": {"id": plan.id, "title": plan.title, "state": plan.state, "rag": plan.rag,
                     "version": plan.version, "path": item_path(plan.id),
                     "owner_name": names.get(plan.owner_id, plan.owner_id),
                     "sponsor_name": names.get(plan.sponsor_id, plan.sponsor_id)},
            "why": {"finding": finding.description if finding else None,
                    "source_reference": finding.source_reference if finding else "",
                    "root_causes": list(finding.root_causes) if finding else []},
            "completed_by_name": names.get(row.completed_by_id or "", ""),
            "verified_by_name": names.get(row.verified_by_id or "", ""),
            "date_requests": _named([queries.row_dict(r) for r in requests], names,
                                    "requested_by_id", "decided_by_id"),
            "pending_request": queries.row_dict(pending) | {
                "requested_by_name": names.get(pending.requested_by_id, "")} if pending else None,
            "escalation": {"subject": escalation.subject,
                           "at": escalation.created_at.date().isoformat()} if escalation else None,
            "acknowledgements": _named([queries.row_dict(a) for a in acks], names, "by_id"),
            "my_acknowledgement": queries.row_dict(mine) if mine else None,
            "told_me": len(told),
            "can": can,
            "signin_again": actor.scope is None and any(
                can[act.name.lower()] and not policy.decide(actor, act, plan, row,
                                                            request=pending)
                for act in (Act.DECIDE_NEW_DATE, Act.VERIFY, Act.REASSIGN)),
            "owners": [{"id": i, "name": name, "role": role}
                       for i, name, role, roles in session.exec(select(
                           Person.id, Person.name, Person.role, Person.roles)
                           .order_by(col(Person.name))).all()
                       if i != row.owner_id and "guest" not in (roles or [])]
            if can["reassign"] else [],
        }


def fact_words(name: str, value: Any) -> str:
    """A fact in plain English: what it means (the rules' vocabulary) and its value now."""
    from qip_flow.decide.vocabulary import FACTS

    known = FACTS["plan"].get(name)
    meaning = known.meaning.rstrip(".") if known else name.replace("_", " ")
    if isinstance(value, bool):
        shown = "yes" if value else "no"
    elif value is None:
        shown = "not recorded"
    elif isinstance(value, list | tuple):
        shown = ", ".join(map(str, value)) or "none"
    else:
        shown = str(value)
    return f"{meaning}: {shown}"


def criteria_in_words(closure: dict[str, Any], signoff_rules: set[str]) -> list[dict[str, Any]]:
    """Each closure criterion (``qip explain``'s decision) as a page shows it: met or unmet,
    what it asks, and for an unmet one each fact behind it, once, in words."""
    out = []
    for c in closure.get("criteria", []):
        facts: dict[str, Any] = {}
        if not c["met"]:
            for condition in c.get("conditions", []):
                if not condition["holds"]:
                    facts.update(condition["facts"])
        out.append({"criterion": c["criterion"], "met": bool(c["met"]), "rule": c["rule"],
                    "description": c["description"], "signoff": c["rule"] in signoff_rules,
                    "facts": [fact_words(k, v) for k, v in facts.items()]})
    return out


def signoffs_offered(rt: Runtime, plan: Plan) -> list[dict[str, Any]]:
    """The sign-offs the plan's workflow offers in its present state (approval in draft;
    closure, step-down and variation later), with what each must record."""
    from qip_flow.services.assess import judge

    wf = rt.workflows.defs["plan"]
    offered = []
    for event in wf.events:
        if event.signoff and plan.state in event.source:
            offered.append({"purpose": event.signoff, "event": event.name,
                            "description": event.description.strip(),
                            "needs": list(event.needs)})
    if offered:
        with rt.db.read() as session:
            record = judge(rt, session).signoff_settings(plan).record
        for item in offered:
            item["record"] = list(record.get(item["purpose"], []))
    return offered


def _history_row(event: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    detail = event["detail"]
    words = [w for w in (event["reason"], detail.get("note")) if w]
    signoff = detail.get("signoff") or {}
    if signoff.get("meeting_reference"):
        words.append(f"meeting: {signoff['meeting_reference']}")
    if detail.get("evidence"):
        words.append("evidence: " + "; ".join(detail["evidence"]))
    via = detail.get("via") or {}
    moved = event["to"] and event["from"] != event["to"]
    return {"at": event["at"], "who": names.get(event["actor"], event["actor"]),
            "actor": event["actor"], "entity": event["entity"],
            "what": str(event["what"]).replace("_", " "),
            "change": (f"{event['from']} → {event['to']}" if event["from"] else
                       f"now {event['to']}") if moved else "", "words": words,
            "via": {"web": "web pages", "api": "API", "cli": "command line"}.get(
                via.get("door", ""), via.get("door", ""))}


def plan_page(rt: Runtime, actor: Actor, plan_id: str) -> dict[str, Any]:
    """The plan's state, RAG and its reason, actions, indicators (each with its run chart's
    reading), closure criteria met or unmet with their facts in words (``qip explain``, judged
    for the person looking when they could sign), its evidence, its history from the audit
    trail (newest first), and the sign-offs its state offers with whether the person may try."""
    from qip_flow.reports.data import Flow
    from qip_flow.reports.render import reading
    from qip_flow.services.assess import explain

    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        policy = policy_for(rt, session)
        policy.decide(actor, Act.VIEW, plan).check()
        shown = queries.show(session, plan_id)
        sign = policy.decide(actor, Act.SIGN_OFF, plan)
        named = [e["actor"] for e in shown["history"]] + [s["by_id"] for s in shown["signoffs"]]
        names = {RULES_ACTOR: "the rules", **policy.names(named)}
        service = session.get(Service, plan.service_id)
        series = {s.ref: s for s in _series(rt, session, plan)}
    signer = actor.person.id if sign.allowed else None
    explained = explain(rt, plan_id, signer=signer)
    today = rt.clock.now().date()
    for action in shown["actions"]:
        action.update(due_in_words(date.fromisoformat(action["due"]) if action["due"] else None,
                                   today) if action["state"] not in _finished_action_states(rt)
                      else {"overdue": False, "working_days": None, "words": ""})
    for indicator in shown["indicators"]:
        found = series.get(indicator["ref"])
        indicator["reading"] = reading(found) if found else "no measurements recorded yet"
        indicator["chart"] = f"/plans/{plan.id}/indicators/{indicator['ref']}/chart.svg"
    offered = signoffs_offered(rt, plan) if sign.allowed else []
    return {**shown, "service_name": service.name if service else plan.service_id,
            "names": names,
            "rag_reason": explained["rag"]["reason"], "rag_rules": explained["rag"]["rules"],
            "closure": explained["closure"], "closure_rules_note": explained["closure_rules_note"],
            "closure_criteria_spec": explained["closure_criteria"],
            "criteria": criteria_in_words(explained["closure"], Flow.of(rt).signoff_rules),
            "judged_for": actor.person.name if signer else "",
            "history": [_history_row(e, names) for e in reversed(shown["history"])],
            "signoffs_offered": offered, "can": {"sign_off": sign}}


def _series(rt: Runtime, session: Session, plan: Plan) -> list[Any]:
    """The plan's run-chart data, read as the closure report reads it."""
    from qip_flow.reports.data import indicator_series

    criteria = plan.closure_criteria or {}
    refs = criteria.get("indicators") or []
    today = rt.clock.now().date()
    indicators = session.exec(select(Indicator).where(Indicator.plan_id == plan.id)
                              .order_by(col(Indicator.id))).all()
    points: dict[str, list[Measurement]] = {i.id: [] for i in indicators}
    if indicators:
        for m in session.exec(select(Measurement).where(
                col(Measurement.indicator_id).in_(list(points)))).all():
            points[m.indicator_id].append(m)
    out = []
    for ind in indicators:
        found = indicator_series(ind, points[ind.id], today, criteria.get("sustain_days"),
                                 not refs or ind.ref in refs)
        if is_live(rt, plan.state):
            found.until = today
        out.append(found)
    return out


def signoff_page(rt: Runtime, actor: Actor, plan_id: str, purpose: str) -> dict[str, Any]:
    """What a sign-off form shows: the plan, the criteria judged for the person signing, the
    plan's recorded evidence to choose from, the parts of the record its rules ask for, and
    (for a variation) the criteria pinned now. Refused, as the sign-off itself would be, to a
    person the policy does not let try, or when the plan's state does not offer it."""
    from qip_flow.reports.data import Flow
    from qip_flow.services.assess import explain
    from qip_flow.services.signing import offered_event

    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        policy_for(rt, session).decide(actor, Act.SIGN_OFF, plan).check()
        evidence = [queries.row_dict(e) for e in session.exec(
            select(Evidence).where(Evidence.plan_id == plan.id).order_by(col(Evidence.id))).all()]
    event = offered_event(rt, plan, purpose)
    offered = next(o for o in signoffs_offered(rt, plan) if o["purpose"] == purpose)
    explained = explain(rt, plan_id, signer=actor.person.id)
    headings = {"approval": "Approve the plan", "closure": "Sign off closure",
                "step_down": "Sign off step-down into monitoring",
                "variation": "Vary the closure criteria"}
    return {"plan": {"id": plan.id, "title": plan.title, "state": plan.state, "rag": plan.rag},
            "purpose": purpose, "event": event.name, "description": offered["description"],
            "heading": headings.get(purpose, f"Sign off {purpose.replace('_', ' ')}"),
            "record": offered["record"], "needs": offered["needs"], "evidence": evidence,
            "criteria": criteria_in_words(explained["closure"], Flow.of(rt).signoff_rules),
            "all_met": explained["closure"]["all_met"],
            "closure_criteria": explained["closure_criteria"], "signer": actor.person.name}


def indicator_chart(rt: Runtime, actor: Actor, plan_id: str, ref: str) -> str:
    """One indicator's run chart as SVG (the reports' chart), for people who may see the
    plan; drawn once for the same data (matplotlib takes a tenth of a second a chart)."""
    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        policy_for(rt, session).decide(actor, Act.VIEW, plan).check()
        found = next((s for s in _series(rt, session, plan) if s.ref == ref), None)
    if found is None:
        raise NotFound(f"plan {plan_id} has no indicator '{ref}'")
    return _drawn(repr(found), found)


_CHARTS: dict[str, str] = {}
_CHARTS_KEPT = 256


def _drawn(key: str, series: Any) -> str:
    from qip_flow.reports import charts

    svg = _CHARTS.get(key)
    if svg is None:
        svg = charts.run_chart(series, key=f"run-{series.id}")
        if len(_CHARTS) >= _CHARTS_KEPT:
            _CHARTS.pop(next(iter(_CHARTS)))
        _CHARTS[key] = svg
    return svg


PAGE_SIZE = 50
FILTER_WORDS = {"service": "service", "theme": "theme", "state": "state", "rag": "RAG rating"}


def portfolio(rt: Runtime, actor: Actor, *, service: str | None = None,
              theme: str | None = None, state: str | None = None,
              rag: str | None = None, page: int = 1) -> dict[str, Any]:
    """The plans the person may see, filtered as ``qip plans`` filters them (a filter value
    that can never match is refused with the allowed values), a page of ``PAGE_SIZE`` at a
    time, with the choices each filter offers and the reports the person may run."""
    from qip_flow.decide.vocabulary import RATINGS

    states = [s.name for s in rt.workflows.defs["plan"].states]
    filters = {"service": service or None, "theme": theme or None, "state": state or None,
               "rag": (rag or "").lower() or None}
    errors: dict[str, str] = {}
    with rt.db.read() as session:
        policy = policy_for(rt, session)
        visible = policy.visible_plan_ids(actor)
        services = dict(session.exec(select(Service.id, Service.name).order_by(
            col(Service.name))).all())
        for name, value in filters.items():  # each wrong filter beside its field, the rest kept
            try:
                queries.check_plan_filters(session, states=states, **{name: value})
            except InvalidInput:
                errors[name] = f"Choose a {FILTER_WORDS[name]} from the list"
                filters[name] = None
        query = queries.plans_query(**filters)
        if visible is not None:
            query = query.where(col(Plan.id).in_(sorted(visible)))
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(1, page), pages)
        plans = session.exec(query.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
        counts = queries.action_counts(session, [p.id for p in plans])
        theme_query = select(Plan.theme).distinct().order_by(col(Plan.theme))
        if visible is not None:
            theme_query = theme_query.where(col(Plan.id).in_(sorted(visible)))
        themes = list(session.exec(theme_query).all())
        if visible is not None:
            seen = set(session.exec(select(Plan.service_id).distinct().where(
                col(Plan.id).in_(sorted(visible)))).all())
            services = {k: v for k, v in services.items() if k in seen}
        reports = {kind: policy.report_permission(actor, kind, _report_service(actor, filters))
                   for kind in REPORTS}
    rows = [{"id": p.id, "title": p.title, "service": p.service_id,
             "service_name": services.get(p.service_id, p.service_id), "theme": p.theme,
             "state": p.state, "rag": p.rag, "owner": p.owner_id,
             **counts.get(p.id, {"actions": 0, "actions_done": 0})} for p in plans]
    return {"plans": rows, "total": total, "page": page, "pages": pages, "filters": filters,
            "errors": errors,
            "service_names": services,
            "choices": {"service": list(services.items()),
                        "theme": [(t, t.capitalize()) for t in themes],
                        "state": [(s, s.replace("_", " ").capitalize()) for s in states],
                        "rag": [(r, r.capitalize()) for r in RATINGS]},
            "reports": reports, "report_service": _report_service(actor, filters)}


def _report_service(actor: Actor, filters: dict[str, str | None]) -> str | None:
    """The service a pack covers: the one filtered on, else a guest's only service."""
    if filters["service"]:
        return filters["service"]
    services = actor.person.services or []
    return services[0] if actor.is_guest and len(services) == 1 else None


def report_html(rt: Runtime, actor: Actor, kind: str, *, service: str | None = None,
                period: str | None = None) -> str:
    """The board pack or the commissioner's pack as its self-contained HTML page, over the
    scope the person may read (the policy's ``report_permission``)."""
    from qip_flow import reports

    with rt.db.read() as session:
        policy = policy_for(rt, session)
        policy.report_permission(actor, kind, service or None).check()
        service = policy.report_service(actor, service or None)
    report = reports.gather(rt, kind, period=period or None, service=service)
    return reports.text(kind, report, "html")


def rules_page(rt: Runtime) -> dict[str, Any]:
    """The rules in force: the published version (when, by whom), and each rules file's
    description, rules (in words, with their outcome) and worked examples."""
    from qip_flow.decide.tooling import when_text
    from qip_flow.store import governance

    with rt.db.read() as session:
        row = governance.published(session)
        published = {"version": row.version, "at": row.published_at.isoformat(),
                     "by": row.published_by, "source": row.source} if row else None
    book = rt.rules
    files = []
    for f in book.files:
        files.append({
            "path": f.path.rsplit("/", 1)[-1], "ruleset": f.ruleset, "about": f.about,
            "description": f.description,
            "rules": [{"id": r.id, "description": r.description, "about": r.subject,
                       "when": when_text(r.when), "outcome": r.then.outcome,
                       "params": {k: v for k, v in r.then.params.items()}} for r in f.rules],
            "examples": [{"name": e.name, "given": dict(e.given), "fires": list(e.fires)}
                         for e in f.examples]})
    return {"version": book.version, "published": published, "files": files,
            "workflows": rt.workflows.defs["plan"].version}
