"""Applying the rules to plans: facts, closure decisions, credibility, RAG and reopening on
deterioration. Every decision that changes something is written to the audit trail with its
explanation (the rules that fired, the facts they used, the rules version)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlmodel import Session, select

from qip_flow.config.formats import ClosureSpec
from qip_flow.config.rules import fact_values
from qip_flow.decide.decisions import CredibilityFinding, RagDecision, fill
from qip_flow.decide.facts import (
    FactBuilder,
    load_plan_data,
)
from qip_flow.decide.judge import RulesJudge
from qip_flow.decide.schedule import check_moment
from qip_flow.decide.words import reasons_in_words
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services.failures import INFRASTRUCTURE, PlanEvaluationFailed
from qip_flow.store import audit
from qip_flow.store.db import lock_plans
from qip_flow.store.models import LearningSummary, Person, Plan

if TYPE_CHECKING:
    from qip_flow.services.notifications import Enqueued, MessageContext

RULES_ACTOR = "qip-rules"
#: Kept with a reopening decision besides the facts its rules read: what was off, and how.
REOPEN_FACTS = ("state", "indicators_off_target", "any_deteriorating", "special_cause_concern",
                "concern_indicator", "concern_value", "concern_limits", "concern_test")


def judge(rt: Runtime, session: Session, *, builder: FactBuilder | None = None) -> RulesJudge:
    """The rules in force, for the clock's now, as the workflow's guards and effects see them."""
    return RulesJudge(rt.decide, rt.vocabulary, session, rt.clock.now(), builder)


def plan_facts(rt: Runtime, session: Session, plan: Plan, *, signer: Person | None = None,
               actions: list[dict[str, Any]] | None = None, builder: FactBuilder | None = None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A plan's facts under its effective closure criteria, and those criteria."""
    return judge(rt, session, builder=builder).plan_facts(plan, signer=signer, actions=actions)


def credibility(rt: Runtime, session: Session, plan: Plan) -> list[CredibilityFinding]:
    return judge(rt, session).credibility_findings(plan)


def is_live(rt: Runtime, state: str) -> bool:
    """Rated and watched: neither the initial (draft) state nor a final one."""
    wf = rt.workflows.defs["plan"]
    final = {s.name for s in wf.states if s.final}
    return state != wf.initial and state not in final


@dataclass
class Reassessment:
    plan_id: str
    rag: RagDecision | None = None
    rag_changed: bool = False
    reopened: str | None = None
    notified: list[Enqueued] = field(default_factory=list)


def reassess(rt: Runtime, session: Session, plan: Plan, *, builder: FactBuilder | None = None,
             context: MessageContext | None = None) -> Reassessment:
    """Everything the rules decide about a plan now, in the caller's transaction: reminders
    and escalations into the outbox, reopening, the RAG rating, and when to look again. A tick
    passes a ``builder`` holding its batch's data and a shared message ``context``."""
    from qip_flow.services.lifecycle import fire_in_session, system_inputs
    from qip_flow.services.notifications import MessageContext, enqueue, hold_acknowledged

    result = Reassessment(plan.id)
    live = is_live(rt, plan.state)
    if not live and plan.learning_review_due is None:
        plan.next_check_at = None
        return result
    now = rt.clock.now()
    builder = builder or FactBuilder(session, now)
    actions = builder.actions(plan)
    facts, _ = plan_facts(rt, session, plan, actions=actions, builder=builder)
    context = context or MessageContext(session)
    decisions, resume = hold_acknowledged(session, rt.decide.notifications(facts, actions),
                                          now.date(), context)
    result.notified = enqueue(rt, session, plan, decisions, now, data=builder.data_for(plan),
                              context=context)
    if live:
        reopen = rt.decide.monitoring(facts).outcomes("reopen")
        if reopen:
            reason = "; ".join(fill(r.then.params["reason"], facts, missing="not known")
                               for r in reopen)
            inputs = system_inputs(now, reason=reason)
            inputs.note = f"rules {', '.join(r.id for r in reopen)} ({rt.rules.version})"
            used = {**{k: facts.get(k) for k in REOPEN_FACTS},
                    **{k: v for r in reopen for k, v in fact_values(facts, r.leaves()).items()}}
            fire_in_session(rt, session, plan.id, "reopen", inputs, reassess_after=False,
                            decisions={"reopen": {"rules": [r.id for r in reopen],
                                                  "facts": used,
                                                  "words": [w for r in reopen for w in
                                                            reasons_in_words(r, facts)],
                                                  "rules_version": rt.rules.version}})
            result.reopened = reason
            facts, _ = plan_facts(rt, session, plan, actions=actions, builder=builder)
        _rerate(rt, session, plan, facts, now, result)
    plan.next_check_at = rt.schedule.next_check(plan, actions, now, facts)
    if resume is not None:  # a held escalation may go when the acknowledgement's grace ends
        plan.next_check_at = min(filter(None, [plan.next_check_at, check_moment(resume)]))
    return result


def _rerate(rt: Runtime, session: Session, plan: Plan, facts: dict[str, Any], now: Any,
            result: Reassessment) -> None:
    decision = rt.decide.rag(facts)
    result.rag = decision
    if decision.rating != plan.rag:
        audit.append(session, at=now, actor=RULES_ACTOR, entity_type="plan", entity_id=plan.id,
                     what="rag changed", from_state=plan.rag, to_state=decision.rating,
                     reason=decision.reason, detail=decision.as_dict(), version=rt.rules.version)
        from qip_flow.services import webhooks

        webhooks.emit(rt, session, "plan.rag_changed", plan,
                      {"from": plan.rag, "to": decision.rating, "reason": decision.reason}, now)
        plan.rag = decision.rating
        result.rag_changed = True


def reassess_batch(rt: Runtime, plan_ids: Sequence[str]
                   ) -> Iterator[tuple[Plan, Reassessment]]:
    """Reassess a batch of plans in one transaction, from data loaded once for the batch after
    their rows are locked; the caller may change each plan before the transaction commits."""

    with rt.db.write() as session:
        plans = lock_plans(session, plan_ids)  # a sign-off meanwhile waits, or is waited for
        yield from reassess_locked(rt, session, plans)


def reassess_locked(rt: Runtime, session: Session, plans: Sequence[Plan]
                    ) -> Iterator[tuple[Plan, Reassessment]]:
    """Reassess plans this transaction holds (``lock_plans``), from data loaded once for them
    all and one message context."""
    from qip_flow.services.notifications import MessageContext

    now = rt.clock.now()
    data = load_plan_data(session, list(plans), now, plain=True)  # read, never changed
    builder = FactBuilder(session, now, data)
    builder.people().know_levels(p.sponsor_id for p in plans)
    context = MessageContext(session, plan_ids=[p.id for p in plans],
                             candidates=[a.owner_id for d in data.values() for a in d.actions])
    for plan in plans:
        try:
            result = reassess(rt, session, plan, builder=builder, context=context)
        except INFRASTRUCTURE:
            raise
        except Exception as exc:  # this plan's data or messages: the caller may skip it
            raise PlanEvaluationFailed(plan.id, exc) from exc
        yield plan, result


@dataclass
class PassSummary:
    """What a pass of re-decisions did, counted as each batch commits — never every result
    kept (a full pass over a large portfolio would hold every message it wrote)."""

    plans_checked: int = 0
    notifications: int = 0
    escalations: int = 0
    rag_changes: int = 0
    reopened: int = 0
    batches: list[dict[str, int]] = field(default_factory=list)

    def count(self, result: Reassessment) -> None:
        """Add one plan's re-decision."""
        self.plans_checked += 1
        self.notifications += len(result.notified)
        self.escalations += sum(1 for n in result.notified if n.kind == "escalation")
        self.rag_changes += int(result.rag_changed)
        self.reopened += int(bool(result.reopened))

    def add(self, other: PassSummary) -> None:
        """Add another (committed) batch's counts, and keep them as that batch's summary."""
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.batches.append({k: v for k, v in vars(other).items() if isinstance(v, int)})

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "batches": list(self.batches)}


def _watched(rt: Runtime, plan_ids: Sequence[str] | None) -> list[str]:
    """The plans a pass re-decides: those named, or every live plan and every closed one
    still awaiting its learning review."""
    from qip_flow.services.lifecycle import get_plan

    with rt.db.read() as session:
        if plan_ids:
            return [get_plan(session, i).id for i in plan_ids]
        watched = session.exec(select(Plan.id, Plan.state, Plan.learning_review_due)
                               .order_by(Plan.id)).all()
        return [i for i, state, learning in watched if is_live(rt, state) or learning]


def _passes(rt: Runtime, plan_ids: Sequence[str] | None, batch: int
            ) -> Iterator[list[Reassessment]]:
    """The results of each batch, once its transaction has committed."""
    ids = _watched(rt, plan_ids)
    for start in range(0, len(ids), batch):
        yield [result for _, result in reassess_batch(rt, ids[start:start + batch])]


def reassess_each(rt: Runtime, plan_ids: Sequence[str] | None = None, *, batch: int = 200,
                  progress: Callable[[int], None] | None = None) -> Iterator[Reassessment]:
    """Re-decide every live plan (or the ones named) for the clock's now — the full pass after
    a rules change — in batches, each one transaction from data loaded once; each result is
    yielded once its batch is committed, so the caller keeps only what it needs."""
    for done in _passes(rt, plan_ids, batch):
        yield from done
        if progress:
            progress(len(done))


def reassess_all(rt: Runtime, plan_ids: Sequence[str] | None = None, *, batch: int = 200,
                 progress: Callable[[int], None] | None = None) -> PassSummary:
    """:func:`reassess_each`, counted per batch in constant memory."""
    summary = PassSummary()
    for done in _passes(rt, plan_ids, batch):
        counted = PassSummary()
        for result in done:
            counted.count(result)
        summary.add(counted)
        if progress:
            progress(len(done))
    return summary


def explain(rt: Runtime, plan_id: str, *, signer: str | None = None) -> dict[str, Any]:
    """Every closure criterion met or unmet with its facts, the RAG and what the rules prefer."""
    from qip_flow.services.lifecycle import get_person, get_plan
    from qip_flow.services.pinning import closure_test, current_version

    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        person = get_person(session, signer) if signer else None
        facts, criteria = plan_facts(rt, session, plan, signer=person)
        closure = closure_test(rt, session, plan).closure(facts, explain=True)
        rag = rt.decide.rag(facts)
        monitoring = rt.decide.monitoring(facts)
    pinned = plan.closure_rules_version
    return {
        "plan": plan.id, "state": plan.state, "rules_version": rt.rules.version,
        "closure_rules_version": pinned or current_version(rt),
        "closure_rules_pinned": pinned is not None,
        "closure_rules_note": closure_rules_note(plan, pinned, current_version(rt)),
        "criteria_pinned": bool(criteria.get("pinned_at")),
        "closure_criteria": {k: v for k, v in criteria.items() if k != "pinned_at"},
        "closure": closure.as_dict(),
        "rag": rag.as_dict(),
        "step_down_preferred": [r.id for r in monitoring.outcomes("step_down")],
        "reopen": [r.id for r in monitoring.outcomes("reopen")],
        "facts": facts,
    }


def closure_rules_note(plan: Plan, pinned: str | None, current: str | None) -> str:
    """Which closure test judged the plan, in words."""
    if pinned is None and plan.approved_at is None:
        return f"judged by the closure rules in force ({current}); pinned at approval"
    if pinned is None:
        return (f"approved before closure rules were pinned whole: judged by the rules in force "
                f"({current}) until `qip vary {plan.id} --adopt-rules` pins them")
    if pinned != current:
        return (f"judged by its pinned closure rules ({pinned}); the rules in force "
                f"({current}) reach it only through `qip vary {plan.id} --adopt-rules`")
    return f"judged by its pinned closure rules ({pinned}), still those in force"


def lint_plan(rt: Runtime, plan_id: str) -> list[CredibilityFinding]:
    from qip_flow.services.lifecycle import get_plan

    with rt.db.read() as session:
        return credibility(rt, session, get_plan(session, plan_id))


def lint_file(rt: Runtime, path: Path) -> list[CredibilityFinding]:
    """Check a plan file before loading it: it is loaded into a transaction that is rolled
    back, so the same facts and rules apply and nothing is kept."""
    from qip_flow.config.formats import PlanFile
    from qip_flow.services.loading import load_in_session, parse_file

    parsed = parse_file(path)
    if not isinstance(parsed.spec, PlanFile):
        raise InvalidInput(f"{path}: `qip lint` checks plan files; this is an organisation file")
    with rt.db.write(gated=False) as session:  # rolled back: a read, "as at" any --now
        load_in_session(rt, session, [parsed], actor="qip-lint")
        plan = session.get(Plan, parsed.spec.id)
        assert plan is not None
        findings = credibility(rt, session, plan)
        session.rollback()
    return findings


def record_learning(rt: Runtime, plan_id: str, *, by: str, summary: str,
                    embedded_in: Sequence[str]) -> LearningSummary:
    """Keep the plan's learning summary and where the learning was embedded."""
    from qip_flow.services.lifecycle import changing, get_person, get_plan

    if not summary.strip():
        raise InvalidInput("--summary: write what was learned")
    now = rt.clock.now()
    with changing(rt, plan_id) as session:
        plan = get_plan(session, plan_id)
        get_person(session, by)
        row = LearningSummary(plan_id=plan.id, summary=summary.strip(),
                              embedded_in=[e.strip() for e in embedded_in if e.strip()],
                              by_id=by, at=now)
        session.add(row)
        audit.append(session, at=now, actor=by, entity_type="plan", entity_id=plan.id,
                     what="learning summary recorded",
                     detail={"summary": row.summary, "embedded_in": row.embedded_in})
        plan.updated_at = now
        reassess(rt, session, plan)
        return row


def parse_variation(assignments: Sequence[str]) -> dict[str, Any]:
    """``sustain_days=120`` … → validated closure-criteria changes."""
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--set: '{item}' should be field=value, e.g. sustain_days=120")
        key = key.strip()
        if key.startswith("signoff."):
            changes.setdefault("signoff", {})[key.removeprefix("signoff.")] = value.strip()
        elif key == "indicators":
            changes[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            changes[key] = value.strip()
    try:
        spec = ClosureSpec.model_validate(changes)
    except ValidationError as exc:
        problems = [f"--set {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("the variation is not valid", details=problems) from None
    dumped = spec.model_dump()
    return {k: dumped[k] for k in changes}


def check_variation(rt: Runtime, plan: Plan, variation: dict[str, Any]) -> None:
    """Refuse a variation that takes pinned criteria below the rules' minimums
    (``variation_minimums``); raising a value that is below the floor towards it is allowed."""
    floor = rt.rules.variation_minimums
    current = plan.closure_criteria or {}
    problems = []
    for key, minimum in (("sustain_days", floor.sustain_days), ("reaudits", floor.reaudits)):
        if key not in variation:
            continue
        new, now = variation[key] or 0, current.get(key) or 0
        if new < minimum and new < now:
            problems.append(f"--set {key}={new}: the rules in force ({rt.rules.version}) set a "
                            f"minimum of {minimum} (the plan has {now}); vary it to {minimum} "
                            "or more")
    if (floor.learning_required and variation.get("learning_required") is False
            and current.get("learning_required") is not False):
        problems.append(f"--set learning_required=false: the rules in force ({rt.rules.version})"
                        " require a learning summary for every closure; it cannot be varied away")
    if problems:
        raise Refused(f"{plan.id}: this variation goes below the minimums of the published "
                      "closure rules (variation_minimums)", details=problems)
