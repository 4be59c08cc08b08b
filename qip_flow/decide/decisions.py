"""Decisions: what the rules say about a plan, each carrying its explanation — the rules that
fired, the criteria unmet with the fact values, and the rules version."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qip_flow.config.rules import FactRef, RuleBook, RuleDef, fact_values
from qip_flow.decide.engine import Evaluation, RulesEngine
from qip_flow.decide.facts import DONE, tighten
from qip_flow.decide.vocabulary import RATINGS
from qip_flow.decide.words import condition_words, phrase, phrase_facts, reasons_in_words


def _value(v: Any) -> str:
    return "missing" if v is None else json.dumps(v)


@dataclass
class ConditionResult:
    """One condition of a rule judged: the machine form (the condition as written and the
    facts it read) and the same in words."""

    text: str
    holds: bool
    values: dict[str, Any]
    words: str = ""

    def describe(self) -> str:
        """In words; the machine form only for a condition recorded without them."""
        if self.words:
            return self.words
        shown = ", ".join(f"{k} = {_value(v)}" for k, v in self.values.items())
        return f"{self.text} ({shown})"


@dataclass
class CriterionResult:
    rule: RuleDef
    met: bool
    conditions: list[ConditionResult]

    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.rule.then.params.get("criterion", self.rule.id))

    @property
    def description(self) -> str:
        """The rule's description with its {fact} placeholders filled in."""
        return fill(self.rule.description, self.facts, missing="none")

    @property
    def why_not(self) -> list[str]:
        """Why it does not hold, in words: the rules author's `unmet` sentence, or a sentence
        for each condition that fails (empty when it holds)."""
        if self.met:
            return []
        if self.rule.unmet:
            return [fill_words(self.rule.unmet, self.facts)]
        out: list[str] = []
        for c in self.conditions:
            if not c.holds and c.describe() not in out:
                out.append(c.describe())
        return out

    def describe(self) -> str:
        failing = self.why_not
        because = f": {'; '.join(failing)}" if failing else ""
        return f"{self.name} — {self.description.rstrip('.')}{because} [rule {self.rule.id}]"

    def as_dict(self) -> dict[str, Any]:
        return {"criterion": self.name, "met": self.met, "rule": self.rule.id,
                "description": self.description, "why_not": self.why_not,
                "conditions": [{"condition": c.text, "holds": c.holds, "facts": c.values,
                                "words": c.words}
                               for c in self.conditions]}


@dataclass
class ClosureDecision:
    plan_id: str
    criteria: list[CriterionResult]
    version: str
    facts: dict[str, Any]

    @property
    def met(self) -> bool:
        return bool(self.criteria) and all(c.met for c in self.criteria)

    @property
    def unmet(self) -> list[CriterionResult]:
        return [c for c in self.criteria if not c.met]

    def as_dict(self) -> dict[str, Any]:
        return {"plan": self.plan_id, "all_met": self.met, "rules_version": self.version,
                "criteria": [c.as_dict() for c in self.criteria]}


@dataclass
class RagDecision:
    rating: str
    because: list[RuleDef]
    version: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if not self.because:
            return "no red or amber rule applies"
        return "; ".join(r.description for r in self.because)

    def as_dict(self) -> dict[str, Any]:
        used: dict[str, Any] = {}
        for rule in self.because:
            used.update(fact_values(self.facts, rule.leaves()))
        return {"rating": self.rating, "rules": [r.id for r in self.because],
                "reason": self.reason, "facts": used, "rules_version": self.version,
                "words": [w for rule in self.because
                          for w in reasons_in_words(rule, self.facts)]}


@dataclass
class CredibilityFinding:
    rule: RuleDef
    severity: str
    message: str
    subject_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "about": self.subject_id, "message": self.message,
                "rule": self.rule.id}


@dataclass
class NotifyDecision:
    """A rule asked for a message about a plan or an action."""

    rule: RuleDef
    subject: str
    entity_id: str
    to: str
    kind: str
    occurrence: str
    headline: str
    group: str | None
    facts: dict[str, Any]
    ask: str = ""  # what the reader is asked to decide or do (escalations)
    digestible: bool = False  # may wait for the reader's weekly digest


class _Blank(dict[str, Any]):
    missing: str | None = None

    def __missing__(self, key: str) -> str:
        return self.missing if self.missing is not None else "{" + key + "}"


def fill_words(template: str, facts: dict[str, Any]) -> str:
    """A rules author's sentence with its {fact} placeholders in words."""
    return phrase(template, facts)


def fill(template: str, facts: dict[str, Any], *, missing: str | None = None) -> str:
    """``"Action {action_id} …"`` with the facts filled in; a missing fact shows as
    ``missing`` when given, else stays as written."""
    values = _Blank(facts)
    values.missing = missing
    return string.Formatter().vformat(template, (), values)


class Decide:
    """The decisions qip_flow takes from the rules files in force."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.engine = RulesEngine(book)

    @property
    def version(self) -> str:
        return self.book.version

    def defaults(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Default closure criteria for a plan, the strictest of every matching rule."""
        merged: dict[str, Any] = {}
        for rule in self.engine.evaluate("plan", facts, "closure_defaults").fired:
            merged = tighten(rule.then.params, _as_criteria(merged))
            merged = _as_defaults(merged)
        return merged

    def closure(self, facts: dict[str, Any], *, explain: bool = False) -> ClosureDecision:
        """Which closure criteria hold. With ``explain``, also which condition of each holds,
        with the fact values — needed to refuse or explain, not to decide, so it is asked for
        only then (it costs the engine one more rule per condition)."""
        evaluation = self.engine.evaluate("plan", facts, "criterion", explain=explain)
        fired = {r.id for r in evaluation.fired}
        criteria = []
        for rule in self.book.for_outcome("plan", "criterion"):
            holds = evaluation.conditions.get(rule.id) if explain else None
            conditions = []
            for leaf, ok in zip(rule.leaves(), holds or [], strict=holds is not None):
                names = [leaf.fact] + ([leaf.value.fact] if isinstance(leaf.value, FactRef)
                                       else []) + phrase_facts("plan", leaf.fact)
                conditions.append(ConditionResult(
                    leaf.text(), ok, {n: evaluation.facts.get(n) for n in dict.fromkeys(names)},
                    condition_words("plan", leaf, evaluation.facts, ok)))
            criteria.append(CriterionResult(rule, rule.id in fired, conditions,
                                            evaluation.facts))
        return ClosureDecision(str(facts.get("plan_id")), criteria, self.version, evaluation.facts)

    def rag(self, facts: dict[str, Any]) -> RagDecision:
        fired = self.engine.evaluate("plan", facts, "rag").fired
        if not fired:
            return RagDecision("green", [], self.version, facts)
        worst = max(RATINGS.index(r.then.params["rating"]) for r in fired)
        because = [r for r in fired if RATINGS.index(r.then.params["rating"]) == worst]
        return RagDecision(RATINGS[worst], because, self.version, facts)

    def monitoring(self, facts: dict[str, Any]) -> Evaluation:
        """Step-down preference and reopening."""
        return self.engine.evaluate("plan", facts, "step_down", "reopen")

    def _fired_on_plan_and_actions(
        self, outcome: str, plan_facts: dict[str, Any], actions: list[dict[str, Any]]
    ) -> Iterator[tuple[str, str, dict[str, Any], RuleDef]]:
        """(subject, entity id, facts, rule) for each rule with ``outcome`` that fires on the
        plan or on one of its actions."""
        subjects = [("plan", str(plan_facts.get("plan_id")), plan_facts)]
        subjects += [("action", str(a.get("action_id")), self.ladder_facts(a)) for a in actions]
        for subject, entity_id, facts in subjects:
            for rule in self.engine.evaluate(subject, facts, outcome).fired:
                yield subject, entity_id, facts, rule

    def ladder_facts(self, action: dict[str, Any]) -> dict[str, Any]:
        """An action's facts with those the ladder settings define (``at_risk``)."""
        if "at_risk" in action:
            return action
        return {**action, "at_risk": at_risk(action, self.book.ladder.at_risk_working_days)}

    def notifications(self, plan_facts: dict[str, Any],
                      actions: list[dict[str, Any]]) -> list[NotifyDecision]:
        """Reminders and escalations the rules ask for now."""
        out: list[NotifyDecision] = []
        for subject, entity_id, facts, rule in self._fired_on_plan_and_actions(
                "notify", plan_facts, actions):
            p = rule.then.params
            out.append(NotifyDecision(
                rule, subject, entity_id, p["to"], p["kind"], fill(p["occurrence"], facts),
                fill(p.get("headline") or rule.description, facts), p.get("group"), facts,
                ask=str(p.get("ask") or ""), digestible=bool(p.get("digestible"))))
        return out

    def credibility(self, plan_facts: dict[str, Any],
                    actions: list[dict[str, Any]]) -> list[CredibilityFinding]:
        found = [CredibilityFinding(rule, rule.then.params["severity"],
                                    fill(rule.then.params["message"], facts), entity_id)
                 for _, entity_id, facts, rule in self._fired_on_plan_and_actions(
                     "credibility", plan_facts, actions)]
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(found, key=lambda f: (order[f.severity], f.subject_id))


def at_risk(action: dict[str, Any], window: int) -> bool:
    """Open, with a due date, and overdue or due within ``window`` working days."""
    to_due = action.get("working_days_to_due")
    return action.get("state") not in DONE and to_due is not None and to_due <= window


def _as_criteria(defaults: dict[str, Any]) -> dict[str, Any]:
    """closure_defaults parameters → criteria shape (signoff as a mapping)."""
    out = {k: v for k, v in defaults.items() if not k.startswith("signoff_")}
    signoff = {k.removeprefix("signoff_"): v for k, v in defaults.items()
               if k.startswith("signoff_")}
    if signoff:
        out["signoff"] = signoff
    return out


def _as_defaults(criteria: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in criteria.items() if k != "signoff"}
    for k, v in (criteria.get("signoff") or {}).items():
        out[f"signoff_{k}"] = v
    return out
