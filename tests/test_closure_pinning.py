"""Closure criteria agreed at the outset (seed article 2) and authority that can be exercised:
a plan pins its whole closure test at approval and is judged by it until a variation adopts a
newer one; a plan is never pinned to a sign-off nobody in the organisation holds; its senior
sponsor is senior. Played by a governance lead of Harbour Lane Care, whose safeguarding group is
the "Adult safeguarding panel" (not the shipped default's "Safeguarding governance group"), at
the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from governance_cli import ORGANISATION, Governance, governance, plan_text

__all__ = ["governance"]

PLAN = "HL-SG-01"
APPROVE = ("--for", "approval", "--by", "mosei", "--meeting", "Adult safeguarding panel 2026-01-20")


def load(lead: Governance, plan_id: str = PLAN, **kw: str) -> None:
    lead.ok("load", str(lead.write(f"{plan_id}.yaml", plan_text(plan_id, **kw))))


def test_a_plan_naming_no_group_is_not_pinned_to_a_default_group_nobody_belongs_to(
        governance: Governance) -> None:
    lead = governance
    load(lead)  # safeguarding, signed at senior level, no group named
    lint = lead("lint", PLAN)
    assert lint.returncode == 0, lint.stdout
    assert ("The rules' default sign-off group 'Safeguarding governance group' has nobody who "
            "could sign, so it was not applied") in lint.stdout
    lead.ok("signoff", PLAN, *APPROVE, now="2026-01-20")
    criteria = lead.json("show", PLAN)["closure_criteria"]
    assert criteria["signoff"] == {"level": "senior"}  # no deadlock: the director can close it
    explained = lead.json("explain", PLAN, "--by", "mosei", now="2026-01-21")
    signing = {c["rule"]: c["met"] for c in explained["closure"]["criteria"]
               if c["rule"].startswith("closure.signoff")}
    assert signing == {"closure.signoff-level": True, "closure.signoff-group": True}


def test_where_the_rules_say_the_default_group_always_applies_approval_is_refused(
        governance: Governance, config: Path) -> None:
    lead = governance
    closure = config / "rules" / "closure.yaml"
    closure.write_text(closure.read_text().replace("default_group: if_someone_can_sign",
                                                   "default_group: always"))
    lead.config = config
    lead.ok("rules", "publish", str(config), "--by", "mosei")  # changes run on published rules
    load(lead)
    lint = lead("lint", PLAN)
    assert lint.returncode == 1
    assert "Nobody in the organisation holds the sign-off authority" in lint.stdout
    refusal = lead.refused("signoff", PLAN, *APPROVE, now="2026-01-20")
    assert "credibility.nobody-can-sign" in refusal


def test_a_plan_naming_a_group_nobody_belongs_to_is_refused_when_loaded(
        governance: Governance) -> None:
    lead = governance
    path = lead.write(f"{PLAN}.yaml", plan_text(PLAN, signoff="{group: Safeguarding governance "
                                                         "group}"))
    refusal = lead.refused("load", str(path), code=2)
    assert "no one in the organisation belongs to 'Safeguarding governance group'" in refusal


def test_a_group_left_empty_is_mended_by_a_variation_signed_at_the_approval_level(
        governance: Governance) -> None:
    lead = governance
    load(lead, signoff="{group: Adult safeguarding panel}")
    lead.ok("signoff", PLAN, *APPROVE, now="2026-01-20")
    # The panel is replaced by a committee: nobody is left in the pinned group.
    reorganised = ORGANISATION.replace("groups: [Adult safeguarding panel]",
                                       "groups: [Quality and safety committee]")
    lead.ok("load", str(lead.write("organisation.yaml", reorganised)), "--by", "achen",
            now="2026-02-02")  # a change of groups is loaded by an administrator
    lint = lead("lint", PLAN, now="2026-02-02")
    assert (lint.returncode, "credibility.nobody-can-sign" in lint.stdout) == (1, True)

    vary = ("vary", PLAN, "--set", "signoff.group=Quality and safety committee", "--reason",
            "The Adult safeguarding panel became the Quality and safety committee")
    # Below the level the plan was approved at (senior): refused, though in the new group.
    refusal = lead.refused(*vary, "--by", "pkowal", now="2026-02-03")
    assert "a variation of the sign-off or of the closure rules is signed at the level the " \
           "plan was approved at: senior" in refusal
    # To a group nobody belongs to: refused even for the chief executive.
    refusal = lead.refused("vary", PLAN, "--set", "signoff.group=Adult safeguarding panel",
                           "--reason", "keep the old name", "--by", "achen", now="2026-02-03")
    assert "nobody in the organisation could sign as Adult safeguarding panel" in refusal
    # The director, no longer in the pinned group, signs it at the approval level.
    lead.ok(*vary, "--by", "mosei", "--meeting", "Quality and safety committee 2026-02-03",
            now="2026-02-03")
    criteria = lead.json("show", PLAN, now="2026-02-03")["closure_criteria"]
    assert criteria["signoff"]["group"] == "Quality and safety committee"
    assert lead("lint", PLAN, now="2026-02-03").returncode == 0


@pytest.mark.parametrize("sponsor", ["sbello", "dfinch"])
def test_the_senior_sponsor_must_hold_senior_level(governance: Governance, sponsor: str
                                                    ) -> None:
    lead = governance
    load(lead, sponsor=sponsor)
    lint = lead("lint", PLAN)
    assert lint.returncode == 1
    assert "a plan's senior sponsor must hold senior level or above" in lint.stdout
    refusal = lead.refused("signoff", PLAN, *APPROVE, now="2026-01-20")
    assert "credibility.sponsor-level" in refusal


FOUR_AUDITS = """\
  - id: closure.four-audits
    description: At least four audits in the sustained run.
    when: {fact: sustained_measurements, at_least: 4}
    then: {outcome: criterion, criterion: four audits}

examples:"""


def criteria_of(explained: dict[str, object]) -> list[str]:
    return [c["rule"] for c in explained["closure"]["criteria"]]  # type: ignore[index]


def test_a_rules_change_reaches_earlier_plans_only_through_a_variation(
        governance: Governance, config: Path) -> None:
    lead = governance
    lead.config = config
    for plan_id in ("HL-SG-01", "HL-SG-02"):
        load(lead, plan_id)
        lead.ok("signoff", plan_id, *APPROVE, now="2026-01-20")
    first = lead.json("explain", "HL-SG-01", now="2026-01-21")
    v1 = first["closure_rules_version"]
    assert first["closure_rules_pinned"] is True and v1.startswith("closure@")

    # The governance lead adds a criterion to rules/closure.yaml after both approvals.
    closure = config / "rules" / "closure.yaml"
    closure.write_text(closure.read_text().replace("examples:", FOUR_AUDITS, 1))
    lead.ok("rules", "publish", str(config), "--by", "mosei", now="2026-01-22")
    load(lead, "HL-SG-03")
    lead.ok("signoff", "HL-SG-03", *APPROVE, now="2026-01-22")
    later = lead.json("explain", "HL-SG-03", now="2026-01-22")
    v2 = later["closure_rules_version"]
    assert v2 != v1 and "closure.four-audits" in criteria_of(later)

    # The plans approved earlier are still judged by the test they pinned, and say so.
    earlier = lead.json("explain", "HL-SG-01", now="2026-01-22")
    assert earlier["closure_rules_version"] == v1
    assert "closure.four-audits" not in criteria_of(earlier)
    assert "`qip vary HL-SG-01 --adopt-rules`" in earlier["closure_rules_note"]
    assert f"Closure test {v1}" in lead.ok("explain", "HL-SG-01", now="2026-01-22")

    # Many at once, each signed at its own approval level: a manager is refused for both and
    # nothing changes; the director varies both.
    vary = ("vary", "--all-pinned-to", v1, "--adopt-rules", "--reason",
            "The panel adopted the four-audit criterion for open plans")
    refusal = lead.refused(*vary, "--by", "glee", now="2026-01-23")
    assert "no plan was varied: 2 of 2 refused" in refusal
    assert "HL-SG-01:" in refusal and "HL-SG-02:" in refusal
    out = lead.ok(*vary, "--by", "mosei", "--meeting", "Adult safeguarding panel 2026-01-23",
                  now="2026-01-23")
    assert "varied 2 plan(s): HL-SG-01, HL-SG-02" in out
    for plan_id in ("HL-SG-01", "HL-SG-02"):
        varied = lead.json("explain", plan_id, now="2026-01-23")
        assert varied["closure_rules_version"] == v2
        assert "closure.four-audits" in criteria_of(varied)
    history = lead.json("audit", "HL-SG-01", now="2026-01-23")
    (variation,) = [e for e in history if e["what"] == "vary"]
    assert variation["detail"]["decisions"]["variation"] == {
        "before": {"closure_rules": v1}, "after": {"closure_rules": v2}}
