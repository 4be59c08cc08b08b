"""What the pages show (services/pages.py), read as the people of the medication QIP see it, on
SQLite and PostgreSQL: My work puts the overdue action first with its working days and lists
what waits for each person's decision; the action and plan pages show what, why, the history
and only the forms the policy allows; the portfolio shows each person the plans they may see."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, pages
from qip_flow.services.policy import Actor
from qip_flow.store.models import DueRequest, Person

PLAN = "QIP-2026-014"


def actor(rt: Runtime, person_id: str, **kw: object) -> Actor:
    with rt.db.read() as session:
        person = session.get(Person, person_id)
        assert person is not None
    return Actor(person, **{"full_signin_at": rt.clock.now(), **kw})  # type: ignore[arg-type]


@pytest.fixture
def started(loaded: Runtime) -> Runtime:
    """The medication QIP approved and under way; on 20 February A1 (due 13 February) is five
    working days overdue, and Megan Jones has completed A3 with evidence."""
    loaded.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(loaded, PLAN, "approval", by="dadeyemi")
    lifecycle.fire_event(loaded, PLAN, "start", by="jpatel")
    loaded.clock.set("2026-02-20T10:00")
    lifecycle.fire_event(loaded, f"{PLAN}/A3", "complete", by="mjones",
                         evidence=["Spot-check log|audits/spot.pdf"])
    return loaded


def test_the_sponsor_sees_the_approval_waiting(loaded: Runtime) -> None:
    work = pages.my_work(loaded, actor(loaded, "dadeyemi"))
    assert {(s["plan"], s["purpose"]) for s in work["signoffs"]} >= {(PLAN, "approval")}
    assert (PLAN, "approval") not in {(s["plan"], s["purpose"]) for s in
                                      pages.my_work(loaded, actor(loaded, "jpatel"))["signoffs"]}


def test_my_work_overdue_first_and_what_waits(started: Runtime) -> None:
    work = pages.my_work(started, actor(started, "jpatel"))
    first = work["actions"][0]
    assert (first["id"], first["overdue"], first["working_days"]) == (f"{PLAN}/A1", True, 5)
    assert first["words"] == "5 working days overdue"
    # Jaya manages Megan and owns the plan: A3 waits for her verification
    assert [v["id"] for v in work["verifications"]] == [f"{PLAN}/A3"]
    megan = pages.my_work(started, actor(started, "mjones"))
    assert [(a["id"], a["state"]) for a in megan["actions"]] == [(f"{PLAN}/A3", "completed")]
    assert megan["verifications"] == []
    with started.db.write() as session:
        session.add(DueRequest(action_id=f"{PLAN}/A1", requested_by_id="jpatel",
                               new_due=date(2026, 3, 6), reason="pharmacy delay",
                               at=started.clock.now()))
    # Jaya asked for it: it waits for her line manager (Ruth) or the sponsor, never for her
    assert pages.my_work(started, actor(started, "jpatel"))["new_dates"] == []
    for decider in ("rmensah", "dadeyemi"):
        dates = pages.my_work(started, actor(started, decider))["new_dates"]
        assert [(d["id"], d["new_due"]) for d in dates] == [(f"{PLAN}/A1", "2026-03-06")]


def test_action_page_shows_why_and_only_allowed_forms(started: Runtime) -> None:
    page = pages.action_page(started, actor(started, "mjones"), f"{PLAN}/A3")
    assert page["why"]["finding"] and page["owner_name"] == "Megan Jones"
    assert [e["description"] for e in page["evidence"]] == ["Spot-check log"]
    assert page["can"]["verify"].allowed is False
    assert "owns" in page["can"]["verify"].reason
    manager = pages.action_page(started, actor(started, "jpatel"), f"{PLAN}/A3")
    assert manager["can"]["verify"].allowed and not manager["can"]["complete"].allowed
    with pytest.raises(Refused, match="no part in plan"):
        pages.action_page(started, actor(started, "tbrennan"), f"{PLAN}/A3")
    link = actor(started, "mjones", scope=f"{PLAN}/A3", full_signin_at=None)
    assert pages.action_page(started, link, f"{PLAN}/A3")["can"]["record_progress"].allowed
    with pytest.raises(Refused, match="this link opens"):
        pages.action_page(started, link, f"{PLAN}/A1")


def test_plan_page_criteria_rag_and_history(started: Runtime) -> None:
    page = pages.plan_page(started, actor(started, "jpatel"), PLAN)
    criteria = {c["criterion"]: c for c in page["closure"]["criteria"]}
    assert page["closure"]["all_met"] is False
    verified = criteria["actions verified"]
    assert not verified["met"] and verified["conditions"][0]["facts"]
    assert page["rag"] in ("red", "amber", "green") and page["rag_reason"]
    whats = [h["what"] for h in page["history"]]  # newest first
    assert whats.index("complete") < whats.index("start") < whats.index("approve")
    assert page["can"]["sign_off"].allowed


def test_portfolio_is_scoped_to_the_person(started: Runtime) -> None:
    everyone = {r["id"] for r in pages.portfolio(started, Actor.command_line(
        actor(started, "cevans").person))["plans"]}
    assert len(everyone) == 4
    megan = {r["id"] for r in pages.portfolio(started, actor(started, "mjones"))["plans"]}
    assert megan == {PLAN, "QIP-2026-009"}  # she owns actions in both
    with started.db.write() as session:
        guest = Person(id="insp", name="Ian Inspector", roles=["guest"],
                       services=["willow-lodge"],
                       expires=started.clock.now().date() + timedelta(days=1))
        session.add(guest)
    ian = actor(started, "insp")
    assert {r["id"] for r in pages.portfolio(started, ian)["plans"]} == {"QIP-2026-021"}
    assert {r["id"] for r in pages.portfolio(started, ian, service="maple-house")["plans"]} == set()
    with pytest.raises(Refused, match="guest access covers willow-lodge"):
        pages.plan_page(started, ian, PLAN)
