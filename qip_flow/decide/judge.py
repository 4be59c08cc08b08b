"""The decide-level facade that the workflow's guards and effects ask: facts and decisions about
the plan being moved, from the rules in force. The services hand a :class:`RulesJudge` to each
event they fire, so ``workflow/`` needs nothing from ``services/`` (imports point down the
picture in DESIGN.md) and every guard judges with the same facts ``qip explain`` shows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlmodel import Session, select

from qip_flow.config.rules import SeparationSettings, SignoffSettings, Vocabulary
from qip_flow.decide import pinned
from qip_flow.decide.decisions import ClosureDecision, CredibilityFinding, Decide
from qip_flow.decide.facts import FactBuilder, criteria_facts, effective_criteria, level_rank
from qip_flow.store.models import Person, Plan


@dataclass
class Verdict:
    """A decision as a guard needs it: does it hold, why not (for the person who must fix
    it), and what to keep in the audit trail."""

    holds: bool
    reasons: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


class Judge(Protocol):
    """What guards and effects may ask of the rules while an event is fired."""

    @property
    def rules_version(self) -> str: ...

    @property
    def separation(self) -> SeparationSettings: ...

    def separation_rule(self, setting: str) -> str: ...

    def criteria(self, plan: Plan) -> dict[str, Any]: ...

    def pin_closure_test(self) -> str | None: ...

    def signoff_settings(self, plan: Plan) -> SignoffSettings: ...

    def closure(self, plan: Plan, signer: Person) -> Verdict: ...

    def step_down(self, plan: Plan) -> Verdict: ...

    def credibility(self, plan: Plan) -> Verdict: ...

    def who_else(self, excluding: Iterable[str], *, first: Iterable[str | None] = (),
                 level: str | None = None, group: str | None = None) -> list[str]: ...


class RulesJudge:
    """The :class:`Judge` over the rules in force, for one moment and one open session."""

    def __init__(self, decide: Decide, vocabulary: Vocabulary, session: Session, now: datetime,
                 builder: FactBuilder | None = None) -> None:
        self.decide, self.vocabulary, self.session, self.now = decide, vocabulary, session, now
        self.builder = builder or FactBuilder(session, now)
        self.builder.spc = decide.book.spc

    @property
    def rules_version(self) -> str:
        return self.decide.version

    @property
    def separation(self) -> SeparationSettings:
        return self.decide.book.separation

    def separation_rule(self, setting: str) -> str:
        return self.decide.book.separation_rule(setting)

    def plan_facts(self, plan: Plan, *, signer: Person | None = None,
                   actions: list[dict[str, Any]] | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A plan's facts under its effective closure criteria, and those criteria."""
        facts = self.builder.plan(plan, signer=signer, actions=actions)
        if (plan.closure_criteria or {}).get("pinned_at"):
            return facts, dict(plan.closure_criteria)
        defaults = self.decide.defaults(facts)
        dropped = self.unusable_default_group(plan, defaults)
        if dropped:
            defaults = {k: v for k, v in defaults.items() if k != "signoff_group"}
            facts["default_signoff_group_dropped"] = dropped
        criteria = effective_criteria(plan, defaults)
        # defaults never name indicators, so only the facts that read the criteria change
        facts.update(criteria_facts(criteria, signer, self.builder.people()))
        return facts, criteria

    def unusable_default_group(self, plan: Plan, defaults: dict[str, Any]) -> str | None:
        """The default sign-off group the rules would give a plan that names none, when the
        closure rules' `signoff.default_group` says it must not (nobody could sign for it, or
        never); None when the default applies or there is none."""
        group = defaults.get("signoff_group")
        own = (plan.closure_criteria or {}).get("signoff") or {}
        if not group or own.get("group"):
            return None
        policy = self.decide.book.signoff.default_group
        if policy == "always":
            return None
        if policy == "never":
            return str(group)
        level = own.get("level") or None
        return str(group) if self.builder.people().count(level, group) == 0 else None

    def criteria(self, plan: Plan) -> dict[str, Any]:
        return self.plan_facts(plan)[1]

    def closure_test(self, plan: Plan) -> Decide:
        """The decisions that judge ``plan``'s closure: its pinned test, else the rules in force."""
        return pinned.closure_test(self.decide, self.vocabulary, self.session, plan)

    def pin_closure_test(self) -> str | None:
        """Keep the closure rules in force (once per version) and return their version."""
        return pinned.pin_current(self.decide.book, self.session, self.now)

    def signoff_settings(self, plan: Plan) -> SignoffSettings:
        """What a sign-off on ``plan`` must record, from its pinned closure test."""
        return self.closure_test(plan).book.signoff

    def closure_decision(self, plan: Plan, signer: Person | None = None, *,
                         facts: dict[str, Any] | None = None) -> ClosureDecision:
        """Decided by the plan's pinned closure test in one run of the rules, explained
        condition by condition only when some criterion is unmet, so a refusal can say exactly
        why. ``facts``: the plan's facts (``plan_facts``) when the caller already holds them."""
        if facts is None:
            facts, _ = self.plan_facts(plan, signer=signer)
        return self.closure_test(plan).closure(facts, explain="if refused")

    def closure(self, plan: Plan, signer: Person, *,
                facts: dict[str, Any] | None = None) -> Verdict:
        decision = self.closure_decision(plan, signer, facts=facts)
        return Verdict(decision.met, [c.describe() for c in decision.unmet],
                       {**decision.as_dict(), "closure_rules_version": plan.closure_rules_version})

    def step_down(self, plan: Plan) -> Verdict:
        facts, _ = self.plan_facts(plan)
        fired = self.decide.monitoring(facts).outcomes("step_down")
        if not fired:
            rules = self.decide.book.for_outcome("plan", "step_down")
            why = "; ".join(r.description for r in rules) or "no step_down rule is defined"
            return Verdict(False, [why])
        cadences = [r.then.params["measure_every_days"] for r in fired
                    if r.then.params.get("measure_every_days")]
        return Verdict(True, record={
            "rules": [r.id for r in fired],
            "monitoring_days": max(r.then.params["monitoring_days"] for r in fired),
            "measure_every_days": min(cadences, default=None),
            "rules_version": self.rules_version})

    def credibility_findings(self, plan: Plan) -> list[CredibilityFinding]:
        actions = self.builder.actions(plan)
        facts, _ = self.plan_facts(plan, actions=actions)
        return self.decide.credibility(facts, actions)

    def credibility(self, plan: Plan) -> Verdict:
        errors = [f for f in self.credibility_findings(plan) if f.severity == "error"]
        return Verdict(not errors, [f"{f.subject_id}: {f.message} [rule {f.rule.id}]"
                                    for f in errors])

    def who_else(self, excluding: Iterable[str], *, first: Iterable[str | None] = (),
                 level: str | None = None, group: str | None = None) -> list[str]:
        """Up to three people, other than ``excluding``, who hold ``level`` (or above) and
        belong to ``group``: the people named in ``first`` before anyone else."""
        out = set(excluding)
        wanted = level_rank(level) if level else None
        people = {p.id: p for p in self.session.exec(select(Person)).all()}
        preferred = [people[i] for i in dict.fromkeys(first) if i in people]
        ranked = sorted(people.values(), key=lambda p: (-(level_rank(p.level) or 0), p.id))
        names: list[str] = []
        for person in [*preferred, *ranked]:
            if person.id in out or person.id.startswith("qip-"):
                continue
            if wanted is not None and (level_rank(person.level) or 0) < wanted:
                continue
            if group and group not in (person.groups or []):
                continue
            out.add(person.id)
            names.append(f"{person.name} ({person.id})")
            if len(names) == 3:
                break
        return names
