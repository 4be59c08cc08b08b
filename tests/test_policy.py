"""The one policy (services/policy.py), over random organisations and plans on SQLite and
PostgreSQL: nobody verifies what they own or completed, nobody decides the new date they asked
for, a link from a message never approves, verifies or signs, a guest only reads their services
until their last day, and every refusal says why and who can."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from qip_flow.config.rules import AccessSettings
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import loading
from qip_flow.services.policy import (
    DEEP_LINK_ACTS,
    RECENT_SIGNIN_ACTS,
    Act,
    Actor,
    Policy,
)
from qip_flow.store.db import Database
from qip_flow.store.models import Action, DueRequest, Person, Plan, Service
from tests.conftest import snapshot

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LEVELS = ["operational", "manager", "senior", "board"]


@st.composite
def organisations(draw: st.DrawFn) -> dict:
    """People (some governance leads, some guests), two services and one plan whose actions
    have random owners, completers and new-date requests."""
    n = draw(st.integers(3, 7))
    people = []
    for i in range(n):
        kind = draw(st.sampled_from(["staff", "staff", "staff", "lead", "guest"]))
        people.append({
            "id": f"p{i}", "level": draw(st.sampled_from(LEVELS)),
            "manager": draw(st.one_of(st.none(), st.integers(0, n - 1))),
            "groups": draw(st.sets(st.sampled_from(["Board", "Safeguarding"]), max_size=2)),
            "kind": kind, "services": draw(st.sets(st.sampled_from(["s1", "s2"]), min_size=1)),
            "expires": NOW.date() + timedelta(days=draw(st.integers(-5, 5)))})
    staff = [p["id"] for p in people if p["kind"] != "guest"] or ["p0"]
    actions = [{"owner": draw(st.sampled_from(staff)),
                "completer": draw(st.one_of(st.none(), st.sampled_from(staff))),
                "requester": draw(st.one_of(st.none(), st.sampled_from(staff)))}
               for _ in range(draw(st.integers(1, 3)))]
    return {"people": people, "owner": draw(st.sampled_from(staff)),
            "sponsor": draw(st.sampled_from(staff)), "service": draw(st.sampled_from(["s1", "s2"])),
            "signoff": draw(st.sampled_from([{}, {"level": "senior"}, {"group": "Board"}])),
            "actions": actions}


@contextmanager
def written(db: Database, org: dict) -> Iterator[Session]:
    """The organisation and plan as rows, in a transaction rolled back afterwards."""
    with Session(db.engine) as session:
        for s in ("s1", "s2"):
            session.add(Service(id=s, name=s))
        for p in org["people"]:
            guest = p["kind"] == "guest"
            session.add(Person(
                id=p["id"], name=f"Person {p['id']}", level="operational" if guest else p["level"],
                groups=[] if guest else sorted(p["groups"]),
                roles={"lead": ["governance_lead"], "guest": ["guest"]}.get(p["kind"], []),
                services=sorted(p["services"]) if guest else [],
                expires=p["expires"] if guest else None))
        session.flush()
        for p in org["people"]:
            if p["manager"] is not None and p["manager"] != int(p["id"][1:]):
                person = session.get(Person, p["id"])
                assert person is not None
                person.line_manager_id = f"p{p['manager']}"
        session.add(Plan(id="QIP-1", title="t", service_id=org["service"], source_type="audit",
                         theme="medication", owner_id=org["owner"], sponsor_id=org["sponsor"],
                         state="in_progress", closure_criteria={"signoff": org["signoff"]},
                         created_at=NOW, updated_at=NOW))
        session.flush()
        for i, a in enumerate(org["actions"], 1):
            session.add(Action(id=f"QIP-1/A{i}", plan_id="QIP-1", ref=f"A{i}", description="d",
                               owner_id=a["owner"], state="completed", created_at=NOW,
                               last_update_at=NOW, completed_by_id=a["completer"]))
            if a["requester"]:
                session.add(DueRequest(action_id=f"QIP-1/A{i}", requested_by_id=a["requester"],
                                       new_due=date(2026, 5, 1), reason="r", at=NOW))
        session.flush()
        try:
            yield session
        finally:
            session.rollback()


def every_question(session: Session) -> Iterator[tuple[Person, Plan, Action, DueRequest | None]]:
    from sqlmodel import select

    plan = session.get(Plan, "QIP-1")
    assert plan is not None
    for person in session.exec(select(Person)).all():
        for action in session.exec(select(Action)).all():
            request = session.exec(select(DueRequest).where(
                DueRequest.action_id == action.id)).first()
            yield person, plan, action, request


def full(person: Person, minutes_ago: int = 1) -> Actor:
    return Actor(person, door="web", full_signin_at=NOW - timedelta(minutes=minutes_ago))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(org=organisations())
def test_separation_and_scope_hold_for_every_person(database: Database, org: dict) -> None:
    with written(database, org) as session:
        policy = Policy(session, AccessSettings(), NOW)
        for person, plan, action, request in every_question(session):
            actor = full(person)
            deciders = policy.deciders(plan, action)
            for act in Act:
                answer = policy.decide(actor, act, plan, action, request=request)
                if not answer.allowed:
                    assert answer.reason, (act, person.id)
            # the portfolio's set-based answer agrees with the one-plan question
            assert (plan.id in policy.plans_with_part(person)) == policy.has_part(person, plan)
            verify = policy.decide(actor, Act.VERIFY, plan, action)
            mine = person.id in (action.owner_id, action.completed_by_id)
            guest = "guest" in person.roles
            # nobody verifies what they own or completed; the deciders verify the rest
            assert verify.allowed == (not mine and not guest and person.id in deciders)
            if mine and not guest:
                assert not any(w.endswith(f"({person.id})") for w in verify.who_can)
            decide_date = policy.decide(actor, Act.DECIDE_NEW_DATE, plan, action, request=request)
            if request is not None and person.id == request.requested_by_id:
                assert not decide_date.allowed
            for act in (Act.RECORD_PROGRESS, Act.COMPLETE, Act.ADD_EVIDENCE,
                        Act.REQUEST_NEW_DATE):
                assert policy.decide(actor, act, plan, action).allowed == (
                    person.id == action.owner_id and not guest)
            # a link from a message: never a sign-off, approval or verification; its item only
            for scope in (action.id, "QIP-1/A99"):
                link = Actor(person, door="web", scope=scope)
                for act in Act:
                    answer = policy.decide(link, act, plan, action, request=request)
                    if act not in DEEP_LINK_ACTS or scope != action.id:
                        assert not answer.allowed, (act, scope)
            # approvals, verifications and sign-offs need a recent full sign-in
            stale = full(person, minutes_ago=16)
            for act in RECENT_SIGNIN_ACTS:
                assert not policy.decide(stale, act, plan, action, request=request).allowed
            if guest:
                lapsed = person.expires < NOW.date()
                sees = not lapsed and plan.service_id in person.services
                assert policy.decide(actor, Act.VIEW, plan).allowed == sees
                assert not any(policy.decide(actor, a, plan, action, request=request).allowed
                               for a in Act if a not in (Act.VIEW, Act.RUN_REPORTS))
                visible = policy.visible_plan_ids(actor)
                assert visible == ({"QIP-1"} if sees else set())
            lead = "governance_lead" in person.roles
            board = person.level == "board" and not guest
            for act in (Act.RUN_REPORTS, Act.PREVIEW_RULES, Act.SEE_EVERY_PLAN):
                if act is Act.RUN_REPORTS and guest:
                    continue
                # the board sees every plan and runs the board pack; only leads preview rules
                assert policy.decide(actor, act, plan).allowed == (
                    lead or (board and act is not Act.PREVIEW_RULES))


def test_a_refusal_names_who_can(database: Database) -> None:
    org = {"people": [
        {"id": "p0", "level": "operational", "manager": 1, "groups": set(), "kind": "staff",
         "services": {"s1"}, "expires": NOW.date()},
        {"id": "p1", "level": "manager", "manager": None, "groups": set(), "kind": "staff",
         "services": {"s1"}, "expires": NOW.date()},
        {"id": "p2", "level": "senior", "manager": None, "groups": set(), "kind": "staff",
         "services": {"s1"}, "expires": NOW.date()}],
        "owner": "p2", "sponsor": "p2", "service": "s1", "signoff": {},
        "actions": [{"owner": "p0", "completer": "p0", "requester": "p0"}]}
    with written(database, org) as session:
        policy = Policy(session, AccessSettings(), NOW)
        owner, plan, action = session.get(Person, "p0"), session.get(Plan, "QIP-1"), \
            session.get(Action, "QIP-1/A1")
        assert owner and plan and action
        refused = policy.decide(full(owner), Act.VERIFY, plan, action)
        assert not refused.allowed
        assert refused.who_can == ("Person p1 (p1)", "Person p2 (p2)")
        with pytest.raises(Refused, match=r"verify: Person p0 owns QIP-1/A1 .*Person p1 \(p1\)"):
            refused.check()
        link = policy.decide(Actor(owner, scope="QIP-1/A1"), Act.COMPLETE, plan, action)
        assert "sign in fully" in link.reason


ORG_WITH_ROLES = {
    "people": [
        {"id": "admin", "name": "Ada Admin", "roles": ["administrator"], "level": "senior"},
        {"id": "lead", "name": "Gwen Lead", "roles": ["governance_lead"]},
        {"id": "insp", "name": "Ian Inspector", "roles": ["guest"], "services": ["s1"],
         "expires": "2026-06-30"}],
    "services": [{"id": "s1", "name": "Harbour House"}],
}


def test_organisation_file_gives_leads_and_guests(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "org.yaml"
    path.write_text(yaml.safe_dump(ORG_WITH_ROLES))
    loading.load_files(runtime, [path], actor="test")
    with runtime.db.read() as session:
        guest = session.get(Person, "insp")
        assert guest is not None
        assert (guest.roles, guest.services, guest.expires) == (["guest"], ["s1"], date(2026, 6, 30))
    before = snapshot(runtime.db)
    bad = {**ORG_WITH_ROLES, "people": [{"id": "x", "name": "X", "roles": ["guest"],
                                         "services": ["s1"]}]}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(InvalidInput, match="a guest needs `services:`"):
        loading.load_files(runtime, [path], actor="admin")
    unknown = {**ORG_WITH_ROLES, "people": [{"id": "y", "name": "Y", "roles": ["guest"],
                                             "services": ["nowhere"], "expires": "2026-06-30"}]}
    path.write_text(yaml.safe_dump(unknown))
    with pytest.raises(InvalidInput, match="nowhere"):
        loading.load_files(runtime, [path], actor="admin")
    assert snapshot(runtime.db) == before
    widened = {**ORG_WITH_ROLES}
    widened["people"] = [*ORG_WITH_ROLES["people"][:2],
                         {**ORG_WITH_ROLES["people"][2], "expires": "2027-06-30"}]
    path.write_text(yaml.safe_dump(widened))
    with pytest.raises(Refused, match="needs an administrator"):
        loading.load_files(runtime, [path], actor="lead")
    assert snapshot(runtime.db) == before


def test_cli_signoff_false_refuses_signoffs_at_the_terminal(
        loaded: Runtime, config: Path, cli, tmp_path: Path) -> None:
    """With `access: {cli_signoff: false}` in the rules, `qip signoff` exits 1 naming the
    setting and changes nothing; other commands still work."""
    from tests.test_separation_of_duties import cli_url

    defaults = config / "rules" / "defaults.yaml"
    defaults.write_text(defaults.read_text() + "\naccess:\n  cli_signoff: false\n")
    url = cli_url(loaded.db)
    code, _, err = cli(url, "--now", "2026-01-15", "rules", "publish", str(config),
                         "--by", "dadeyemi")
    assert code == 0, err
    before = snapshot(loaded.db)
    code, _, err = cli(url, "--now", "2026-01-15", "signoff", "QIP-2026-014", "--for",
                         "approval", "--by", "dadeyemi")
    assert code == 1
    assert "access.cli_signoff: false" in err
    assert snapshot(loaded.db) == before
