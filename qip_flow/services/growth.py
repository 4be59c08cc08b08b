"""Plans that grow: a plan reopened (or still being delivered) because more must be done is
given new actions — by ``qip add-action`` or by loading its file again with the new actions
(and the findings they answer) added. What was approved stays as approved: each part of a
plan file is kept as a digest, so a reload may add parts but never change or drop one."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from qip_flow.config.formats import ActionSpec, FindingSpec, PlanFile
from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.store import audit
from qip_flow.store.models import Action, Finding, Person, Plan, Risk
from qip_flow.workflow.subject import EventInputs

ADD_EVENT = "add_action"
PARTS = ("findings", "actions", "indicators")


def digest(part: BaseModel) -> str:
    """A part of a plan file as it was approved (field order, not the YAML's, decides)."""
    text = json.dumps(part.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def part_digests(spec: PlanFile) -> dict[str, str]:
    """``plan`` (its own fields and closure criteria), and one per finding, action and
    indicator (``actions/A1``)."""
    core = PlanFile.model_validate({**spec.model_dump(), **{k: [] for k in PARTS}})
    out = {"plan": digest(core)}
    for key in PARTS:
        for item in getattr(spec, key):
            out[f"{key}/{item.id}"] = digest(item)
    return out


def add_parts(rt: Runtime, session: Session, plan: Plan, findings: Sequence[FindingSpec],
              actions: Sequence[ActionSpec], *, by: Person, now: datetime, how: str
              ) -> list[Action]:
    """Add findings and actions to a plan past its draft, in the caller's transaction: the
    plan workflow's ``add_action`` event says in which states (and is the audit event); each
    action starts in the action workflow's first state with its own clock."""
    from qip_flow.services.assess import reassess
    from qip_flow.services.lifecycle import fire_in_session

    taken = set(session.exec(select(Action.ref).where(Action.plan_id == plan.id)).all())
    taken |= set(session.exec(select(Finding.ref).where(Finding.plan_id == plan.id)).all())
    clash = [p.id for p in [*findings, *actions] if p.id in taken]
    if clash:
        raise InvalidInput(f"plan {plan.id} already has {', '.join(clash)}: give new ids")
    names = ", ".join(a.id for a in actions) or ", ".join(f.id for f in findings)
    fire_in_session(rt, session, plan.id, ADD_EVENT, EventInputs(
        by=by, now=now, note=f"{names} added ({how})"), reassess_after=False)
    digests = dict(plan.part_digests or {})
    for f in findings:
        session.add(Finding(id=f"{plan.id}/{f.id}", plan_id=plan.id, ref=f.id,
                            description=f.description, source_reference=f.source_reference,
                            root_causes=list(f.root_causes)))
        digests[f"findings/{f.id}"] = digest(f)
    session.flush()
    initial = rt.workflows.initial("action")
    rows = []
    for a in actions:
        row = Action(id=f"{plan.id}/{a.id}", plan_id=plan.id, ref=a.id,
                     description=a.description,
                     finding_id=f"{plan.id}/{a.finding}" if a.finding else None,
                     owner_id=a.owner, baseline_due=a.due, due=a.due, systemic=a.systemic,
                     risk_ids=list(a.risks), state=initial, created_at=now, last_update_at=now)
        session.add(row)
        digests[f"actions/{a.id}"] = digest(a)
        audit.append(session, at=now, actor=by.id, entity_type="action", entity_id=row.id,
                     what="action added", to_state=initial,
                     detail={**a.model_dump(mode="json"), "how": how})
        rows.append(row)
    plan.part_digests = digests
    plan.updated_at = now
    session.flush()
    reassess(rt, session, plan)
    return rows


def next_action_id(session: Session, plan_id: str) -> str:
    """``A<n+1>`` after the highest ``A<n>`` the plan has."""
    refs = session.exec(select(Action.ref).where(Action.plan_id == plan_id)).all()
    numbers = [int(m.group(1)) for r in refs if (m := re.fullmatch(r"A(\d+)", r))]
    return f"A{max(numbers, default=0) + 1}"


def add_action(rt: Runtime, plan_id: str, *, by: str, title: str, owner: str, due: date,
               finding: str, risks: Sequence[str] = (), systemic: bool = False,
               action_id: str | None = None) -> Action:
    """``qip add-action``: one new action on a plan, answering one of its findings."""
    from qip_flow.services.lifecycle import get_person, get_plan

    now = rt.clock.now()
    with rt.db.write() as session:
        plan = get_plan(session, plan_id)
        person = get_person(session, by)
        try:
            spec = ActionSpec(id=action_id or next_action_id(session, plan.id), finding=finding,
                              description=title, owner=owner, due=due, systemic=systemic,
                              risks=list(risks))
        except ValidationError as exc:
            raise InvalidInput("the action is not valid", details=[
                f"--{'.'.join(str(p) for p in e['loc']).replace('description', 'title')}: "
                f"{e['msg']}" for e in exc.errors()]) from None
        problems = _unknown(session, plan, spec)
        if problems:
            raise InvalidInput(f"cannot add the action to {plan.id}", details=problems)
        return add_parts(rt, session, plan, [], [spec], by=person, now=now,
                         how="qip add-action")[0]


def _unknown(session: Session, plan: Plan, spec: ActionSpec) -> list[str]:
    problems = []
    if session.get(Person, spec.owner) is None:
        problems.append(f"--owner: unknown person '{spec.owner}'; `qip load` them first")
    findings = session.exec(select(Finding.ref).where(Finding.plan_id == plan.id)).all()
    if spec.finding not in findings:
        problems.append(f"--finding: plan {plan.id} has no finding '{spec.finding}'; its "
                        f"findings: {', '.join(sorted(findings)) or 'none'}")
    known = set(session.exec(select(Risk.id).where(col(Risk.id).in_(spec.risks))).all())
    for risk in spec.risks:
        if risk not in known:
            problems.append(f"--risk: unknown strategic risk '{risk}'")
    return problems


def growth_problems(stored: Plan, spec: PlanFile) -> tuple[list[tuple[list[Any], str]],
                                                           list[FindingSpec], list[ActionSpec]]:
    """Reloading the file of a plan past its draft: the (path, problem) pairs, and the new
    findings and actions it adds. Approved parts may not change or disappear; new indicators
    are refused (closure criteria name the indicators: vary them instead)."""
    known = stored.part_digests or {}
    problems: list[tuple[list[Any], str]] = []
    if not known:
        return [(["id"], f"plan {stored.id} is {stored.state} and was approved before plan "
                 "files could add actions: add them with `qip add-action`")], [], []
    parts = part_digests(spec)
    if parts["plan"] != known.get("plan"):
        problems.append((["id"], f"plan {stored.id} is {stored.state}: its own fields (title, "
                         "service, source, owner, sponsor, risks, review cadence, closure) are "
                         "as approved and cannot change by file; only new findings and actions "
                         "may be added (closure criteria change by `qip vary`)"))
    for key in PARTS:
        kind = key.removesuffix("s")
        for i, item in enumerate(getattr(spec, key)):
            name = f"{key}/{item.id}"
            if name in known and known[name] != parts[name]:
                problems.append(([key, i], f"{kind} {item.id} was approved as written: changes "
                                 "to approved fields stay refused (a due date changes by "
                                 "`qip do PLAN/ACTION revise_due`)"))
            elif name not in known and key == "indicators":
                problems.append(([key, i], f"indicator {item.id} is new: indicators cannot be "
                                 "added after approval (vary the closure criteria instead)"))
        for name in sorted(k for k in known if k.startswith(f"{key}/") and k not in parts):
            problems.append(([key], f"{kind} {name.split('/', 1)[1]} is part of the approved "
                             "plan but missing from the file: keep it in the file"))
    new_findings = [f for f in spec.findings if f"findings/{f.id}" not in known]
    new_actions = [a for a in spec.actions if f"actions/{a.id}" not in known]
    return problems, new_findings, new_actions
