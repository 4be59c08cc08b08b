"""The whole closure test pinned into a plan at approval: the closure rules file exactly as it
was (criteria and sign-off settings), kept once per version in ``closurerules``. A plan is
judged by its pinned test; a rules change reaches it only through a variation that adopts the
rules in force (`qip vary --adopt-rules`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.decide import pinned
from qip_flow.decide.decisions import Decide
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.store.db import lock_plans
from qip_flow.store.models import Plan
from qip_flow.workflow.subject import EventInputs, SignoffInput


def current_version(rt: Runtime) -> str | None:
    """The version of the closure rules in force: ``closure@<content hash>``."""
    return pinned.current_version(rt.rules)


def closure_test(rt: Runtime, session: Session, plan: Plan) -> Decide:
    """The decisions that judge ``plan``'s closure (see ``decide.pinned.closure_test``)."""
    return pinned.closure_test(rt.decide, rt.vocabulary, session, plan)


UNPINNED = "unpinned"


def plans_pinned_to(rt: Runtime, session: Session, version: str) -> list[str]:
    """Plans that may be varied and are judged by closure rules ``version`` (``unpinned``:
    approved before closure rules were pinned whole)."""
    event = rt.workflows.defs["plan"].event("vary")
    states = list(event.source) if event else []
    query = select(Plan.id).where(col(Plan.state).in_(states), col(Plan.approved_at).is_not(None))
    if version == UNPINNED:
        query = query.where(col(Plan.closure_rules_version).is_(None))
    else:
        query = query.where(Plan.closure_rules_version == version)
    return list(session.exec(query.order_by(col(Plan.id))).all())


def vary_plans(rt: Runtime, plan_ids: Sequence[str], *, by: str, reason: str,
               changes: dict[str, Any], adopt_rules: bool = False, meeting: str = "",
               all_pinned_to: str | None = None) -> list[str]:
    """One variation on each plan named (or on every plan pinned to ``all_pinned_to``), in one
    transaction, each signed with that plan's own authority: all are varied, or — if any is
    refused — none, with every plan's reasons listed."""
    from qip_flow.services.assess import check_variation
    from qip_flow.services.lifecycle import fire_in_session, get_person, get_plan
    from qip_flow.workflow.effects import ADOPT_RULES

    variation = dict(changes)
    if adopt_rules:
        variation[ADOPT_RULES] = True
    if not variation:
        raise InvalidInput("give the change: --set field=value (repeatable) or --adopt-rules")
    if not reason.strip():
        raise InvalidInput("--reason: say why the criteria change")
    now = rt.clock.now()
    with rt.db.write() as session:
        person = get_person(session, by)
        ids = [get_plan(session, i).id for i in plan_ids]
        if all_pinned_to:
            ids += [i for i in plans_pinned_to(rt, session, all_pinned_to) if i not in ids]
        if not ids:
            raise InvalidInput("no plan to vary: name plans, or --all-pinned-to a version some "
                               "live plan is pinned to (`qip explain PLAN` names its version)")
        lock_plans(session, ids)  # each plan's one writer, for the whole variation
        refusals: list[str] = []
        for plan_id in ids:
            inputs = EventInputs(by=person, now=now, reason=reason, variation=dict(variation),
                                 signoff=SignoffInput(purpose="variation",
                                                      meeting_reference=meeting))
            try:
                check_variation(rt, get_plan(session, plan_id), variation)
            except Refused as exc:  # its message names the plan and says which minimums
                refusals.append(f"{exc.message}: " + "; ".join(exc.details))
                continue
            try:
                fire_in_session(rt, session, plan_id, "vary", inputs)
            except Refused as exc:
                refusals.append(f"{plan_id}: " + "; ".join(exc.details or [exc.message]))
        if refusals:
            raise Refused(f"no plan was varied: {len(refusals)} of {len(ids)} refused",
                          details=refusals)
    return ids
