"""The seeds' operational examples played through the services (sign_off, fire_event,
record_measurement), on both databases: who may approve, close and step down; what an action
needs; how slippage is recorded; and that every refusal leaves the database as it was."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_evidence, snapshot
from sqlmodel import col, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.errors import InvalidInput, NotFound, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import assess, lifecycle, loading
from qip_flow.store import audit
from qip_flow.store.models import Action, AuditEvent, DueRevision, Evidence, Plan, SignOff

EXAMPLES = SHIPPED_CONFIG / "examples"
CARE_PLANNING = EXAMPLES / "plans" / "QIP-2026-009-care-planning.yaml"


def refused(rt: Runtime, attempt: Any, error: type[Exception] = Refused) -> str:
    """Run ``attempt``; it must raise ``error`` and change nothing. Returns the message."""
    before = snapshot(rt.db)
    with pytest.raises(error) as raised:
        attempt()
    assert snapshot(rt.db) == before
    return str(raised.value)


def plan_row(rt: Runtime, plan_id: str) -> Plan:
    with rt.db.read() as session:
        plan = session.get(Plan, plan_id)
        assert plan is not None
        return plan


def action_row(rt: Runtime, action_id: str) -> Action:
    with rt.db.read() as session:
        action = session.get(Action, action_id)
        assert action is not None
        return action


def deliver(rt: Runtime, plan_id: str, steps: list[tuple[str, str, str, str, str]]) -> None:
    """Complete and verify actions: (action, day, owner, evidence, verifier)."""
    for ref, day, owner, evidence, verifier in steps:
        rt.clock.set(day)
        lifecycle.fire_event(rt, f"{plan_id}/{ref}", "complete", by=owner, evidence=[evidence])
        lifecycle.fire_event(rt, f"{plan_id}/{ref}", "verify", by=verifier)


def measure(rt: Runtime, plan_id: str, series: list[tuple[str, dict[str, float], bool]]) -> None:
    for day, values, reaudit in series:
        rt.clock.set(day)
        for indicator, value in values.items():
            lifecycle.record_measurement(rt, plan_id, indicator, value, reaudit=reaudit,
                                         source="re-audit" if reaudit else "monthly audit")


# --- approval ----------------------------------------------------------------------------


def test_the_registered_manager_cannot_approve_her_plan_and_the_director_can(
    loaded: Runtime,
) -> None:
    """Post-inspection QIP: Jaya Patel (manager) is refused with the reason; Daniel Adeyemi
    (senior) approves at the quality committee, which pins the closure criteria."""
    p = "QIP-2026-014"
    loaded.clock.set("2026-01-22")
    message = refused(loaded, lambda: lifecycle.sign_off(loaded, p, "approval", by="jpatel"))
    assert message.startswith(f"Can't approve plan {p}")
    assert "Jaya Patel is at manager level; this needs senior level or above" in message
    assert plan_row(loaded, p).state == "draft"

    result = lifecycle.sign_off(loaded, p, "approval", by="dadeyemi",
                                meeting="Quality committee 2026-01-22")
    assert (result.move.source, result.move.dest) == ("draft", "approved")
    plan = plan_row(loaded, p)
    assert plan.state == "approved"
    assert plan.approved_at == datetime(2026, 1, 22, 9, tzinfo=UTC)
    assert plan.closure_criteria["pinned_at"].startswith("2026-01-22")
    with loaded.db.read() as session:
        (signoff,) = session.exec(select(SignOff).where(SignOff.plan_id == p)).all()
        (approval,) = session.exec(select(AuditEvent).where(AuditEvent.what == "approve")).all()
    assert (signoff.purpose, signoff.by_id, signoff.level) == ("approval", "dadeyemi", "senior")
    assert signoff.meeting_reference == "Quality committee 2026-01-22"
    assert (approval.entity_id, approval.actor, approval.from_state, approval.to_state) == (
        p, "dadeyemi", "draft", "approved")

    message = refused(loaded, lambda: lifecycle.sign_off(loaded, p, "approval", by="hwright"))
    assert f"Can't approve plan {p} when it is approved" in message


MISSING = {  # what is left out of a copy of the care planning plan, and the reason given
    "source reference": (
        ("  reference: Internal care plan audit, quarter 4 2025\n", ""),
        "the plan does not name its source: give source.type and source.reference"),
    "root cause": (
        ("    root_causes:\n      - No trigger to review a plan after a hospital stay or "
         "incident\n", "    root_causes: []\n"),
        "findings without a root cause: F1"),
    "action owner": (
        ("    owner: mjones\n", ""), "actions without a named owner: A2"),
    "due date": (
        ("    due: 2026-01-30\n", ""), "actions without a due date: A1"),
    "closure criteria": (
        ("closure:\n", "unused:\n"),
        "closure criteria are incomplete: set closure.success, closure.indicators, "
        "closure.sustain_days, closure.signoff"),
}


def plan_variant(folder: Path, plan_id: str, *leave_out: str) -> Path:
    """A copy of the care planning plan under a new id, with the named parts left out."""
    text = CARE_PLANNING.read_text().replace("QIP-2026-009", plan_id)
    for part in leave_out:
        old, new = MISSING[part][0]
        assert text.count(old) == 1, part
        text = text.replace(old, new)
    if "closure criteria" in leave_out:
        text = text[:text.index("unused:\n")]
    path = folder / f"{plan_id}.yaml"
    path.write_text(text)
    return path


def test_approval_is_refused_until_the_plan_is_credible(
    loaded: Runtime, tmp_path: Path, subtests: pytest.Subtests
) -> None:
    """A plan lacking its source reference, a root cause, an action owner, a due date or
    closure criteria is not approved, even by a senior, and a plan lacking all of them gets
    every reason in one refusal; the complete plan is approved."""
    loaded.clock.set("2026-01-21")
    for n, part in enumerate(MISSING, start=1):
        with subtests.test(missing=part):
            plan_id = f"QIP-2026-09{n}"
            loading.load_files(loaded, [plan_variant(tmp_path, plan_id, part)], actor="cevans")
            message = refused(loaded, lambda plan_id=plan_id: lifecycle.sign_off(
                loaded, plan_id, "approval", by="rmensah"))
            assert message.startswith(f"Can't approve plan {plan_id}")
            assert MISSING[part][1] in message
            for other in set(MISSING) - {part}:
                assert MISSING[other][1] not in message
            assert plan_row(loaded, plan_id).state == "draft"
    with subtests.test(missing="everything, put forward by a manager"):
        loading.load_files(loaded, [plan_variant(tmp_path, "QIP-2026-098", *MISSING)],
                           actor="cevans")
        message = refused(loaded, lambda: lifecycle.sign_off(loaded, "QIP-2026-098", "approval",
                                                             by="jpatel"))
        for _, reason in MISSING.values():
            assert reason in message
        assert "Jaya Patel is at manager level; this needs senior level or above" in message
    loading.load_files(loaded, [plan_variant(tmp_path, "QIP-2026-099")], actor="cevans")
    assert lifecycle.sign_off(loaded, "QIP-2026-099", "approval",
                              by="rmensah").move.dest == "approved"


def test_bad_requests_are_named_and_change_nothing(loaded: Runtime) -> None:
    """Unknown purposes, people, plans, events and indicators are named precisely; a draft is
    withdrawn only with a reason, and a withdrawn plan can no longer be approved."""
    p = "QIP-2026-017"
    assert "--for: 'applause' is not a sign-off" in refused(
        loaded, lambda: lifecycle.sign_off(loaded, p, "applause", by="hwright"), InvalidInput)
    assert "--by: unknown person 'dsmith'" in refused(
        loaded, lambda: lifecycle.sign_off(loaded, p, "approval", by="dsmith"), NotFound)
    assert "unknown plan 'QIP-2026-404'" in refused(
        loaded, lambda: lifecycle.sign_off(loaded, "QIP-2026-404", "approval", by="hwright"),
        NotFound)
    assert "unknown action 'QIP-2026-017/A9'" in refused(
        loaded, lambda: lifecycle.fire_event(loaded, f"{p}/A9", "start", by="skaur"), NotFound)
    assert "'fly' is not an event of the plan workflow" in refused(
        loaded, lambda: lifecycle.fire_event(loaded, p, "fly", by="hwright"), InvalidInput)
    assert (f"plan {p} has no indicator 'falls'; its indicators: ra-in-date, short-nights"
            in refused(loaded, lambda: lifecycle.record_measurement(loaded, p, "falls", 3),
                       NotFound))

    assert refused(loaded, lambda: lifecycle.fire_event(loaded, p, "withdraw", by="rmensah"),
                   InvalidInput) == "withdraw needs --reason"
    lifecycle.fire_event(loaded, p, "withdraw", by="rmensah",
                         reason="Merged into the Cedar Court service improvement plan")
    assert plan_row(loaded, p).state == "withdrawn"
    assert f"Can't approve plan {p} when it is withdrawn" in refused(
        loaded, lambda: lifecycle.sign_off(loaded, p, "approval", by="hwright"))


# --- actions -----------------------------------------------------------------------------


def test_actions_are_completed_with_evidence_and_verified_by_someone_else(
    loaded: Runtime,
) -> None:
    """Competency reassessment (A3), after the March MAR audit is recorded: Megan Jones cannot
    complete it without evidence nor verify her own work; Jaya Patel verifies it."""
    p, a3 = "QIP-2026-014", "QIP-2026-014/A3"
    loaded.clock.set("2026-01-22")
    lifecycle.sign_off(loaded, p, "approval", by="dadeyemi")
    lifecycle.fire_event(loaded, p, "start", by="jpatel")
    loaded.clock.set("2026-03-20")
    m = lifecycle.record_measurement(loaded, p, "mar-complete", 96, source="weekly MAR audit",
                                     by="jpatel")
    assert (m.indicator_id, m.on, m.value, m.recorded_by_id) == (
        "QIP-2026-014/mar-complete", date(2026, 3, 20), 96, "jpatel")
    loaded.clock.set("2026-03-25")
    message = refused(loaded, lambda: lifecycle.fire_event(loaded, a3, "complete", by="mjones"))
    assert "completing an action needs evidence: add --evidence" in message

    lifecycle.fire_event(loaded, a3, "complete", by="mjones",
                         evidence=["Competency records for 6 senior support workers|HR/comp-2026"])
    action = action_row(loaded, a3)
    assert action.state == "completed"
    assert action.completed_at == datetime(2026, 3, 25, 9, tzinfo=UTC)
    with loaded.db.read() as session:
        (evidence,) = session.exec(select(Evidence).where(Evidence.action_id == a3)).all()
    assert (evidence.description, evidence.reference, evidence.by_id, evidence.on) == (
        "Competency records for 6 senior support workers", "HR/comp-2026", "mjones",
        date(2026, 3, 25))

    message = refused(loaded, lambda: lifecycle.fire_event(loaded, a3, "verify", by="mjones"))
    assert ("Megan Jones completed this action and cannot verify it [rule "
            "separation.completer_cannot_verify" in message)
    assert action_row(loaded, a3).state == "completed"

    lifecycle.fire_event(loaded, a3, "verify", by="jpatel")
    action = action_row(loaded, a3)
    assert (action.state, action.verified_by_id) == ("verified", "jpatel")
    assert "Can't complete action QIP-2026-014/A3 when it is verified" in refused(
        loaded, lambda: lifecycle.fire_event(loaded, a3, "complete", by="mjones",
                                             evidence=["again"]))


def test_a_slipped_action_gets_a_recorded_revision_approved_by_a_manager(loaded: Runtime) -> None:
    """Night team retraining (A2) slips: the new date is kept with the old one, the reason and
    the approver; the baseline date stays. An operational worker cannot approve a new date,
    and a revision needs a reason and a different date."""
    a2 = "QIP-2026-014/A2"
    loaded.clock.set("2026-03-02")
    reason = "External trainer cancelled; new course date booked"
    assert "Megan Jones is at operational level; this needs manager level or above" in refused(
        loaded, lambda: lifecycle.fire_event(loaded, a2, "revise_due", by="mjones",
                                             due=date(2026, 4, 10), reason=reason))
    assert refused(loaded, lambda: lifecycle.fire_event(
        loaded, a2, "revise_due", by="jpatel", due=date(2026, 4, 10)),
        InvalidInput) == "revise_due needs --reason"
    assert "the action is already due on 2026-03-13; give a different date" in refused(
        loaded, lambda: lifecycle.fire_event(loaded, a2, "revise_due", by="jpatel",
                                             due=date(2026, 3, 13), reason=reason))

    lifecycle.fire_event(loaded, a2, "revise_due", by="jpatel", due=date(2026, 4, 10),
                         reason=reason)
    action = action_row(loaded, a2)
    assert (action.due, action.baseline_due, action.state) == (
        date(2026, 4, 10), date(2026, 3, 13), "open")
    with loaded.db.read() as session:
        (revision,) = session.exec(select(DueRevision).where(DueRevision.action_id == a2)).all()
        (last,) = session.exec(select(AuditEvent).where(AuditEvent.what == "revise_due")).all()
    assert (revision.previous_due, revision.new_due, revision.reason, revision.approved_by_id) == (
        date(2026, 3, 13), date(2026, 4, 10), reason, "jpatel")
    assert revision.at == datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert (last.what, last.entity_id, last.reason, last.detail["due"]) == (
        "revise_due", a2, reason, "2026-04-10")


# --- closing, stepping down, reopening --------------------------------------------------


def bring_safeguarding_plan_to_closure_review(rt: Runtime) -> str:
    """Willow Lodge: approved, delivered, re-audited twice over three sustained months, the
    learning written down, and the closure report put before the safeguarding governance
    group."""
    p = "QIP-2026-021"
    rt.clock.set("2026-01-27")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi",
                       meeting="Safeguarding governance group 2026-01-27")
    lifecycle.fire_event(rt, p, "start", by="tbrennan")
    measure(rt, p, [("2026-01-27", {"escalated-24h": 62, "record-quality": 55,
                                    "repeat-alerts": 3}, False)])
    deliver(rt, p, [
        ("A1", "2026-02-05", "lokafor", "Rota and threshold guide in every office|SG/rota-v1",
         "dadeyemi"),
        ("A3", "2026-02-19", "tbrennan", "New recording template live|SG/template-v2",
         "dadeyemi"),
        ("A2", "2026-03-05", "lokafor", "Workshop attendance 32/32|L&D/sg-workshops", "dadeyemi"),
        ("A4", "2026-03-19", "tbrennan", "Supervision template with recording check|HR/sup-v4",
         "dadeyemi"),
    ])
    lifecycle.fire_event(rt, p, "begin_sustaining", by="tbrennan")
    measure(rt, p, [
        (day, {"escalated-24h": esc, "record-quality": rec, "repeat-alerts": rep}, reaudit)
        for day, esc, rec, rep, reaudit in (
            ("2026-03-31", 88, 80, 1, False), ("2026-04-30", 96, 91, 0, True),
            ("2026-05-29", 97, 93, 0, False), ("2026-06-30", 98, 94, 0, False),
            ("2026-07-31", 97, 95, 0, True))])
    rt.clock.set("2026-08-03")
    assess.record_learning(rt, p, by="lokafor",
                           summary="Escalation fails when thresholds are unclear out of hours",
                           embedded_in=["Induction", "Supervision framework"])
    rt.clock.set("2026-08-04")
    lifecycle.fire_event(rt, p, "request_closure", by="tbrennan")
    assert plan_row(rt, p).state == "closure_review"
    return p


def test_the_safeguarding_governance_group_closes_the_safeguarding_plan(loaded: Runtime) -> None:
    """Ruth Mensah is a senior director but not in the safeguarding governance group: refused.
    Lola Okafor signs for the group; the sign-off keeps the evidence reviewed, the residual
    risks and where the learning was embedded."""
    p = bring_safeguarding_plan_to_closure_review(loaded)
    message = refused(loaded, lambda: lifecycle.sign_off(loaded, p, "closure", by="rmensah"))
    assert message.startswith(f"Can't close plan {p}")
    assert "Safeguarding governance group" in message  # who must sign, not only that she may not
    assert plan_row(loaded, p).state == "closure_review"

    evidence = ["Safeguarding record re-audits April and July", "Incident panel outcomes",
                "Supervision evidence"]
    risks = ["Agency night staff :: threshold guide in agency induction pack"]
    learning = ["Induction", "Supervision framework"]
    lifecycle.sign_off(loaded, p, "closure", by="lokafor",
                       meeting="Safeguarding governance group 2026-08-04",
                       evidence_ids=plan_evidence(loaded, p)[:2],
                       evidence_reviewed=evidence, residual_risks=risks,
                       learning_embedded=learning)
    plan = plan_row(loaded, p)
    assert plan.state == "closed"
    assert plan.closed_at == datetime(2026, 8, 4, 9, tzinfo=UTC)
    with loaded.db.read() as session:
        signoff = session.exec(select(SignOff).where(SignOff.plan_id == p,
                                                     SignOff.purpose == "closure")).one()
        assert audit.verify(session).ok
    assert (signoff.by_id, signoff.level, signoff.group, signoff.on) == (
        "lokafor", "manager", "Safeguarding governance group", date(2026, 8, 4))
    assert signoff.meeting_reference == "Safeguarding governance group 2026-08-04"
    assert (signoff.evidence_reviewed, signoff.residual_risks, signoff.learning_embedded) == (
        evidence, risks, learning)


def bring_care_planning_plan_to_sustaining(rt: Runtime) -> str:
    """Maple House care planning: approved, both actions delivered, three monthly audits."""
    p = "QIP-2026-009"
    rt.clock.set("2026-01-21")
    lifecycle.sign_off(rt, p, "approval", by="rmensah", meeting="Quality committee 2026-01-21")
    lifecycle.fire_event(rt, p, "start", by="jpatel")
    deliver(rt, p, [
        ("A1", "2026-01-29", "jpatel", "Discharge and incident procedures v5|policies/cp-trigger",
         "cevans"),
        ("A2", "2026-02-26", "mjones", "20 reviewed care plans|CP/rev", "jpatel"),
    ])
    lifecycle.fire_event(rt, p, "begin_sustaining", by="jpatel")
    measure(rt, p, [(day, {"plan-audit": v}, False)
                    for day, v in (("2026-02-27", 88), ("2026-03-31", 92), ("2026-04-30", 93))])
    return p


def test_care_planning_is_stepped_down_and_closed_after_the_monitoring_period(
    loaded: Runtime,
) -> None:
    """The care planning QIP becomes a standing audit theme for six months: closing is
    refused while monitoring runs and allowed once it is over, with the learning written
    down; reopening needs a reason."""
    p = bring_care_planning_plan_to_sustaining(loaded)
    loaded.clock.set("2026-05-05")
    assert "Jaya Patel is at manager level; this needs senior level or above" in refused(
        loaded, lambda: lifecycle.sign_off(loaded, p, "step_down", by="jpatel"))
    lifecycle.sign_off(loaded, p, "step_down", by="rmensah", meeting="Quality committee 2026-05-05",
                       evidence_ids=plan_evidence(loaded, p),
                       residual_risks=["Care plans missed after discharge :: monthly audit"])
    plan = plan_row(loaded, p)
    assert plan.state == "monitoring"
    assert plan.monitoring_until is not None
    until = plan.monitoring_until.date()
    assert until >= date(2026, 11, 3)  # closure.monitoring_days: 182 from 5 May

    measure(loaded, p, [(day, {"plan-audit": v}, False)  # monthly: the standing audit theme
                        for day, v in (("2026-05-30", 93), ("2026-06-30", 94), ("2026-07-30", 93),
                                       ("2026-08-31", 92), ("2026-09-30", 94),
                                       ("2026-10-30", 95))])
    loaded.clock.set(date.fromordinal(until.toordinal() - 1))
    message = refused(loaded, lambda: lifecycle.sign_off(loaded, p, "closure", by="rmensah"))
    assert f"the monitoring period runs until {until.isoformat()}" in message
    assert plan_row(loaded, p).state == "monitoring"

    loaded.clock.set(date.fromordinal(max(until, date(2026, 11, 6)).toordinal()))
    assess.record_learning(loaded, p, by="jpatel", summary="Plans must be reviewed when needs "
                           "change, not on a calendar", embedded_in=["Discharge procedure"])
    lifecycle.sign_off(loaded, p, "closure", by="rmensah", meeting="Quality committee 2026-11-06",
                       evidence_ids=plan_evidence(loaded, p)[:1],
                       evidence_reviewed=["Six months of monthly care plan audits"],
                       no_residual_risk=True,
                       learning_embedded=["Care plan review trigger in discharge procedure"])
    assert plan_row(loaded, p).state == "closed"

    assert refused(loaded, lambda: lifecycle.fire_event(loaded, p, "reopen", by="rmensah"),
                   InvalidInput) == "reopen needs --reason"
    lifecycle.fire_event(loaded, p, "reopen", by="rmensah",
                         reason="Two care plans out of date at the December audit")
    plan = plan_row(loaded, p)
    assert (plan.state, plan.closed_at, plan.monitoring_until) == ("in_progress", None, None)
    with loaded.db.read() as session:
        reopened = session.exec(select(AuditEvent).where(AuditEvent.what == "reopen")
                                .order_by(col(AuditEvent.seq).desc())).first()
    assert (reopened.actor, reopened.from_state, reopened.to_state, reopened.reason) == (
        "rmensah", "closed", "in_progress", "Two care plans out of date at the December audit")


def test_a_sign_off_event_fired_as_a_plain_event_points_to_its_own_sign_off(
    loaded: Runtime,
) -> None:
    """Stepping down without a recorded sign-off is refused, and the message names the
    command that records it: `qip signoff PLAN --for step_down`."""
    p = bring_care_planning_plan_to_sustaining(loaded)
    loaded.clock.set("2026-05-05")
    message = refused(loaded, lambda: lifecycle.fire_event(loaded, p, "step_down", by="rmensah"))
    assert f"qip signoff {p} --for step_down --by PERSON" in message
