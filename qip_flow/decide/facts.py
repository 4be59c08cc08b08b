"""Facts: the database state of a plan, an action or an indicator as the flat values the rules
talk about. Every name produced here is declared in :mod:`qip_flow.decide.vocabulary` (a test
holds the two together)."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import String, cast
from sqlmodel import Session, col, func, select

from qip_flow.config.rules import SpcSettings
from qip_flow.decide import spc
from qip_flow.decide.calendar import calendar
from qip_flow.store.models import (
    LEVELS,
    Action,
    DueRevision,
    Evidence,
    Finding,
    Indicator,
    LearningSummary,
    Measurement,
    Person,
    Plan,
    SignOff,
)

DONE = ("completed", "verified")
# What makes an action measurable: a number or a date, a frequency, or "every/each" with a
# unit of time or of care ("every shift"). Quantifiers alone ("all staff", "each person") say
# who, not how much or by when, so they do not count.
FREQUENCY = re.compile(
    r"\d|\b(daily|weekly|fortnightly|monthly|quarterly|annually|yearly"
    r"|january|february|march|april|(by|in|before|until)\s+may|june|july|august|september|october|november|december"
    r"|(every|each)\s+(other\s+)?(day|week|fortnight|month|quarter|year|shift|visit|handover"
    r"|audit|supervision|medicines?\s+round))\b",
    re.IGNORECASE)
WINDOW_DAYS = 90
SHIFT_POINTS = 6
DEFAULT_REAUDIT_GAP_DAYS = 28


def level_rank(level: str | None) -> int | None:
    return LEVELS.index(level) if level in LEVELS else None


def linked_risks(plan: Plan, actions: Iterable[Action]) -> list[str]:
    """A plan's strategic risks: its own and its actions', in that order, each once."""
    return list(dict.fromkeys([*(plan.risk_ids or []),
                               *(r for a in actions for r in (a.risk_ids or []))]))


def effective_criteria(plan: Plan, defaults: dict[str, Any]) -> dict[str, Any]:
    """The plan's closure criteria: pinned ones as they are; a draft's own criteria tightened
    by the defaults the rules give for its theme and source."""
    own = dict(plan.closure_criteria or {})
    if own.get("pinned_at"):
        return own
    return tighten(defaults, own)


def tighten(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Merge two sets of criteria, keeping the stricter value of each."""
    merged = dict(own)
    for key in ("sustain_days", "reaudits", "reaudit_gap_days", "monitoring_days"):
        values = [v for v in (defaults.get(key), own.get(key)) if v is not None]
        if values:
            merged[key] = max(values)
    if defaults.get("learning_required") or own.get("learning_required"):
        merged["learning_required"] = True
    reviews = [v for v in (defaults.get("learning_review_days"), own.get("learning_review_days"))
               if v]
    if reviews:
        merged["learning_review_days"] = min(reviews)  # the sooner review is the stricter
    recurring = {*(defaults.get("learning_reviews_after_days") or []),
                 *(own.get("learning_reviews_after_days") or [])}
    if recurring:
        merged["learning_reviews_after_days"] = sorted(recurring)  # every review asked for
    signoff = dict(own.get("signoff") or {})
    if defaults.get("signoff_group") and not signoff.get("group"):
        signoff["group"] = defaults["signoff_group"]
    d_level = defaults.get("signoff_level")
    # Where a governance group must sign, the group is the authority: a default level applies
    # only to plans signed by a person.
    if d_level and not signoff.get("group") and (
            (level_rank(d_level) or 0) > (level_rank(signoff.get("level")) or -1)):
        signoff["level"] = d_level
    if signoff:
        merged["signoff"] = signoff
    return merged


@dataclass
class IndicatorRun:
    """An indicator's measurements read the way a board is advised to read data."""

    facts: dict[str, Any]
    on_target_latest: bool | None
    run_days: int
    run_measurements: int
    reaudits_in_run: int
    reaudit_intervals_in_run: int
    spc_shift: bool
    deteriorating: bool
    latest_on: str | None = None
    chart: spc.Chart | None = None


def reaudit_intervals(days: Iterable[date], gap_days: int) -> int:
    """Re-audits at distinct intervals: each counts only if it falls at least ``gap_days``
    after the last one counted, so same-day or too-close entries count once."""
    counted: date | None = None
    intervals = 0
    for day in sorted(days):
        if counted is None or (day - counted).days >= gap_days:
            counted, intervals = day, intervals + 1
    return intervals


def on_target(indicator: Indicator, value: float) -> bool:
    return value >= indicator.target if indicator.direction == "up" else value <= indicator.target


def indicator_run(indicator: Indicator, measurements: Sequence[Measurement], today: date,
                  *, reaudit_gap_days: int = DEFAULT_REAUDIT_GAP_DAYS,
                  spc_settings: SpcSettings | None = None) -> IndicatorRun:
    points = sorted(measurements, key=lambda m: (m.on, m.id or 0))
    chart = spc.analyse([m.value for m in points], indicator.direction, indicator.target,
                        spc_settings)
    hits = [on_target(indicator, m.value) for m in points]
    run: list[Measurement] = []
    for m, hit in zip(reversed(points), reversed(hits), strict=True):
        if not hit:
            break
        run.append(m)
    run.reverse()
    baseline = indicator.baseline
    if baseline is None and points:
        baseline = statistics.median(m.value for m in points[:SHIFT_POINTS])
    better = (lambda v: v > baseline) if indicator.direction == "up" else (lambda v: v < baseline)
    shift = 0
    for m in reversed(points):
        if baseline is None or not better(m.value):
            break
        shift += 1
    latest = hits[-1] if hits else None
    deteriorating = bool(hits) and not hits[-1] and any(hits[:-1])
    run_days = (run[-1].on - run[0].on).days if run else 0
    facts = {
        "indicator_id": indicator.id,
        "direction": indicator.direction,
        "measurements": len(points),
        "measurements_in_window": sum(1 for m in points if (today - m.on).days <= WINDOW_DAYS),
        "latest_on_target": latest,
        "run_measurements": len(run),
        "run_days": run_days,
        "reaudits_in_run": sum(1 for m in run if m.reaudit),
        "reaudit_intervals_in_run": reaudit_intervals((m.on for m in run if m.reaudit),
                                                      reaudit_gap_days),
        "spc_shift": shift >= SHIFT_POINTS,
        "deteriorating": deteriorating,
        **spc_facts(chart),
    }
    return IndicatorRun(facts, latest, run_days, len(run), facts["reaudits_in_run"],
                        facts["reaudit_intervals_in_run"], shift >= SHIFT_POINTS, deteriorating,
                        points[-1].on.isoformat() if points else None, chart)


def spc_facts(chart: spc.Chart) -> dict[str, Any]:
    """An indicator's XmR chart as facts: its latest point's special cause, the assurance
    the limits give, and the points since the latest sustained shift."""
    limits = chart.limits
    return {
        "special_cause_improvement": chart.special_cause_improvement,
        "special_cause_concern": chart.special_cause_concern,
        "assurance": chart.assurance,
        "points_since_shift": chart.points_since_shift,
        "variation": chart.variation,
        "mean": round(limits.mean, 2) if limits else None,
        "lower_limit": round(limits.lower, 2) if limits else None,
        "upper_limit": round(limits.upper, 2) if limits else None,
    }


ASSURANCE_ORDER = ("pass", "hit-and-miss", "fail")


def number(value: float, unit: str = "") -> str:
    """A value as a board reads it: at most one decimal, with its unit."""
    shown = f"{round(value, 1):g}"
    return f"{shown}%" if unit == "%" else f"{shown} {unit}".rstrip()


def plan_spc_facts(indicators: Sequence[Indicator], runs: Sequence[IndicatorRun]
                   ) -> dict[str, Any]:
    """The closure indicators' XmR charts as plan facts: improvement when every one shows it,
    concern when any does (naming the first, its value, its limits and the test that fired),
    the worst assurance, and the fewest points since a shift."""
    charts = [(i, r.chart) for i, r in zip(indicators, runs, strict=True) if r.chart]
    facts: dict[str, Any] = {
        "special_cause_improvement": bool(charts) and all(
            c.special_cause_improvement for _, c in charts),
        "special_cause_concern": any(c.special_cause_concern for _, c in charts),
        "assurance": max((c.assurance for _, c in charts if c.assurance),
                         key=ASSURANCE_ORDER.index, default=None),
        "points_since_shift": min((c.points_since_shift for _, c in charts
                                   if c.points_since_shift is not None), default=None),
    }
    concern = next(((i, c) for i, c in charts if c.special_cause_concern), None)
    if concern is not None:
        indicator, chart = concern
        latest, limits = chart.latest, chart.limits
        assert latest is not None and latest.signal is not None and limits is not None
        facts.update({
            "concern_indicator": f"{indicator.ref} ({indicator.name})",
            "concern_value": number(latest.value, indicator.unit),
            "concern_limits": f"{number(limits.lower, indicator.unit)} to "
                              f"{number(limits.upper, indicator.unit)}",
            "concern_test": spc.signal_words(latest.signal),
        })
    return facts


def _days(later: date | datetime, earlier: date | datetime) -> int:
    if isinstance(later, datetime):
        later = later.date()
    if isinstance(earlier, datetime):
        earlier = earlier.date()
    return (later - earlier).days


def action_facts(action: Action, plan: Plan, now: datetime, *, revisions: int,
                 evidence: int) -> dict[str, Any]:
    today = now.date()
    words = action.description.split()
    due = action.due
    open_ = action.state not in DONE
    start = plan.approved_at.date() if plan.approved_at else action.created_at.date()
    cal = calendar()
    overdue = bool(due and open_ and today > due)
    return {
        "action_id": action.id,
        "state": action.state,
        "plan_state": plan.state,
        "has_owner": bool(action.owner_id),
        "has_due": due is not None,
        "first_word": words[0].lower().strip(",.:;") if words else "",
        "measurable": bool(FREQUENCY.search(action.description)),
        "words": len(words),
        "systemic": action.systemic,
        "has_finding": action.finding_id is not None,
        "days_to_due": (due - today).days if due else None,
        "working_days_to_due": cal.between(today, due) if due else None,
        "days_overdue": (today - due).days if overdue and due else 0,
        "working_days_overdue": cal.between(due, today) if overdue and due else 0,
        "days_planned": (due - start).days if due else None,
        "days_since_update": _days(now, action.last_update_at),
        "revisions": revisions,
        "evidence_items": evidence,
        "weeks_overdue": (today - due).days // 7 if overdue and due else 0,
        "updated_since_due": bool(due and action.owner_update_at
                                  and action.owner_update_at.date() > due),
        "due_date": due.isoformat() if due else None,
        "last_update_date": action.last_update_at.date().isoformat(),
    }


@dataclass
class PlanData:
    """Everything the facts of one plan are computed from, loaded for many plans at once."""

    actions: list[Action] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=dict)
    evidence: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    indicators: list[Indicator] = field(default_factory=list)
    measurements: dict[str, list[Measurement]] = field(default_factory=dict)
    signoffs: list[SignOff] = field(default_factory=list)
    learning: list[LearningSummary] = field(default_factory=list)
    recurrence: int = 0


def _grouped(rows: Iterable[Any], key: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        out[getattr(row, key)].append(row)
    return out


def _rows(model: Any, plain: bool) -> Any:
    """A query for a model's rows: ORM objects, or (``plain``) read-only rows with the same
    attribute names — no identity map, no instance state: a pass over a portfolio only reads
    them."""
    return select(*model.__table__.columns) if plain else select(model)


def load_plan_data(session: Session, plans: Sequence[Plan], now: datetime, *,
                   plain: bool = False) -> dict[str, PlanData]:
    """One query per table for a whole batch of plans (a tick, or a single event); with
    ``plain``, actions and findings come as read-only rows (what a tick and a re-evaluation
    need, at a fraction of the cost of ORM objects); so do indicators, sign-offs and learning
    summaries."""
    ids = [p.id for p in plans]
    if not ids:
        return {}
    execute = session.execute if plain else session.exec
    actions = _grouped(execute(_rows(Action, plain).where(
        col(Action.plan_id).in_(ids)).order_by(col(Action.id))).all(), "plan_id")
    counts: dict[type[Any], dict[str, int]] = {}
    for model in (DueRevision, Evidence):
        counts[model] = {action_id: n for action_id, n in session.exec(
            select(model.action_id, func.count()).join(Action, Action.id == model.action_id)
            .where(col(Action.plan_id).in_(ids)).group_by(model.action_id)).all()}
    indicators = execute(_rows(Indicator, plain).where(col(Indicator.plan_id).in_(ids))
                         .order_by(col(Indicator.id))).all()
    # plain rows, not ORM objects: a portfolio has many measurements and they are only read
    measurements = _grouped(session.exec(select(
        Measurement.id, Measurement.indicator_id, Measurement.on, Measurement.value,
        Measurement.reaudit).where(col(Measurement.indicator_id).in_(
            [i.id for i in indicators]))).all(), "indicator_id") if indicators else {}
    findings = _grouped(execute(_rows(Finding, plain).where(
        col(Finding.plan_id).in_(ids))).all(), "plan_id")
    signoffs = _grouped(execute(_rows(SignOff, plain).where(
        col(SignOff.plan_id).in_(ids))).all(), "plan_id")
    learning = _grouped(execute(_rows(LearningSummary, plain).where(
        col(LearningSummary.plan_id).in_(ids))).all(), "plan_id")
    closed = session.exec(select(Plan.id, Plan.theme, Plan.service_id).where(
        col(Plan.service_id).in_({p.service_id for p in plans}),
        col(Plan.closed_at).is_not(None), col(Plan.closed_at) >= now - timedelta(days=365))).all()
    by_indicator_plan = _grouped(indicators, "plan_id")
    data = {}
    for plan in plans:
        plan_actions = actions.get(plan.id, [])
        plan_indicators = by_indicator_plan.get(plan.id, [])
        data[plan.id] = PlanData(
            actions=plan_actions,
            revisions={a.id: counts[DueRevision].get(a.id, 0) for a in plan_actions},
            evidence={a.id: counts[Evidence].get(a.id, 0) for a in plan_actions},
            findings=findings.get(plan.id, []), indicators=plan_indicators,
            measurements={i.id: measurements.get(i.id, []) for i in plan_indicators},
            signoffs=signoffs.get(plan.id, []), learning=learning.get(plan.id, []),
            recurrence=sum(1 for pid, theme, service in closed if pid != plan.id
                           and theme == plan.theme and service == plan.service_id))
    return data


class FactBuilder:
    """Builds facts for one moment, from data loaded in bulk (or, for a single plan, on
    demand)."""

    def __init__(self, session: Session, now: datetime,
                 data: dict[str, PlanData] | None = None) -> None:
        self.session, self.now = session, now
        self.data = data if data is not None else {}
        self._people: Signers | None = None
        self.spc = SpcSettings()  # the rules in force say otherwise through the judge

    def data_for(self, plan: Plan) -> PlanData:
        if plan.id not in self.data:
            self.data.update(load_plan_data(self.session, [plan], self.now))
        return self.data[plan.id]

    def actions(self, plan: Plan) -> list[dict[str, Any]]:
        """Facts for every action of ``plan``."""
        d = self.data_for(plan)
        return [action_facts(a, plan, self.now, revisions=d.revisions[a.id],
                             evidence=d.evidence[a.id]) for a in d.actions]

    def indicators(self, plan: Plan, criteria: dict[str, Any] | None = None
                   ) -> dict[str, IndicatorRun]:
        d = self.data_for(plan)
        today = self.now.date()
        gap = reaudit_gap(criteria if criteria is not None else plan.closure_criteria or {})
        return {i.ref: indicator_run(i, d.measurements[i.id], today, reaudit_gap_days=gap,
                                     spc_settings=self.spc)
                for i in d.indicators}

    def people(self) -> Signers:
        """Who in the organisation could sign, read once per builder."""
        if self._people is None:
            self._people = Signers(self.session)
        return self._people

    def plan(self, plan: Plan, *, criteria: dict[str, Any] | None = None,
             signer: Person | None = None,
             actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Facts for a plan under ``criteria`` (its own by default); ``signer`` is the person
        signing now (close, step down)."""
        now, today = self.now, self.now.date()
        d = self.data_for(plan)
        actions = self.actions(plan) if actions is None else actions
        criteria = dict(plan.closure_criteria or {}) if criteria is None else criteria
        findings, signoffs, learning = d.findings, d.signoffs, d.learning
        runs = self.indicators(plan, criteria)
        closure_refs = criteria.get("indicators") or list(runs)
        closure_runs = [runs[r] for r in closure_refs if r in runs]
        last_change = max([plan.updated_at, *(now - timedelta(days=a["days_since_update"])
                                              for a in actions)])
        recurrence = d.recurrence
        open_actions = [a for a in actions if a["state"] not in DONE]
        on_target_runs = [r for r in closure_runs if r.on_target_latest]
        shortest = min(closure_runs, key=lambda r: r.run_days) if closure_runs else None
        fewest_reaudits = min((r.reaudits_in_run for r in closure_runs), default=0)
        fewest_intervals = min((r.reaudit_intervals_in_run for r in closure_runs), default=0)
        facts: dict[str, Any] = {
            "plan_id": plan.id,
            "state": plan.state,
            "theme": plan.theme.lower(),
            "source_type": plan.source_type,
            "has_source_reference": bool(plan.source_reference.strip()),
            "service": plan.service_id,
            "risk_links": len(linked_risks(plan, d.actions)),
            "has_review_cadence": bool(plan.review_cadence_days),
            "days_since_review": _days(now, plan.last_review_at or plan.approved_at)
            if (plan.last_review_at or plan.approved_at) else None,
            "days_to_next_review": _days(plan.next_review_at, now) if plan.next_review_at else None,
            "days_since_update": _days(now, last_change),
            "days_since_approval": _days(now, plan.approved_at) if plan.approved_at else None,
            "findings": len(findings),
            "findings_without_source": sum(1 for f in findings if not f.source_reference.strip()),
            "findings_without_root_cause": sum(1 for f in findings
                                               if not [c for c in f.root_causes if c.strip()]),
            "actions": len(actions),
            "actions_open": len(open_actions),
            "actions_completed": len(actions) - len(open_actions),
            "actions_verified": sum(1 for a in actions if a["state"] == "verified"),
            "actions_overdue": sum(1 for a in open_actions if a["days_overdue"] > 0),
            "actions_without_owner": sum(1 for a in actions if not a["has_owner"]),
            "actions_without_due": sum(1 for a in actions if not a["has_due"]),
            "actions_slipped": 0,
            "actions_systemic": sum(1 for a in actions if a["systemic"]),
            "due_revisions": sum(a["revisions"] for a in actions),
            "max_days_overdue": max((a["days_overdue"] for a in open_actions), default=0),
            "max_working_days_overdue": max((a["working_days_overdue"] for a in open_actions),
                                            default=0),
            "closure_indicators": len(closure_runs),
            "indicators_on_target": len(on_target_runs),
            "all_indicators_on_target": bool(closure_runs)
            and len(on_target_runs) == len(closure_runs),
            "sustained_days": shortest.run_days if shortest else 0,
            "sustained_measurements": min((r.run_measurements for r in closure_runs), default=0),
            "reaudits_in_run": fewest_reaudits,
            "reaudit_intervals_in_run": fewest_intervals,
            "sponsor_level": self.people().level_of(plan.sponsor_id),
            "spc_shift": bool(closure_runs) and all(r.spc_shift for r in closure_runs),
            "any_deteriorating": any(r.deteriorating for r in closure_runs),
            "indicators_off_target": sum(1 for r in closure_runs if r.on_target_latest is False),
            "learning_summary": bool(learning),
            "learning_embedded_places": max((len(s.embedded_in) for s in learning), default=0),
            "signoffs": len(signoffs),
            "highest_signoff_level_rank": max((level_rank(s.level) or 0 for s in signoffs),
                                              default=None),
            "monitoring_days_left": _days(plan.monitoring_until, now)
            if plan.state == "monitoring" and plan.monitoring_until else None,
            "days_since_closed": _days(now, plan.closed_at) if plan.closed_at else None,
            "learning_review_overdue_days": (today - plan.learning_review_due).days
            if plan.learning_review_due else None,
            "recurrence": recurrence > 0,
            "next_review_date": plan.next_review_at.date().isoformat()
            if plan.next_review_at else None,
            "learning_review_date": plan.learning_review_due.isoformat()
            if plan.learning_review_due else None,
            "last_measured_on": max((r.latest_on for r in closure_runs if r.latest_on),
                                    default=None),
        }
        closure_indicators = [i for i in d.indicators if i.ref in closure_refs]
        facts.update(plan_spc_facts(closure_indicators, [runs[i.ref] for i in closure_indicators]))
        facts.update(grown_facts(plan, d, closure_indicators, now))
        facts["actions_slipped"] = sum(
            1 for a in d.actions
            if a.state not in DONE and a.due and a.baseline_due and a.due > a.baseline_due)
        facts.update(criteria_facts(criteria, signer, self.people()))
        return facts


def reaudit_gap(criteria: dict[str, Any]) -> int:
    """Days re-audits must be apart to count as separate intervals."""
    gap = criteria.get("reaudit_gap_days")
    return DEFAULT_REAUDIT_GAP_DAYS if gap is None else int(gap)


def can_sign(level: str | None, groups: Sequence[str] | None, required_level: str | None,
             required_group: str | None) -> bool:
    """A person at ``level`` in ``groups`` holds the authority a sign-off names."""
    if required_group and required_group not in (groups or []):
        return False
    return not required_level or (level_rank(level) or 0) >= (level_rank(required_level) or 0)


class Signers:
    """The organisation's people as far as authority goes: level and groups, asked of the
    database as needed (a count per level and group, a level per person), never read whole:
    one change to a plan must not cost a read of every person."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._levels: dict[str, str | None] = {}
        self._counts: dict[tuple[str | None, str | None], int] = {}

    def know_levels(self, person_ids: Iterable[str | None]) -> None:
        """Read the levels of many people in one query (a batch's sponsors), so that
        :meth:`level_of` asks nothing more for them."""
        wanted = {i for i in person_ids if i and i not in self._levels}
        if not wanted:
            return
        with self.session.no_autoflush:
            found = dict(self.session.exec(select(Person.id, Person.level).where(
                col(Person.id).in_(wanted))).all())
        self._levels.update({i: found.get(i) for i in wanted})

    def level_of(self, person_id: str | None) -> str | None:
        if not person_id:
            return None
        if person_id not in self._levels:
            self._levels[person_id] = self.session.exec(
                select(Person.level).where(Person.id == person_id)).first()
        return self._levels[person_id]

    def count(self, level: str | None, group: str | None) -> int:
        """How many people could sign at ``level`` in ``group``."""
        key = (level, group)
        if key not in self._counts:
            with self.session.no_autoflush:  # people are read, never changed, by a decision
                self._counts[key] = self._count(level, group)
        return self._counts[key]

    def _count(self, level: str | None, group: str | None) -> int:
        if group:  # the JSON list's text holds the group name in quotes on every database
            rows = self.session.exec(select(Person.level, Person.groups).where(
                cast(Person.groups, String).like(f'%"{group}"%'))).all()
            return sum(1 for lv, groups in rows if can_sign(lv, groups, level, group))
        by_level = self.session.exec(select(Person.level, func.count())
                                     .group_by(Person.level)).all()
        return sum(n for lv, n in by_level if can_sign(lv, [], level, None))


DEFAULT_MONITORING_CADENCE_DAYS = 30


def grown_facts(plan: Plan, d: PlanData, indicators: Sequence[Indicator], now: datetime
                ) -> dict[str, Any]:
    """Facts of plans that grow (reopened: new or reopened actions since), of monitoring that
    must happen (the closure indicators measured in every period of the cadence, none off
    target) and of learning that is shared."""
    today = now.date()
    facts: dict[str, Any] = {
        "learning_summaries": len(d.learning),
        "learning_summary_text": _learning_text(d.learning[-1]) if d.learning else None,
    }
    if plan.reopened_at:
        since = plan.reopened_at
        facts.update({
            "working_days_since_reopened": calendar().between(since.date(), today),
            "reopened_date": since.date().isoformat(),
            "actions_since_reopen": sum(1 for a in d.actions if a.created_at >= since or (
                a.reopened_at is not None and a.reopened_at >= since)),
        })
    if plan.state == "monitoring" and plan.monitoring_since:
        facts.update(monitoring_facts(plan, d, indicators, today))
    return facts


def _learning_text(summary: LearningSummary) -> str:
    where = f" Embedded in: {', '.join(summary.embedded_in)}." if summary.embedded_in else ""
    return f"{summary.summary}{where}"


def monitoring_facts(plan: Plan, d: PlanData, indicators: Sequence[Indicator], today: date
                     ) -> dict[str, Any]:
    """The monitoring period cut into periods of the cadence from its start: each closure
    indicator is expected once in every period. Completed periods without a measurement are
    missing; the measurement due next is the one for the period after the latest measured one
    (so each gap is reminded once, and a later one again)."""
    assert plan.monitoring_since is not None
    start = plan.monitoring_since.date()
    cadence = plan.monitoring_cadence_days or DEFAULT_MONITORING_CADENCE_DAYS
    completed = max(0, (today - start).days // cadence)
    missing = off_target = 0
    due: tuple[date, Indicator] | None = None
    for indicator in indicators:
        points = [m for m in d.measurements.get(indicator.id, []) if m.on >= start]
        off_target += sum(1 for m in points if not on_target(indicator, m.value))
        periods = {(m.on - start).days // cadence for m in points}
        missing += sum(1 for k in range(completed) if k not in periods)
        following = max(periods, default=-1) + 1  # the period after the latest measured one
        end = start + timedelta(days=cadence * (following + 1))
        if due is None or end < due[0]:
            due = (end, indicator)
    facts: dict[str, Any] = {
        "monitoring_cadence_days": cadence,
        "monitoring_measurements_expected": completed * len(indicators),
        "monitoring_measurements_missing": missing,
        "monitoring_off_target_points": off_target,
    }
    if due is not None:
        end, indicator = due
        facts.update({
            "measurement_due_date": end.isoformat(),
            "measurement_overdue_days": (today - end).days,
            "overdue_indicator": indicator.ref,
            "overdue_indicator_owner": indicator.owner_id or plan.owner_id,
        })
    return facts


def criteria_facts(criteria: dict[str, Any], signer: Person | None,
                   people: Signers | None = None) -> dict[str, Any]:
    """The facts that depend on the closure criteria and on who is signing."""
    signoff = criteria.get("signoff") or {}
    group = signoff.get("group")
    return {
        "required_reaudit_gap_days": reaudit_gap(criteria),
        "closure_signers": people.count(signoff.get("level"), group)
        if people is not None and signoff else None,
        "has_closure_criteria": all(criteria.get(k) not in (None, "", [])
                                    for k in ("success", "indicators", "sustain_days", "signoff")),
        "required_sustain_days": criteria.get("sustain_days"),
        "required_reaudits": criteria.get("reaudits") or 0,
        "learning_required": bool(criteria.get("learning_required")),
        "required_signoff_level_rank": level_rank(signoff.get("level")),
        "required_signoff_group": group,
        "signer_level_rank": level_rank(signer.level) if signer else None,
        "signer_in_required_group": (not group or group in (signer.groups or []))
        if signer else None,
    }
