"""A closure or step-down sign-off is a governance record (seed article 2, "Governance sign-off
and documentation": the evidence reviewed, residual risks and how they are monitored, where
learning has been embedded), and re-audits count at intervals, not as entries. Played by a
governance lead of Harbour Lane Care at the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap

from governance_cli import Governance, governance, plan_text

__all__ = ["governance"]

PLAN = "HL-SG-01"
SUSTAINED = [("2026-03-02", 92, False), ("2026-03-30", 95, True), ("2026-04-27", 96, True),
             ("2026-06-01", 97, False)]
PARTS = {"meeting": "a meeting reference (--meeting)",
         "evidence": "the evidence reviewed, chosen from the plan's recorded evidence",
         "risks": "the residual risks, each with how it is monitored",
         "learning": "where the learning is embedded (--learning-embedded)"}


def ready_for_closure(lead: Governance, plan_id: str = PLAN) -> None:
    """Delivered, on target for three months with re-audits in March and April, learning
    written down, the closure report before the Adult safeguarding panel."""
    lead.ok("load", str(lead.write(f"{plan_id}.yaml", plan_text(plan_id))))
    lead.deliver(plan_id)
    lead.sustain(plan_id, SUSTAINED)
    lead.ok("learning", plan_id, "--by", "dfinch", "--summary",
            "A form that asks for time, action and who was told gets them recorded",
            "--embedded-in", "Induction", "--embedded-in", "Supervision", now="2026-06-02")
    lead.ok("do", plan_id, "request_closure", "--by", "dfinch", now="2026-06-02")


def test_closure_is_refused_naming_every_missing_part_then_granted_with_a_complete_record(
        governance: Governance) -> None:
    lead = governance
    ready_for_closure(lead)
    day = "2026-06-03"

    # The gap in the issue: a name alone closed the plan. Now every missing part is named at
    # once, and nothing else stands in the way (the criteria all hold).
    refusal = lead.refused("close", PLAN, "--by", "mosei", now=day)
    assert all(part in refusal for part in PARTS.values()), refusal
    assert "closure criteria not met" not in refusal

    # A free-text note is not evidence chosen from the plan's record.
    refusal = lead.refused("close", PLAN, "--by", "mosei", "--meeting",
                           "Adult safeguarding panel 2026-06-03", "--evidence-note",
                           "Panel minutes", "--no-residual-risk", "--learning-embedded",
                           "Induction", now=day)
    assert PARTS["evidence"] in refusal
    assert all(PARTS[p] not in refusal for p in ("meeting", "risks", "learning"))

    # Bad input is exit 2 and changes nothing: evidence that is not this plan's, a risk
    # without how it is monitored, risks beside "no residual risk".
    complete = ["--meeting", "Adult safeguarding panel 2026-06-03", "--learning-embedded",
                "Induction"]
    refusal = lead.refused("close", PLAN, "--by", "mosei", *complete, "--evidence", "999",
                           "--no-residual-risk", now=day, code=2)
    assert "999 is not evidence recorded on plan HL-SG-01" in refusal
    assert "New recording form live in every office" in refusal  # what may be chosen
    ids = lead.evidence_ids(PLAN)
    refusal = lead.refused("close", PLAN, "--by", "mosei", *complete, "--evidence", str(ids[0]),
                           "--residual-risk", "Agency night staff", now=day, code=2)
    assert "should be 'risk :: how it is monitored'" in refusal
    refusal = lead.refused("close", PLAN, "--by", "mosei", *complete, "--evidence", str(ids[0]),
                           "--residual-risk", "Agency staff :: spot checks",
                           "--no-residual-risk", now=day, code=2)
    assert "state one or the other" in refusal

    # The record written before the meeting, with a note added at it: closed.
    record = lead.write("closure-record.yaml", textwrap.dedent(f"""\
        meeting: Adult safeguarding panel 2026-06-03
        evidence: [{ids[0]}, {ids[1]}]
        residual_risks:
          - risk: Agency night staff unfamiliar with the new form
            monitored: Form in the agency induction pack; monthly record audit by the panel
        learning_embedded: [Induction, Supervision]
        """))
    out = lead.ok("close", PLAN, "--by", "mosei", "--record", str(record), "--evidence-note",
                  "Incident panel outcomes March to May", now=day)
    assert "closure_review → closed" in out

    shown = lead.json("show", PLAN)
    assert shown["state"] == "closed"
    (closure,) = [s for s in shown["signoffs"] if s["purpose"] == "closure"]
    assert closure["meeting_reference"] == "Adult safeguarding panel 2026-06-03"
    assert closure["evidence_ids"] == ids[:2]
    assert closure["evidence_reviewed"] == ["Incident panel outcomes March to May"]
    assert closure["residual_risks"] == [
        "Agency night staff unfamiliar with the new form :: Form in the agency induction pack; "
        "monthly record audit by the panel"]
    assert closure["no_residual_risk"] is False
    assert closure["learning_embedded"] == ["Induction", "Supervision"]

    report = lead.ok("report", "plan", PLAN, "--format", "md", now=day)
    assert "New recording form live in every office (HV/form-v2), 2026-02-12" in report
    assert ("Agency night staff unfamiliar with the new form — monitored by: Form in the agency "
            "induction pack") in report


def test_a_step_down_record_needs_meeting_evidence_and_risks_but_not_learning(
        governance: Governance) -> None:
    lead = governance
    plan_id = "HL-CP-01"
    lead.ok("load", str(lead.write("cp.yaml", plan_text(plan_id, theme="care planning"))))
    lead.deliver(plan_id)
    lead.sustain(plan_id, SUSTAINED[:1])
    day = "2026-03-03"
    refusal = lead.refused("signoff", plan_id, "--for", "step_down", "--by", "mosei", now=day)
    assert "step-down sign-off record is incomplete" in refusal
    assert all(PARTS[p] in refusal for p in ("meeting", "evidence", "risks"))
    assert PARTS["learning"] not in refusal
    (first, *_) = lead.evidence_ids(plan_id)
    lead.ok("signoff", plan_id, "--for", "step_down", "--by", "mosei", "--meeting",
            "Quality meeting 2026-03-03", "--evidence", str(first), "--no-residual-risk",
            now=day)
    shown = lead.json("show", plan_id)
    assert shown["state"] == "monitoring"
    (step,) = [s for s in shown["signoffs"] if s["purpose"] == "step_down"]
    assert (step["no_residual_risk"], step["residual_risks"]) == (True, [])


def test_reaudits_on_the_same_day_count_once_and_explain_says_so(governance: Governance
                                                                 ) -> None:
    lead = governance
    lead.ok("load", str(lead.write("plan.yaml", plan_text(PLAN))))
    lead.deliver(PLAN)
    lead.sustain(PLAN, [("2026-03-02", 92, False), ("2026-03-30", 95, True),
                        ("2026-03-30", 95, True)])

    def reaudits(day: str) -> tuple[dict[str, object], dict[str, object]]:
        explained = lead.json("explain", PLAN, now=day)
        (criterion,) = [c for c in explained["closure"]["criteria"]
                        if c["rule"] == "closure.reaudits"]
        return criterion, explained["facts"]

    # The gap in the issue: two re-audits recorded on the same day were "two intervals".
    criterion, facts = reaudits("2026-03-31")
    assert criterion["met"] is False
    assert (facts["reaudits_in_run"], facts["reaudit_intervals_in_run"]) == (2, 1)
    assert "2 recorded, 1 at least 28 days apart (closer entries count once)" in \
        criterion["description"]
    assert "closer entries count once" in lead.ok("explain", PLAN, now="2026-03-31")

    # 27 days later is still the same interval; 28 days later is the second.
    lead.sustain(PLAN, [("2026-04-26", 96, True)])
    criterion, facts = reaudits("2026-04-26")
    assert (criterion["met"], facts["reaudit_intervals_in_run"]) == (False, 1)
    lead.sustain(PLAN, [("2026-04-27", 96, True)])
    criterion, facts = reaudits("2026-04-27")
    assert (criterion["met"], facts["reaudits_in_run"], facts["reaudit_intervals_in_run"]) == (
        True, 4, 2)
