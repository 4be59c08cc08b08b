"""The one adapter between qip_flow and durable_rules. It respects that engine's limits
(DESIGN.md) and two more found here:

- one host per process, used from one thread at a time, and without the background dispatch
  threads the stock Host starts (they call into the C engine concurrently with the caller);
- facts go into a short-lived session deleted after each evaluation (a ruleset holds ~1024 live
  sessions, then crashes the process); every fact matches a catch-all rule, because deleting
  the session of a fact no rule matched corrupts the heap (see MARKER);
- no rule action is ever called (the engine swallows an action's error into the session
  state, and writes that state back as JSON after every action): which rules fired is read
  from the engine's own answers, one C call per fired rule;
- a ruleset can never be replaced, so each is registered under a name carrying its content
  hash; a rule made only of a "fact is missing" test loops for ever, so it is anchored.

An explanation (which condition of each rule held) comes from the same single run: the
conditions are read in Python from the facts and checked against the rules the engine fired;
only if they disagree are they judged again by the engine, one rule per condition."""

from __future__ import annotations

import itertools
import json
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine
from durable import engine as durable

from qip_flow.config.rules import FactRef, Group, Leaf, RuleBook, RuleDef, iter_leaves
from qip_flow.errors import QipError

_HOST_LOCK = threading.Lock()
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # as durable's own Ruleset.assert_fact
_SESSION_IDS = itertools.count(1)


class RulesEngineError(QipError):
    """durable_rules failed while evaluating; the decision was not taken."""


class _Host(durable.Host):
    """Registers qip_flow's rulesets; their actions are never called (``RulesEngine._run``
    reads which rule fired from the engine's own answer), so each one only names itself."""

    def __init__(self) -> None:
        self.registered: set[str] = set()
        super().__init__()

    def _run(self) -> None:
        """durable_rules' Host starts two timer threads here that call into the C engine every
        0.2 s (for timers and queued messages, which qip_flow never uses) concurrently with the
        caller's thread — a data race that corrupted the heap ("munmap_chunk(): invalid
        pointer") in about one run in ten. We keep every call on the caller's thread."""

    def get_action(self, action_name: str) -> Any:
        if action_name != CATCH_ALL and not action_name.startswith(("rule:", "leaf:")):
            raise KeyError(action_name)  # refused at registration: nothing else is ours
        return _ignore


_HOST: _Host | None = None

#: Every fact carries this marker and every compiled ruleset has a rule matching it, so no fact
#: is ever "not handled": deleting the session of an unhandled fact corrupts durable_rules' heap
#: (double free, seen in one evaluation in a few hundred).
MARKER = "qip_fact"
CATCH_ALL = "catch-all"


def _ignore(_c: Any) -> None:
    return None


def host() -> _Host:
    global _HOST
    if _HOST is None:
        _HOST = _Host()
    return _HOST


def _operand(value: Any) -> Any:
    return {"$m": value.fact} if isinstance(value, FactRef) else value


def compile_condition(cond: Leaf | Group) -> dict[str, Any]:
    """A rule condition as a durable_rules expression. A comparison on a missing fact never
    holds (only ``exists: false`` matches a missing fact)."""
    if isinstance(cond, Group):
        parts = [compile_condition(c) for c in cond.items]
        return parts[0] if len(parts) == 1 else {"$and" if cond.kind == "all" else "$or": parts}
    fact, op, value = cond.fact, cond.op, cond.value
    if op == "exists":
        # A rule made only of `$nex` makes durable_rules re-run its action for ever; anchoring it
        # on the marker every fact carries keeps the meaning and ends the loop.
        return {"$ex": {fact: 1}} if value else {"$and": [{MARKER: 1}, {"$nex": {fact: 1}}]}
    present = [{"$ex": {fact: 1}}]
    if isinstance(value, FactRef):
        present.append({"$ex": {value.fact: 1}})
    symbol = {"at_least": "$gte", "at_most": "$lte", "more_than": "$gt", "less_than": "$lt",
              "not": "$neq"}
    if op == "is":
        test: dict[str, Any] = {fact: _operand(value)}
    elif op in symbol:
        test = {symbol[op]: {fact: _operand(value)}}
    elif op == "in":
        test = {"$or": [{fact: v} for v in value]} if len(value) > 1 else {fact: value[0]}
    else:  # not_in
        test = {"$and": [{"$neq": {fact: v}} for v in value]}
    return {"$and": [*present, test]}


def _required_states(rule: RuleDef) -> set[Any] | None:
    """The states a rule's top-level `all` (or single condition) insists on, if it does."""
    cond = rule.when
    leaves = [cond] if isinstance(cond, Leaf) else (cond.items if cond.kind == "all" else [])
    for leaf in leaves:
        if isinstance(leaf, Leaf) and leaf.fact == "state" and not isinstance(leaf.value, FactRef):
            if leaf.op == "is":
                return {leaf.value}
            if leaf.op == "in":
                return set(leaf.value)
    return None


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "is": operator.eq, "not": operator.ne, "at_least": operator.ge, "at_most": operator.le,
    "more_than": operator.gt, "less_than": operator.lt}

FactTest = Callable[[Mapping[str, Any]], bool]


def _leaf_test(leaf: Leaf) -> FactTest:
    """One condition read in Python with the meaning compile_condition gives the engine: a
    comparison with a missing fact (or a missing fact compared with) never holds."""
    fact, op, value = leaf.fact, leaf.op, leaf.value
    if op == "exists":
        known = bool(value)
        return lambda f: (f.get(fact) is not None) is known
    if op in ("in", "not_in"):
        options, inside = tuple(value), op == "in"
        return lambda f: f.get(fact) is not None and (f.get(fact) in options) is inside
    compare = _COMPARE[op]
    if isinstance(value, FactRef):
        other = value.fact

        def against_fact(f: Mapping[str, Any]) -> bool:
            mine, theirs = f.get(fact), f.get(other)
            return mine is not None and theirs is not None and bool(compare(mine, theirs))

        return against_fact
    return lambda f: f.get(fact) is not None and bool(compare(f.get(fact), value))


Joined = Callable[[Sequence[bool]], bool]


def _join(cond: Leaf | Group, tests: list[FactTest]) -> Joined:
    """``cond``'s verdict from its conditions' results (appending its conditions' tests to
    ``tests`` in the order of ``iter_leaves``)."""
    if isinstance(cond, Leaf):
        tests.append(_leaf_test(cond))
        return operator.itemgetter(len(tests) - 1)
    parts = [_join(c, tests) for c in cond.items]
    if cond.kind == "all":
        return lambda results: all([part(results) for part in parts])
    return lambda results: any([part(results) for part in parts])


@dataclass(frozen=True)
class Reading:
    """A rule's conditions as Python tests, in the order of ``rule.leaves()``, and the
    all/any that joins their results: made once per rule."""

    tests: tuple[FactTest, ...]
    holds: Joined

    @classmethod
    def of(cls, rule: RuleDef) -> Reading:
        tests: list[FactTest] = []
        holds = _join(rule.when, tests)
        return cls(tuple(tests), holds)

    def leaves(self, facts: Mapping[str, Any]) -> list[bool]:
        return [test(facts) for test in self.tests]


@dataclass
class Evaluation:
    """What the rules said about one subject: which rules fired, and (when asked) which
    conditions of each rule held."""

    subject: str
    facts: dict[str, Any]
    fired: list[RuleDef]
    version: str
    conditions: dict[str, list[bool]] = field(default_factory=dict)

    def outcomes(self, name: str) -> list[RuleDef]:
        return [r for r in self.fired if r.then.outcome == name]

    @property
    def fired_ids(self) -> list[str]:
        return [r.id for r in self.fired]


def clean_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Missing is missing: ``None`` values are left out, as the rules expect."""
    return {k: v for k, v in facts.items() if v is not None}


def _fired_rule(message: str) -> str:
    """The rule an action message of durable_rules names: its first key
    (``{"r0":{"m":{…}}}``), read without parsing the fact that follows it."""
    if message.startswith('{"'):
        end = message.find('"', 2)
        if end > 2:
            return message[2:end]
    return str(next(iter(json.loads(message))))


#: What a compiled rule stands for: ("rule", rule id) or ("leaf", rule id, condition index);
#: None for the catch-all.
Label = tuple[str, ...] | None


class RulesEngine:
    """Evaluates a RuleBook's rules on flat facts through durable_rules."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self._names: dict[tuple[str, str, bool], str] = {}
        self._compiled: dict[str, tuple[Any, dict[str, Label]]] = {}
        self._states: dict[str, set[Any] | None] = {}
        self._readings: dict[str, Reading] = {}
        self._selected: dict[tuple[str, tuple[str, ...]], tuple[list[RuleDef], list[str]]] = {}
        #: explanations the Python reading could not give (it disagreed with the engine)
        self.fallbacks = 0

    def _ruleset_name(self, ruleset: str, subject: str, explain: bool) -> str:
        key = (ruleset, subject, explain)
        name = self._names.get(key)
        if name is not None:
            return name
        rf = next(f for f in self.book.files if f.ruleset == ruleset)
        rules = [r for r in rf.rules if r.subject == subject]
        name = f"{ruleset}_{subject}_{rf.digest}{'_x' if explain else ''}"
        compiled: dict[str, Any] = {"all_facts": {"all": [{"m": {MARKER: 1}}], "run": CATCH_ALL}}
        labels: dict[str, Label] = {"all_facts": None}
        for i, rule in enumerate(rules):
            compiled[f"r{i}"] = {"all": [{"m": compile_condition(rule.when)}],
                                 "run": f"rule:{rule.id}"}
            labels[f"r{i}"] = ("rule", rule.id)
            if explain:
                for j, leaf in enumerate(iter_leaves(rule.when)):
                    compiled[f"r{i}c{j}"] = {"all": [{"m": compile_condition(leaf)}],
                                             "run": f"leaf:{rule.id}:{j}"}
                    labels[f"r{i}c{j}"] = ("leaf", rule.id, str(j))
        h = host()
        if name not in h.registered:
            h.set_rulesets({name: compiled})
            h.registered.add(name)
        self._compiled[name] = (h.get_ruleset(name)._handle, labels)
        self._names[key] = name
        return name

    def _run(self, name: str, facts: dict[str, Any]) -> set[Label]:
        """Assert ``facts`` in a session of their own, collect what fired, delete the session.
        The engine is driven directly: each fired rule's action is only its name, so there is
        no action to call and no session state to write back after it."""
        handle, labels = self._compiled[name]
        sid = f"e{next(_SESSION_IDS)}"
        try:
            fact = _ENCODE({**facts, "sid": sid, MARKER: 1})
        except (TypeError, ValueError) as exc:
            raise RulesEngineError(f"facts for {name} are not plain values: {exc}") from exc
        held: set[Label] = set()
        try:
            code, state = durable_rules_engine.assert_fact(handle, fact)
        except Exception as exc:
            raise RulesEngineError(f"durable_rules could not evaluate {name}: {exc}; facts: "
                                   f"{fact}") from exc
        try:  # the session exists from here on, whatever happens: delete it
            if code in (1, 2):  # not handled / already observed: never for a marked fact
                raise RulesEngineError(f"durable_rules refused the facts for {name} (code "
                                       f"{code}); facts: {fact}")
            started = durable_rules_engine.start_action_for_state(handle, 0 if code == 3 else state)
            message = started[1] if started else None
            while message:
                held.add(labels[_fired_rule(message)])
                message = durable_rules_engine.complete_and_start_action(handle, state)
            return held
        except RulesEngineError:
            raise
        except Exception as exc:
            raise RulesEngineError(f"durable_rules could not evaluate {name}: {exc}; facts: "
                                   f"{fact}") from exc
        finally:
            durable_rules_engine.delete_state(handle, sid)

    def _held(self, subject: str, facts: dict[str, Any], rulesets: Sequence[str],
              explain: bool) -> set[Label]:
        held: set[Label] = set()
        with _HOST_LOCK:
            for ruleset in rulesets:
                held |= self._run(self._ruleset_name(ruleset, subject, explain), facts)
        return held

    def run_file(self, ruleset: str, subject: str, facts: Mapping[str, Any]) -> list[RuleDef]:
        """The rules of one file about ``subject`` that fire (for `qip rules test`)."""
        flat = clean_facts(facts)
        rf = next(f for f in self.book.files if f.ruleset == ruleset)
        if not any(r.subject == subject for r in rf.rules):
            return []
        held = self._held(subject, flat, [ruleset], False)
        return [r for r in rf.rules if ("rule", r.id) in held]

    def _possible(self, rules: list[RuleDef], facts: Mapping[str, Any]) -> bool:
        """False when no rule could fire: each one requires, at its top level, a `state` the
        facts do not have. Read from the rules themselves, so it can never disagree with them;
        it spares the engine the completed actions of a large portfolio."""
        state = facts.get("state")
        if state is None:
            return True
        for rule in rules:
            if rule.id not in self._states:
                self._states[rule.id] = _required_states(rule)
            required = self._states[rule.id]
            if required is None or state in required:
                return True
        return False

    def _wanted(self, subject: str, outcomes: tuple[str, ...]) -> tuple[list[RuleDef], list[str]]:
        """The rules about ``subject`` with one of ``outcomes``, and the rulesets holding them."""
        key = (subject, outcomes)
        if key not in self._selected:
            wanted = self.book.for_outcome(subject, *outcomes)
            self._selected[key] = (wanted, list(dict.fromkeys(r.ruleset for r in wanted)))
        return self._selected[key]

    def evaluate(
        self,
        subject: str,
        facts: Mapping[str, Any],
        *outcomes: str,
        explain: bool = False,
    ) -> Evaluation:
        """Evaluate every rule about ``subject`` whose outcome is one of ``outcomes``; with
        ``explain``, also which of each rule's conditions held (see :meth:`explain`)."""
        wanted, rulesets = self._wanted(subject, outcomes)
        flat = clean_facts(facts)
        evaluation = Evaluation(subject, flat, [], self.book.version)
        if self._possible(wanted, flat):
            held = self._held(subject, flat, rulesets, False)
            evaluation.fired = [r for r in wanted if ("rule", r.id) in held]
        if explain:
            self.explain(evaluation, wanted)
        return evaluation

    def reading(self, rule: RuleDef) -> Reading:
        """``rule``'s conditions as Python tests (made once)."""
        found = self._readings.get(rule.id)
        if found is None:
            found = self._readings[rule.id] = Reading.of(rule)
        return found

    def explain(self, evaluation: Evaluation, rules: Sequence[RuleDef]) -> None:
        """Which condition of each of ``rules`` held, into ``evaluation.conditions``, without
        running the engine again: read in Python from the facts and accepted only if, joined
        by each rule's all/any, they give exactly the rules the engine fired. Otherwise (a
        value Python compares differently) the engine judges every condition itself."""
        fired = {r.id for r in evaluation.fired}
        read: dict[str, list[bool]] | None = {}
        try:
            for rule in rules:
                reading = self.reading(rule)
                results = reading.leaves(evaluation.facts)
                if reading.holds(results) != (rule.id in fired):
                    read = None
                    break
                read[rule.id] = results  # type: ignore[index]
        except TypeError:  # e.g. text compared with a number: the engine's reading counts
            read = None
        if read is None:
            self.fallbacks += 1
            read = self.judge_conditions(evaluation.subject, evaluation.facts, rules)
        evaluation.conditions.update(read)

    def judge_conditions(self, subject: str, facts: Mapping[str, Any],
                         rules: Sequence[RuleDef]) -> dict[str, list[bool]]:
        """Which condition of each of ``rules`` held, judged by the engine itself: every
        condition compiled as a rule of its own (one more rule per condition)."""
        rulesets = list(dict.fromkeys(r.ruleset for r in rules))
        held = self._held(subject, clean_facts(facts), rulesets, True)
        return {r.id: [("leaf", r.id, str(j)) in held for j in range(len(r.leaves()))]
                for r in rules}
