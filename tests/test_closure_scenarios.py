"""The seeds' closure examples played through the services on a simulated clock, on both
databases: the safeguarding QIP closed only after three months of sustained improvement, two
re-audits and sign-off by the safeguarding governance group, with the learning written down;
the care planning QIP stepped down into routine audit and reopened the moment it slipped;
RAG ratings that change with their reasons; criteria pinned at approval and varied only with
authority. Every refusal leaves the database exactly as it was."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_evidence, snapshot
from sqlmodel import col, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services import assess, lifecycle, loading, publishing
from qip_flow.services.assess import RULES_ACTOR
from qip_flow.store.models import AuditEvent, Plan, SignOff

PLANS = SHIPPED_CONFIG / "examples" / "plans"
SAFEGUARDING = "QIP-2026-021"
CARE_PLANNING = "QIP-2026-009"
MEDICATION = "QIP-2026-014"
GROUP = "Safeguarding governance group"


def refused(rt: Runtime, attempt: Any) -> Refused:
    """``attempt`` is refused and changes nothing: no audit event, no state, no row."""
    before = snapshot(rt.db)
    with pytest.raises(Refused) as raised:
        attempt()
    assert snapshot(rt.db) == before
    return raised.value


def plan_row(rt: Runtime, plan_id: str) -> Plan:
    with rt.db.read() as session:
        plan = session.get(Plan, plan_id)
        assert plan is not None
        return plan


def events(rt: Runtime, entity_id: str, what: str | None = None) -> list[AuditEvent]:
    with rt.db.read() as session:
        query = select(AuditEvent).where(AuditEvent.entity_id == entity_id)
        if what:
            query = query.where(AuditEvent.what == what)
        return list(session.exec(query.order_by(col(AuditEvent.seq))).all())


def deliver(rt: Runtime, plan_id: str, steps: list[tuple[str, str, str, str, str]]) -> None:
    """Complete and verify actions: (action, day, owner, evidence, verifier)."""
    for ref, day, owner, evidence, verifier in steps:
        rt.clock.set(day)
        lifecycle.fire_event(rt, f"{plan_id}/{ref}", "complete", by=owner, evidence=[evidence])
        lifecycle.fire_event(rt, f"{plan_id}/{ref}", "verify", by=verifier)


def audit_month(rt: Runtime, plan_id: str, day: str, values: dict[str, float], *, by: str,
                reaudit: bool = False) -> None:
    """A monthly governance meeting: progress reviewed and the month's audit recorded."""
    rt.clock.set(day)
    lifecycle.fire_event(rt, plan_id, "review", by=by, note=f"Monthly governance review {day}")
    for indicator, value in values.items():
        lifecycle.record_measurement(rt, plan_id, indicator, value, reaudit=reaudit,
                                     source="re-audit" if reaudit else "monthly audit")


def safeguarding_sustaining(rt: Runtime) -> None:
    """Willow Lodge: approved by the director at the safeguarding governance group, every
    action delivered and verified by 19 March, then monthly audits; the April audit is the
    first re-audit of safeguarding records. On target from 21 April."""
    p = SAFEGUARDING
    rt.clock.set("2026-01-27")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi",
                       meeting="Safeguarding governance group 2026-01-27")
    lifecycle.fire_event(rt, p, "start", by="tbrennan")
    for indicator, value in {"escalated-24h": 62, "record-quality": 55, "repeat-alerts": 3}.items():
        lifecycle.record_measurement(rt, p, indicator, value, source="baseline audit")
    deliver(rt, p, [
        ("A1", "2026-02-05", "lokafor", "Rota and threshold guide in every office|SG/rota-v1",
         "dadeyemi"),
        ("A3", "2026-02-19", "tbrennan", "New recording template live|SG/template-v2",
         "dadeyemi"),
        ("A2", "2026-03-05", "lokafor", "Workshop attendance 32/32|L&D/sg-workshops",
         "dadeyemi"),
        ("A4", "2026-03-19", "tbrennan", "Supervision template with recording check|HR/sv-4",
         "dadeyemi"),
    ])
    lifecycle.fire_event(rt, p, "begin_sustaining", by="tbrennan")
    for day, esc, rec, rep, reaudit in [("2026-03-24", 88, 80, 1, False),
                                        ("2026-04-21", 96, 91, 0, True),
                                        ("2026-05-19", 97, 93, 0, False),
                                        ("2026-06-16", 98, 94, 0, False)]:
        audit_month(rt, p, day, {"escalated-24h": esc, "record-quality": rec,
                                 "repeat-alerts": rep}, by="tbrennan", reaudit=reaudit)


def safeguarding_third_month(rt: Runtime) -> None:
    """The July re-audit, the second, still on target; the closure report goes to the group."""
    audit_month(rt, SAFEGUARDING, "2026-07-21",
                {"escalated-24h": 97, "record-quality": 95, "repeat-alerts": 0},
                by="tbrennan", reaudit=True)
    rt.clock.set("2026-07-28")
    lifecycle.fire_event(rt, SAFEGUARDING, "request_closure", by="tbrennan")


def record_safeguarding_learning(rt: Runtime) -> None:
    assess.record_learning(rt, SAFEGUARDING, by="lokafor",
                           summary="Escalation fails when thresholds are unclear out of hours",
                           embedded_in=["Induction", "Supervision framework"])


def close_safeguarding(rt: Runtime, by: str) -> lifecycle.EventResult:
    return lifecycle.sign_off(
        rt, SAFEGUARDING, "closure", by=by, meeting="Safeguarding governance group 2026-07-28",
        evidence_reviewed=["Safeguarding record re-audits April and July",
                           "Incident panel outcomes", "Supervision evidence"],
        evidence_ids=plan_evidence(rt, SAFEGUARDING),
        residual_risks=["Agency night staff :: threshold guide in agency induction pack"],
        learning_embedded=["Induction", "Supervision framework"])


# --- the safeguarding QIP ----------------------------------------------------------------


def test_the_safeguarding_qip_closes_only_after_three_months_two_reaudits_and_learning(
    loaded: Runtime,
) -> None:
    """Operational examples 1 and 3: at two months the group refuses closure (sustained,
    re-audits and learning unmet, with the values); after three months and the second
    re-audit a senior manager outside the group cannot close it, and the group cannot while
    no learning summary is written; once the safeguarding lead records where the learning is
    embedded, she closes it as a member of the group. The sign-off keeps the evidence
    reviewed, the residual risks and the learning; the learning review falls due 90 days on."""
    rt, p = loaded, SAFEGUARDING
    safeguarding_sustaining(rt)
    rt.clock.set("2026-06-23")
    lifecycle.fire_event(rt, p, "request_closure", by="tbrennan")

    early = str(refused(rt, lambda: close_safeguarding(rt, "lokafor")))
    assert f"Can't close plan {p}" in early
    assert "sustained — " in early and "[rule closure.sustained]" in early
    assert "on target for only 56 days of the 90 required" in early
    assert "re-audits confirm it at only 1 distinct interval of the 2 required" in early
    assert "[rule closure.learning]" in early
    assert "[rule closure.signoff-group]" not in early
    assert plan_row(rt, p).state == "closure_review"

    lifecycle.fire_event(rt, p, "send_back", by="lokafor",
                         reason="Sustain for three months; re-audit in July")
    safeguarding_third_month(rt)

    outsider = str(refused(rt, lambda: close_safeguarding(rt, "rmensah")))
    assert "[rule closure.signoff-group]" in outsider
    assert "the signer is not a member of the Safeguarding governance group" in outsider
    assert "[rule closure.sustained]" not in outsider

    no_learning = str(refused(rt, lambda: close_safeguarding(rt, "lokafor")))
    assert "[rule closure.learning]" in no_learning
    assert "the learning summary has not been written" in no_learning
    for met in ("closure.sustained", "closure.reaudits", "closure.signoff-group",
                "closure.actions-verified", "closure.on-target"):
        assert f"[rule {met}]" not in no_learning
    explained = assess.explain(rt, p, signer="lokafor")
    assert [c["rule"] for c in explained["closure"]["criteria"] if not c["met"]] == [
        "closure.learning"]

    record_safeguarding_learning(rt)
    assert assess.explain(rt, p, signer="lokafor")["closure"]["all_met"] is True
    result = close_safeguarding(rt, "lokafor")
    assert (result.move.source, result.move.dest) == ("closure_review", "closed")
    plan = plan_row(rt, p)
    closed_at = datetime(2026, 7, 28, 9, tzinfo=UTC)
    assert plan.state == "closed"
    assert plan.closed_at is not None and plan.closed_at.replace(tzinfo=UTC) == closed_at
    assert plan.learning_review_due == date(2026, 7, 28) + timedelta(days=90)
    with rt.db.read() as session:
        (signoff,) = session.exec(select(SignOff).where(SignOff.plan_id == p,
                                                        SignOff.purpose == "closure")).all()
    assert (signoff.by_id, signoff.group) == ("lokafor", GROUP)
    assert signoff.meeting_reference == "Safeguarding governance group 2026-07-28"
    assert signoff.evidence_reviewed == ["Safeguarding record re-audits April and July",
                                         "Incident panel outcomes", "Supervision evidence"]
    assert signoff.evidence_ids == plan_evidence(rt, p) and len(signoff.evidence_ids) == 4
    assert signoff.residual_risks == [
        "Agency night staff :: threshold guide in agency induction pack"]
    assert signoff.learning_embedded == ["Induction", "Supervision framework"]
    (close,) = events(rt, p, "close")
    closure = close.detail["decisions"]["closure"]
    assert close.actor == "lokafor" and closure["all_met"] is True
    assert closure["rules_version"] == rt.rules.version
    assert {c["rule"] for c in closure["criteria"]} >= {
        "closure.sustained", "closure.reaudits", "closure.learning", "closure.signoff-group"}


# --- the care planning QIP: step down, then reopen ---------------------------------------


def care_planning_sustaining(rt: Runtime) -> None:
    p = CARE_PLANNING
    rt.clock.set("2026-01-21")
    lifecycle.sign_off(rt, p, "approval", by="rmensah", meeting="Quality committee 2026-01-21")
    lifecycle.fire_event(rt, p, "start", by="jpatel")
    deliver(rt, p, [("A1", "2026-01-29", "jpatel",
                     "Discharge and incident procedures v5|policies/cp-trigger", "cevans")])
    audit_month(rt, p, "2026-02-18", {"plan-audit": 84}, by="jpatel")
    deliver(rt, p, [("A2", "2026-02-26", "mjones",
                     "20 reviewed care plans, signed by people and families|CP/rev", "jpatel")])
    lifecycle.fire_event(rt, p, "begin_sustaining", by="jpatel")
    for day, value in (("2026-03-18", 91), ("2026-04-15", 93)):
        audit_month(rt, p, day, {"plan-audit": value}, by="jpatel")


def test_the_care_planning_qip_steps_down_and_reopens_on_a_special_cause_of_concern(
    loaded: Runtime,
) -> None:
    """Operational example 2, read as Making Data Count asks: the rules prefer routine
    monitoring for care planning, so the operations director steps it down for six months.
    The July audit falls below target but within the process limits — common cause: the plan
    stays in monitoring, AMBER, not RED. The August audit falls below the lower process limit —
    a special cause of concern: the rules reopen the plan at once, recorded as theirs with the
    indicator, its value, its limits and the test that fired."""
    rt, p = loaded, CARE_PLANNING
    care_planning_sustaining(rt)
    rt.clock.set("2026-05-05")
    assert assess.explain(rt, p)["step_down_preferred"] == ["monitoring.step-down-care-planning"]
    lifecycle.sign_off(rt, p, "step_down", by="rmensah", meeting="Quality committee 2026-05-05",
                       evidence_ids=plan_evidence(rt, p), no_residual_risk=True)
    plan = plan_row(rt, p)
    assert plan.state == "monitoring"
    assert plan.monitoring_until is not None
    stepped_on = datetime(2026, 5, 5, 9, tzinfo=UTC)
    assert plan.monitoring_until.replace(tzinfo=UTC) == stepped_on + timedelta(days=182)
    (step,) = events(rt, p, "step_down")
    assert step.detail["decisions"]["step_down"]["rules"] == ["monitoring.step-down-care-planning"]

    for day, value in (("2026-06-03", 94), ("2026-07-01", 92)):
        audit_month(rt, p, day, {"plan-audit": value}, by="jpatel")
    assert plan_row(rt, p).state == "monitoring"
    assert events(rt, p, "reopen") == []

    audit_month(rt, p, "2026-07-29", {"plan-audit": 86}, by="jpatel")  # below the 90 target
    plan = plan_row(rt, p)
    facts = assess.explain(rt, p)["facts"]
    assert facts["any_deteriorating"] is True and facts["special_cause_concern"] is False
    assert (plan.state, plan.rag) == ("monitoring", "amber")
    assert events(rt, p, "reopen") == []

    audit_month(rt, p, "2026-08-26", {"plan-audit": 62}, by="jpatel")  # back to the baseline
    plan = plan_row(rt, p)
    assert plan.state == "in_progress"
    assert plan.monitoring_until is None
    (reopen,) = events(rt, p, "reopen")
    assert (reopen.actor, reopen.from_state, reopen.to_state) == (
        RULES_ACTOR, "monitoring", "in_progress")
    # 84, 91, 93, 94, 92, 86, 62: mean 602 / 7 = 86, moving ranges 7, 2, 1, 2, 6, 24 with
    # mean 42 / 6 = 7, so the process limits are 86 ± 2.66 × 7 = 67.4 and 104.6 (trial limits:
    # seven points, fewer than the baseline's twelve)
    assert reopen.reason == ("plan-audit (Care plans meeting the audit standard) shows special "
                             "cause variation of concern: 62%, below the lower process limit "
                             "(process limits 67.4% to 104.6%)")
    decision = reopen.detail["decisions"]["reopen"]
    assert decision["rules"] == ["monitoring.reopen-on-deterioration"]
    assert decision["facts"]["special_cause_concern"] is True
    assert decision["facts"]["concern_test"] == "below the lower process limit"
    assert decision["rules_version"] == rt.rules.version
    assert plan.rag == "red"
    last_rag = events(rt, p, "rag changed")[-1]
    assert last_rag.to_state == "red"
    assert "rag.red-deteriorating" in last_rag.detail["rules"]


def test_step_down_is_refused_for_a_medication_plan(loaded: Runtime) -> None:
    """The rules prefer routine monitoring only for care planning themes: the medication QIP,
    every action done and the MAR audit on target, must be closed, not stepped down."""
    rt, p = loaded, MEDICATION
    rt.clock.set("2026-01-22")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi", meeting="Quality committee 2026-01-22")
    lifecycle.fire_event(rt, p, "start", by="jpatel")
    deliver(rt, p, [
        ("A1", "2026-02-12", "jpatel", "Weekly MAR audit schedule|policies/mar-audit-v3.pdf",
         "cevans"),
        ("A2", "2026-03-10", "anowak", "Attendance sheets, 14 of 14 staff|L&D/med-refresh",
         "jpatel"),
        ("A3", "2026-03-25", "mjones", "Competency records for 6 senior support workers|HR",
         "jpatel"),
    ])
    lifecycle.fire_event(rt, p, "begin_sustaining", by="jpatel")
    audit_month(rt, p, "2026-04-17", {"mar-complete": 97}, by="jpatel")
    assert assess.explain(rt, p)["step_down_preferred"] == []

    refusal = str(refused(rt, lambda: lifecycle.sign_off(rt, p, "step_down", by="dadeyemi")))
    assert f"Can't step_down plan {p}" in refusal
    assert "the rules do not prefer step-down for this plan now" in refusal
    assert plan_row(rt, p).state == "sustaining"


# --- RAG ---------------------------------------------------------------------------------


def rag_events(rt: Runtime, plan_id: str) -> list[AuditEvent]:
    return [e for e in events(rt, plan_id, "rag changed") if e.actor == RULES_ACTOR]


def test_rag_changes_are_recorded_with_reason_and_rules(loaded: Runtime) -> None:
    """Board oversight: the MAR audit action overdue makes the medication QIP amber; 20
    working days overdue makes it red; a revised timeline approved by the manager brings it
    back to amber for slippage. Each change is an audit event with its reason, the rules that
    fired, the facts they used and the rules version."""
    rt, p = loaded, MEDICATION
    rt.clock.set("2026-01-22")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi", meeting="Quality committee 2026-01-22")
    lifecycle.fire_event(rt, p, "start", by="jpatel")
    assert plan_row(rt, p).rag == "green"
    changes = len(rag_events(rt, p))

    rt.clock.set("2026-02-16")  # A1 was due on Friday 13 February
    (result,) = assess.reassess_each(rt, [p])
    assert result.rag_changed and result.rag is not None
    amber = rag_events(rt, p)[-1]
    assert (amber.from_state, amber.to_state) == ("green", "amber")
    assert amber.reason == "An action is overdue."
    assert amber.detail["rules"] == ["rag.amber-overdue"]
    assert amber.detail["facts"] == {"actions_overdue": 1}
    assert amber.detail["rules_version"] == amber.version == rt.rules.version
    assert len(rag_events(rt, p)) == changes + 1

    rt.clock.set("2026-02-20")
    lifecycle.fire_event(rt, p, "review", by="jpatel", note="Monthly governance review")
    rt.clock.set("2026-03-12")  # 19 working days overdue
    (result,) = assess.reassess_each(rt, [p])
    assert not result.rag_changed
    assert len(rag_events(rt, p)) == changes + 1

    rt.clock.set("2026-03-13")  # 20 working days overdue
    assess.reassess_all(rt, [p])
    red = rag_events(rt, p)[-1]
    assert (red.from_state, red.to_state) == ("amber", "red")
    assert red.detail["rules"] == ["rag.red-long-overdue"]
    assert red.detail["facts"]["max_working_days_overdue"] == 20
    assert red.reason == "An action is 20 or more working days overdue."
    assert plan_row(rt, p).rag == "red"

    lifecycle.fire_event(rt, f"{p}/A1", "revise_due", by="dadeyemi", due=date(2026, 4, 10),
                         reason="Audit tool replaced; weekly schedule restarts in April")
    slipped = rag_events(rt, p)[-1]
    assert (slipped.from_state, slipped.to_state) == ("red", "amber")
    assert slipped.detail["rules"] == ["rag.amber-slipped"]
    assert slipped.reason == "An open action is running on a revised timeline."
    assert plan_row(rt, p).rag == "amber"
    assert len(rag_events(rt, p)) == changes + 3


# --- pinned criteria and variations ------------------------------------------------------


def safeguarding_variant(folder: Path) -> Path:
    """A copy of the safeguarding plan (QIP-2026-099) whose own closure criteria ask only for
    60 days and senior sign-off: no re-audits, no group, no learning."""
    text = (PLANS / "QIP-2026-021-safeguarding.yaml").read_text()
    own = ("  sustain_days: 90\n  reaudits: 2\n  signoff: {group: Safeguarding governance group}\n"
           "  learning_required: true\n")
    assert own in text
    variant = folder / "QIP-2026-099-safeguarding.yaml"
    variant.write_text(text.replace("id: QIP-2026-021", "id: QIP-2026-099").replace(
        own, "  sustain_days: 60\n  signoff: {level: senior}\n"))
    return variant


def test_criteria_are_pinned_at_approval_with_the_safeguarding_defaults(
    loaded: Runtime, tmp_path: Path,
) -> None:
    """A safeguarding plan whose own criteria ask only for senior sign-off and 60 days gets the
    rules' safeguarding defaults when approved: 90 days, two re-audits, the safeguarding
    governance group, learning — pinned with the moment and the rules version. When the
    defaults later change, approved plans keep their pinned criteria; drafts follow."""
    rt = loaded
    variant = safeguarding_variant(tmp_path)
    loading.load_files(rt, [variant], actor="test")
    assert plan_row(rt, "QIP-2026-099").closure_criteria.get("reaudits") is None

    rt.clock.set("2026-01-27")
    for plan_id in ("QIP-2026-099", SAFEGUARDING):
        lifecycle.sign_off(rt, plan_id, "approval", by="dadeyemi",
                           meeting="Safeguarding governance group 2026-01-27")
        pinned = plan_row(rt, plan_id).closure_criteria
        assert pinned["pinned_at"] == "2026-01-27T09:00:00+00:00"
        assert pinned["rules_version"] == rt.rules.version
        assert pinned["sustain_days"] == 90
        assert pinned["reaudits"] == 2
        assert pinned["signoff"]["group"] == GROUP
        assert pinned["learning_required"] is True
        assert pinned["learning_review_days"] == 90
    assert plan_row(rt, "QIP-2026-099").closure_criteria["signoff"]["level"] == "senior"

    # a governance lead later raises the safeguarding default to three re-audits
    config = tmp_path / "config"
    for part in ("workflows", "rules"):
        (config / part).mkdir(parents=True)
        for path in (SHIPPED_CONFIG / part).glob("*.yaml"):
            (config / part / path.name).write_text(path.read_text())
    defaults = config / "rules" / "defaults.yaml"
    text = defaults.read_text()
    assert text.count("      reaudits: 2\n      signoff_group:") == 1
    defaults.write_text(text.replace("      reaudits: 2\n      signoff_group:",
                                     "      reaudits: 3\n      signoff_group:"))
    stricter = Runtime(db=rt.db, clock=rt.clock, config_dir=config)
    assert stricter.rules.version != rt.rules.version
    publishing.publish(rt, config, by="dadeyemi")  # new plans are loaded under these
    approved = assess.explain(stricter, SAFEGUARDING)
    assert approved["criteria_pinned"] is True
    assert approved["facts"]["required_reaudits"] == 2
    assert approved["closure_criteria"]["rules_version"] == rt.rules.version
    draft = tmp_path / "draft"
    draft.mkdir()
    variant = safeguarding_variant(draft)
    variant.write_text(variant.read_text().replace("id: QIP-2026-099", "id: QIP-2026-098"))
    loading.load_files(stricter, [variant], actor="test")
    assert assess.explain(stricter, "QIP-2026-098")["facts"]["required_reaudits"] == 3
    assert assess.explain(rt, "QIP-2026-098")["facts"]["required_reaudits"] == 2


def test_a_variation_needs_authority_and_keeps_before_and_after(loaded: Runtime) -> None:
    """Changing pinned criteria is a variation signed like closure: the operations director,
    outside the safeguarding governance group, is refused; the safeguarding lead varies the
    sustain period with a reason, and the audit trail keeps the before and after."""
    rt, p = loaded, SAFEGUARDING
    rt.clock.set("2026-01-27")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi")
    lifecycle.fire_event(rt, p, "start", by="tbrennan")
    change = assess.parse_variation(["sustain_days=120"])
    assert change == {"sustain_days": 120}

    rt.clock.set("2026-03-02")
    refusal = str(refused(rt, lambda: lifecycle.sign_off(
        rt, p, "variation", by="rmensah", variation=change,
        reason="Repeat alerts in February")))
    assert f"Ruth Mensah is not a member of the {GROUP}" in refusal
    assert plan_row(rt, p).closure_criteria["sustain_days"] == 90

    result = lifecycle.sign_off(rt, p, "variation", by="lokafor", variation=change,
                                meeting="Safeguarding governance group 2026-03-02",
                                reason="Repeat alerts in February: sustain for four months")
    assert result.move.event.name == "vary"
    criteria = plan_row(rt, p).closure_criteria
    assert criteria["sustain_days"] == 120
    assert criteria["pinned_at"] == "2026-01-27T09:00:00+00:00"
    (vary,) = events(rt, p, "vary")
    assert vary.actor == "lokafor"
    assert vary.reason == "Repeat alerts in February: sustain for four months"
    assert vary.detail["decisions"]["variation"] == {"before": {"sustain_days": 90},
                                                     "after": {"sustain_days": 120}}
    assert vary.detail["signoff"]["purpose"] == "variation"
    assert assess.explain(rt, p)["facts"]["required_sustain_days"] == 120
