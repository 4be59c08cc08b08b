"""Decisions: what the rules say about a plan, each carrying its explanation — the rules that
fired, the criteria unmet with the fact values, and the rules version."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

from qip_flow.config.rules import FactRef, Leaf, RuleBook, RuleDef, fact_values
from qip_flow.decide.engine import Evaluation, RulesEngine
from qip_flow.decide.facts import DONE, tighten
from qip_flow.decide.vocabulary import RATINGS
from qip_flow.decide.words import condition_words, phrase, phrase_facts, reasons_in_words


def _value(v: Any) -> str:
    return "missing" if v is None else json.dumps(v)


@dataclass(frozen=True)
class ConditionResult:
    """One condition of a rule judged: the machine form (the condition as written and the
    facts it read) and the same in words. Read-only, so the same condition judged on the same
    facts can be shared between decisions (``Decide`` keeps them per rules version)."""

    text: str
    holds: bool
    values: Mapping[str, Any]
    words: str = ""

    def describe(self) -> str:
        """In words; the machine form only for a condition recorded without them."""
        if self.words:
            return self.words
        shown = ", ".join(f"{k} = {_value(v)}" for k, v in self.values.items())
        return f"{self.text} ({shown})"


@dataclass(frozen=True)
class ShownCondition:
    """One condition of a rule as an explanation shows it, worked out once per rule: the
    condition as written and the facts its words read (its own, the one it is compared with,
    and those its phrases name)."""

    index: int
    leaf: Leaf
    text: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, subject: str, rule: RuleDef) -> tuple[ShownCondition, ...]:
        shown = []
        for index, leaf in enumerate(rule.leaves()):
            names = [leaf.fact] + ([leaf.value.fact] if isinstance(leaf.value, FactRef)
                                   else []) + phrase_facts(subject, leaf.fact)
            shown.append(cls(index, leaf, leaf.text(), tuple(dict.fromkeys(names))))
        return tuple(shown)


#: Conditions judged, kept per rules version: the same condition on the same facts reads the
#: same (a closure decision has about fifteen conditions; a portfolio repeats them).
SENTENCES = 4096


@dataclass
class CriterionResult:
    rule: RuleDef
    met: bool
    conditions: list[ConditionResult]

    facts: dict[str, Any] = field(default_factory=dict)
    # worked out on first use: a refusal reads them for its reasons and again for its record
    _name: str | None = field(default=None, init=False, repr=False, compare=False)
    _description: str | None = field(default=None, init=False, repr=False, compare=False)
    _why_not: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = str(self.rule.then.params.get("criterion", self.rule.id))
        return self._name

    @property
    def description(self) -> str:
        """The rule's description with its {fact} placeholders filled in."""
        if self._description is None:
            self._description = fill(self.rule.description, self.facts, missing="none")
        return self._description

    @property
    def why_not(self) -> list[str]:
        """Why it does not hold, in words: the rules author's `unmet` sentence, or a sentence
        for each condition that fails (empty when it holds)."""
        if self._why_not is None:
            self._why_not = self._reasons()
        return self._why_not

    def _reasons(self) -> list[str]:
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
                "description": self.description, "why_not": list(self.why_not),
                "conditions": [{"condition": c.text, "holds": c.holds, "facts": dict(c.values),
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


class _Blank:
    """The facts as ``str.format_map`` reads them (not copied): a missing one as ``missing``
    when given, else as its own placeholder."""

    __slots__ = ("facts", "missing")

    def __init__(self, facts: dict[str, Any], missing: str | None) -> None:
        self.facts, self.missing = facts, missing

    def __getitem__(self, key: str) -> Any:
        try:
            return self.facts[key]
        except KeyError:
            return self.missing if self.missing is not None else "{" + key + "}"


def fill_words(template: str, facts: dict[str, Any]) -> str:
    """A rules author's sentence with its {fact} placeholders in words."""
    return phrase(template, facts)


def fill(template: str, facts: dict[str, Any], *, missing: str | None = None) -> str:
    """``"Action {action_id} …"`` with the facts filled in; a missing fact shows as
    ``missing`` when given, else stays as written."""
    if "{" not in template:
        return template
    return template.format_map(_Blank(facts, missing))


def closure_version(book: RuleBook) -> str | None:
    """The version of the closure rules in ``book``: ``closure@<content hash>``."""
    rf = book.closure_file()
    return f"{rf.ruleset}@{rf.digest}" if rf else None


class Decide:
    """The decisions qip_flow takes from the rules files in force."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.engine = RulesEngine(book)
        #: the version of the closure rules this judges by (asked on every decision)
        self.closure_version = closure_version(book)
        self._shown: dict[str, tuple[ShownCondition, ...]] = {}
        self._judged: Callable[..., ConditionResult] = lru_cache(maxsize=SENTENCES, typed=True)(
            self._condition)

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

    def closure(self, facts: dict[str, Any], *,
                explain: bool | Literal["if refused"] = False) -> ClosureDecision:
        """Which closure criteria hold, from one run of the engine. With ``explain``, also
        which condition of each holds, with the fact values and in words — needed to refuse or
        explain, not to decide: ``True`` always, ``"if refused"`` only when a criterion is
        unmet (what a sign-off asks), ``False`` never."""
        if explain not in (True, False, "if refused"):
            raise ValueError(f"explain is True, False or 'if refused', not {explain!r}")
        rules = self.book.for_outcome("plan", "criterion")
        evaluation = self.engine.evaluate("plan", facts, "criterion")
        fired = {r.id for r in evaluation.fired}
        refused = not rules or len(fired) < len(rules)
        if explain is True or (explain == "if refused" and refused):
            self.engine.explain(evaluation, rules)
        criteria = [CriterionResult(rule, rule.id in fired,
                                    self._conditions(rule, evaluation.facts,
                                                     evaluation.conditions.get(rule.id)),
                                    evaluation.facts)
                    for rule in rules]
        return ClosureDecision(str(facts.get("plan_id")), criteria, self.version, evaluation.facts)

    def _conditions(self, rule: RuleDef, facts: dict[str, Any],
                    holds: list[bool] | None) -> list[ConditionResult]:
        """A rule's conditions judged (none when ``holds`` was not asked for)."""
        if holds is None:
            return []
        shown = self._shown.get(rule.id)
        if shown is None:
            shown = self._shown[rule.id] = ShownCondition.of("plan", rule)
        get, judged, rule_id = facts.get, self._judged, rule.id
        try:  # the key is the values themselves, each with its type (1, 1.0 and True differ)
            return [judged(rule_id, c.index, ok, *map(get, c.names))
                    for c, ok in zip(shown, holds, strict=True)]
        except TypeError:  # a value that cannot be a key (a list): judged afresh
            return [self._condition(rule_id, c.index, ok, *map(get, c.names))
                    for c, ok in zip(shown, holds, strict=True)]

    def _condition(self, rule_id: str, index: int, holds: bool, *values: Any) -> ConditionResult:
        """One condition judged on the values of the facts it shows, with its words."""
        condition = self._shown[rule_id][index]
        read = dict(zip(condition.names, values, strict=True))
        return ConditionResult(condition.text, holds, MappingProxyType(read),
                               condition_words("plan", condition.leaf, read, holds))

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
