"""The one adapter between qip_flow and durable_rules. It respects that engine's limits
(DESIGN.md) and two more found here:

- one host per process, used from one thread at a time, and without the background dispatch
  threads the stock Host starts (they call into the C engine concurrently with the caller);
- facts go into a short-lived session deleted after each evaluation (a ruleset holds ~1024 live
  sessions, then crashes the process); every fact matches a catch-all rule, because deleting
  the session of a fact no rule matched corrupts the heap (see MARKER);
- errors raised inside actions, which the engine swallows into the session state, are raised
  again;
- a ruleset can never be replaced, so each is registered under a name carrying its content
  hash; a rule made only of a "fact is missing" test loops for ever, so it is anchored."""

from __future__ import annotations

import itertools
import json
import threading
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine
from durable import engine as durable

from qip_flow.config.rules import FactRef, Group, Leaf, RuleBook, RuleDef, iter_leaves
from qip_flow.errors import QipError

_HOST_LOCK = threading.Lock()
_SESSION_IDS = itertools.count(1)


class RulesEngineError(QipError):
    """durable_rules failed while evaluating; the decision was not taken."""


class _Host(durable.Host):
    """Actions only record which rule (or which condition of a rule) held."""

    def __init__(self) -> None:
        self.held: list[str] = []
        self.registered: set[str] = set()
        super().__init__()

    def _run(self) -> None:
        """durable_rules' Host starts two timer threads here that call into the C engine every
        0.2 s (for timers and queued messages, which qip_flow never uses) concurrently with the
        caller's thread — a data race that corrupted the heap ("munmap_chunk(): invalid
        pointer") in about one run in ten. We keep every call on the caller's thread."""

    def get_action(self, action_name: str) -> Any:
        if action_name == CATCH_ALL:
            return _ignore
        if not action_name.startswith(("rule:", "leaf:")):
            raise KeyError(action_name)  # refused at registration: nothing else is ours

        def record(_c: Any) -> None:
            self.held.append(action_name)

        return record


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


def _flush_record_only(ruleset: Any, state: Any, result_container: dict[str, Any],
                       state_offset: Any, complete: Any) -> None:
    """durable_rules runs each fired rule's action through a Closure and writes the whole
    session state back as JSON after every action — most of an evaluation's cost. qip_flow's
    actions only record that a rule held and never change the state, so for its own rulesets
    each action is called and the engine asked for the next, nothing more. An action that
    fails is abandoned and raised (never swallowed into the state)."""
    while "message" in result_container:
        action_name = next(iter(result_container.pop("message")))
        try:
            ruleset._actions[action_name]._func(None)
        except BaseException as error:
            durable_rules_engine.abandon_action(ruleset._handle, state_offset)
            complete(RulesEngineError("a rule action failed inside durable_rules: "
                                      f"exception caught {error}"), None)
            return
        following = durable_rules_engine.complete_and_start_action(ruleset._handle,
                                                                   state_offset)
        if following:
            result_container["message"] = json.loads(following)
        else:
            complete(None, state)


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


class RulesEngine:
    """Evaluates a RuleBook's rules on flat facts through durable_rules."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self._names: dict[tuple[str, str, bool], str] = {}
        self._states: dict[str, set[Any] | None] = {}

    def _ruleset_name(self, ruleset: str, subject: str, explain: bool) -> str:
        key = (ruleset, subject, explain)
        name = self._names.get(key)
        if name is not None:
            return name
        rf = next(f for f in self.book.files if f.ruleset == ruleset)
        rules = [r for r in rf.rules if r.subject == subject]
        name = f"{ruleset}_{subject}_{rf.digest}{'_x' if explain else ''}"
        compiled: dict[str, Any] = {"all_facts": {"all": [{"m": {MARKER: 1}}], "run": CATCH_ALL}}
        for i, rule in enumerate(rules):
            compiled[f"r{i}"] = {"all": [{"m": compile_condition(rule.when)}],
                                 "run": f"rule:{rule.id}"}
            if explain:
                for j, leaf in enumerate(iter_leaves(rule.when)):
                    compiled[f"r{i}c{j}"] = {"all": [{"m": compile_condition(leaf)}],
                                             "run": f"leaf:{rule.id}:{j}"}
        h = host()
        if name not in h.registered:
            h.set_rulesets({name: compiled})
            ruleset = h.get_ruleset(name)
            ruleset._flush_actions = types.MethodType(_flush_record_only, ruleset)
            h.registered.add(name)
        self._names[key] = name
        return name

    def _run(self, name: str, facts: dict[str, Any]) -> list[str]:
        h = host()
        sid = f"e{next(_SESSION_IDS)}"
        h.held = []
        try:
            h.assert_fact(name, {**facts, "sid": sid, MARKER: 1})
            state = h.get_state(name, sid)
            if "exception" in state:
                raise RulesEngineError(f"a rule action failed inside durable_rules: "
                                       f"{state['exception']}")
            return list(h.held)
        except RulesEngineError:
            raise
        except Exception as exc:
            raise RulesEngineError(f"durable_rules could not evaluate {name}: {exc}; facts: "
                                   f"{json.dumps(facts, default=str)}") from exc
        finally:
            h.delete_state(name, sid)

    def run_file(self, ruleset: str, subject: str, facts: Mapping[str, Any]) -> list[RuleDef]:
        """The rules of one file about ``subject`` that fire (for `qip rules test`)."""
        flat = clean_facts(facts)
        rf = next(f for f in self.book.files if f.ruleset == ruleset)
        if not any(r.subject == subject for r in rf.rules):
            return []
        with _HOST_LOCK:
            held = self._run(self._ruleset_name(ruleset, subject, False), flat)
        ids = {h.split(":", 1)[1] for h in held}
        return [r for r in rf.rules if r.id in ids]

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

    def evaluate(
        self,
        subject: str,
        facts: Mapping[str, Any],
        *outcomes: str,
        explain: bool = False,
    ) -> Evaluation:
        """Evaluate every rule about ``subject`` whose outcome is one of ``outcomes``."""
        wanted = self.book.for_outcome(subject, *outcomes)
        flat = clean_facts(facts)
        if not explain and not self._possible(wanted, flat):
            return Evaluation(subject, flat, [], self.book.version)
        held: list[str] = []
        with _HOST_LOCK:
            for ruleset in dict.fromkeys(r.ruleset for r in wanted):
                held += self._run(self._ruleset_name(ruleset, subject, explain), flat)
        fired_ids = {h.split(":", 1)[1] for h in held if h.startswith("rule:")}
        evaluation = Evaluation(subject, flat, [r for r in wanted if r.id in fired_ids],
                                self.book.version)
        if explain:
            leaves = {tuple(h.split(":")[1:]) for h in held if h.startswith("leaf:")}
            for rule in wanted:
                count = len(rule.leaves())
                evaluation.conditions[rule.id] = [(rule.id, str(j)) in leaves
                                                  for j in range(count)]
        return evaluation
