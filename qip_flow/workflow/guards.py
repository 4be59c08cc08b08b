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


def approval_level(s: Subject) -> str | None:
    """The level the plan was approved at: its approval sign-off's, else the level the
    workflow's approval asks for."""
    from qip_flow.store.models import SignOff

    signed = s.session.exec(select(SignOff.level).where(
        SignOff.plan_id == s.row.id, SignOff.purpose == "approval")
        .order_by(col(SignOff.id).desc())).first()
    if signed:
        return signed
    approve = s.definition.signoff_event("approval") if s.definition else None
    levels = [g.params.get("level") for g in (approve.guards if approve else [])
              if g.name == "signoff_authority" and g.params.get("level")]
    return levels[0] if levels else None


@guard("plan")
def variation_authority(s: Subject, _: dict[str, Any]) -> str | None:
    """A variation is signed with the authority the criteria name for closure; one that changes
    the sign-off itself, or adopts the closure rules in force, is signed at the level the plan
    was approved at (so a plan pinned to a group nobody belongs to can still be mended). The
    varied sign-off must name authority someone in the organisation holds."""
    from qip_flow.decide.facts import FactBuilder
    from qip_flow.workflow.effects import ADOPT_RULES

    changes = s.inputs.variation
    current = (_plan(s).closure_criteria or {}).get("signoff") or {}
    if "signoff" in changes or ADOPT_RULES in changes:
        level = approval_level(s)
        problem = authority_problem(s.inputs.by, level, None)
        if problem:
            problem += (f" (a variation of the sign-off or of the closure rules is signed at the "
                        f"level the plan was approved at: {level})")
    else:
        problem = authority_problem(s.inputs.by, current.get("level"), current.get("group"))
    wanted = changes.get("signoff")
    if wanted and FactBuilder(s.session, s.inputs.now).people().count(
            wanted.get("level"), wanted.get("group")) == 0:
        named = " at ".join(str(v) for v in (wanted.get("group"), wanted.get("level") and
                                            f"{wanted['level']} level") if v)
        nobody = (f"nobody in the organisation could sign as {named}: name a group or level "
                  "someone holds")
        problem = f"{problem}; {nobody}" if problem else nobody
    return problem


@guard("action")
def has_evidence(s: Subject, _: dict[str, Any]) -> str | None:
    """The action has evidence: given with this event or attached before."""
    from qip_flow.store.models import Evidence

    if s.inputs.evidence:
        return None
    held = s.session.exec(select(Evidence.id).where(Evidence.action_id == s.row.id)).first()
    return None if held else "completing an action needs evidence: add --evidence 'what|where'"


def _instead(names: list[str]) -> str:
    return f": e.g. {', '.join(names)}" if names else ""


@guard("action")
def not_the_completer(s: Subject, _: dict[str, Any]) -> str | None:
    """Someone other than the person who completed the action verifies it (rules:
    ``separation.completer_cannot_verify``, on unless a rules file switches it off)."""
    action = _action(s)
    completer = action.completed_by_id or action.owner_id
    if not s.judge.separation.completer_cannot_verify or s.inputs.by.id != completer:
        return None
    plan = s.session.get(Plan, action.plan_id)
    assert plan is not None
    others = s.judge.who_else([completer], first=[s.inputs.by.line_manager_id, plan.owner_id,
                                                  plan.sponsor_id])
    return (f"{s.inputs.by.name} completed this action and cannot verify it "
            f"[{s.judge.separation_rule('completer_cannot_verify')}]; someone else must verify "
            f"it{_instead(others)}")


@guard("action")
def not_the_requester(s: Subject, _: dict[str, Any]) -> str | None:
    """Someone other than the person asking for a new due date — the action's owner — approves
    it (rules: ``separation.requester_cannot_approve_due``, on unless switched off)."""
    action = _action(s)
    if not s.judge.separation.requester_cannot_approve_due or s.inputs.by.id != action.owner_id:
        return None
    plan = s.session.get(Plan, action.plan_id)
    assert plan is not None
    others = s.judge.who_else([s.inputs.by.id], level="manager",
                              first=[s.inputs.by.line_manager_id, plan.owner_id, plan.sponsor_id])
    return (f"{s.inputs.by.name} owns this action, so asks for its new date, and cannot approve "
            f"it [{s.judge.separation_rule('requester_cannot_approve_due')}]; a manager or above "
            f"who is not {s.inputs.by.name} must approve it{_instead(others)}")


@guard("plan")
def not_the_accountable_owner(s: Subject, _: dict[str, Any]) -> str | None:
    """The plan's accountable owner does not sign off alone the purposes the rules name
    (``separation.accountable_owner_cannot_sign``; closure and step-down unless changed):
    someone else with the authority the closure criteria name must sign."""
    plan, purpose = _plan(s), s.inputs.signoff.purpose if s.inputs.signoff else None
    if purpose not in s.judge.separation.accountable_owner_cannot_sign \
            or s.inputs.by.id != plan.owner_id:
        return None
    authority = s.judge.criteria(plan).get("signoff") or {}
    others = s.judge.who_else([plan.owner_id], first=[plan.sponsor_id],
                              level=authority.get("level"), group=authority.get("group"))
    return (f"{s.inputs.by.name} is the plan's accountable owner and cannot sign its "
            f"{purpose.replace('_', ' ')} alone "
            f"[{s.judge.separation_rule('accountable_owner_cannot_sign')}]; someone else with "
            f"the authority must sign{_instead(others)}")


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
    """Every closure criterion of the plan's pinned closure test holds for this plan, with the
    person signing now (see `qip explain PLAN`)."""
    verdict = s.judge.closure(_plan(s), s.inputs.by)
    s.decisions["closure"] = verdict.record
    if verdict.holds:
        return None
    return "closure criteria not met:" + "".join(f"\n      · {r}" for r in verdict.reasons)


@guard("plan")
def signoff_record_complete(s: Subject, _: dict[str, Any]) -> str | None:
    """The sign-off records every part the plan's closure rules ask of this purpose
    (`signoff.record`: a meeting reference, the evidence reviewed chosen from the plan's
    evidence, residual risks with how each is monitored or "no residual risk", where learning
    is embedded); every missing part is named at once."""
    from qip_flow.config.rules import SIGNOFF_PARTS

    record = s.inputs.signoff
    if record is None:
        return None
    parts = s.judge.signoff_settings(_plan(s)).record.get(record.purpose, [])
    missing = record.missing(list(parts))
    if not missing:
        return None
    return (f"the {record.purpose.replace('_', '-')} sign-off record is incomplete; it needs:"
            + "".join(f"\n      · {SIGNOFF_PARTS[part]}" for part in missing))


@guard("plan")
def step_down_preferred(s: Subject, _: dict[str, Any]) -> str | None:
    """The rules prefer routine monitoring for this plan now (a `step_down` rule fires)."""
    verdict = s.judge.step_down(_plan(s))
    if not verdict.holds:
        return f"the rules do not prefer step-down for this plan now ({'; '.join(verdict.reasons)})"
    s.decisions["step_down"] = verdict.record
    return None


@guard("plan")
def credible(s: Subject, _: dict[str, Any]) -> str | None:
    """No credibility error remains (`qip lint PLAN` lists them)."""
    verdict = s.judge.credibility(_plan(s))
    if verdict.holds:
        return None
    return "credibility errors (see `qip lint`):" + "".join(f"\n      · {r}"
                                                            for r in verdict.reasons)
