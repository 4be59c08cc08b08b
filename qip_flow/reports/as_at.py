"""The record as it stood at a moment in the past, for reports run with an earlier ``--now``.

A report reads the tables, and the tables hold today. When anything was recorded after the
report's moment, :func:`reading` rebuilds the record as it stood then into a scratch database in
memory — the same tables, so every report reads it exactly as it reads the live one — and the
report says on its first page what was rebuilt and what could not be:

- **replayed from the audit trail** (every move, rating and load is an event): which plans and
  actions existed; each plan's state and RAG (with the rules' reason), approval, reviews,
  closure, step-down and its monitoring period, reopening and learning-review date; each
  action's state, due dates (the plan file's, then every revision), completion and
  verification; the closure criteria as pinned then (variations since are undone);
- **kept as recorded by then** (rows that carry when they were written): measurements,
  revisions, due-date requests, progress notes, sign-offs, learning summaries and reviews, the
  audit trail itself (its head is the last event by then); evidence as dated by then;
- **shown as they read now** (the trail does not keep them): the wording, owners, services and
  themes of plans, actions, findings and indicators (a plan file loaded again while the plan was
  a draft is named), indicators' targets, and people's names, roles, levels and groups.

Nothing is written to the live database. When nothing was recorded after the moment, the live
record *is* the record as at then and is read directly."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    create_engine,
    func,
    inspect,
    type_coerce,
    update,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import NullType
from sqlmodel import Session, SQLModel, col, select

from qip_flow.runtime import Runtime
from qip_flow.store.audit import GENESIS
from qip_flow.store.models import (
    AuditEvent,
    AuditHead,
    DueRequest,
    Plan,
    PublishedConfig,
)
from qip_flow.workflow.effects import (
    ADOPT_RULES,
    learning_review_days,
    monitoring_days,
    next_learning_review,
)

#: Operational tables no report reads: not copied into the scratch database.
SKIPPED = frozenset({"notification", "delivery", "deliveryattempt", "websession", "heartbeat",
                     "planfailure"})
#: Rows kept when written by the moment: table → the column saying when.
WRITTEN_AT = {"plan": "created_at", "action": "created_at", "measurement": "at",
              "duerevision": "at", "duerequest": "at", "progressnote": "at", "signoff": "at",
              "learningsummary": "at", "learningreview": "at", "auditevent": "at"}
#: Rows kept when dated by the moment's day (they carry a day, not a time).
DATED_ON = {"evidence": "on"}
#: Rows that belong to a plan and have no time of their own: kept with their plan.
OF_A_PLAN = ("finding", "indicator")
#: The workflow effects the replay knows how to set back (a test checks it knows them all).
REPLAYED = {"plan": frozenset({"pin_closure_criteria", "start_action_clocks", "schedule_review",
                               "mark_closed", "start_monitoring", "mark_reopened",
                               "record_learning_review", "apply_variation"}),
            "action": frozenset({"record_due_revision", "mark_completed", "mark_verified",
                                 "clear_completion"})}
PLAN_FILE_EVENTS = ("plan added", "plan updated")
ACTION_ADDED = "action added"
RAG_CHANGED = "rag changed"
LEARNING_RECORDED = "learning summary recorded"
PINNED_KEYS = ("pinned_at", "rules_version")
LONDON = ZoneInfo("Europe/London")
BATCH = 2000


@dataclass
class View:
    """What a report reads: a session on the live record, or on the record rebuilt as at the
    moment (``rebuilt``), with what the page must say about it."""

    session: Session
    moment: datetime
    rebuilt: bool = False
    events: int = 0  # audit events recorded by the moment
    later_events: int = 0  # recorded since: left out
    notes: list[str] = field(default_factory=list)
    later_plans: dict[str, datetime] = field(default_factory=dict)  # loaded after the moment

    def not_yet(self, plan_id: str) -> str | None:
        """Why ``plan_id`` is missing from the record as at the moment, if it came later."""
        loaded = self.later_plans.get(plan_id)
        if loaded is None:
            return None
        return (f"{plan_id} was loaded on {_uk(loaded)}, after {_uk(self.moment)}: it is not "
                f"in the record as at then; run the report with a later --now")


def _uk(moment: datetime | date) -> str:
    if isinstance(moment, datetime):
        local = moment.astimezone(LONDON)
        return f"{local.day} {local:%b %Y %H:%M} {local:%Z}"
    return f"{moment.day} {moment:%b %Y}"


@contextmanager
def reading(rt: Runtime) -> Iterator[View]:
    """A read of the record as at the clock's now (see the module)."""
    moment = rt.clock.now()
    with rt.db.read() as live:
        later = live.exec(select(func.count()).select_from(AuditEvent).where(
            col(AuditEvent.at) > moment)).one()
        if not later:
            yield View(live, moment)
            return
        engine = _scratch()
        try:
            view = _rebuild(rt, live, engine, moment, int(later))
        except BaseException:
            engine.dispose()
            raise
    try:
        with Session(engine, expire_on_commit=False) as session:
            view.session = session
            yield view
    finally:
        engine.dispose()


def _scratch() -> Engine:
    """An empty database in memory with every table of the record."""
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    SQLModel.metadata.create_all(engine)
    return engine


def _as_at(table: Table, moment: datetime) -> Select[Any]:
    """The query of a table's rows as at the moment (the audit trail in its order)."""
    query = select(table)
    if table.name == "publishedconfig":  # the files in force then, or the first
        query = query.where((table.c.published_at <= moment) | (
            table.c.id == select(func.min(table.c.id)).scalar_subquery()))
    elif table.name in WRITTEN_AT:
        query = query.where(table.c[WRITTEN_AT[table.name]] <= moment)
    elif table.name in DATED_ON:
        query = query.where(table.c[DATED_ON[table.name]] <= moment.date())
    elif table.name in OF_A_PLAN:
        query = query.where(table.c.plan_id.in_(
            select(Plan.id).where(col(Plan.created_at) <= moment)))
    if table.name == "auditevent":
        query = query.order_by(table.c.seq)
    return query


def _rows(live: Session, table: Table, moment: datetime) -> Iterator[list[dict[str, Any]]]:
    """A table's rows as at the moment, as values, a batch at a time."""
    rows = live.connection().execute(_as_at(table, moment))
    while batch := rows.fetchmany(BATCH):
        yield [dict(r._mapping) for r in batch]


def _copy_stored(live: Session, scratch: Connection, table: Table, moment: datetime) -> None:
    """SQLite to SQLite: the rows as stored, without turning each value into Python and back
    (several times faster on a large portfolio); the same query, the same rows."""
    query = _as_at(table, moment).with_only_columns(
        *(type_coerce(c, NullType()) for c in table.columns))  # values as stored
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    insert = (f'INSERT INTO "{table.name}" ({names}) VALUES '
              f'({", ".join("?" for _ in table.columns)})')
    source = live.connection().execute(query)
    target = scratch.connection.dbapi_connection
    assert target is not None
    while batch := source.fetchmany(BATCH):
        target.executemany(insert, [tuple(r) for r in batch])


def _rebuild(rt: Runtime, live: Session, engine: Engine, moment: datetime, later: int
             ) -> View:
    """Copy every table a report may read, less the rows written after the moment, with the
    plans and actions set back by the replay of the trail as it is copied."""
    tables = {t.name: t for t in SQLModel.metadata.sorted_tables}
    present = set(inspect(live.connection()).get_table_names())
    stored = live.get_bind().dialect.name == "sqlite"
    replay = _Replay(rt, moment, [r for b in _rows(live, tables["plan"], moment) for r in b],
                     [r for b in _rows(live, tables["action"], moment) for r in b])
    variations = [name for name, effects in replay.effects["plan"].items()
                  if "apply_variation" in effects]
    after = list(live.exec(select(AuditEvent).where(
        col(AuditEvent.at) > moment, AuditEvent.entity_type == "plan",
        col(AuditEvent.what).in_([*variations, "plan updated"])).order_by(
        col(AuditEvent.seq))).all())
    replay.undo_variations(after)
    with engine.begin() as scratch:
        for name, table in tables.items():
            if name in SKIPPED or name not in present or name in ("plan", "action"):
                continue
            if stored and name != "auditevent":
                _copy_stored(live, scratch, table, moment)
                continue
            for batch in _rows(live, table, moment):
                scratch.execute(table.insert(), batch)
                if name == "auditevent":
                    replay.events(batch)
        replay.finish()
        for name, rows in (("plan", replay.plans), ("action", replay.actions)):
            if rows:
                scratch.execute(tables[name].insert(), [vars(r) for r in rows.values()])
        scratch.execute(update(AuditHead).values(seq=replay.last_seq, hash=replay.last_hash))
        scratch.execute(update(DueRequest).where(col(DueRequest.decided_at) > moment).values(
            state="pending", decided_by_id=None, decided_at=None, decision_reason=""))
    later_plans = dict(live.exec(select(Plan.id, Plan.created_at).where(
        col(Plan.created_at) > moment)).all())
    republished = list(live.exec(select(PublishedConfig.published_at).where(
        col(PublishedConfig.published_at) > moment).order_by(
        col(PublishedConfig.published_at))).all())
    if live.exec(select(PublishedConfig.id).where(
            col(PublishedConfig.published_at) <= moment).limit(1)).first() is None:
        republished = republished[1:]  # the first publication came later: in force then too
    view = View(live, moment, rebuilt=True, events=replay.count, later_events=later,
                later_plans=later_plans)
    view.notes = _notes(view, after, replay, republished)
    return view


class _Replay:
    """The plans and actions as the audit trail says they were at the moment: reset to how
    they were loaded, then every event replayed with the effects its workflow names. Rows are
    plain records (the tables' columns as attributes), not ORM objects: a portfolio has
    100,000 actions."""

    def __init__(self, rt: Runtime, moment: datetime, plans: list[dict[str, Any]],
                 actions: list[dict[str, Any]]) -> None:
        self.rt, self.moment = rt, moment
        self.effects = {kind: {e.name: list(e.effects) for e in wf.events}
                        for kind, wf in rt.workflows.defs.items()}
        self.plans = {r["id"]: SimpleNamespace(**r) for r in plans}
        self.actions = {r["id"]: SimpleNamespace(**r) for r in actions}
        self.by_plan: dict[str, list[Any]] = defaultdict(list)
        for a in self.actions.values():
            self.by_plan[a.plan_id].append(a)
        self.not_replayed: set[str] = set()
        self.count, self.last_seq, self.last_hash = 0, 0, GENESIS
        self._reset()

    def undo_variations(self, after: list[AuditEvent]) -> None:
        """The closure criteria as pinned at the moment: the live ones, with each variation
        recorded after the moment undone, newest first (the trail keeps what each changed)."""
        for event in reversed(after):
            varied = ((event.detail or {}).get("decisions") or {}).get("variation")
            plan = self.plans.get(event.entity_id)
            if not varied or plan is None:
                continue
            criteria = dict(plan.closure_criteria or {})
            for key, before in (varied.get("before") or {}).items():
                if key == ADOPT_RULES:
                    plan.closure_rules_version = before
                elif before is None:
                    criteria.pop(key, None)
                else:
                    criteria[key] = before
            plan.closure_criteria = criteria

    def _reset(self) -> None:
        """Every plan and action as it was loaded, before any event."""
        plan_initial = self.rt.workflows.initial("plan")
        action_initial = self.rt.workflows.initial("action")
        for plan in self.plans.values():
            plan.state, plan.rag, plan.updated_at = plan_initial, None, plan.created_at
            plan.approved_at = plan.closed_at = plan.monitoring_until = None
            plan.monitoring_since = plan.next_review_at = plan.last_review_at = None
            plan.reopened_at = plan.next_check_at = None
            plan.learning_review_due, plan.monitoring_cadence_days = None, None
        for action in self.actions.values():
            action.state, action.due = action_initial, action.baseline_due
            action.last_update_at, action.owner_update_at = action.created_at, None
            action.completed_at = action.completed_by_id = action.verified_by_id = None
            action.reopened_at = None

    def events(self, rows: list[dict[str, Any]]) -> None:
        """Replay a batch of the trail's events, in their order."""
        for row in rows:
            event = SimpleNamespace(**row)
            self.count, self.last_seq, self.last_hash = self.count + 1, event.seq, event.hash
            if event.entity_type == "plan" and event.entity_id in self.plans:
                self._plan(self.plans[event.entity_id], event)
            elif event.entity_type == "action" and event.entity_id in self.actions:
                self._action(self.actions[event.entity_id], event)

    def finish(self) -> None:
        """After the last event: criteria pinned only later were not pinned then."""
        for plan in self.plans.values():
            if plan.approved_at is None:
                plan.closure_criteria = {k: v for k, v in (plan.closure_criteria or {}).items()
                                         if k not in PINNED_KEYS}
                plan.closure_rules_version = None

    def _plan(self, plan: Any, event: Any) -> None:
        at, detail = event.at, event.detail or {}
        if event.what in PLAN_FILE_EVENTS:
            plan.updated_at = at
            for action_id, due in (detail.get("due") or {}).items():
                if action_id in self.actions:
                    action = self.actions[action_id]
                    action.baseline_due = action.due = _date(due)
        elif event.what == RAG_CHANGED:
            plan.rag = event.to_state
        elif event.what == LEARNING_RECORDED:
            plan.updated_at = at
        elif event.what in self.effects["plan"] and event.to_state is not None:
            plan.state, plan.updated_at = event.to_state, at
            for name in self.effects["plan"][event.what]:
                self._plan_effect(plan, name, event)

    def _plan_effect(self, plan: Any, name: str, event: Any) -> None:
        """What the named effect did to the plan (workflow/effects.py), from the event."""
        at = event.at
        decisions = (event.detail or {}).get("decisions") or {}
        if name == "pin_closure_criteria":
            plan.approved_at = at
        elif name == "start_action_clocks":
            for action in self.by_plan[plan.id]:
                action.last_update_at = max(action.last_update_at, at)
        elif name == "schedule_review":
            self._reviewed(plan, at)
        elif name == "mark_closed":
            plan.closed_at, plan.next_review_at = at, None
            plan.learning_review_due = at.date() + timedelta(days=learning_review_days(plan)[0])
        elif name == "start_monitoring":
            plan.monitoring_until, plan.monitoring_since = monitoring_until(plan, event), at
            plan.monitoring_cadence_days = (decisions.get("step_down") or {}).get(
                "measure_every_days")
        elif name == "mark_reopened":
            plan.closed_at = plan.monitoring_until = plan.learning_review_due = None
            plan.monitoring_since, plan.reopened_at = None, at
            self._reviewed(plan, at)
        elif name == "record_learning_review":
            plan.learning_review_due = next_learning_review(plan, at.date())
        elif name != "apply_variation":  # variations: undone from the live criteria
            self.not_replayed.add(name)

    @staticmethod
    def _reviewed(plan: Any, at: datetime) -> None:
        plan.last_review_at = at
        if plan.review_cadence_days:
            plan.next_review_at = at + timedelta(days=plan.review_cadence_days)

    def _action(self, action: Any, event: Any) -> None:
        at, detail = event.at, event.detail or {}
        if event.what == ACTION_ADDED:
            action.baseline_due = action.due = _date(detail.get("due")) or action.baseline_due
            action.state = event.to_state or action.state
            return
        if event.what not in self.effects["action"] or event.to_state is None:
            return
        action.state, action.last_update_at = event.to_state, at
        if event.actor == action.owner_id:
            action.owner_update_at = at
        for name in self.effects["action"][event.what]:
            if name == "record_due_revision" and detail.get("due"):
                action.due = _date(detail["due"])
            elif name == "mark_completed":
                action.completed_at, action.completed_by_id = at, event.actor
            elif name == "mark_verified":
                action.verified_by_id = event.actor
            elif name == "clear_completion":
                action.completed_at = action.completed_by_id = action.verified_by_id = None
                action.reopened_at = at
            elif name != "record_due_revision":
                self.not_replayed.add(name)


def monitoring_until(plan: Any, step_down: Any) -> datetime:
    """When the monitoring period a step-down began ends: from that step-down's own moment
    and the monitoring days its rule gave (each step-down of a plan has its own)."""
    ruled = (((step_down.detail or {}).get("decisions") or {}).get("step_down") or {}).get(
        "monitoring_days")
    return step_down.at + timedelta(days=monitoring_days(plan, ruled))


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) and value else None


def _notes(view: View, after: list[AuditEvent], replay: _Replay,
           republished: list[datetime]) -> list[str]:
    """What the page says about the rebuilt record."""
    notes = [
        f"Rebuilt as at {_uk(view.moment)} from the audit trail: the {view.events:,} events "
        f"recorded by then; the {view.later_events:,} recorded since are left out. States, "
        "RAG, due dates and revisions, approvals, reviews, closures, step-downs and "
        "learning-review dates are replayed from the trail; measurements, sign-offs, learning "
        "summaries and notes are those recorded by then, evidence that dated by then.",
        "Shown as they read now, because the trail does not keep them: the wording, owners, "
        "services and themes of plans, actions and indicators, indicators' targets, and "
        "people's names, roles and levels.",
    ]
    reloaded = sorted({e.entity_id for e in after if e.what == "plan updated"})
    if reloaded:
        notes.append(f"The plan file of {', '.join(reloaded)} was loaded again after then: "
                     "its findings, actions and indicators are shown as the later file has them.")
    if republished:
        notes.append(f"The governance files were published again on "
                     f"{', '.join(_uk(d.date()) for d in republished)}: closure criteria not "
                     "pinned then are judged by the rules in force now.")
    if replay.not_replayed:
        notes.append(f"Not rebuilt: what the workflow effects "
                     f"{', '.join(sorted(replay.not_replayed))} changed.")
    return notes
