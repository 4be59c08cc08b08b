"""Property tests: on any facts, durable_rules fires exactly the rules that a plain-Python
reading of the same RuleDef objects says hold — for every shipped rules file and subject, and
for random rule sets. The RAG decision is the worst rating among the rules that fire (green
when none); merged default criteria keep the strictest value of each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.config.rules import FactRef, Group, Leaf, RuleBook, RuleDef, RulesFile, iter_leaves
from qip_flow.decide.decisions import Decide
from qip_flow.decide.engine import RulesEngine
from qip_flow.decide.vocabulary import FACTS, RATINGS
from qip_flow.runtime import Runtime
from qip_flow.store.db import Database

PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
LEVELS = ("operational", "manager", "senior", "board")

# --- the oracle: docs/rules.md read literally, in plain Python ---------------------------


def leaf_holds(leaf: Leaf, facts: dict[str, Any]) -> bool:
    """One comparison. A missing (or None) fact never compares; ``exists`` asks about it."""
    value = facts.get(leaf.fact)
    op, operand = leaf.op, leaf.value
    if op == "exists":
        return (value is not None) == operand
    if value is None:
        return False
    if isinstance(operand, FactRef):
        operand = facts.get(operand.fact)
        if operand is None:
            return False
    if op == "is":
        return bool(value == operand)
    if op == "not":
        return bool(value != operand)
    if op == "in":
        return value in operand
    if op == "not_in":
        return value not in operand
    return {"at_least": value >= operand, "at_most": value <= operand,
            "more_than": value > operand, "less_than": value < operand}[op]


def holds(cond: Leaf | Group, facts: dict[str, Any]) -> bool:
    if isinstance(cond, Leaf):
        return leaf_holds(cond, facts)
    results = [holds(c, facts) for c in cond.items]
    return all(results) if cond.kind == "all" else any(results)


def oracle_fires(rules: list[RuleDef], facts: dict[str, Any]) -> set[str]:
    return {r.id for r in rules if holds(r.when, facts)}


# --- facts for the shipped rules ---------------------------------------------------------


def shipped_pairs() -> list[tuple[str, str]]:
    """(ruleset, subject) for every shipped rules file, read without the engine so a broken
    file fails the tests rather than their collection."""
    pairs = []
    for path in sorted((SHIPPED_CONFIG / "rules").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        about = data.get("about", "plan")
        for subject in dict.fromkeys(r.get("about") or about for r in data["rules"]):
            pairs.append((data["ruleset"], subject))
    return pairs


PAIRS = shipped_pairs()


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> RuleBook:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('props') / 'unused.db'}")
    return Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG).rules


@pytest.fixture(scope="module")
def decide(book: RuleBook) -> Decide:
    return Decide(book)


TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


def value_strategy(kind: type, literals: list[Any]) -> st.SearchStrategy[Any]:
    """Values of a fact's type, biased towards the values the rules compare it with."""
    if kind is bool:
        return st.booleans()
    if kind in (int, float):
        near = sorted({n + d for n in literals if isinstance(n, int | float)
                       and not isinstance(n, bool) for d in (-1, 0, 1)} | {0})
        return st.one_of(st.sampled_from(near), st.integers(-400, 400))
    texts = sorted({v for v in literals if isinstance(v, str)}) or [""]
    return st.one_of(st.sampled_from(texts), TEXT)


def facts_for(rules: list[RuleDef], subject: str, extra: dict[str, set[str]] | None = None
              ) -> st.SearchStrategy[dict[str, Any]]:
    """Facts (each present, None or absent) for every fact ``rules`` name."""
    literals: dict[str, list[Any]] = {}
    for rule in rules:
        for leaf in iter_leaves(rule.when):
            literals.setdefault(leaf.fact, [])
            if isinstance(leaf.value, FactRef):
                literals.setdefault(leaf.value.fact, [])
            elif isinstance(leaf.value, list):
                literals[leaf.fact] += leaf.value
            elif leaf.op != "exists":
                literals[leaf.fact].append(leaf.value)
    for name, values in (extra or {}).items():
        literals.setdefault(name, []).extend(values)
    parts = {name: st.one_of(st.none(), value_strategy(FACTS[subject][name].type, values))
             for name, values in sorted(literals.items())}
    return st.fixed_dictionaries({}, optional=parts)


def rules_of(book: RuleBook, ruleset: str, subject: str) -> list[RuleDef]:
    rf = next(f for f in book.files if f.ruleset == ruleset)
    return [r for r in rf.rules if r.subject == subject]


@pytest.mark.parametrize(("ruleset", "subject"), PAIRS, ids=[f"{r}-{s}" for r, s in PAIRS])
def test_each_shipped_file_fires_what_the_oracle_says(
    book: RuleBook, ruleset: str, subject: str
) -> None:
    """run_file on random facts fires exactly the rules of that file the oracle says hold."""
    rules = rules_of(book, ruleset, subject)
    engine = RulesEngine(book)

    @PROPERTY
    @given(facts_for(rules, subject))
    def check(facts: dict[str, Any]) -> None:
        fired = {r.id for r in engine.run_file(ruleset, subject, facts)}
        assert fired == oracle_fires(rules, facts), facts

    check()


@pytest.mark.parametrize("subject", sorted({s for _, s in PAIRS}))
def test_evaluate_with_explanations_agrees_with_the_oracle(book: RuleBook, subject: str) -> None:
    """evaluate() across every file about ``subject`` fires what the oracle says, and its
    explanation (read in Python, checked against the engine) and the engine's own reading,
    condition by condition, say for each condition of each rule whether the oracle holds it."""
    rules = [r for r in book.rules.values() if r.subject == subject]
    outcomes = sorted({r.then.outcome for r in rules})
    engine = RulesEngine(book)

    @PROPERTY
    @given(facts_for(rules, subject))
    def check(facts: dict[str, Any]) -> None:
        evaluation = engine.evaluate(subject, facts, *outcomes, explain=True)
        assert set(evaluation.fired_ids) == oracle_fires(rules, facts), facts
        by_engine = engine.judge_conditions(subject, facts, rules)
        for rule in rules:
            expected = [leaf_holds(leaf, facts) for leaf in rule.leaves()]
            assert evaluation.conditions[rule.id] == expected, (rule.id, facts)
            assert by_engine[rule.id] == expected, (rule.id, facts)

    check()


def test_the_shipped_rag_decision_is_the_worst_rating(book: RuleBook, decide: Decide) -> None:
    """Decide.rag on random facts: the worst rating among the rag rules the oracle fires, the
    rules behind it being exactly those with that rating; green with none."""
    rules = book.for_outcome("plan", "rag")

    @PROPERTY
    @given(facts_for(rules, "plan"))
    def check(facts: dict[str, Any]) -> None:
        assert_worst_rating(decide, rules, facts)

    check()


def assert_worst_rating(decide: Decide, rules: list[RuleDef], facts: dict[str, Any]) -> None:
    fired = [r for r in rules if r.id in oracle_fires(rules, facts)]
    decision = decide.rag(facts)
    if not fired:
        assert (decision.rating, decision.because) == ("green", [])
        return
    worst = max(RATINGS.index(r.then.params["rating"]) for r in fired)
    assert decision.rating == RATINGS[worst], facts
    assert {r.id for r in decision.because} == {
        r.id for r in fired if RATINGS.index(r.then.params["rating"]) == worst}


# --- random rules ------------------------------------------------------------------------

INT_FACTS, BOOL_FACTS, TEXT_FACTS = ("a", "b"), ("c",), ("s", "t")
WORDS = ("", "a", "b", "care planning", "Gruppe Ü")
INTS = st.integers(-3, 3)


def leaves() -> st.SearchStrategy[dict[str, Any]]:
    def typed(facts: tuple[str, ...], values: st.SearchStrategy[Any],
              ordered: bool) -> st.SearchStrategy[dict[str, Any]]:
        ops = ["is", "not"] + (["at_least", "at_most", "more_than", "less_than"] if ordered else [])
        refs = st.sampled_from(facts).map(lambda f: {"fact": f})
        operand = st.one_of(values, refs) if len(facts) > 1 else values
        return st.one_of(
            st.builds(lambda f, op, v: {"fact": f, op: v},
                      st.sampled_from(facts), st.sampled_from(ops), operand),
            st.builds(lambda f, op, vs: {"fact": f, op: vs}, st.sampled_from(facts),
                      st.sampled_from(["in", "not_in"]),
                      st.lists(values, min_size=1, max_size=3, unique=True)),
            st.builds(lambda f, e: {"fact": f, "exists": e}, st.sampled_from(facts),
                      st.booleans()),
        )

    return st.one_of(typed(INT_FACTS, INTS, True), typed(BOOL_FACTS, st.booleans(), False),
                     typed(TEXT_FACTS, st.sampled_from(WORDS), False))


CONDITIONS = st.recursive(
    leaves(),
    lambda inner: st.builds(lambda kind, items: {kind: items}, st.sampled_from(["all", "any"]),
                            st.lists(inner, min_size=1, max_size=3)),
    max_leaves=6)

RANDOM_FACTS = st.fixed_dictionaries({}, optional={
    **{f: st.one_of(st.none(), st.integers(-4, 4)) for f in INT_FACTS},
    **{f: st.one_of(st.none(), st.booleans()) for f in BOOL_FACTS},
    **{f: st.one_of(st.none(), st.sampled_from(WORDS)) for f in TEXT_FACTS},
})


def random_book(rules: list[dict[str, Any]]) -> RuleBook:
    """A RuleBook built directly (no checker: random rules may well never fire), registered
    under its content hash like a loaded file."""
    numbered = [{**r, "id": f"r{i}", "description": f"rule {i}"} for i, r in enumerate(rules)]
    rf = RulesFile.model_validate({"ruleset": "random", "rules": numbered})
    for rule in rf.rules:
        rule.subject, rule.ruleset = "plan", "random"
    rf.path = "<random>"
    rf.digest = hashlib.sha256(json.dumps(numbered, sort_keys=True).encode()).hexdigest()[:16]
    return RuleBook([rf], f"rules@{rf.digest}")


RAG_RULES = st.lists(st.fixed_dictionaries({
    "when": CONDITIONS,
    "then": st.fixed_dictionaries({"outcome": st.just("rag"), "rating": st.sampled_from(RATINGS)}),
}), min_size=1, max_size=5)


@PROPERTY
@given(RAG_RULES, st.lists(RANDOM_FACTS, min_size=1, max_size=8))
def test_random_rules_fire_what_the_oracle_says(rules: list[dict[str, Any]],
                                                 fact_sets: list[dict[str, Any]]) -> None:
    """Random rules (nested all/any, every operator, fact references, exists) over int, bool
    and text facts: the engine and the oracle agree on every fact set, condition by
    condition."""
    book = random_book(rules)
    engine = RulesEngine(book)
    defs = list(book.rules.values())
    for facts in fact_sets:
        evaluation = engine.evaluate("plan", facts, "rag", explain=True)
        assert set(evaluation.fired_ids) == oracle_fires(defs, facts), (facts, rules)
        by_engine = engine.judge_conditions("plan", facts, defs)
        for rule in defs:
            expected = [leaf_holds(leaf, facts) for leaf in rule.leaves()]
            assert evaluation.conditions[rule.id] == expected, (rule.id, facts)
            assert by_engine[rule.id] == expected, (rule.id, facts)


@PROPERTY
@given(RAG_RULES, st.lists(RANDOM_FACTS, min_size=1, max_size=5))
def test_random_rag_rules_give_the_worst_rating(rules: list[dict[str, Any]],
                                                fact_sets: list[dict[str, Any]]) -> None:
    """For random rag rules the decision is the worst rating that fires, green when none."""
    book = random_book(rules)
    decide = Decide(book)
    for facts in fact_sets:
        assert_worst_rating(decide, list(book.rules.values()), facts)


# --- merged default criteria --------------------------------------------------------------

DEFAULT_PARAMS = st.fixed_dictionaries({"outcome": st.just("closure_defaults")}, optional={
    "sustain_days": st.integers(0, 200),
    "reaudits": st.integers(0, 4),
    "monitoring_days": st.integers(0, 365),
    "learning_required": st.booleans(),
    "signoff_level": st.sampled_from(LEVELS),
    "signoff_group": st.sampled_from(["Safeguarding governance group", "Board"]),
    "learning_review_days": st.integers(1, 200),
})

DEFAULT_RULES = st.lists(st.fixed_dictionaries({"when": CONDITIONS, "then": DEFAULT_PARAMS}),
                         min_size=1, max_size=5)


def fired_params(book: RuleBook, facts: dict[str, Any]) -> list[dict[str, Any]]:
    return [r.then.params for r in book.rules.values() if holds(r.when, facts)]


@PROPERTY
@given(DEFAULT_RULES, RANDOM_FACTS)
def test_merged_defaults_keep_the_strictest_value(rules: list[dict[str, Any]],
                                                  facts: dict[str, Any]) -> None:
    """Several closure_defaults rules fire: the longest sustain period, the most re-audits, the
    longest monitoring, learning required if any asks, a group if any names one, and (where
    no group signs) the highest sign-off level."""
    book = random_book(rules)
    merged = Decide(book).defaults(facts)
    given_ = fired_params(book, facts)
    for key in ("sustain_days", "reaudits", "monitoring_days"):
        values = [p[key] for p in given_ if key in p]
        assert merged.get(key) == (max(values) if values else None), (key, given_, merged)
    assert bool(merged.get("learning_required")) == any(
        p.get("learning_required") for p in given_), (given_, merged)
    groups = [p["signoff_group"] for p in given_ if "signoff_group" in p]
    assert merged.get("signoff_group") == (groups[0] if groups else None), (given_, merged)
    levels = [p["signoff_level"] for p in given_ if "signoff_level" in p]
    if not groups:
        expected = max(levels, key=LEVELS.index) if levels else None
        assert merged.get("signoff_level") == expected, (given_, merged)
    if not given_:
        assert merged == {}


@pytest.mark.parametrize("order", [(90, 30), (30, 90)], ids=["looser-first", "sooner-first"])
def test_merged_defaults_keep_the_soonest_learning_review(order: tuple[int, int]) -> None:
    """"When several rules match, the strictest value of each wins" (docs/rules.md): two
    matching rules ask for the learning review 90 and 30 days after closure; the strictest,
    30 days, wins whichever rule comes first."""
    book = random_book([{"when": {"fact": "a", "exists": False},
                         "then": {"outcome": "closure_defaults", "learning_review_days": days}}
                        for days in order])
    assert Decide(book).defaults({})["learning_review_days"] == 30


def test_the_oracle_reads_a_shipped_rule_as_written(book: RuleBook) -> None:
    """The oracle itself on closure.sustained: holds only with every indicator on target, the
    sustained days reaching the required ones and no special cause of concern; a missing
    requirement never holds."""
    rule = book.rules["closure.sustained"]
    base = {"all_indicators_on_target": True, "sustained_days": 90,
            "required_sustain_days": 90, "special_cause_concern": False}
    assert holds(rule.when, base)
    assert not holds(rule.when, {**base, "special_cause_concern": True})
    assert not holds(rule.when, {**base, "sustained_days": 89})
    assert not holds(rule.when, {**base, "all_indicators_on_target": False})
    assert not holds(rule.when, {**base, "required_sustain_days": None})
    assert Path(next(f.path for f in book.files if f.ruleset == "closure")).name == "closure.yaml"
