"""Named guards the workflow files may use. Each takes the subject and the parameters the file
gives it and returns ``None`` when it holds, or the reason it refuses — written for the person
who has to fix it. The docstring of each is published in docs/workflows.md."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from qip_flow.store.models import LEVELS, Action, Finding, Person, Plan
from qip_flow.workflow.subject import Subject, level_rank

Check = Callable[[Subject, dict[str, Any]], str | None]


@dataclass(frozen=True)
class Guard:
    """A named condition and the parameters a workflow file may give it."""

    check: Check
    params: Mapping[str, Collection[Any] | None]
    doc: str

    def __call__(self, subject: Subject, params: dict[str, Any]) -> str | None:
        return self.check(subject, params)


GUARDS: dict[str, dict[str, Guard]] = {"plan": {}, "action": {}}
AUTHORITY = {"level": LEVELS, "group": None}


def guard(kind: str, **params: Collection[Any] | None) -> Callable[[Check], Guard]:
    def register(fn: Check) -> Guard:
        g = Guard(fn, params, fn.__doc__ or "")
        GUARDS[kind][fn.__name__] = g
        return g

    return register


def _plan(s: Subject) -> Plan:
    assert isinstance(s.row, Plan)
    return s.row


def _action(s: Subject) -> Action:
    assert isinstance(s.row, Action)
    return s.row


def plan_actions(s: Subject, plan_id: str) -> list[Action]:
    return list(s.session.exec(select(Action).where(Action.plan_id == plan_id)
                               .order_by(col(Action.id))).all())


@guard("plan")
def has_source(s: Subject, _: dict[str, Any]) -> str | None:
    """The plan names its source (type and reference: which inspection, audit, complaint,
    incident or safeguarding concern)."""
    plan = _plan(s)
    if not plan.source_type or not plan.source_reference.strip():
        return "the plan does not name its source: give source.type and source.reference"
    return None


@guard("plan")
def findings_have_root_causes(s: Subject, _: dict[str, Any]) -> str | None:
    """The plan has findings, and every finding has at least one root cause."""
    findings = s.session.exec(select(Finding).where(Finding.plan_id == s.row.id)).all()
    if not findings:
        return "the plan has no findings: list what the source found"
    missing = [f.ref for f in findings if not [c for c in f.root_causes if c.strip()]]
    if missing:
        return f"findings without a root cause: {', '.join(sorted(missing))}"
    return None


@guard("plan")
def actions_have_owner_and_due(s: Subject, _: dict[str, Any]) -> str | None:
    """The plan has actions, and every action has a named owner and a due date."""
    actions = plan_actions(s, s.row.id)
    if not actions:
        return "the plan has no actions"
    no_owner = [a.ref for a in actions if not a.owner_id]
    no_due = [a.ref for a in actions if not a.due]
    problems = []
    if no_owner:
        problems.append(f"actions without a named owner: {', '.join(no_owner)}")
    if no_due:
        problems.append(f"actions without a due date: {', '.join(no_due)}")
    return "; ".join(problems) or None


@guard("plan")
def has_closure_criteria(s: Subject, _: dict[str, Any]) -> str | None:
    """Closure criteria are set: what success looks like, the indicators, how long they must be
    sustained and who signs off."""
    criteria = _plan(s).closure_criteria or {}
    missing = [k for k in ("success", "indicators", "sustain_days", "signoff")
               if criteria.get(k) in (None, "", [])]
    if missing:
        return f"closure criteria are incomplete: set closure.{', closure.'.join(missing)}"
    return None


@guard("plan")
def all_actions_complete(s: Subject, _: dict[str, Any]) -> str | None:
    """Every action is completed or verified."""
    open_ = [a.ref for a in plan_actions(s, s.row.id) if a.state not in ("completed", "verified")]
    return f"actions not yet complete: {', '.join(open_)}" if open_ else None


@guard("plan")
def all_actions_verified(s: Subject, _: dict[str, Any]) -> str | None:
    """Every action has been verified by someone other than its owner."""
    pending = [a.ref for a in plan_actions(s, s.row.id) if a.state != "verified"]
    return f"actions not yet verified: {', '.join(pending)}" if pending else None


@guard("plan")
def monitoring_period_over(s: Subject, _: dict[str, Any]) -> str | None:
    """A plan in monitoring closes only once its monitoring period has ended."""
    plan = _plan(s)
    if plan.state == "monitoring" and plan.monitoring_until and s.inputs.now < plan.monitoring_until:
        return f"the monitoring period runs until {plan.monitoring_until.date().isoformat()}"
    return None


def authority_problem(person: Person, level: str | None, group: str | None) -> str | None:
    """Why ``person`` may not sign for ``level`` / ``group``, or None when they may."""
    if group and group not in (person.groups or []):
        return f"{person.name} is not a member of the {group}; the {group} must sign off"
    if level and level_rank(person.level) < level_rank(level):
        return f"{person.name} is at {person.level} level; this needs {level} level or above"
    return None


@guard("plan", **AUTHORITY, from_criteria=(True,))
def signoff_authority(s: Subject, params: dict[str, Any]) -> str | None:
    """The person signing has enough authority. Parameters: ``level``
    (operational, manager, senior, board) or ``group``; or ``from_criteria: true`` to use the
    sign-off named in the plan's closure criteria."""
    level, group = params.get("level"), params.get("group")
    if params.get("from_criteria"):
        authority = (_plan(s).closure_criteria or {}).get("signoff") or {}
        level, group = authority.get("level"), authority.get("group")
    return authority_problem(s.inputs.by, level, group)


@guard("action")
def has_evidence(s: Subject, _: dict[str, Any]) -> str | None:
    """The action has evidence: given with this event or attached before."""
    from qip_flow.store.models import Evidence

    if s.inputs.evidence:
        return None
    held = s.session.exec(select(Evidence.id).where(Evidence.action_id == s.row.id)).first()
    return None if held else "completing an action needs evidence: add --evidence 'what|where'"


@guard("action")
def not_the_owner(s: Subject, _: dict[str, Any]) -> str | None:
    """Someone other than the action's owner does this (verifying, approving a new date)."""
    if s.inputs.by.id == _action(s).owner_id:
        return f"{s.inputs.by.name} owns this action; someone else must do this"
    return None


@guard("action", **AUTHORITY)
def approver_level(s: Subject, params: dict[str, Any]) -> str | None:
    """The person approving is at least at ``level`` (default manager)."""
    return authority_problem(s.inputs.by, params.get("level", "manager"), params.get("group"))


@guard("action")
def due_date_changes(s: Subject, _: dict[str, Any]) -> str | None:
    """A revision gives a date different from the current one."""
    if s.inputs.due == _action(s).due:
        return f"the action is already due on {s.inputs.due}; give a different date"
    return None


@guard("plan")
def closure_criteria_met(s: Subject, _: dict[str, Any]) -> str | None:
    """Every closure criterion in the rules holds for this plan, with the person signing now
    (see `qip explain PLAN`)."""
    from qip_flow.services.assess import closure_decision

    decision = closure_decision(s.runtime, s.session, _plan(s), signer=s.inputs.by)
    s.decisions["closure"] = decision.as_dict()
    if decision.met:
        return None
    return "closure criteria not met:" + "".join(f"\n      · {c.describe()}"
                                                 for c in decision.unmet)


@guard("plan")
def step_down_preferred(s: Subject, _: dict[str, Any]) -> str | None:
    """The rules prefer routine monitoring for this plan now (a `step_down` rule fires)."""
    from qip_flow.services.assess import plan_facts

    facts, _criteria = plan_facts(s.runtime, s.session, _plan(s))
    fired = s.runtime.decide.monitoring(facts).outcomes("step_down")
    if not fired:
        rules = s.runtime.rules.for_outcome("plan", "step_down")
        why = "; ".join(r.description for r in rules) or "no step_down rule is defined"
        return f"the rules do not prefer step-down for this plan now ({why})"
    cadences = [r.then.params["measure_every_days"] for r in fired
                if r.then.params.get("measure_every_days")]
    s.decisions["step_down"] = {"rules": [r.id for r in fired],
                                "monitoring_days": max(r.then.params["monitoring_days"]
                                                       for r in fired),
                                "measure_every_days": min(cadences, default=None),
                                "rules_version": s.runtime.rules.version}
    return None


@guard("plan")
def credible(s: Subject, _: dict[str, Any]) -> str | None:
    """No credibility error remains (`qip lint PLAN` lists them)."""
    from qip_flow.services.assess import credibility

    errors = [f for f in credibility(s.runtime, s.session, _plan(s)) if f.severity == "error"]
    if not errors:
        return None
    return "credibility errors (see `qip lint`):" + "".join(
        f"\n      · {f.subject_id}: {f.message} [rule {f.rule.id}]" for f in errors)
