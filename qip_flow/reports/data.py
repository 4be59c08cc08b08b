"""What the governance reports show, gathered read-only into plain dataclasses.

Every portfolio figure comes from a set-based query (one ``GROUP BY`` over actions, one over the
audit trail's RAG changes, …), never from a loop of queries per plan, so a board pack over
100,000 actions still takes seconds. Counts are always whole; detail tables are cut at
:data:`ROWS` rows and say how many more there are. Only the plans at the closure decision are
judged by the rules one by one, through the same :func:`assess.plan_facts` that ``qip explain``
uses, so the report and the command always agree."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import String, and_, case, cast, func, or_
from sqlmodel import Session, col, select

from qip_flow.config.rules import SpcSettings
from qip_flow.decide import spc
from qip_flow.decide.calendar import calendar
from qip_flow.decide.facts import (
    DONE,
    SHIFT_POINTS,
    FactBuilder,
    indicator_run,
    linked_risks,
    load_plan_data,
    on_target,
)
from qip_flow.decide.words import recorded_words
from qip_flow.errors import InvalidInput, NotFound
from qip_flow.reports import as_at
from qip_flow.reports.periods import Period
from qip_flow.runtime import Runtime
from qip_flow.services import assess, queries
from qip_flow.store import checkpoints
from qip_flow.store.checkpoints import Checkpoint
from qip_flow.store.governance import is_simulation
from qip_flow.store.models import (
    Action,
    AuditEvent,
    AuditHead,
    DueRevision,
    Evidence,
    Indicator,
    LearningSummary,
    Measurement,
    Person,
    Plan,
    Risk,
    Service,
    SignOff,
)

#: Detail rows shown per table; the counts above each table are always whole.
ROWS = 50
#: Rows of a count table (plans by service, source, theme) before the rest are added up.
COUNT_ROWS = 20
#: Bars in the board's RAG-by-service chart; past it, only the services with most RED.
SERVICE_BARS = 12
#: Run charts in the board pack: the plans that most need the board's eye come first.
BOARD_CHARTS = 8
#: Run charts of closed plans in the commissioner's pack.
COMMISSIONER_CHARTS = 8
#: Evidence items listed per closed plan in the commissioner's pack.
EVIDENCE_ROWS = 12
#: A plan opened this many days after another's closure, on the same theme at the same service,
#: is the same issue again (the commissioner's pack looks over the year to the period's end).
RECURRENCE_DAYS = 365
#: Plans whose facts are loaded together for the closure judgement.
FACT_BATCH = 500
#: Learning reviews falling due this soon are listed as due.
LEARNING_SOON_DAYS = 30
#: The audit trail's names for what the rules and services wrote (assess._rerate,
#: notifications.enqueue, assess.record_learning).
RAG_CHANGED = "rag changed"
ESCALATED = "escalated"
LEARNING_RECORDED = "learning summary recorded"
RATINGS = ("red", "amber", "green")
#: A plan row's fields for the engine's own use (the tick's schedule, writers' versions): no
#: report shows them, so the closure report's record leaves them out.
BOOKKEEPING = ("version", "changed_by", "changed_at", "next_check_at", "check_claimed_by",
               "check_lease_until")
_RANK = {"green": 0, "amber": 1, "red": 2}


# --- what the reports hold -----------------------------------------------------------------


@dataclass
class Header:
    """What every report says about itself: what, when, over which period and services, and
    the audit chain's head, so it can be matched with the trail later."""

    title: str
    subtitle: str
    now: datetime
    period: Period | None
    scope: str
    rules_version: str
    audit_events: int
    audit_hash: str
    checkpoint: Checkpoint | None = None  # the newest keyed checkpoint outside the database
    simulation: bool = False  # a database made for simulation: every report says so
    # said on the first page of a report rebuilt as at an earlier moment (as_at.View.notes)
    history: list[str] = field(default_factory=list)


@dataclass
class PlanLine:
    """One plan as a portfolio row."""

    id: str
    title: str
    service: str
    service_name: str
    source: str
    theme: str
    state: str
    live: bool
    rag: str | None
    rag_at_start: str | None
    rag_reason: str
    owner: str
    sponsor: str
    risk_ids: list[str]
    actions: int = 0
    done: int = 0
    overdue: int = 0
    slipped: int = 0
    created_on: date | None = None
    closed_on: date | None = None
    learning_review_due: date | None = None

    @property
    def trend(self) -> str:
        """``worse``, ``better``, ``same`` or ``new`` (not rated at the period's start)."""
        if self.rag_at_start is None or self.rag is None:
            return "new"
        now, then = _RANK.get(self.rag, 0), _RANK.get(self.rag_at_start, 0)
        return "worse" if now > then else "better" if now < then else "same"


@dataclass
class ActionLine:
    id: str
    plan_id: str
    description: str
    owner: str
    state: str
    due: date | None
    baseline_due: date | None
    days_overdue: int = 0
    working_days_overdue: int = 0


@dataclass
class RevisionLine:
    """A revised timeline: the old and new dates, why, and who approved it."""

    action_id: str
    plan_id: str
    description: str
    previous_due: date | None
    new_due: date
    reason: str
    approved_by: str
    approver_role: str
    on: date


@dataclass
class EscalationLine:
    """The latest escalation about an action or plan that is still unresolved."""

    entity_id: str
    plan_id: str
    headline: str
    to: str
    on: date
    rule: str
    times: int


@dataclass
class CriterionLine:
    """A closure criterion and, when unmet, the conditions that fail with their figures."""

    name: str
    met: bool
    description: str
    rule: str
    why_not: list[str]
    signoff: bool  # judged on the person signing, so it waits for the sign-off itself

    @classmethod
    def from_dict(cls, c: dict[str, Any], signoff_rules: set[str]) -> CriterionLine:
        """From a closure decision as a dict (``ClosureDecision.as_dict``, or as the audit
        trail recorded it)."""
        failing = c.get("why_not")
        if failing is None:  # recorded before the words were kept beside the conditions
            failing = list(dict.fromkeys(
                x.get("words") or recorded_words("plan", x["condition"], x["facts"], x["holds"])
                for x in c.get("conditions", []) if not x["holds"]))
        return cls(c["criterion"], bool(c["met"]), c["description"], c["rule"],
                   [] if c["met"] else list(failing), c["rule"] in signoff_rules)


@dataclass
class ClosureLine:
    """A plan at the closure decision: ready, blocked (and why), or in monitoring."""

    plan: PlanLine
    verdict: str  # ready, blocked, monitoring
    criteria: list[CriterionLine]
    signoff_needed: str
    monitoring_until: date | None = None

    @property
    def unmet(self) -> list[CriterionLine]:
        """Unmet criteria other than the sign-off ones, which only the signing can meet."""
        return [c for c in self.criteria if not c.met and not c.signoff]


@dataclass
class Point:
    on: date
    value: float
    reaudit: bool
    on_target: bool
    recorded: date | None = None
    backdate_reason: str = ""  # set when it was dated further back than the rules allow
    kind: str = "common"  # the XmR chart's reading: common, improvement or concern

    @property
    def backdated(self) -> bool:
        return bool(self.backdate_reason)


@dataclass
class IndicatorSeries:
    """An indicator's measurements read as a run chart: target, baseline, and the current
    run of on-target values (the sustained period)."""

    id: str
    plan_id: str
    ref: str
    name: str
    unit: str
    direction: str
    target: float
    baseline: float | None
    baseline_derived: bool
    points: list[Point]
    run_start: date | None
    run_end: date | None
    run_days: int
    run_points: int
    reaudits_in_run: int
    spc_shift: bool
    deteriorating: bool
    required_days: int | None
    closure: bool
    until: date | None = None  # a live plan's chart runs to today, so a stale series shows
    chart: spc.Chart | None = None  # the XmR chart (Making Data Count) of the same points

    @property
    def latest(self) -> Point | None:
        return self.points[-1] if self.points else None

    @property
    def backdated(self) -> list[Point]:
        """Values dated further back than the rules allow, each with its reason."""
        return [p for p in self.points if p.backdated]

    @property
    def sustained(self) -> bool:
        return bool(self.required_days is not None and self.run_points
                    and self.run_days >= self.required_days)


@dataclass
class RiskActionLine:
    """An action that names a strategic risk itself (``risks:`` on the action)."""

    id: str
    plan_id: str
    description: str
    owner: str
    state: str
    due: date | None
    live: bool


@dataclass
class RiskLine:
    """A strategic risk, the plans linked to it (their own risks or their actions') and the
    actions that name it."""

    id: str
    title: str
    owner: str
    plans: list[PlanLine]
    open_actions: int
    overdue_actions: int
    slipped_actions: int
    actions: list[RiskActionLine] = field(default_factory=list)

    @property
    def worst_rag(self) -> str | None:
        rated = [p.rag for p in self.plans if p.live and p.rag]
        return max(rated, key=lambda r: _RANK.get(r, 0)) if rated else None


@dataclass
class LearningLine:
    plan_id: str
    title: str
    due: date | None
    days_overdue: int
    summary: str
    embedded_in: list[str]
    by: str = ""
    on: date | None = None


@dataclass
class EvidenceLine:
    description: str
    reference: str
    on: date
    about: str
    by: str


@dataclass
class SignoffLine:
    purpose: str
    by: str
    role: str
    level: str
    group: str | None
    on: date
    meeting: str
    evidence_reviewed: list[str]
    residual_risks: list[str]
    learning_embedded: list[str]


@dataclass
class ClosedPlan:
    """A plan closed in the period, with the evidence behind the closure."""

    plan: PlanLine
    closed_on: date
    signoff: SignoffLine | None
    criteria: list[CriterionLine]
    rules_version: str
    evidence: list[EvidenceLine]
    evidence_total: int
    indicators: list[IndicatorSeries] = field(default_factory=list)


@dataclass
class SteppedDown:
    """A step-down, with the monitoring period its own sign-off began, and how that period
    ended when it ended early (``reopen``, or ``close`` from monitoring)."""

    plan: PlanLine
    on: date
    by: str
    monitoring_until: date | None
    ended_on: date | None = None
    ended_by: str = ""  # reopened, closed, or the event's name


@dataclass
class Recurrence:
    plan_id: str
    title: str
    service_name: str
    theme: str
    kind: str  # reopened, repeat
    on: date
    detail: str


@dataclass
class Table:
    """Counts of plans by one attribute (rows) and state (columns)."""

    rows: list[tuple[str, dict[str, int]]]
    states: list[str]

    def total(self, state: str | None = None) -> int:
        return sum(c.get(state, 0) if state else sum(c.values()) for _, c in self.rows)

    def shown(self, limit: int = COUNT_ROWS) -> list[tuple[str, dict[str, int]]]:
        """All rows A to Z, or, when there are more than ``limit``, the largest first."""
        if len(self.rows) <= limit:
            return self.rows
        return sorted(self.rows, key=lambda r: (-sum(r[1].values()), r[0]))[:limit]

    def rest(self, limit: int = COUNT_ROWS) -> tuple[int, dict[str, int]]:
        """How many rows :meth:`shown` leaves out, and their counts added up."""
        left = {k for k, _ in self.shown(limit)}
        counts: Counter[str] = Counter()
        for key, c in self.rows:
            if key not in left:
                counts.update(c)
        return len(self.rows) - len(left), dict(counts)


@dataclass
class BoardPack:
    header: Header
    plans: list[PlanLine]
    states: list[str]
    by_service: Table
    by_source: Table
    by_theme: Table
    overdue: list[ActionLine]
    overdue_total: int
    revisions: list[RevisionLine]
    revisions_total: int
    escalations: list[EscalationLine]
    escalations_total: int
    closure: list[ClosureLine]
    indicators: list[IndicatorSeries]
    indicators_total: int
    risks: list[RiskLine]
    learning: list[LearningLine]

    @property
    def live(self) -> list[PlanLine]:
        """Live plans, the ones that most need attention first."""
        return sorted((p for p in self.plans if p.live), key=_attention)

    def rag_counts(self, *, at_start: bool = False) -> dict[str, int]:
        counts = Counter((p.rag_at_start if at_start else p.rag) or "unrated" for p in self.live)
        return {r: counts.get(r, 0) for r in (*RATINGS, "unrated")}

    def trend_counts(self) -> dict[str, int]:
        counts = Counter(p.trend for p in self.live)
        return {t: counts.get(t, 0) for t in ("worse", "better", "same", "new")}

    @property
    def slipped_total(self) -> int:
        return sum(p.slipped for p in self.plans if p.live)

    def verdicts(self, verdict: str) -> list[ClosureLine]:
        return [c for c in self.closure if c.verdict == verdict]

    @property
    def learning_due(self) -> list[LearningLine]:
        return [x for x in self.learning if x.days_overdue > -LEARNING_SOON_DAYS]

    def rag_by_service(self, limit: int = SERVICE_BARS) -> dict[str, dict[str, int]]:
        """Live plans' RAG per service, A to Z; past ``limit`` services, only the ones with
        the most RED and AMBER plans (a bar per service is unreadable at a thousand)."""
        out: dict[str, dict[str, int]] = {}
        for p in self.live:
            row = out.setdefault(p.service_name, {r: 0 for r in (*RATINGS, "unrated")})
            row[p.rag or "unrated"] += 1
        if len(out) <= limit:
            return dict(sorted(out.items()))
        worst = sorted(out, key=lambda k: (-out[k]["red"], -out[k]["amber"],
                                           -sum(out[k].values()), k))[:limit]
        return {k: out[k] for k in worst}

    @property
    def live_services(self) -> int:
        return len({p.service for p in self.live})


@dataclass
class CommissionerPack:
    header: Header
    plans: list[PlanLine]
    states: list[str]
    by_source: Table
    overdue: list[ActionLine]
    overdue_total: int
    closed: list[ClosedPlan]
    stepped_down: list[SteppedDown]
    recurrence: list[Recurrence]
    recurrence_since: date

    @property
    def live(self) -> list[PlanLine]:
        return sorted((p for p in self.plans if p.live), key=_attention)


@dataclass
class ClosureReport:
    header: Header
    plan: PlanLine
    detail: dict[str, Any]
    risks: list[tuple[str, str, str]]
    owner_role: str
    sponsor_role: str
    criteria_spec: dict[str, Any]
    criteria: list[CriterionLine]
    criteria_basis: str
    indicators: list[IndicatorSeries]
    signoffs: list[SignoffLine]
    learning: list[LearningLine]
    monitoring_until: date | None
    milestones: list[dict[str, Any]]
    names: dict[str, str]  # person id → name, for the ids in ``detail`` and ``milestones``

    @property
    def all_met(self) -> bool:
        return bool(self.criteria) and all(c.met for c in self.criteria)

    @property
    def residual_risks(self) -> list[tuple[str, SignoffLine]]:
        return [(r, s) for s in self.signoffs for r in s.residual_risks]


def _attention(p: PlanLine) -> tuple[int, int, str]:
    trend = {"worse": 0, "new": 1, "same": 2, "better": 3}[p.trend]
    return (-_RANK.get(p.rag or "", -1), trend, p.id)


# --- reading -------------------------------------------------------------------------------


@dataclass
class Flow:
    """What the plan workflow file says that the reports need, by role rather than by name,
    so a provider's own workflow (renamed states) reports the same way."""

    states: list[str]
    events: set[str]
    live: set[str]
    closure_events: set[str]
    closed_states: set[str]
    stepdown_events: set[str]
    stepdown_states: set[str]
    reopen_events: set[str]
    candidates: set[str]
    review_states: set[str]  # before the governance group for closure (closure_review)
    signoff_rules: set[str]  # closure criteria about the person signing, met only at sign-off

    @classmethod
    def of(cls, rt: Runtime) -> Flow:
        wf = rt.workflows.defs["plan"]
        states = wf.state_names()
        closure = [e for e in wf.events if e.signoff == "closure"]
        stepdown = [e for e in wf.events if e.signoff == "step_down"]
        gates = {s for e in closure for s in e.source}
        into_gates = {s for e in wf.events if e.dest in gates for s in e.source}
        return cls(
            states=states,
            events={e.name for e in wf.events},
            live={s for s in states if assess.is_live(rt, s)},
            closure_events={e.name for e in closure},
            closed_states={e.dest for e in closure if e.dest},
            stepdown_events={e.name for e in stepdown},
            stepdown_states={e.dest for e in stepdown if e.dest},
            reopen_events={e.name for e in wf.events if "mark_reopened" in e.effects},
            candidates={s for s in gates | into_gates if assess.is_live(rt, s)},
            review_states=gates - {e.dest for e in stepdown if e.dest},
            signoff_rules={r.id for r in rt.rules.for_outcome("plan", "criterion")
                           if any(leaf.fact.startswith("signer_") for leaf in r.leaves())},
        )


def _day(moment: datetime | date | None) -> date | None:
    if moment is None:
        return None
    return moment.date() if isinstance(moment, datetime) else moment


class _Reader:
    """One read session and what every report needs from it: people, services, the workflow
    roles, the clock, and the set-based queries the reports share."""

    def __init__(self, rt: Runtime, session: Session, service: str | None = None, *,
                 view: as_at.View | None = None) -> None:
        self.rt, self.session, self.view = rt, session, view
        self.now = rt.clock.now()
        self.today = self.now.date()
        self.flow = Flow.of(rt)
        self.people = {p.id: p for p in session.exec(select(Person)).all()}
        self.services = {s.id: s for s in session.exec(select(Service)).all()}
        if service is not None and service not in self.services:
            known = ", ".join(sorted(self.services)) or "none loaded"
            raise NotFound(f"--service: unknown service '{service}'; services: {known}")
        self.service = service

    def name(self, person_id: str | None) -> str:
        person = self.people.get(person_id or "")
        return person.name if person else (person_id or "")

    def role(self, person_id: str | None) -> str:
        person = self.people.get(person_id or "")
        return person.role if person else ""

    def header(self, title: str, subtitle: str, period: Period | None) -> Header:
        head = self.session.get(AuditHead, 1)
        scope = (self.services[self.service].name if self.service else "All services")
        return Header(title, subtitle, self.now, period, scope, self.rt.rules.version,
                      head.seq if head else 0, head.hash if head else "genesis",
                      checkpoints.latest(self.rt.db, until=self.now if self.view and
                                         self.view.rebuilt else None),
                      simulation=is_simulation(self.session),
                      history=list(self.view.notes) if self.view else [])

    def _scoped(self, query: Any) -> Any:
        return query.where(Plan.service_id == self.service) if self.service else query

    # plans ---------------------------------------------------------------------------------

    def plans(self, period: Period | None, *, only: str | None = None) -> list[PlanLine]:
        """Every plan in scope (or ``only`` one) with its action totals and its RAG then and
        now: four queries, whatever the number of plans."""
        # the columns a row needs, not whole Plan objects: ten times faster at 10,000 plans
        query = self._scoped(select(  # type: ignore[call-overload]
            Plan.id, Plan.title, Plan.service_id, Plan.source_type, Plan.theme, Plan.state,
            Plan.rag, Plan.owner_id, Plan.sponsor_id, Plan.risk_ids, Plan.created_at,
            Plan.closed_at, Plan.learning_review_due))
        if only:
            query = query.where(Plan.id == only)
        rows = self.session.exec(query.order_by(col(Plan.id))).all()
        totals = self._action_totals(only)
        latest = self._rag_events(None, only)
        before = self._rag_events(period.start_at, only) if period else {}
        out = []
        for p in rows:
            n, done, overdue, slipped = totals.get(p.id, (0, 0, 0, 0))
            out.append(PlanLine(
                id=p.id, title=p.title, service=p.service_id,
                service_name=self.services[p.service_id].name if p.service_id in self.services
                else p.service_id,
                source=p.source_type, theme=p.theme, state=p.state,
                live=p.state in self.flow.live, rag=p.rag,
                rag_at_start=before.get(p.id, (None, ""))[0],
                rag_reason=latest.get(p.id, (None, ""))[1] if p.rag else "",
                owner=self.name(p.owner_id), sponsor=self.name(p.sponsor_id),
                risk_ids=list(p.risk_ids or []), actions=n, done=done, overdue=overdue,
                slipped=slipped, created_on=_day(p.created_at), closed_on=_day(p.closed_at),
                learning_review_due=p.learning_review_due))
        return out

    def _action_totals(self, only: str | None = None) -> dict[str, tuple[int, int, int, int]]:
        """Per plan: actions, done, overdue, slipped (open on a later date than planned)."""
        done = col(Action.state).in_(DONE)
        open_ = col(Action.state).not_in(DONE)
        query = select(  # type: ignore[call-overload]
            Action.plan_id, func.count(),
            func.sum(case((done, 1), else_=0)),
            func.sum(case((and_(open_, col(Action.due) < self.today), 1), else_=0)),
            func.sum(case((and_(open_, col(Action.due) > col(Action.baseline_due)), 1), else_=0)),
        ).group_by(Action.plan_id)
        if only:
            query = query.where(Action.plan_id == only)
        elif self.service:
            query = query.join(Plan, col(Plan.id) == Action.plan_id).where(
                Plan.service_id == self.service)
        return {pid: (int(n), int(d or 0), int(o or 0), int(s or 0))
                for pid, n, d, o, s in self.session.exec(query).all()}

    def _rag_events(self, before: datetime | None, only: str | None = None
                    ) -> dict[str, tuple[str | None, str]]:
        """Each plan's rating and reason from its latest 'rag changed' event (before a moment)."""
        latest = select(AuditEvent.entity_id, func.max(AuditEvent.seq).label("seq")).where(
            AuditEvent.what == RAG_CHANGED)
        if only:
            latest = latest.where(AuditEvent.entity_id == only)
        if before is not None:
            latest = latest.where(col(AuditEvent.at) < before)
        sub = latest.group_by(AuditEvent.entity_id).subquery()
        rows = self.session.exec(select(AuditEvent.entity_id, AuditEvent.to_state,
                                        AuditEvent.reason)
                                 .join(sub, col(AuditEvent.seq) == sub.c.seq)).all()
        return {entity: (rating, reason) for entity, rating, reason in rows}

    def table(self, plans: Sequence[PlanLine], key: str) -> Table:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for p in plans:
            counts[str(getattr(p, key))][p.state] += 1
        states = [s for s in self.flow.states if any(c.get(s) for c in counts.values())]
        return Table([(k, dict(counts[k])) for k in sorted(counts)], states)

    # actions -------------------------------------------------------------------------------

    def overdue(self) -> tuple[list[ActionLine], int]:
        """Open actions of live plans past their due date, longest overdue first."""
        query = self._scoped(select(Action).join(Plan, col(Plan.id) == Action.plan_id).where(
            col(Action.state).not_in(DONE), col(Action.due) < self.today,
            col(Plan.state).in_(self.flow.live)))
        total = self.session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = self.session.exec(query.order_by(col(Action.due), col(Action.id)).limit(ROWS)).all()
        cal = calendar()
        return [ActionLine(a.id, a.plan_id, a.description, self.name(a.owner_id), a.state,
                           a.due, a.baseline_due, (self.today - a.due).days if a.due else 0,
                           cal.between(a.due, self.today) if a.due else 0)
                for a in rows], int(total)

    def revisions(self, period: Period) -> tuple[list[RevisionLine], int]:
        """Revised timelines approved in the period, newest first."""
        query = self._scoped(
            select(DueRevision, Action).join(Action, col(Action.id) == DueRevision.action_id)
            .join(Plan, col(Plan.id) == Action.plan_id)
            .where(col(DueRevision.at) >= period.start_at, col(DueRevision.at) < period.end_at))
        total = self.session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = self.session.exec(query.order_by(col(DueRevision.at).desc(),
                                                col(DueRevision.id).desc()).limit(ROWS)).all()
        return [RevisionLine(a.id, a.plan_id, a.description, r.previous_due, r.new_due, r.reason,
                             self.name(r.approved_by_id), self.role(r.approved_by_id),
                             r.at.date()) for r, a in rows], int(total)

    def escalations(self) -> tuple[list[EscalationLine], int]:
        """The latest escalation per action or plan that is still unresolved: the action is
        not done (its plan live), or the plan is live and still rated red."""
        latest = (select(AuditEvent.entity_id, func.max(AuditEvent.seq).label("seq"),
                         func.count().label("times"))
                  .where(AuditEvent.what == ESCALATED).group_by(AuditEvent.entity_id).subquery())
        query = self._scoped(
            select(AuditEvent, latest.c.times, Plan.id)
            .join(latest, col(AuditEvent.seq) == latest.c.seq)
            .outerjoin(Action, col(Action.id) == AuditEvent.entity_id)
            .join(Plan, col(Plan.id) == func.coalesce(Action.plan_id, AuditEvent.entity_id))
            .where(col(Plan.state).in_(self.flow.live),
                   or_(and_(col(Action.id).is_not(None), col(Action.state).not_in(DONE)),
                       and_(col(Action.id).is_(None), col(Plan.rag) == "red"))))
        total = self.session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = self.session.exec(query.order_by(col(AuditEvent.seq).desc()).limit(ROWS)).all()
        return [EscalationLine(e.entity_id, plan_id, e.reason, self.name(e.detail.get("to")),
                               e.at.date(), str(e.detail.get("rule", "")), int(times))
                for e, times, plan_id in rows], int(total)

    # closure -------------------------------------------------------------------------------

    def criteria(self, plan: Plan, builder: FactBuilder | None = None
                 ) -> tuple[list[CriterionLine], dict[str, Any]]:
        """The closure criteria judged now, exactly as ``qip explain`` judges them (the same
        facts path, fed in bulk when a ``builder`` holds a batch's data)."""
        from qip_flow.services.pinning import closure_test

        facts, criteria = assess.plan_facts(self.rt, self.session, plan, builder=builder)
        decision = closure_test(self.rt, self.session, plan).closure(facts, explain=True)
        return self.criterion_lines(decision.as_dict()), criteria

    def criterion_lines(self, closure: dict[str, Any]) -> list[CriterionLine]:
        return [CriterionLine.from_dict(c, self.flow.signoff_rules)
                for c in closure.get("criteria", [])]

    def closure(self, lines: dict[str, PlanLine]) -> list[ClosureLine]:
        """Plans at the closure decision: every one is judged by the rules, their data loaded
        a batch at a time (one query per table per batch)."""
        query = self._scoped(select(Plan).where(col(Plan.state).in_(self.flow.candidates))
                             .order_by(col(Plan.id)))
        plans = self.session.exec(query).all()
        out = []
        for start in range(0, len(plans), FACT_BATCH):
            batch = plans[start:start + FACT_BATCH]
            judged = [p for p in batch if not (
                p.state in self.flow.stepdown_states and p.monitoring_until
                and p.monitoring_until.date() > self.today)]
            builder = FactBuilder(self.session, self.now,
                                  load_plan_data(self.session, judged, self.now))
            out += [self._closure_line(plan, lines[plan.id], builder) for plan in batch]
        order = {"ready": 0, "blocked": 1, "monitoring": 2}
        return sorted(out, key=lambda c: (order[c.verdict], c.plan.id))

    def _closure_line(self, plan: Plan, line: PlanLine, builder: FactBuilder) -> ClosureLine:
        until = _day(plan.monitoring_until)
        if plan.state in self.flow.stepdown_states and until and until > self.today:
            # cannot close before its monitoring period ends, whatever the criteria say
            spec = plan.closure_criteria or {}
            return ClosureLine(line, "monitoring", [], signoff_text(spec), until)
        criteria, spec = self.criteria(plan, builder)
        closure = ClosureLine(line, "", criteria, signoff_text(spec), until)
        closure.verdict = "blocked" if closure.unmet else "ready"
        return closure


    # indicators ----------------------------------------------------------------------------

    def series(self, indicators: Sequence[Indicator], plans: dict[str, Plan]
               ) -> list[IndicatorSeries]:
        """Run-chart data for the indicators given: one query for all their measurements."""
        points: dict[str, list[Measurement]] = defaultdict(list)
        if indicators:
            for m in self.session.exec(select(Measurement).where(
                    col(Measurement.indicator_id).in_([i.id for i in indicators]))).all():
                points[m.indicator_id].append(m)
        out = []
        for ind in indicators:
            criteria = plans[ind.plan_id].closure_criteria or {}
            closure_refs = criteria.get("indicators") or []
            series = indicator_series(ind, points[ind.id], self.today,
                                      criteria.get("sustain_days"),
                                      not closure_refs or ind.ref in closure_refs,
                                      spc_settings=self.rt.rules.spc)
            if plans[ind.plan_id].state in self.flow.live:
                series.until = self.today
            out.append(series)
        return out

    def board_indicators(self, ordered: Sequence[PlanLine]) -> tuple[list[IndicatorSeries], int]:
        """The indicators of the live plans that most need attention, up to BOARD_CHARTS."""
        live = {p.id for p in ordered}
        counts = dict(self.session.exec(self._scoped(
            select(Indicator.plan_id, func.count()).join(Plan, col(Plan.id) == Indicator.plan_id)
            .where(col(Plan.state).in_(self.flow.live)).group_by(Indicator.plan_id))).all())
        chosen, room = [], BOARD_CHARTS
        for p in ordered:
            if room <= 0:
                break
            if p.id in live and counts.get(p.id):
                chosen.append(p.id)
                room -= counts[p.id]
        return self._series_of(chosen)[:BOARD_CHARTS], sum(int(n) for n in counts.values())

    def _series_of(self, plan_ids: Sequence[str]) -> list[IndicatorSeries]:
        if not plan_ids:
            return []
        plans = {p.id: p for p in self.session.exec(
            select(Plan).where(col(Plan.id).in_(plan_ids))).all()}
        order = {pid: i for i, pid in enumerate(plan_ids)}
        indicators = sorted(self.session.exec(select(Indicator).where(
            col(Indicator.plan_id).in_(plan_ids))).all(),
            key=lambda i: (order[i.plan_id], i.id))
        return self.series(indicators, plans)

    # risks and learning ----------------------------------------------------------------------

    def action_risks(self, plans: Sequence[PlanLine]) -> dict[str, list[RiskActionLine]]:
        """Risk id → the actions (of ``plans``) that name it; one query over the actions that
        name any risk."""
        by_plan = {p.id: p for p in plans}
        rows = self.session.exec(select(  # type: ignore[call-overload]
            Action.id, Action.plan_id, Action.description, Action.owner_id, Action.state,
            Action.due, Action.risk_ids).where(cast(Action.risk_ids, String) != "[]")
            .order_by(col(Action.id))).all()
        out: dict[str, list[RiskActionLine]] = defaultdict(list)
        for a in rows:
            plan = by_plan.get(a.plan_id)
            if plan is None:
                continue
            for risk in a.risk_ids or []:
                out[risk].append(RiskActionLine(a.id, a.plan_id, a.description,
                                                self.name(a.owner_id), a.state, a.due,
                                                plan.live and a.state not in DONE))
        return out

    def risks(self, plans: Sequence[PlanLine]) -> list[RiskLine]:
        """Each strategic risk with the plans linked to it — by the plan itself or by one of
        its actions — and the actions that name it."""
        actions = self.action_risks(plans)
        by_risk: dict[str, list[PlanLine]] = defaultdict(list)
        by_id = {p.id: p for p in plans}
        for p in plans:
            for r in p.risk_ids:
                by_risk[r].append(p)
        for r, lines in actions.items():
            for plan_id in dict.fromkeys(a.plan_id for a in lines):
                if by_id[plan_id] not in by_risk[r]:
                    by_risk[r].append(by_id[plan_id])
        out = []
        for risk in self.session.exec(select(Risk).order_by(col(Risk.id))).all():
            linked = by_risk.get(risk.id, [])
            if self.service and not linked:
                continue
            live = [p for p in linked if p.live]
            out.append(RiskLine(risk.id, risk.title, self.name(risk.owner_id), linked,
                                sum(p.actions - p.done for p in live),
                                sum(p.overdue for p in live), sum(p.slipped for p in live),
                                actions.get(risk.id, [])))
        return out

    def learning(self, plan_ids: Iterable[str]) -> dict[str, list[LearningSummary]]:
        ids = list(plan_ids)
        out: dict[str, list[LearningSummary]] = defaultdict(list)
        if ids:
            for row in self.session.exec(select(LearningSummary).where(
                    col(LearningSummary.plan_id).in_(ids)).order_by(col(LearningSummary.id))):
                out[row.plan_id].append(row)
        return out

    def learning_reviews(self) -> list[LearningLine]:
        """Closed plans whose post-closure learning review has a date, soonest first."""
        rows = self.session.exec(self._scoped(select(Plan).where(
            col(Plan.learning_review_due).is_not(None)).order_by(
            col(Plan.learning_review_due), col(Plan.id)))).all()
        summaries = self.learning(p.id for p in rows)
        out = []
        for p in rows:
            due = p.learning_review_due
            latest = summaries[p.id][-1] if summaries.get(p.id) else None
            out.append(LearningLine(p.id, p.title, due, (self.today - due).days if due else 0,
                                    latest.summary if latest else "",
                                    list(latest.embedded_in) if latest else []))
        return out

    def signoff_line(self, s: SignOff) -> SignoffLine:
        """A sign-off as its record reads: the evidence items chosen (then any notes beside
        them), each residual risk with how it is monitored, or the no-residual-risk statement."""
        chosen = self.session.exec(select(Evidence).where(
            col(Evidence.id).in_(s.evidence_ids or [])).order_by(col(Evidence.id))).all()
        evidence = [f"{e.description}" + (f" ({e.reference})" if e.reference else "")
                    + f", {e.on.isoformat()}" for e in chosen]
        risks = [r.replace(" :: ", " — monitored by: ") for r in s.residual_risks]
        if s.no_residual_risk:
            risks = ["No residual risk (stated at sign-off)"]
        return SignoffLine(s.purpose, self.name(s.by_id), self.role(s.by_id), s.level, s.group,
                           s.on, s.meeting_reference, [*evidence, *s.evidence_reviewed],
                           risks, list(s.learning_embedded))

    def recorded_closure(self, plan_ids: Sequence[str]) -> dict[str, AuditEvent]:
        """The audit event of each plan's latest closure: it holds the criteria as judged."""
        if not plan_ids:
            return {}
        sub = (select(AuditEvent.entity_id, func.max(AuditEvent.seq).label("seq"))
               .where(col(AuditEvent.entity_id).in_(plan_ids),
                      col(AuditEvent.what).in_(self.flow.closure_events))
               .group_by(AuditEvent.entity_id).subquery())
        return {e.entity_id: e for e in self.session.exec(
            select(AuditEvent).join(sub, col(AuditEvent.seq) == sub.c.seq)).all()}


def signoff_text(criteria: dict[str, Any]) -> str:
    signoff = criteria.get("signoff") or {}
    parts = [signoff["group"]] if signoff.get("group") else []
    if signoff.get("level"):
        parts.append(f"{signoff['level']} level or above")
    return " and ".join(parts) or "not set"


def recorded_criteria(r: _Reader, event: AuditEvent | None
                      ) -> tuple[list[CriterionLine], str] | None:
    """The closure criteria as the rules judged them when the plan closed, and the rules
    version; None when the event recorded no decision."""
    closure = ((event.detail or {}).get("decisions") or {}).get("closure") if event else None
    if not closure:
        return None
    return r.criterion_lines(closure), str(closure.get("rules_version", ""))


def indicator_series(ind: Indicator, measurements: Sequence[Measurement], today: date,
                     required_days: int | None, closure: bool = True, *,
                     spc_settings: SpcSettings | None = None) -> IndicatorSeries:
    """Chart data: the run, the shift and the XmR chart come from :func:`indicator_run`, the
    same reading the rules use."""
    run = indicator_run(ind, measurements, today, spc_settings=spc_settings)
    kinds = [r.kind for r in run.chart.readings] if run.chart else []
    ordered = sorted(measurements, key=lambda m: (m.on, m.id or 0))
    in_run = ordered[len(ordered) - run.run_measurements:] if run.run_measurements else []
    baseline, derived = ind.baseline, False
    if baseline is None and ordered:
        # indicator_run's rule: with no baseline given, the median of the first points
        baseline, derived = statistics.median(m.value for m in ordered[:SHIFT_POINTS]), True
    return IndicatorSeries(
        id=ind.id, plan_id=ind.plan_id, ref=ind.ref, name=ind.name, unit=ind.unit,
        direction=ind.direction, target=ind.target, baseline=baseline, baseline_derived=derived,
        points=[Point(m.on, m.value, m.reaudit, on_target(ind, m.value), m.at.date(),
                      m.backdate_reason if m.backdated else "",
                      kinds[i] if i < len(kinds) else "common")
                for i, m in enumerate(ordered)],
        run_start=in_run[0].on if in_run else None, run_end=in_run[-1].on if in_run else None,
        run_days=run.run_days, run_points=run.run_measurements,
        reaudits_in_run=run.reaudits_in_run, spc_shift=run.spc_shift,
        deteriorating=run.deteriorating, required_days=required_days, closure=closure,
        chart=run.chart)


# --- the three reports ---------------------------------------------------------------------


def board_pack(rt: Runtime, *, period: Period, service: str | None = None) -> BoardPack:
    """The portfolio for a board or quality committee."""
    with as_at.reading(rt) as view:
        session = view.session
        r = _Reader(rt, session, service, view=view)
        plans = r.plans(period)
        lines = {p.id: p for p in plans}
        overdue, overdue_total = r.overdue()
        revisions, revisions_total = r.revisions(period)
        escalations, escalations_total = r.escalations()
        attention = sorted((p for p in plans if p.live), key=_attention)
        indicators, indicators_total = r.board_indicators(attention)
        return BoardPack(
            header=r.header("Board pack", "Quality Improvement Plans: the portfolio", period),
            plans=plans, states=r.flow.states,
            by_service=r.table(plans, "service_name"), by_source=r.table(plans, "source"),
            by_theme=r.table(plans, "theme"),
            overdue=overdue, overdue_total=overdue_total,
            revisions=revisions, revisions_total=revisions_total,
            escalations=escalations, escalations_total=escalations_total,
            closure=r.closure(lines), indicators=indicators, indicators_total=indicators_total,
            risks=r.risks(plans), learning=r.learning_reviews())


def commissioner_pack(rt: Runtime, *, period: Period,
                      service: str | None = None) -> CommissionerPack:
    """The contract-monitoring pack: plans by source, overdue actions, what closed in the
    period and the evidence behind it, and recurrence."""
    with as_at.reading(rt) as view:
        session = view.session
        r = _Reader(rt, session, service, view=view)
        plans = r.plans(period)
        lines = {p.id: p for p in plans}
        overdue, overdue_total = r.overdue()
        since = period.year_to_end()
        return CommissionerPack(
            header=r.header("Commissioner's assurance pack",
                            "Quality Improvement Plans: contract monitoring", period),
            plans=plans, states=r.flow.states, by_source=r.table(plans, "source"),
            overdue=overdue, overdue_total=overdue_total,
            closed=_closed_in(r, period, lines), stepped_down=_stepped_down(r, period, lines),
            recurrence=_recurrence(r, period, since, lines), recurrence_since=since)


def _closed_in(r: _Reader, period: Period, lines: dict[str, PlanLine]) -> list[ClosedPlan]:
    rows = r.session.exec(r._scoped(select(Plan).where(
        col(Plan.state).in_(r.flow.closed_states), col(Plan.closed_at) >= period.start_at,
        col(Plan.closed_at) < period.end_at)).order_by(col(Plan.closed_at), col(Plan.id))).all()
    ids = [p.id for p in rows]
    if not ids:
        return []
    events = r.recorded_closure(ids)
    signoffs: dict[str, SignOff] = {}
    for s in r.session.exec(select(SignOff).where(
            col(SignOff.plan_id).in_(ids), SignOff.purpose == "closure")
            .order_by(col(SignOff.id))).all():
        signoffs[s.plan_id] = s
    evidence_totals = dict(r.session.exec(select(Evidence.plan_id, func.count()).where(
        col(Evidence.plan_id).in_(ids)).group_by(Evidence.plan_id)).all())
    evidence: dict[str, list[EvidenceLine]] = defaultdict(list)
    for e in r.session.exec(select(Evidence).where(col(Evidence.plan_id).in_(ids))
                            .order_by(col(Evidence.plan_id), col(Evidence.on), col(Evidence.id))):
        if len(evidence[e.plan_id]) < EVIDENCE_ROWS:
            about = (e.action_id or "").rpartition("/")[2] or "plan"
            evidence[e.plan_id].append(EvidenceLine(e.description, e.reference, e.on, about,
                                                    r.name(e.by_id)))
    charts = r._series_of(ids)
    out = []
    for p in rows:
        recorded = recorded_criteria(r, events.get(p.id))
        criteria, version = recorded or ([], "")
        out.append(ClosedPlan(
            lines[p.id], _day(p.closed_at) or period.end,
            r.signoff_line(signoffs[p.id]) if p.id in signoffs else None, criteria, version,
            evidence[p.id], int(evidence_totals.get(p.id, 0)),
            [s for s in charts if s.plan_id == p.id]))
    budget = COMMISSIONER_CHARTS
    for c in out:
        c.indicators, budget = c.indicators[:max(budget, 0)], budget - len(c.indicators)
    return out


def _stepped_down(r: _Reader, period: Period, lines: dict[str, PlanLine]) -> list[SteppedDown]:
    events = r.session.exec(select(AuditEvent).where(
        col(AuditEvent.what).in_(r.flow.stepdown_events), col(AuditEvent.at) >= period.start_at,
        col(AuditEvent.at) < period.end_at).order_by(col(AuditEvent.seq))).all()
    events = [e for e in events if e.entity_id in lines]
    ids = [e.entity_id for e in events]
    plans = {p.id: p for p in r.session.exec(select(Plan).where(col(Plan.id).in_(ids)))}
    left = r.session.exec(select(AuditEvent).where(
        col(AuditEvent.entity_id).in_(ids), col(AuditEvent.from_state).in_(r.flow.stepdown_states),
        col(AuditEvent.to_state).not_in(r.flow.stepdown_states)).order_by(col(AuditEvent.seq))
    ).all() if ids else []
    out = []
    for e in events:
        until = as_at.monitoring_until(plans[e.entity_id], e)
        ended = next((x for x in left if x.entity_id == e.entity_id and (x.seq or 0) > (e.seq or 0)
                      and x.at < until), None)
        out.append(SteppedDown(lines[e.entity_id], e.at.date(), r.name(e.actor), until.date(),
                               ended.at.date() if ended else None,
                               "" if ended is None else "reopened"
                               if ended.what in r.flow.reopen_events else "closed"
                               if ended.what in r.flow.closure_events else ended.what.replace("_", " ")))
    return out


def _recurrence(r: _Reader, period: Period, since: date,
                lines: dict[str, PlanLine]) -> list[Recurrence]:
    """Plans reopened, and plans opened on the same theme at the same service within a year
    of another's closure, in the year to the period's end."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    out = [Recurrence(e.entity_id, lines[e.entity_id].title, lines[e.entity_id].service_name,
                      lines[e.entity_id].theme, "reopened", e.at.date(),
                      e.reason or "reopened")
           for e in r.session.exec(select(AuditEvent).where(
               col(AuditEvent.what).in_(r.flow.reopen_events), col(AuditEvent.at) >= start,
               col(AuditEvent.at) < period.end_at).order_by(col(AuditEvent.seq))).all()
           if e.entity_id in lines]
    closures: dict[tuple[str, str], list[tuple[date, str]]] = defaultdict(list)
    for pid, service, theme, closed in r.session.exec(select(
            Plan.id, Plan.service_id, Plan.theme, Plan.closed_at).where(
            col(Plan.closed_at).is_not(None))).all():
        closures[(service, theme.lower())].append((_day(closed) or since, pid))
    for p in lines.values():
        opened = p.created_on
        if opened is None or not since <= opened <= period.end:
            continue
        earlier = [(d, pid) for d, pid in closures.get((p.service, p.theme.lower()), [])
                   if pid != p.id and d <= opened and (opened - d).days <= RECURRENCE_DAYS]
        if earlier:
            d, pid = max(earlier)
            out.append(Recurrence(p.id, p.title, p.service_name, p.theme, "repeat", opened,
                                  f"same theme at the same service as {pid}, closed "
                                  f"{d.isoformat()}"))
    return sorted(out, key=lambda x: (x.on, x.plan_id))


def closure_report(rt: Runtime, plan_id: str) -> ClosureReport:
    """Everything a manager presents to the governance group about one plan."""
    with as_at.reading(rt) as view:
        session = view.session
        r = _Reader(rt, session, view=view)
        if (missing := view.not_yet(plan_id)) is not None:
            raise NotFound(missing)
        detail = {k: v for k, v in queries.show(session, plan_id).items() if k not in BOOKKEEPING}
        if detail["kind"] != "plan":
            raise InvalidInput(f"'{plan_id}' is an action; `qip report plan` takes a plan id "
                               f"such as {plan_id.partition('/')[0]}")
        plan = session.get(Plan, plan_id)
        assert plan is not None
        line = r.plans(None, only=plan.id)[0]
        criteria, spec = r.criteria(plan)
        basis = (f"judged as at {r.today.day} {r.today:%b %Y} by the rules "
                 f"({rt.rules.version})")
        if plan.state in r.flow.closed_states:
            recorded = recorded_criteria(r, r.recorded_closure([plan.id]).get(plan.id))
            if recorded:
                criteria, version = recorded
                basis = (f"as judged when the plan closed on "
                         f"{_day(plan.closed_at) or ''} ({version})")
        linked = linked_risks(plan, session.exec(select(Action).where(
            Action.plan_id == plan.id)).all())
        risks = [(x.id, x.title, r.name(x.owner_id)) for x in session.exec(
            select(Risk).where(col(Risk.id).in_(linked))).all()]
        signoffs = [r.signoff_line(s) for s in session.exec(
            select(SignOff).where(SignOff.plan_id == plan.id).order_by(col(SignOff.id))).all()]
        learning = [LearningLine(plan.id, plan.title, plan.learning_review_due,
                                 (r.today - plan.learning_review_due).days
                                 if plan.learning_review_due else 0,
                                 s.summary, list(s.embedded_in), r.name(s.by_id), s.at.date())
                    for s in r.learning([plan.id]).get(plan.id, [])]
        milestones = [e for e in detail["history"] if e["entity"] == plan.id
                      and (e["what"] in r.flow.events or e["what"] == LEARNING_RECORDED)]
        return ClosureReport(
            header=r.header("Closure report", f"{plan.id}: {plan.title}", None),
            plan=line, detail=detail, risks=risks, owner_role=r.role(plan.owner_id),
            sponsor_role=r.role(plan.sponsor_id),
            criteria_spec={k: v for k, v in spec.items() if k != "pinned_at"},
            criteria=criteria, criteria_basis=basis, indicators=r._series_of([plan.id]),
            signoffs=signoffs, learning=learning, monitoring_until=_day(plan.monitoring_until),
            milestones=milestones, names={k: p.name for k, p in r.people.items()})

