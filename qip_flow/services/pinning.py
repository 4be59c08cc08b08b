"""The whole closure test pinned into a plan at approval: the closure rules file exactly as it
was (criteria and sign-off settings), kept once per version in ``closurerules``. A plan is
judged by its pinned test; a rules change reaches it only through a variation that adopts the
rules in force (`qip vary --adopt-rules`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.config.rules import RuleBook, SignoffSettings, load_pinned_rules
from qip_flow.decide.decisions import Decide
from qip_flow.errors import InvalidDefinition, InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.store.models import ClosureRules, Plan
from qip_flow.workflow.subject import EventInputs, SignoffInput

_TESTS: dict[str, Decide] = {}  # a pinned text never changes, so neither does its test


def current_version(rt: Runtime) -> str | None:
    """The version of the closure rules in force: ``closure@<content hash>``."""
    rf = rt.rules.closure_file()
    return f"{rf.ruleset}@{rf.digest}" if rf else None


def pin_current(rt: Runtime, session: Session, now: datetime) -> str | None:
    """Keep the closure rules in force (once per version) and return their version."""
    rf = rt.rules.closure_file()
    version = current_version(rt)
    if rf is None or version is None:
        return None
    if session.get(ClosureRules, version) is None:
        session.add(ClosureRules(version=version, ruleset=rf.ruleset, text=rf.text,
                                 first_pinned_at=now))
        session.flush()
    return version


def closure_test(rt: Runtime, session: Session, plan: Plan) -> Decide:
    """The decisions that judge ``plan``'s closure: its pinned test, or the rules in force for
    a draft or a plan approved before tests were pinned whole."""
    version = plan.closure_rules_version
    if version is None or version == current_version(rt):
        return rt.decide
    if version not in _TESTS:
        row = session.get(ClosureRules, version)
        if row is None:
            raise InvalidDefinition(f"plan {plan.id} is pinned to closure rules {version}, which "
                                    "are not in the database; restore it from a backup")
        try:
            book: RuleBook = load_pinned_rules(row.text, f"{plan.id} pinned {version}",
                                               rt.vocabulary)
        except InvalidDefinition as exc:
            raise InvalidDefinition(
                f"plan {plan.id}: its pinned closure rules {version} no longer check against "
                f"this qip_flow ({exc.message}); adopt the rules in force with `qip vary "
                f"{plan.id} --adopt-rules`", details=exc.details) from None
        book.version = version
        _TESTS[version] = Decide(book)
    return _TESTS[version]


def signoff_settings(rt: Runtime, session: Session, plan: Plan) -> SignoffSettings:
    """What a sign-off on ``plan`` must record, from its pinned closure test."""
    return closure_test(rt, session, plan).book.signoff


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
        refusals: list[str] = []
        for plan_id in ids:
            inputs = EventInputs(by=person, now=now, reason=reason, variation=dict(variation),
                                 signoff=SignoffInput(purpose="variation",
                                                      meeting_reference=meeting))
            try:
                fire_in_session(rt, session, plan_id, "vary", inputs)
            except Refused as exc:
                refusals.append(f"{plan_id}: " + "; ".join(exc.details or [exc.message]))
        if refusals:
            raise Refused(f"no plan was varied: {len(refusals)} of {len(ids)} refused",
                          details=refusals)
    return ids
