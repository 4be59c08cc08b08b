"""Finding a plan, an action or a person by id, with a "did you mean" for a near miss: what
every command that names one asks first. Kept apart from the use cases (:mod:`.lifecycle`) so
that reading one (``qip show``) does not import the workflow machinery."""

from __future__ import annotations

import difflib

from sqlmodel import Session, col, select

from qip_flow.errors import NotFound
from qip_flow.store.models import Action, Person, Plan

__all__ = ["did_you_mean", "get_entity", "get_person", "get_plan"]


def did_you_mean(session: Session, model: type[Person] | type[Plan] | type[Action], wanted: str,
                 *, prefix: str = "") -> str:
    """`` (did you mean QIP-2026-017?)`` for a near-miss id, else nothing. Only ids sharing
    ``prefix`` are read, so a plan's actions are compared, not the whole portfolio's."""
    query = select(model.id)
    if prefix:
        query = query.where(col(model.id).startswith(prefix))
    # ids of plans and actions share a long prefix, which flatters every pair: ask more of them
    cutoff = 0.9 if model is not Person else 0.75
    close = difflib.get_close_matches(wanted, [str(i) for i in session.exec(query)], n=2,
                                      cutoff=cutoff)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def get_person(session: Session, person_id: str, *, flag: str = "--by") -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound(f"{flag}: unknown person '{person_id}'"
                       f"{did_you_mean(session, Person, person_id)}; `qip load` them first")
    return person


def get_plan(session: Session, plan_id: str) -> Plan:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFound(f"unknown plan '{plan_id}'{did_you_mean(session, Plan, plan_id)}; "
                       "`qip plans` lists them")
    return plan


def get_entity(session: Session, entity_id: str) -> tuple[str, Plan | Action]:
    """A plan (``QIP-2026-014``) or an action (``QIP-2026-014/A1``)."""
    if "/" in entity_id:
        action = session.get(Action, entity_id)
        if action is None:
            plan_id = entity_id.split("/", 1)[0]
            raise NotFound(f"unknown action '{entity_id}'"
                           f"{did_you_mean(session, Action, entity_id, prefix=plan_id + '/')}; "
                           "`qip show PLAN` lists its actions")
        return "action", action
    return "plan", get_plan(session, entity_id)
