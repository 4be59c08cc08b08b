"""The use cases that change a plan: fire a workflow event, sign off, record a measurement.
Each runs in one transaction with its audit event, as the plan's one writer (``changing``):
a refusal changes nothing, and two people acting on one plan at once are served one after the
other, each against what the other committed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from qip_flow.config.limits import check_number
from qip_flow.errors import InvalidInput, NotFound, Refused
from qip_flow.runtime import Runtime
from qip_flow.services.lookup import get_entity, get_person, get_plan
from qip_flow.store import audit
from qip_flow.store.db import lock_plans
from qip_flow.store.models import (
    Action,
    Evidence,
    Indicator,
    Measurement,
    Person,
    Plan,
    ProgressNote,
    SignOff,
)
from qip_flow.workflow.machines import Move
from qip_flow.workflow.subject import EventInputs, EvidenceItem, SignoffInput, Subject


@contextmanager
def changing(rt: Runtime, entity_id: str, *, expected_version: int | None = None
             ) -> Iterator[Session]:
    """The write transaction of a use case that changes a plan or one of its parts (an action
    ``PLAN/A1``, an indicator ``PLAN/I1``: a part's id starts with its plan's, and a plan's id
    holds no ``/``), holding the plan's row first (see ``store.db.lock_plans``)."""
    with rt.db.write() as session:
        lock_plans(session, [entity_id.partition("/")[0]], expected_version=expected_version)
        yield session


def parse_evidence(items: Sequence[str], on: date) -> list[EvidenceItem]:
    """``"MAR audit April|audits/2026-04.pdf"`` → description and reference."""
    out = []
    for item in items:
        description, _, reference = item.partition("|")
        if not description.strip():
            raise InvalidInput("--evidence: give a description, optionally 'description|reference'")
        out.append(EvidenceItem(description.strip(), reference.strip(), on))
    return out


@dataclass
class EventResult:
    entity_id: str
    kind: str
    move: Move


def _record_inputs(session: Session, subject: Subject) -> None:
    """Keep what the person gave with the event: evidence, a progress note, a sign-off."""
    inputs, row = subject.inputs, subject.row
    plan_id = row.plan_id if isinstance(row, Action) else row.id
    action_id = row.id if isinstance(row, Action) else None
    for item in inputs.evidence:
        file = item.file or {}
        session.add(Evidence(plan_id=plan_id, action_id=action_id, description=item.description,
                             reference=item.reference, on=item.on or inputs.now.date(),
                             by_id=inputs.by.id, sha256=file.get("sha256"), size=file.get("size"),
                             media_type=file.get("media_type", ""),
                             filename=file.get("filename", "")))
    if isinstance(row, Action):
        row.last_update_at = inputs.now
        if inputs.by.id == row.owner_id:
            row.owner_update_at = inputs.now  # only the owner's word stops the escalations
        if inputs.note:
            session.add(ProgressNote(action_id=row.id, by_id=inputs.by.id, at=inputs.now,
                                     text=inputs.note))
    else:
        row.updated_at = inputs.now
    if inputs.signoff:
        s = inputs.signoff
        session.add(SignOff(plan_id=plan_id, purpose=s.purpose, by_id=inputs.by.id,
                            level=inputs.by.level, group=s.group, on=inputs.now.date(),
                            meeting_reference=s.meeting_reference,
                            evidence_reviewed=s.evidence_reviewed, evidence_ids=s.evidence_ids,
                            residual_risks=s.residual_risks,
                            no_residual_risk=s.no_residual_risk,
                            learning_embedded=s.learning_embedded, at=inputs.now))


def system_inputs(now: datetime, *, reason: str) -> EventInputs:
    """Inputs for an event the rules fire themselves (e.g. reopening on deterioration)."""
    from qip_flow.services.assess import RULES_ACTOR

    return EventInputs(by=Person(id=RULES_ACTOR, name="qip_flow rules", level="operational"),
                       now=now, reason=reason)


def fire_in_session(
    rt: Runtime,
    session: Session,
    entity_id: str,
    event: str,
    inputs: EventInputs,
    *,
    reassess_after: bool = True,
    decisions: dict[str, Any] | None = None,
) -> EventResult:
    """Fire one event inside the caller's transaction: record the inputs and one audit event
    (with any decision behind it), then re-rate the plan."""
    from qip_flow.services.assess import judge, reassess

    kind, row = get_entity(session, entity_id)
    subject = Subject(kind, row, session, inputs, judge(rt, session))
    move = rt.workflows.fire(subject, event)
    _record_inputs(session, subject)
    detail = inputs.as_detail()
    subject.decisions.update(decisions or {})
    if subject.decisions:
        detail["decisions"] = subject.decisions
    audit.append(session, at=inputs.now, actor=inputs.by.id, entity_type=kind,
                 entity_id=row.id, what=event, from_state=move.source, to_state=move.dest,
                 reason=inputs.reason or "", detail=detail, version=move.version)
    if isinstance(row, Plan) and move.source != move.dest:
        _tell_subscribers(rt, session, row, move, inputs)
    session.flush()
    if reassess_after:
        plan = row if isinstance(row, Plan) else get_plan(session, row.plan_id)
        reassess(rt, session, plan)
    return EventResult(row.id, kind, move)


def _tell_subscribers(rt: Runtime, session: Session, plan: Plan, move: Move,
                      inputs: EventInputs) -> None:
    """A plan's new state (and its closure) for the webhook subscribers who want it."""
    from qip_flow.services import webhooks

    data = {"from": move.source, "to": move.dest, "event": move.event.name,
            "by": inputs.by.id, "reason": inputs.reason or ""}
    webhooks.emit(rt, session, "plan.state_changed", plan, data, inputs.now)
    if move.event.signoff == "closure":
        webhooks.emit(rt, session, "plan.closed", plan, data, inputs.now)


def fire_event(
    rt: Runtime,
    entity_id: str,
    event: str,
    *,
    by: str,
    note: str | None = None,
    reason: str | None = None,
    due: date | None = None,
    evidence: Sequence[str] = (),
    signoff: SignoffInput | None = None,
    variation: dict[str, Any] | None = None,
    expected_version: int | None = None,
    files: Sequence[EvidenceItem] = (),
    via: dict[str, str] | None = None,
) -> EventResult:
    """Fire one event as the plan's one writer; ``expected_version`` refuses it if the plan
    changed since the person saw that version. ``files`` are evidence items describing
    uploaded files (``services/evidence.py``); ``via`` says how the person reached us (the
    web pages: door and sign-in), for the audit trail."""
    now = rt.clock.now()
    with changing(rt, entity_id, expected_version=expected_version) as session:
        plan = get_plan(session, entity_id) if signoff is not None else None
        inputs = EventInputs(by=get_person(session, by), now=now, note=note, reason=reason,
                             due=due, evidence=parse_evidence(evidence, now.date()) + list(files),
                             signoff=signoff, variation=variation or {}, via=dict(via or {}))
        if plan is not None and signoff is not None:
            check_signoff_record(session, plan, signoff)
            _signoff_group(rt, plan, inputs.by, event, signoff)
        if plan is not None and variation:
            from qip_flow.services.assess import check_variation

            check_variation(rt, plan, variation)
        return fire_in_session(rt, session, entity_id, event, inputs)


def _signoff_group(rt: Runtime, plan: Plan, person: Person, event_name: str,
                   signoff: SignoffInput) -> None:
    """Check the group a person signs for, or name the group the plan's criteria want when
    the person belongs to it."""
    group = signoff.group
    if group is not None and group not in (person.groups or []):
        raise Refused(f"--group: {person.name} is not a member of the {group}; their groups: "
                      f"{', '.join(person.groups or []) or 'none'}")
    event = rt.workflows.defs["plan"].event(event_name)
    assert event is not None
    uses_criteria = any(g.params.get("from_criteria") for g in event.guards) or \
        "closure_criteria_met" in {g.name for g in event.guards}
    wanted = ((plan.closure_criteria or {}).get("signoff") or {}).get("group")
    if group is None and uses_criteria and wanted in (person.groups or []):
        signoff.group = wanted


RISK_SEPARATOR = "::"


def parse_residual_risk(text: str) -> str:
    """``"Agency night staff :: threshold guide in agency induction"`` — a residual risk and
    how it is monitored, both given."""
    risk, sep, monitored = text.partition(RISK_SEPARATOR)
    if not sep or not risk.strip() or not monitored.strip():
        raise InvalidInput(f"--residual-risk: '{text}' should be 'risk {RISK_SEPARATOR} how it "
                           "is monitored', e.g. 'Agency night staff :: threshold guide in the "
                           "agency induction pack, checked monthly'")
    return f"{risk.strip()} {RISK_SEPARATOR} {monitored.strip()}"


def read_signoff_record(path: Path) -> SignoffInput:
    """A sign-off record file (`--record FILE.yaml`), checked like every file we read."""
    from qip_flow.config.formats import SignoffRecordFile
    from qip_flow.config.source import read_yaml, validate

    spec = validate(read_yaml(path, error=InvalidInput), SignoffRecordFile, error=InvalidInput,
                    what="sign-off record")
    return SignoffInput(purpose="", meeting_reference=spec.meeting,
                        evidence_reviewed=list(spec.evidence_note), evidence_ids=spec.evidence,
                        residual_risks=[f"{r.risk} {RISK_SEPARATOR} {r.monitored}"
                                        for r in spec.residual_risks],
                        no_residual_risk=spec.no_residual_risk,
                        learning_embedded=list(spec.learning_embedded))


def check_signoff_record(session: Session, plan: Plan, record: SignoffInput) -> None:
    """Bad input in a sign-off record: evidence that is not this plan's, a residual risk
    without how it is monitored, or risks beside "no residual risk"."""
    record.residual_risks = [parse_residual_risk(r) for r in record.residual_risks]
    if record.residual_risks and record.no_residual_risk:
        raise InvalidInput("--no-residual-risk: residual risks are also given; state one or "
                           "the other")
    held = {e.id: e for e in session.exec(select(Evidence).where(Evidence.plan_id == plan.id))}
    unknown = [i for i in record.evidence_ids if i not in held]
    if unknown:
        listed = ", ".join(f"{i} ({e.description})" for i, e in sorted(held.items())) or "none yet"
        raise InvalidInput(f"--evidence: {', '.join(map(str, unknown))} is not evidence recorded "
                           f"on plan {plan.id}; its evidence: {listed}")
    record.evidence_ids = list(dict.fromkeys(record.evidence_ids))
    record.evidence_reviewed = [n.strip() for n in record.evidence_reviewed if n.strip()]
    record.learning_embedded = [w.strip() for w in record.learning_embedded if w.strip()]


def sign_off(
    rt: Runtime,
    plan_id: str,
    purpose: str,
    *,
    by: str,
    group: str | None = None,
    meeting: str = "",
    evidence_ids: Sequence[int] = (),
    evidence_reviewed: Sequence[str] = (),
    residual_risks: Sequence[str] = (),
    no_residual_risk: bool = False,
    learning_embedded: Sequence[str] = (),
    record_file: Path | None = None,
    note: str | None = None,
    reason: str | None = None,
    variation: dict[str, Any] | None = None,
    expected_version: int | None = None,
    via: dict[str, str] | None = None,
) -> EventResult:
    """Record a sign-off and fire the workflow event that it authorises (approve, close,
    step_down, …, as the plan workflow file declares). The record may come from a file and
    the options together."""
    wf = rt.workflows.defs["plan"]
    event = wf.signoff_event(purpose)
    if event is None:
        purposes = ", ".join(e.signoff for e in wf.events if e.signoff)
        raise InvalidInput(f"--for: '{purpose}' is not a sign-off in {wf.path}; use one of "
                           f"{purposes}")
    signoff = read_signoff_record(record_file) if record_file else SignoffInput(purpose="")
    signoff.purpose, signoff.group = purpose, group
    signoff.meeting_reference = meeting or signoff.meeting_reference
    signoff.evidence_ids += list(evidence_ids)
    signoff.evidence_reviewed += list(evidence_reviewed)
    signoff.residual_risks += list(residual_risks)
    signoff.no_residual_risk = signoff.no_residual_risk or no_residual_risk
    signoff.learning_embedded += list(learning_embedded)
    return fire_event(rt, plan_id, event.name, by=by, note=note, reason=reason, signoff=signoff,
                      variation=variation, expected_version=expected_version, via=via)


def record_measurement(
    rt: Runtime,
    plan_id: str,
    indicator_ref: str,
    value: float,
    *,
    on: date | None = None,
    source: str = "",
    reaudit: bool = False,
    by: str | None = None,
    reason: str | None = None,
) -> Measurement:
    """Record a value measured ``on`` a day (today by default): never in the future; dated
    further back than the rules allow only with a ``reason``, and then flagged."""
    from qip_flow.services.measurements import date_problem, insert

    check_number(value, field="value")
    now = rt.clock.now()
    on = on or now.date()
    problem, backdated, late = date_problem(rt, on, reason)
    if problem:
        raise InvalidInput(f"--on: {problem.replace('give a reason', 'give --reason')}")
    with changing(rt, plan_id) as session:
        plan = get_plan(session, plan_id)
        indicator = session.get(Indicator, f"{plan.id}/{indicator_ref}")
        if indicator is None:
            known = session.exec(select(Indicator.ref).where(Indicator.plan_id == plan.id)).all()
            raise NotFound(f"plan {plan.id} has no indicator '{indicator_ref}'; its indicators: "
                           + (", ".join(known) or "none"))
        if by is not None:
            get_person(session, by)
        measurement = insert(session, indicator, value=value, on=on, source=source,
                             reaudit=reaudit, by=by, actor=by or "system", now=now,
                             backdated=backdated, late=late, reason=reason)
        plan.updated_at = now
        session.flush()
        from qip_flow.services.assess import reassess

        reassess(rt, session, plan)
        return measurement
