"""The closure decision's fast path — one durable_rules run, the explanation read in Python and
checked against the rules that fired, conditions kept per rules version — says exactly what the
full judge says: the verdict, each criterion's conditions with their facts and words, the
reasons a guard gives and the record it keeps, built afresh from the engine's own reading of
every condition and uncached words, on generated facts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from sqlmodel import Session

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.config.rules import FactRef
from qip_flow.decide.decisions import ClosureDecision, ConditionResult, CriterionResult, Decide
from qip_flow.decide.engine import clean_facts
from qip_flow.decide.judge import RulesJudge
from qip_flow.decide.pinned import current_version
from qip_flow.decide.words import condition_words, phrase_facts
from qip_flow.runtime import Runtime
from qip_flow.store.db import Database
from qip_flow.store.models import Person, Plan
from tests.test_rules_properties import PROPERTY, facts_for, holds


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('explained') / 'qip.db'}")
    return Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)


@pytest.fixture(scope="module")
def judge(runtime: Runtime) -> Iterator[RulesJudge]:
    with Session(runtime.db.engine) as session:
        yield RulesJudge(runtime.decide, runtime.vocabulary, session, datetime.now(UTC))


def full_judge(decide: Decide, facts: dict[str, Any]) -> ClosureDecision:
    """The closure decision built from scratch: every condition judged by the engine itself
    (one rule per condition), its words from the whole set of facts, nothing cached."""
    flat = clean_facts(facts)
    rules = decide.book.for_outcome("plan", "criterion")
    by_engine = decide.engine.judge_conditions("plan", flat, rules)
    criteria = []
    for rule in rules:
        conditions = []
        for leaf, ok in zip(rule.leaves(), by_engine[rule.id], strict=True):
            names = [leaf.fact] + ([leaf.value.fact] if isinstance(leaf.value, FactRef)
                                   else []) + phrase_facts("plan", leaf.fact)
            conditions.append(ConditionResult(
                leaf.text(), ok, {n: flat.get(n) for n in dict.fromkeys(names)},
                condition_words("plan", leaf, flat, ok)))
        criteria.append(CriterionResult(rule, holds(rule.when, flat), conditions, flat))
    return ClosureDecision(str(facts.get("plan_id")), criteria, decide.version, flat)


def closure_facts(decide: Decide) -> Any:
    return facts_for(decide.book.for_outcome("plan", "criterion"), "plan")


def test_the_application_path_explains_as_the_full_judge_does(runtime: Runtime,
                                                              judge: RulesJudge) -> None:
    """RulesJudge.closure_decision (explained only when refused) and the guard's verdict, on
    generated facts, against the full judge: the same verdict; when refused the same criteria,
    conditions, fact values and words, the same reasons and the same record; when met, no
    explanation. The Python reading never had to fall back on the engine's."""
    decide = runtime.decide
    plan = Plan(id="QIP-PROPS", title="p", service_id="s", source_type="audit", theme="t",
                owner_id="o", sponsor_id="o", state="closure_review",
                closure_rules_version=current_version(decide.book))
    signer = Person(id="signer", name="Signer")

    @PROPERTY
    @given(closure_facts(decide))
    def check(facts: dict[str, Any]) -> None:
        fast = judge.closure_decision(plan, facts=facts)
        full = full_judge(decide, facts)
        assert fast.met == full.met, facts
        verdict = judge.closure(plan, signer, facts=facts)
        assert verdict.holds == full.met
        if fast.met:
            assert all(not c.conditions for c in fast.criteria) and verdict.reasons == []
            return
        assert fast.as_dict() == full.as_dict(), facts
        assert verdict.reasons == [c.describe() for c in full.unmet], facts
        assert verdict.record == {**full.as_dict(),
                                  "closure_rules_version": plan.closure_rules_version}

    check()
    assert decide.engine.fallbacks == 0


def test_an_explanation_asked_for_always_matches_the_full_judge(runtime: Runtime) -> None:
    """Decide.closure(explain=True), as `qip explain` asks, on generated facts: the whole
    explanation, met or not, is the full judge's."""
    decide = runtime.decide

    @PROPERTY
    @given(closure_facts(decide))
    def check(facts: dict[str, Any]) -> None:
        assert decide.closure(facts, explain=True).as_dict() == full_judge(
            decide, facts).as_dict(), facts

    check()


def test_kept_conditions_tell_a_number_from_a_yes(runtime: Runtime) -> None:
    """The conditions kept per rules version are keyed by each value and its type: 1 and True
    are equal in Python but read "1" and "yes", and each decision shows its own."""
    decide = runtime.decide
    for verified in (1, True, 1, True):
        facts = {"actions": 3, "actions_verified": verified}
        got = decide.closure(facts, explain=True).as_dict()
        assert got == full_judge(decide, facts).as_dict()


def test_explain_is_true_false_or_if_refused(runtime: Runtime) -> None:
    """Anything else is refused with the choices named, not read as true."""
    with pytest.raises(ValueError, match="True, False or 'if refused'"):
        runtime.decide.closure({}, explain="always")  # type: ignore[arg-type]
