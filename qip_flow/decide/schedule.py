"""When to look at a plan again. Time-based rules (reminders, escalations, RAG) can only change
their verdict on the days a time fact crosses one of the thresholds the rules compare it with:
14 working days before a due date, the day after it, every week while overdue, 30 days after
the last update… The schedule reads those thresholds from the rules in force and gives each
plan the next such day, so a tick reads only plans with something due (DESIGN principle 5)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from qip_flow.config.rules import WEEKDAYS, DeliverySettings, FactRef, RuleBook
from qip_flow.decide.calendar import calendar
from qip_flow.store.models import Plan

CHECK_TIME = time(6, 0)  # checks fall due before the working day starts

# fact → (anchor, calendar: "days" | "working", direction): the fact has value v on
# anchor + direction × v.
TIME_FACTS: dict[str, tuple[str, str, int]] = {
    "days_to_due": ("due", "days", -1),
    "working_days_to_due": ("due", "working", -1),
    "days_overdue": ("due", "days", 1),
    "max_days_overdue": ("due", "days", 1),
    "working_days_overdue": ("due", "working", 1),
    "max_working_days_overdue": ("due", "working", 1),
    "weeks_overdue": ("due", "weeks", 1),
    "actions_overdue": ("due", "overdue", 1),
    "days_since_update": ("update", "days", 1),
    "days_to_next_review": ("review", "days", -1),
    "learning_review_overdue_days": ("learning", "days", 1),
    "monitoring_days_left": ("monitoring", "days", -1),
    "working_days_since_reopened": ("reopened", "working", 1),
    "measurement_overdue_days": ("measurement", "days", 1),
}
# anchor → the plan fact giving its date, for anchors that are not a column of the plan
FACT_ANCHORS = {"measurement": "measurement_due_date"}
TIME_SENSITIVE_OUTCOMES = ("notify", "rag")


def _crossing_value(op: str, value: float, direction: int) -> int | None:
    """The fact value at which a comparison starts (or stops) holding as time passes."""
    v = int(value)
    if op in ("is", "at_least", "at_most"):
        return v
    if op == "more_than":
        return v + 1 if direction > 0 else v
    if op == "less_than":
        return v - 1 if direction < 0 else v
    return None


@dataclass
class Schedule:
    """The thresholds of the time facts, per anchor, read from the rules."""

    offsets: dict[str, set[tuple[str, int]]]  # anchor → {(calendar, signed offset)}
    weekly_after_due: bool

    @classmethod
    def from_rules(cls, book: RuleBook) -> Schedule:
        offsets: dict[str, set[tuple[str, int]]] = defaultdict(set)
        weekly = False
        for subject in ("plan", "action"):
            for rule in book.for_outcome(subject, *TIME_SENSITIVE_OUTCOMES):
                for leaf in rule.leaves():
                    if leaf.fact == "at_risk":  # working_days_to_due ≤ the ladder's window
                        offsets["due"].add(("working", -book.ladder.at_risk_working_days))
                        continue
                    spec = TIME_FACTS.get(leaf.fact)
                    value = leaf.value
                    if spec is None or isinstance(value, FactRef | bool | str | list):
                        continue
                    anchor, kind, direction = spec
                    if kind == "weeks":
                        weekly = True
                        continue
                    if kind == "overdue":
                        offsets["due"].add(("days", 1))
                        continue
                    crossing = _crossing_value(leaf.op, value, direction)
                    if crossing is not None:
                        offsets[anchor].add((kind, direction * crossing))
                for text in rule.then.params.values():
                    if isinstance(text, str) and "{weeks_overdue}" in text:
                        weekly = True
        if weekly:
            offsets["due"].add(("days", 1))
        return cls(dict(offsets), weekly)

    def _dates(self, anchor: str, day: date) -> list[date]:
        cal = calendar()
        out = []
        for kind, offset in self.offsets.get(anchor, ()):
            out.append(cal.add(day, offset) if kind == "working" else day + timedelta(days=offset))
        return out

    def next_check(self, plan: Plan, actions: list[dict[str, Any]], now: datetime,
                   plan_facts: dict[str, Any] | None = None) -> datetime | None:
        """The first day after today on which a time-based rule could change its verdict."""
        today = now.date()
        candidates: list[date] = []
        for a in actions:
            if a["state"] in ("completed", "verified"):
                continue
            if a.get("due_date"):
                due = date.fromisoformat(a["due_date"])
                candidates += self._dates("due", due)
                if self.weekly_after_due and today >= due:
                    candidates.append(due + timedelta(days=7 * ((today - due).days // 7 + 1)))
            candidates += self._dates("update", today - timedelta(days=a["days_since_update"]))
        if plan.next_review_at:
            candidates += self._dates("review", plan.next_review_at.date())
        if plan.learning_review_due:
            candidates += self._dates("learning", plan.learning_review_due)
        if plan.monitoring_until:
            candidates += self._dates("monitoring", plan.monitoring_until.date())
            candidates.append(plan.monitoring_until.date())
        if plan.reopened_at:
            candidates += self._dates("reopened", plan.reopened_at.date())
        for anchor, fact in FACT_ANCHORS.items():
            if (plan_facts or {}).get(fact):
                candidates += self._dates(anchor, date.fromisoformat(plan_facts[fact]))
        future = [d for d in candidates if d > today]
        return check_moment(min(future)) if future else None


def check_moment(day: date) -> datetime:
    """When a plan falls due for its check on ``day``: before the working day starts."""
    return datetime.combine(day, CHECK_TIME, tzinfo=UTC)


def working_moment(settings: DeliverySettings, moment: datetime) -> datetime:
    """``moment``, or the start of the next working hours on a working day (the reminders
    rules' ``working_hours``, ``working_days`` and ``bank_holidays``): a reminder decided on a
    Saturday or on Christmas Day waits for the next working morning."""
    days = {WEEKDAYS.index(d) for d in settings.working_days}
    if settings.working_hours is None and len(days) == 7 and settings.bank_holidays == "none":
        return moment
    zone = ZoneInfo(settings.timezone)
    start, end = time.min, None
    if settings.working_hours:
        start_s, end_s = settings.working_hours.split("-")
        start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    cal = calendar()
    local = moment.astimezone(zone)
    for _ in range(366):
        day = local.date()
        working = day.weekday() in days and not (
            settings.bank_holidays == "england-and-wales" and cal.is_bank_holiday(day))
        if working and local.time() < start:
            local = datetime.combine(day, start, tzinfo=zone)
        if working and (end is None or local.time() < end):
            return moment if local == moment.astimezone(zone) else local.astimezone(UTC)
        local = datetime.combine(day + timedelta(days=1), start, tzinfo=zone)
    return moment  # no working day in a year: the settings allow none; send rather than hold
