"""Read-only views for the CLI (and later the reports and an HTTP API): plain dicts, so the
same data prints as a table or as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Table, case
from sqlmodel import Session, col, func, or_, select

from qip_flow.errors import InvalidInput
from qip_flow.services.lookup import get_entity
from qip_flow.store.models import (
    Action,
    AuditEvent,
    DueRevision,
    Evidence,
    Finding,
    Indicator,
    Measurement,
    Person,
    Plan,
    ProgressNote,
    Service,
    SignOff,
)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def row_dict(row: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: _iso(v) for k, v in row.model_dump().items() if k not in exclude}


def _check_choice(flag: str, value: str | None, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise InvalidInput(f"{flag}: '{value}' is not one of: {', '.join(sorted(allowed))}")


def check_plan_filters(session: Session, *, state: str | None = None,
                       service: str | None = None, theme: str | None = None,
                       rag: str | None = None, states: Sequence[str] = ()) -> None:
    """A filter value that can never match (a state the plan workflow does not have, a RAG
    that is not red/amber/green, an unknown service) is refused with the allowed values."""
    if rag is not None:
        from qip_flow.decide.vocabulary import RATINGS

        _check_choice("--rag", rag.lower(), RATINGS)
    if states:
        _check_choice("--state", state, states)
    if service is not None:
        _check_choice("--service", service,
                      session.exec(select(Service.__table__.c.id)).all())  # type: ignore[attr-defined]


DONE = ("completed", "verified")  # the action states that count as done
PLAN: Table = Plan.__table__  # type: ignore[attr-defined]
ACTION: Table = Action.__table__  # type: ignore[attr-defined]


def action_counts(session: Session, plan_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per plan: its actions, and how many are done (completed or verified)."""
    counts: dict[str, dict[str, int]] = {}
    if plan_ids:
        for plan_id, state_ in session.exec(
            select(Action.plan_id, Action.state).where(col(Action.plan_id).in_(plan_ids))
        ).all():
            counts.setdefault(plan_id, {}).setdefault(state_, 0)
            counts[plan_id][state_] += 1
    return {plan_id: {"actions": sum(by_state.values()),
                      "actions_done": sum(n for s, n in by_state.items()
                                          if s in DONE)}
            for plan_id, by_state in counts.items()}


def plans_query(*, state: str | None = None, service: str | None = None,
                theme: str | None = None, rag: str | None = None) -> Any:
    """The plans matching the filters given, in id order."""
    return _filtered(select(Plan).order_by(col(Plan.id)), state=state, service=service,
                     theme=theme, rag=rag)


def _filtered(query: Any, *, state: str | None, service: str | None, theme: str | None,
              rag: str | None) -> Any:
    """``query`` narrowed to the plans matching the filters given."""
    plan = PLAN.c
    for column, value in ((plan.state, state), (plan.service_id, service), (plan.theme, theme),
                          (plan.rag, rag)):
        if value is not None:
            query = query.where(column == value)
    return query


def list_plans(
    session: Session,
    *,
    state: str | None = None,
    service: str | None = None,
    theme: str | None = None,
    rag: str | None = None,
    states: Sequence[str] = (),
    after: str | None = None,
    limit: int | None = None,
    only: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Plans matching the filters (see ``check_plan_filters``), in id order: after the id
    ``after``, at most ``limit``, among ``only`` (None: every plan)."""
    rag = rag.lower() if rag else rag
    check_plan_filters(session, state=state, service=service, theme=theme, rag=rag, states=states)
    plan, action = PLAN.c, ACTION.c
    columns = (plan.id, plan.title, plan.service_id, plan.source_type, plan.theme, plan.state,
               plan.rag, plan.owner_id)
    # one grouped query on the tables (no ORM objects, no mapper set-up): each plan's columns
    # with its count of actions and of those done
    query = _filtered(
        select(*columns, func.count(action.id),
               func.coalesce(func.sum(case((action.state.in_(DONE), 1), else_=0)), 0))
        .select_from(PLAN.outerjoin(ACTION, action.plan_id == plan.id))
        .group_by(plan.id).order_by(plan.id),
        state=state, service=service, theme=theme, rag=rag)
    if after is not None:
        query = query.where(plan.id > after)
    if only is not None:
        query = query.where(plan.id.in_(sorted(only)))
    if limit is not None:
        query = query.limit(limit)
    return [
        {"id": id_, "title": title, "service": service_id, "source": source, "theme": theme_,
         "state": state_, "rag": rag_, "owner": owner, "actions": actions,
         "actions_done": int(done)}
        for id_, title, service_id, source, theme_, state_, rag_, owner, actions, done
        in session.exec(query).all()  # type: ignore[call-overload]
    ]


def count_plans(session: Session, *, state: str | None = None, service: str | None = None,
                theme: str | None = None, rag: str | None = None) -> int:
    """How many plans match the filters (for "showing N of M")."""
    query = _filtered(select(func.count()).select_from(PLAN), state=state, service=service,
                      theme=theme, rag=rag.lower() if rag else rag)
    return int(session.exec(query).one())


def entity_history(session: Session, entity_id: str) -> list[dict[str, Any]]:
    """The audit events of a plan (and its actions and indicators), or of one action."""
    query = select(AuditEvent).order_by(col(AuditEvent.seq))
    if "/" in entity_id:
        query = query.where(AuditEvent.entity_id == entity_id)
    else:
        query = query.where(or_(AuditEvent.entity_id == entity_id,
                                col(AuditEvent.entity_id).startswith(entity_id + "/")))
    return [audit_row(e) for e in session.exec(query).all()]


def audit_row(e: AuditEvent) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor, "entity": e.entity_id,
            "what": e.what, "from": e.from_state, "to": e.to_state, "reason": e.reason,
            "detail": dict(e.detail), "version": e.version, "hash": e.hash}


def all_audit(session: Session, limit: int | None = None) -> list[dict[str, Any]]:
    query = select(AuditEvent).order_by(col(AuditEvent.seq).desc())
    if limit:
        query = query.limit(limit)
    return [audit_row(e) for e in reversed(session.exec(query).all())]


def names_of(session: Session, ids: Sequence[str | None] | None = None) -> dict[str, str]:
    """id → name of everyone, or of the people ``ids`` names (a portfolio has thousands)."""
    query = select(Person.id, Person.name)
    if ids is not None:
        query = query.where(col(Person.id).in_({i for i in ids if i}))
    return dict(session.exec(query).all())  # type: ignore[arg-type]


def _by_action(session: Session, model: Any, action_ids: Sequence[str]
               ) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``model`` (revisions, notes, evidence) of the actions named, by action, in id
    order: one query for every action of a plan."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in action_ids}
    for row in session.exec(select(model).where(col(model.action_id).in_(list(action_ids)))
                            .order_by(col(model.id))).all():
        out[row.action_id].append(row_dict(row))
    return out


def action_detail(session: Session, action: Action, names: dict[str, str],
                  parts: dict[str, dict[str, list[dict[str, Any]]]] | None = None
                  ) -> dict[str, Any]:
    """An action with its owner's name, due-date revisions, progress notes and evidence
    (``parts``: those already read for many actions at once)."""
    d = row_dict(action)
    d["owner_name"] = names.get(action.owner_id or "", "")
    for key, model in (("revisions", DueRevision), ("notes", ProgressNote), ("evidence", Evidence)):
        found = parts[key] if parts is not None else _by_action(session, model, [action.id])
        d[key] = found.get(action.id, [])
    return d


def show(session: Session, entity_id: str) -> dict[str, Any]:
    """Everything about one plan or action, with its history."""
    kind, row = get_entity(session, entity_id)
    if isinstance(row, Action):
        names = names_of(session, [row.owner_id])
        d = action_detail(session, row, names)
        d["kind"] = "action"
        d["history"] = entity_history(session, row.id)
        return d
    plan = row
    actions = session.exec(select(Action).where(Action.plan_id == plan.id)
                           .order_by(col(Action.id))).all()
    names = names_of(session, [plan.owner_id, plan.sponsor_id, *(a.owner_id for a in actions)])
    d = row_dict(plan)
    d["kind"] = kind
    d["owner_name"], d["sponsor_name"] = names.get(plan.owner_id, ""), names.get(plan.sponsor_id, "")
    d["findings"] = [row_dict(f) for f in session.exec(
        select(Finding).where(Finding.plan_id == plan.id).order_by(col(Finding.id))).all()]
    ids = [a.id for a in actions]
    parts = {key: _by_action(session, model, ids) for key, model in (
        ("revisions", DueRevision), ("notes", ProgressNote), ("evidence", Evidence))}
    d["actions"] = [action_detail(session, a, names, parts) for a in actions]
    indicators = [row_dict(i) for i in session.exec(
        select(Indicator).where(Indicator.plan_id == plan.id).order_by(col(Indicator.id))).all()]
    measured: dict[str, list[dict[str, Any]]] = {i["id"]: [] for i in indicators}
    for m in session.exec(select(Measurement).where(
            col(Measurement.indicator_id).in_(list(measured)))
            .order_by(col(Measurement.on), col(Measurement.id))).all():
        measured[m.indicator_id].append(row_dict(m))
    for i in indicators:
        i["measurements"] = measured[i["id"]]
    d["indicators"] = indicators
    d["signoffs"] = [row_dict(s) for s in session.exec(
        select(SignOff).where(SignOff.plan_id == plan.id).order_by(col(SignOff.id))).all()]
    d["recorded_evidence"] = [row_dict(e) for e in session.exec(
        select(Evidence).where(Evidence.plan_id == plan.id).order_by(col(Evidence.id))).all()]
    d["evidence"] = [e for e in d["recorded_evidence"] if e["action_id"] is None]
    d["history"] = entity_history(session, plan.id)
    return d


def actions_due_in_the_past(session: Session, plan_ids: Sequence[str], today: date,
                            ) -> dict[str, tuple[int, date]]:
    """For plans just loaded: how many of each plan's actions are already due before today, and
    the earliest such date (a plan file dated for another year, like the shipped examples)."""
    found: dict[str, tuple[int, date]] = {}
    if not plan_ids:
        return found
    for plan_id, count, earliest in session.exec(
            select(Action.plan_id, func.count(), func.min(Action.due))
            .where(col(Action.plan_id).in_(list(plan_ids)), col(Action.due) < today)
            .group_by(Action.plan_id)).all():
        found[plan_id] = (count, earliest)
    return found
