"""The durable_rules adapter (qip_flow.decide.engine) within that engine's limits: no session
outlives an evaluation (a ruleset holds ~1024, then the process dies), an error swallowed
inside an action is raised, missing facts are missing, `exists: false` neither hangs nor
misfires, and nested groups and fact-to-fact comparisons mean what docs/rules.md says."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.config.rules import RuleBook, RulesFile
from qip_flow.decide import engine
from qip_flow.decide.engine import MARKER, RulesEngine, RulesEngineError, clean_facts, host
from qip_flow.runtime import Runtime
from qip_flow.store.db import Database


def book_of(rules: list[dict[str, Any]], *, ruleset: str = "t", about: str = "plan") -> RuleBook:
    """A RuleBook of one file holding ``rules``, versioned by its content like a loaded file."""
    rf = RulesFile.model_validate({"ruleset": ruleset, "about": about, "rules": rules})
    for rule in rf.rules:
        rule.subject, rule.ruleset = rule.about or about, ruleset
    rf.path = f"<{ruleset}>"
    rf.digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:12]
    return RuleBook([rf], f"rules@{rf.digest}")


def rule(rule_id: str, when: dict[str, Any], rating: str = "red") -> dict[str, Any]:
    return {"id": rule_id, "description": rule_id, "when": when,
            "then": {"outcome": "rag", "rating": rating}}


def fired(book: RuleBook, facts: dict[str, Any]) -> set[str]:
    """The rules of the book's only file that fire on ``facts``."""
    rf = book.files[0]
    return {r.id for r in RulesEngine(book).run_file(rf.ruleset, rf.about, facts)}


def run_script(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Python in a child process, so a crash or a hang cannot take the test run down."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> RuleBook:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('engine') / 'unused.db'}")
    return Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG).rules


def next_sid() -> int:
    """The number the next evaluation's session id will carry (this call uses one up)."""
    return next(engine._SESSION_IDS) + 1


# --- sessions --------------------------------------------------------------------------


def test_a_live_session_is_visible_to_get_state(shipped: RuleBook) -> None:
    """The probe the next tests rely on works: a session left in the engine is found by
    get_state, and get_state raises once it is deleted."""
    eng = RulesEngine(shipped)
    eng.run_file("rag", "plan", {"actions_overdue": 0})
    name = eng._names[("rag", "plan", False)]
    with engine._HOST_LOCK:
        host().assert_fact(name, {"actions_overdue": 1, "sid": "probe-live", MARKER: 1})
        try:
            assert host().get_state(name, "probe-live")["sid"] == "probe-live"
        finally:
            host().delete_state(name, "probe-live")
        with pytest.raises(Exception, match="Could not get state"):
            host().get_state(name, "probe-live")


def test_run_file_leaves_no_session_behind(shipped: RuleBook) -> None:
    """After `run_file` the session it used is gone from durable_rules."""
    eng = RulesEngine(shipped)
    sid = next_sid()
    assert [r.id for r in eng.run_file("rag", "plan", {"actions_overdue": 3})] == [
        "rag.red-several-overdue", "rag.amber-overdue"]
    name = eng._names[("rag", "plan", False)]
    with pytest.raises(Exception, match="Could not get state"):
        host().get_state(name, f"e{sid}")


def test_evaluate_with_explanations_leaves_no_session_behind(shipped: RuleBook) -> None:
    """A closure evaluation with explanations (one session per ruleset evaluated), and the
    engine's own condition-by-condition reading, leave none of their sessions behind."""
    eng = RulesEngine(shipped)
    rules = shipped.for_outcome("plan", "criterion")
    rulesets = list(dict.fromkeys(r.ruleset for r in rules))
    facts = {"actions": 2, "actions_verified": 2}
    for explain in (False, True):
        first = next_sid()
        if explain:
            conditions = eng.judge_conditions("plan", facts, rules)
            assert conditions["closure.actions-verified"] == [True, True]
        else:
            evaluation = eng.evaluate("plan", facts, "criterion", explain=True)
            assert evaluation.fired_ids == ["closure.actions-verified",
                                            "closure.monitoring-kept-up"]
        for offset, ruleset in enumerate(rulesets):
            name = eng._names[(ruleset, "plan", explain)]
            with pytest.raises(Exception, match="Could not get state"):
                host().get_state(name, f"e{first + offset}")


def test_thousands_of_evaluations_stay_within_the_session_limit() -> None:
    """3000 rounds of RAG, closure (with explanations) and default criteria on varied facts,
    in a child process: well past the ~1024 live sessions a ruleset allows, and the process
    exits cleanly."""
    result = run_script("""
        import random
        from qip_flow import SHIPPED_CONFIG
        from qip_flow.clock import Clock
        from qip_flow.runtime import Runtime
        from qip_flow.store.db import Database

        decide = Runtime(db=Database("sqlite:///:memory:"), clock=Clock(),
                         config_dir=SHIPPED_CONFIG).decide
        rng = random.Random(7)
        ratings, closable = set(), 0
        for i in range(3000):
            facts = {
                "plan_id": f"QIP-{i}",
                "theme": rng.choice(["safeguarding", "medication", "care planning", None]),
                "source_type": rng.choice(["inspection", "audit", "safeguarding", None]),
                "state": rng.choice(["in_progress", "sustaining", "monitoring"]),
                "actions": 4, "actions_verified": rng.randint(0, 4),
                "actions_overdue": rng.randint(0, 4),
                "max_working_days_overdue": rng.randint(0, 30),
                "all_indicators_on_target": rng.choice([True, False, None]),
                "sustained_days": rng.randint(0, 120), "required_sustain_days": 90,
                "special_cause_concern": i % 10 == 0,
                "reaudit_intervals_in_run": rng.randint(0, 3), "required_reaudits": 2,
                "learning_required": rng.choice([True, False]),
                "learning_summary": rng.choice([True, False]),
                "learning_embedded_places": rng.randint(0, 2),
                "signer_level_rank": rng.choice([None, 1, 2, 3]),
                "required_signoff_level_rank": rng.choice([None, 2]),
                "signer_in_required_group": rng.choice([None, True, False]),
            }
            ratings.add(decide.rag(facts).rating)
            closable += decide.closure(facts).met
            assert "sustain_days" in decide.defaults(facts)
        print("done", sorted(ratings), closable > 0)
    """, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "done ['amber', 'green', 'red'] True"


# --- errors inside actions ------------------------------------------------------------


class FailingHost(engine._Host):
    """A host whose rule actions raise, as a broken action would."""

    def get_action(self, action_name: str) -> Any:
        if action_name.startswith("rule:"):
            def fail(_c: Any) -> None:
                raise ValueError(f"boom in {action_name}")

            return fail
        return super().get_action(action_name)


@pytest.fixture
def failing_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingHost]:
    """qip_flow's host replaced by a FailingHost for one test (the real one is put back)."""
    failing = FailingHost()
    monkeypatch.setattr(engine, "_HOST", failing)
    yield failing


def test_durable_rules_swallows_an_action_error(failing_host: FailingHost) -> None:
    """The behaviour the adapter guards against: durable_rules itself (a ruleset registered
    straight on the host, with durable's own action loop) returns normally when an action
    raises and leaves the error in the session state."""
    name = "swallowed_stock"
    failing_host.set_rulesets({name: {
        "all_facts": {"all": [{"m": {MARKER: 1}}], "run": engine.CATCH_ALL},
        "r0": {"all": [{"m": {"$gte": {"x": 1}}}], "run": "rule:t.x"}}})
    failing_host.assert_fact(name, {"x": 2, "sid": "raw", MARKER: 1})
    try:
        assert "boom in rule:t.x" in failing_host.get_state(name, "raw")["exception"]
    finally:
        failing_host.delete_state(name, "raw")


def test_no_action_is_ever_called(failing_host: FailingHost) -> None:
    """The adapter reads which rules fired from the engine's answers and never calls an
    action, so an action that would raise (and be swallowed) cannot touch a decision; the
    session is still deleted."""
    book = book_of([rule("t.x", {"fact": "x", "at_least": 1})], ruleset="failing")
    eng = RulesEngine(book)
    assert eng.run_file("failing", "plan", {"x": 0}) == []
    sid = next_sid()
    assert [r.id for r in eng.run_file("failing", "plan", {"x": 2})] == ["t.x"]
    assert eng.evaluate("plan", {"x": 5}, "rag").fired_ids == ["t.x"]
    with pytest.raises(Exception, match="Could not get state"):
        failing_host.get_state(eng._names[("failing", "plan", False)], f"e{sid}")


def test_facts_the_engine_cannot_read_raise_rules_engine_error() -> None:
    """A fact that is not a plain value is refused with RulesEngineError naming the ruleset,
    before any session is made."""
    book = book_of([rule("t.y", {"fact": "x", "at_least": 1})], ruleset="unreadable")
    with pytest.raises(RulesEngineError, match=r"unreadable_plan_.*not plain values"):
        RulesEngine(book).evaluate("plan", {"x": object()}, "rag")


# --- what conditions mean ---------------------------------------------------------------

MISSING_BOOK = book_of([
    rule("m.missing", {"fact": "x", "exists": False}),
    rule("m.present", {"fact": "x", "exists": True}),
    rule("m.is-zero", {"fact": "x", "is": 0}),
    rule("m.not-three", {"fact": "x", "not": 3}),
    rule("m.not-in", {"fact": "x", "not_in": [1, 2]}),
    rule("m.below", {"fact": "x", "less_than": 5}),
    rule("m.not-text", {"fact": "s", "not": "a"}),
    rule("m.not-true", {"fact": "b", "not": True}),
], ruleset="missing")


@pytest.mark.parametrize("facts", [{}, {"x": None, "s": None, "b": None}],
                         ids=["absent", "None"])
def test_a_fact_given_as_none_is_missing(facts: dict[str, Any]) -> None:
    """None and absent mean the same: only `exists: false` holds; no comparison does, not
    even `not` or `not_in`."""
    assert fired(MISSING_BOOK, facts) == {"m.missing"}
    assert clean_facts(facts) == {}
    evaluation = RulesEngine(MISSING_BOOK).evaluate("plan", facts, "rag")
    assert evaluation.facts == {} and evaluation.fired_ids == ["m.missing"]


def test_a_known_fact_is_compared() -> None:
    """The same rules on known values: the comparisons hold as written."""
    assert fired(MISSING_BOOK, {"x": 0, "s": "b", "b": False}) == {
        "m.present", "m.is-zero", "m.not-three", "m.not-in", "m.below", "m.not-text",
        "m.not-true"}
    assert fired(MISSING_BOOK, {"x": 3, "s": "a", "b": True}) == {"m.present", "m.below",
                                                                  "m.not-in"}


def test_exists_false_rules_fire_once_and_do_not_hang() -> None:
    """A rule made only of `exists: false` tests (alone, in `any`, in `all`) fires on the
    missing fact and stops: a child process evaluating them 200 times ends in time."""
    result = run_script("""
        import hashlib, json
        from qip_flow.config.rules import RuleBook, RulesFile
        from qip_flow.decide.engine import RulesEngine

        def rule(rid, when):
            return {"id": rid, "description": rid, "when": when,
                    "then": {"outcome": "rag", "rating": "amber"}}

        rules = [
            rule("n.alone", {"fact": "x", "exists": False}),
            rule("n.any", {"any": [{"fact": "x", "exists": False},
                                   {"fact": "y", "exists": False}]}),
            rule("n.all", {"all": [{"fact": "x", "exists": False},
                                   {"fact": "y", "exists": False}]}),
        ]
        rf = RulesFile.model_validate({"ruleset": "nex", "rules": rules})
        for r in rf.rules:
            r.subject, r.ruleset = "plan", "nex"
        rf.digest = hashlib.sha256(json.dumps(rules).encode()).hexdigest()[:12]
        eng = RulesEngine(RuleBook([rf], "v"))
        seen = set()
        for i in range(200):
            facts = [{}, {"x": i}, {"y": i}, {"x": i, "y": i}][i % 4]
            seen.add((tuple(sorted(facts)), tuple(r.id for r in eng.run_file("nex", "plan", facts))))
        print(json.dumps(sorted(seen)))
    """, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == [
        [[], ["n.alone", "n.any", "n.all"]],
        [["x"], ["n.any"]],
        [["x", "y"], []],
        [["y"], ["n.alone", "n.any"]],
    ]


NESTED_BOOK = book_of([
    rule("g.nested", {"all": [
        {"any": [{"fact": "a", "at_least": 5}, {"fact": "flag", "is": True}]},
        {"any": [
            {"all": [{"fact": "s", "is": "care planning"}, {"fact": "a", "less_than": 10}]},
            {"fact": "t", "exists": False},
        ]},
    ]}),
    rule("g.any-of-alls", {"any": [
        {"all": [{"fact": "a", "more_than": 100}]},
        {"all": [{"fact": "s", "in": ["x", "y"]}, {"fact": "flag", "is": False}]},
    ]}, "amber"),
], ruleset="nested")


@pytest.mark.parametrize(("facts", "expected"), [
    ({"a": 5, "t": "set"}, set()),
    ({"a": 5}, {"g.nested"}),
    ({"a": 7, "s": "care planning", "t": "set"}, {"g.nested"}),
    ({"a": 12, "s": "care planning", "t": "set"}, set()),
    ({"flag": True, "s": "care planning", "a": 1, "t": "set"}, {"g.nested"}),
    ({"flag": True}, {"g.nested"}),
    ({"flag": False, "s": "y"}, {"g.any-of-alls"}),
    ({"flag": False, "s": "z", "a": 101}, {"g.nested", "g.any-of-alls"}),
    ({"s": "x"}, set()),
    ({}, set()),
])
def test_nested_all_and_any(facts: dict[str, Any], expected: set[str]) -> None:
    """`all` inside `any` inside `all` evaluates as the nesting says."""
    assert fired(NESTED_BOOK, facts) == expected


REF_BOOK = book_of([
    rule("f.at-least", {"fact": "sustained", "at_least": {"fact": "required"}}),
    rule("f.equal", {"fact": "verified", "is": {"fact": "actions"}}),
    rule("f.differ", {"fact": "verified", "not": {"fact": "actions"}}),
    rule("f.less", {"fact": "sustained", "less_than": {"fact": "required"}}),
    rule("f.same-text", {"fact": "group", "is": {"fact": "signer_group"}}),
], ruleset="refs")


@pytest.mark.parametrize(("facts", "expected"), [
    ({"sustained": 90, "required": 90}, {"f.at-least"}),
    ({"sustained": 89, "required": 90}, {"f.less"}),
    ({"sustained": 120, "required": 90}, {"f.at-least"}),
    ({"sustained": -1, "required": 0}, {"f.less"}),
    ({"sustained": 120}, set()),
    ({"required": 90}, set()),
    ({"sustained": 120, "required": None}, set()),
    ({"verified": 4, "actions": 4}, {"f.equal"}),
    ({"verified": 3, "actions": 4}, {"f.differ"}),
    ({"verified": 3}, set()),
    ({"group": "Board", "signer_group": "Board"}, {"f.same-text"}),
    ({"group": "Board", "signer_group": "Quality committee"}, set()),
    ({"group": "Board"}, set()),
])
def test_fact_to_fact_comparisons(facts: dict[str, Any], expected: set[str]) -> None:
    """A fact compared with another fact: a missing fact on either side never holds."""
    assert fired(REF_BOOK, facts) == expected


def test_explanations_say_which_condition_held() -> None:
    """With explanations, each condition of each rule says whether it held on its own."""
    evaluation = RulesEngine(NESTED_BOOK).evaluate("plan", {"a": 12, "s": "care planning",
                                                            "t": "set"}, "rag", explain=True)
    assert evaluation.fired_ids == []
    # leaves in order: a ≥ 5, flag is true, s is "care planning", a < 10, t missing
    assert evaluation.conditions["g.nested"] == [True, False, True, False, False]
    assert evaluation.conditions["g.any-of-alls"] == [False, False, False]


def test_a_new_version_of_a_ruleset_is_not_shadowed_by_the_old() -> None:
    """Two versions of a file with the same ruleset name are registered apart (by content
    hash): each engine judges by its own rules in the same process."""
    old = book_of([rule("v.overdue", {"fact": "x", "at_least": 5})], ruleset="versioned")
    new = book_of([rule("v.overdue", {"fact": "x", "at_least": 10})], ruleset="versioned")
    assert old.files[0].digest != new.files[0].digest
    assert fired(old, {"x": 7}) == {"v.overdue"}
    assert fired(new, {"x": 7}) == set()
    assert fired(old, {"x": 7}) == {"v.overdue"}


def test_the_same_facts_twice_and_facts_no_rule_matches() -> None:
    """Identical facts evaluated again give the same answer (no "already observed" error), and
    facts no rule matches give none (no "not handled" error)."""
    facts = {"sustained": 90, "required": 90}
    assert fired(REF_BOOK, facts) == fired(REF_BOOK, facts) == {"f.at-least"}
    assert fired(REF_BOOK, {"unrelated": 1}) == set()
