"""Random governance: people from the examples fire valid and invalid events, sign-offs and
measurements at the example plans (and at plans that are not credible) in random order
over months of simulated time. Whatever happens, the invariants hold: states are declared
ones, no plan is past draft without a senior approval and its prerequisites, a refusal
changes nothing, and the audit chain verifies."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import (
    drop_postgres_schema,
    make_postgres_database,
    plan_evidence,
    require_postgres,
    snapshot,
)
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import col, func, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading
from qip_flow.store import audit
from qip_flow.store.db import Database
from qip_flow.store.models import LEVELS, Action, AuditEvent, Finding, Indicator, Person, Plan, SignOff
from qip_flow.workflow.machines import Workflows

EXAMPLES = SHIPPED_CONFIG / "examples"
WORKFLOWS = Workflows.from_folder(SHIPPED_CONFIG / "workflows")
PLAN_WF, ACTION_WF = WORKFLOWS.defs["plan"], WORKFLOWS.defs["action"]
PURPOSES = [e.signoff for e in PLAN_WF.events if e.signoff]
PEOPLE = ["hwright", "dadeyemi", "rmensah", "jpatel", "lokafor", "tbrennan", "skaur", "mjones",
          "anowak", "cevans", "nobody"]
EXAMPLE_PLANS = ["QIP-2026-009", "QIP-2026-014", "QIP-2026-017", "QIP-2026-021"]
LEAVE_OUT = {  # copies of the care planning plan, each lacking one prerequisite of approval
    "QIP-2026-091": ("  reference: Internal care plan audit, quarter 4 2025\n", ""),
    "QIP-2026-092": ("    root_causes:\n      - No trigger to review a plan after a hospital stay "
                     "or incident\n", "    root_causes: []\n"),
    "QIP-2026-093": ("    owner: mjones\n", ""),
    "QIP-2026-094": ("    due: 2026-02-27\n", ""),
    "QIP-2026-095": ("closure:\n", "unused:\n"),
}
PLANS = EXAMPLE_PLANS + list(LEAVE_OUT)
SENIOR = LEVELS.index("senior")


def before_approval() -> set[str]:
    """States a plan can reach from the initial one without being approved."""
    seen, grew = {PLAN_WF.initial}, True
    while grew:
        grew = False
        for ev in PLAN_WF.events:
            if ev.signoff != "approval" and ev.dest and ev.dest not in seen and seen & set(ev.source):
                seen.add(ev.dest)
                grew = True
    return seen


UNAPPROVED_STATES = before_approval()


def write_plans_that_are_not_credible(folder: Path) -> list[Path]:
    """The plan files of LEAVE_OUT, written into ``folder``."""
    template = (EXAMPLES / "plans" / "QIP-2026-009-care-planning.yaml").read_text()
    paths = []
    for plan_id, (old, new) in LEAVE_OUT.items():
        assert template.count(old) == 1, plan_id
        text = template.replace("QIP-2026-009", plan_id).replace(old, new)
        if "unused:" in text:
            text = text[:text.index("unused:")]
        paths.append(folder / f"{plan_id}.yaml")
        paths[-1].write_text(text)
    return paths


def load_world(db: Database, folder: Path) -> None:
    """The examples and the plans that are not credible, loaded on 15 January."""
    rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [EXAMPLES, *write_plans_that_are_not_credible(folder)],
                       actor="cevans")


class Governance(RuleBasedStateMachine):
    """One provider's year, played at random. ``make_database`` gives each run a fresh
    database holding the examples and the plans that are not credible."""

    make_database: ClassVar[Callable[[], tuple[Database, Callable[[], None]]]]

    def __init__(self) -> None:
        super().__init__()
        self.db, self.cleanup = type(self).make_database()
        self.rt = Runtime(db=self.db, clock=Clock(), config_dir=SHIPPED_CONFIG)
        self.rt.clock.set("2026-01-20")
        with self.db.read() as session:
            self.actions = list(session.exec(select(Action.id).order_by(col(Action.id))).all())
            self.indicators = {p: list(session.exec(select(Indicator.ref)
                                                    .where(Indicator.plan_id == p)).all())
                               for p in PLANS}

    def teardown(self) -> None:
        self.db.dispose()
        self.cleanup()

    # --- attempting things ---------------------------------------------------------------

    def audit_count(self) -> int:
        with self.db.read() as session:
            return session.exec(select(func.count()).select_from(AuditEvent)).one()

    def attempt(self, change: Callable[[], Any]) -> Any:
        """Run one change: a refusal must leave every row as it was; a change must be audited."""
        before, events = snapshot(self.db), self.audit_count()
        try:
            result = change()
        except (Refused, InvalidInput):
            assert snapshot(self.db) == before
            return None
        assert self.audit_count() > events
        if isinstance(result, lifecycle.EventResult):
            move = result.move
            assert move.source in move.event.source
            assert move.dest == (move.event.dest or move.source)
        return result

    def fire(self, entity: str, event: str, by: str, **inputs: Any) -> None:
        self.attempt(lambda: lifecycle.fire_event(self.rt, entity, event, by=by, **inputs))

    def sign(self, plan: str, purpose: str, by: str) -> None:
        self.attempt(lambda: lifecycle.sign_off(
            self.rt, plan, purpose, by=by, meeting="Quality committee",
            evidence_ids=plan_evidence(self.rt, plan)[:1], evidence_reviewed=["Monthly audits"],
            residual_risks=["New starters :: induction competency check"],
            learning_embedded=["Induction"]))

    # --- rules ---------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.audit_count() > 0

    @rule(plan=st.sampled_from(PLANS), by=st.sampled_from(PEOPLE),
          event=st.sampled_from([e.name for e in PLAN_WF.events] + ["fly"]),
          reason=st.sampled_from([None, None, "Deterioration at the monthly audit"]),
          note=st.sampled_from([None, "Governance review: on track"]))
    def plan_event(self, plan: str, by: str, event: str, reason: str | None,
                   note: str | None) -> None:
        """Any plan event, sign-off events included, fired as a plain event."""
        self.fire(plan, event, by, reason=reason, note=note)

    @rule(plan=st.sampled_from(PLANS), by=st.sampled_from(PEOPLE),
          purpose=st.sampled_from([*PURPOSES, "applause"]))
    def sign_off(self, plan: str, by: str, purpose: str) -> None:
        self.sign(plan, purpose, by)

    @rule(data=st.data(), by=st.sampled_from(PEOPLE),
          event=st.sampled_from([e.name for e in ACTION_WF.events] + ["fly"]),
          evidence=st.booleans(), due_shift=st.sampled_from([None, 0, 14, 45]),
          reason=st.sampled_from([None, "Trainer cancelled"]),
          note=st.sampled_from([None, "Rota drafted"]))
    def action_event(self, data: st.DataObject, by: str, event: str, evidence: bool,
                     due_shift: int | None, reason: str | None, note: str | None) -> None:
        action = data.draw(st.sampled_from([*self.actions, "QIP-2026-014/A9"]), label="action")
        due = None if due_shift is None else self.rt.clock.today() + timedelta(days=due_shift)
        self.fire(action, event, by, evidence=["Attendance sheets|L&D/2026"] if evidence else [],
                  due=due, reason=reason, note=note)

    @rule(data=st.data(), plan=st.sampled_from(EXAMPLE_PLANS * 2 + list(LEAVE_OUT)),
          steps=st.integers(1, 12))
    def move_a_plan_on(self, data: st.DataObject, plan: str, steps: int) -> None:
        """A few of the things the plan's state invites next, with the inputs they need, each
        by the fitting person or by anyone at all."""
        for _ in range(steps):
            self.next_step(data, plan)

    def next_step(self, data: st.DataObject, plan: str) -> None:
        with self.db.read() as session:
            row = session.get(Plan, plan)
            state, owner = row.state, row.owner_id
            open_actions = {a.id: (a.state, a.owner_id) for a in session.exec(select(Action).where(
                Action.plan_id == plan, col(Action.state) != "verified")).all()}

        def person(fitting: str) -> str:
            return data.draw(st.one_of(st.just(fitting), st.sampled_from(PEOPLE)), label="by")

        if state == "draft":
            self.sign(plan, "approval", person("dadeyemi"))
        elif state == "approved":
            self.fire(plan, "start", person(owner))
        elif state == "in_progress" and open_actions:
            action_id = data.draw(st.sampled_from(sorted(open_actions)), label="action")
            action_state, action_owner = open_actions[action_id]
            if action_state == "completed":
                self.fire(action_id, "verify", person("cevans" if action_owner != "cevans"
                                                      else "jpatel"))
            else:
                self.fire(action_id, "complete", person(action_owner or owner),
                          evidence=["Evidence pack|SharePoint/QIP"])
        elif state == "in_progress":
            self.fire(plan, "begin_sustaining", person(owner))
        elif state == "sustaining":
            if data.draw(st.booleans(), label="step down"):
                self.sign(plan, "step_down", person("dadeyemi"))
            else:
                self.fire(plan, "request_closure", person(owner))
        elif state in ("closure_review", "monitoring"):
            self.sign(plan, data.draw(st.sampled_from(["closure", "closure", "step_down"]),
                                      label="purpose"), person("dadeyemi"))
        elif state == "closed":
            self.fire(plan, "reopen", person(owner), reason="New concern raised by a family")

    @rule(plan=st.sampled_from(PLANS), value=st.integers(0, 100), reaudit=st.booleans())
    def measure(self, plan: str, value: int, reaudit: bool) -> None:
        for indicator in self.indicators[plan][:1]:
            self.attempt(lambda indicator=indicator: lifecycle.record_measurement(
                self.rt, plan, indicator, value, reaudit=reaudit, source="monthly audit"))

    @precondition(lambda self: self.rt.clock.today() < date(2027, 6, 1))
    @rule(days=st.sampled_from([1, 7, 30, 95, 190]))
    def time_passes(self, days: int) -> None:
        self.rt.clock.advance(days=days)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def the_plans_are_sound(self) -> None:
        with self.db.read() as session:
            plans = session.exec(select(Plan)).all()
            assert {a.state for a in session.exec(select(Action)).all()} <= set(
                ACTION_WF.state_names())
            for plan in plans:
                assert plan.state in PLAN_WF.state_names(), plan.id
                if plan.state in UNAPPROVED_STATES:
                    continue
                approvers = session.exec(select(Person).join(
                    SignOff, col(SignOff.by_id) == col(Person.id)).where(
                    SignOff.plan_id == plan.id, SignOff.purpose == "approval")).all()
                assert any(LEVELS.index(p.level) >= SENIOR for p in approvers), (
                    f"{plan.id} is {plan.state} without a senior approval")
                where = f"{plan.id} is {plan.state} but"
                assert plan.source_type and plan.source_reference.strip(), f"{where} has no source"
                findings = session.exec(select(Finding).where(Finding.plan_id == plan.id)).all()
                assert findings and all(any(c.strip() for c in f.root_causes) for f in findings), (
                    f"{where} a finding has no root cause")
                actions = session.exec(select(Action).where(Action.plan_id == plan.id)).all()
                assert actions and all(a.owner_id and a.due for a in actions), (
                    f"{where} an action has no owner or due date")
                criteria = plan.closure_criteria
                assert all(criteria.get(k) not in (None, "", [], {})
                           for k in ("success", "indicators", "sustain_days", "signoff")), (
                    f"{where} its closure criteria are incomplete")
            check = audit.verify(session)
        assert check.ok, check.problem


def run(make_database: Callable[[], tuple[Database, Callable[[], None]]], **limits: Any) -> None:
    """Run the machine. Shrinking is left out: a failing run is at most a few dozen steps
    long and is printed whole, while shrinking a database-backed run takes minutes."""
    Governance.make_database = staticmethod(make_database)
    run_state_machine_as_test(Governance, settings=settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.reuse, Phase.generate], **limits))


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SQLite file with the world loaded once; each run works on a copy."""
    folder = tmp_path_factory.mktemp("world")
    db = Database(f"sqlite:///{folder / 'world.db'}")
    db.init(simulation=True)
    load_world(db, folder)
    db.dispose()
    yield folder / "world.db"


def test_random_governance_keeps_the_invariants_on_sqlite(sqlite_world: Path,
                                                          tmp_path: Path) -> None:
    """Many random runs on SQLite."""

    def make() -> tuple[Database, Callable[[], None]]:
        path = tmp_path / f"{uuid.uuid4().hex}.db"
        shutil.copy(sqlite_world, path)
        return Database(f"sqlite:///{path}"), lambda: path.unlink()

    run(make, max_examples=10, stateful_step_count=20)


@pytest.mark.postgres
def test_random_governance_keeps_the_invariants_on_postgres(tmp_path: Path) -> None:
    """A few shorter random runs on PostgreSQL, each in a fresh schema."""
    require_postgres()

    def make() -> tuple[Database, Callable[[], None]]:
        schema = "qip_t_" + uuid.uuid4().hex[:12]
        db = make_postgres_database(schema)
        db.init(simulation=True)
        load_world(db, tmp_path)
        return db, lambda: drop_postgres_schema(schema)

    run(make, max_examples=2, stateful_step_count=15)
