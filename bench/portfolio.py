"""A synthetic portfolio: a care group with N actions' worth of Quality Improvement Plans, written
straight into a qip_flow database so the daily tick, the reports and the queries can be measured
at 1,000 to 1,000,000 actions on SQLite and PostgreSQL.

Why it looks the way it does:

- **Reproducible.** Everything comes from one ``random.Random(seed)``; ids, dates and values are
  the same for the same seed, size and day, on every database.
- **Streamed.** Rows are generated plan by plan and written with SQLAlchemy Core
  ``insert(table)`` in chunks, one transaction per chunk, so memory stays flat at any size.
- **As the engine would leave it.** Each plan's ``next_check_at`` is what
  :meth:`qip_flow.decide.schedule.Schedule.next_check` gives for the day before ``--today``, so
  the tick at ``--today`` 08:00 finds exactly the plans with a rule threshold crossed that day.
- **A known daily load.** Dates are tuned so that the plans due on ``--today`` hold about
  ``--due-share`` (1 %) of all actions: a date that would cross a threshold on that day in a plan
  not chosen to be due is moved by a day, and a plan chosen to be due gets a crossing.
- **What it leaves out.** The outbox and the audit trail start empty, so the first tick also
  enqueues the standing escalations of the plans it checks (a live system sent them on earlier
  days); the RAG ratings are approximate, and that tick corrects the few it checks.

Run: ``python bench/portfolio.py --db sqlite:////tmp/p.db --actions 100000 --seed 1``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import random
import resource
import sys
import threading
import time as clock
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, func, insert, select, text

from qip_flow.clock import Clock, parse_day
from qip_flow.decide.facts import DONE, action_facts, tighten
from qip_flow.errors import InvalidInput, QipError
from qip_flow.runtime import Runtime
from qip_flow.services.assess import is_live
from qip_flow.store.db import Database
from qip_flow.store.models import (
    Action,
    DueRevision,
    Evidence,
    Finding,
    Indicator,
    LearningSummary,
    Measurement,
    Person,
    Plan,
    ProgressNote,
    Risk,
    Service,
    SignOff,
)

DEFAULT_TODAY = date(2026, 11, 21)
TICK_TIME = time(8, 0)  # the benchmark day's tick runs at 08:00 UTC
SAFEGUARDING_GROUP = "Safeguarding governance group"
QUALITY_COMMITTEE = "Quality committee"
BOARD = "Board"

THEMES = ("medication", "safeguarding", "care planning", "risk assessment", "staffing",
          "infection control", "nutrition", "record keeping")
SOURCES = ("inspection", "audit", "complaint", "incident", "safeguarding", "other")
SOURCE_WEIGHTS = (20, 30, 12, 18, 12, 8)
STATES = ("draft", "approved", "in_progress", "sustaining", "closure_review", "monitoring",
          "closed")
STATE_WEIGHTS = (4, 6, 60, 10, 5, 8, 7)
STEP_DOWN_THEMES = ("care planning", "record keeping")  # rules/monitoring.yaml steps these down

#: Tables in the order their rows must be written (parents before children).
TABLES: tuple[type[Any], ...] = (Person, Service, Risk, Plan, Finding, Action, DueRevision,
                                 ProgressNote, Evidence, Indicator, Measurement, SignOff,
                                 LearningSummary)
#: Tables whose integer ids we assign (PostgreSQL sequences are moved past them afterwards).
NUMBERED: tuple[type[Any], ...] = (DueRevision, ProgressNote, Evidence, Measurement, SignOff,
                                   LearningSummary)

FIRST = ("Amira", "Ben", "Chloe", "Daniel", "Ewa", "Farah", "George", "Hana", "Isaac", "Jaya",
         "Kwame", "Lola", "Megan", "Nadia", "Owen", "Priya", "Rhys", "Simran", "Tom", "Uma",
         "Victor", "Wen", "Yusuf", "Zoe")
LAST = ("Adeyemi", "Brennan", "Chen", "Davies", "Evans", "Fraser", "Green", "Hughes", "Iqbal",
        "Jones", "Kaur", "Lewis", "Mensah", "Nowak", "Okafor", "Patel", "Quinn", "Roberts",
        "Singh", "Taylor", "Usman", "Wright", "Young", "Zielinski")
TREES = ("Maple", "Cedar", "Willow", "Rowan", "Hazel", "Birch", "Oak", "Ash", "Alder", "Elm",
         "Holly", "Juniper", "Larch", "Linden", "Poplar", "Yew")
PLACES = ("House", "Court", "Lodge", "Gardens", "View", "Place", "Mews", "Grange")
KINDS = ("supported living", "residential care", "nursing home", "domiciliary care",
         "mental health supported housing")
RISKS = (
    ("SR-01", "Unsafe medicines management causes avoidable harm"),
    ("SR-02", "Safeguarding concerns are not recognised or escalated promptly"),
    ("SR-03", "Care and support plans do not reflect people's current needs"),
    ("SR-04", "Workforce capacity and capability fall below safe levels"),
    ("SR-05", "Infection outbreaks are not prevented or contained"),
    ("SR-06", "Risks to people are not assessed or reviewed"),
    ("SR-07", "Malnutrition and dehydration go unnoticed"),
    ("SR-08", "Records are incomplete, late or inaccurate"),
    ("SR-09", "Regulatory ratings fall and commissioners lose confidence"),
    ("SR-10", "Learning from incidents and complaints is not embedded"),
)
THEME_RISKS = {"medication": "SR-01", "safeguarding": "SR-02", "care planning": "SR-03",
               "staffing": "SR-04", "infection control": "SR-05", "risk assessment": "SR-06",
               "nutrition": "SR-07", "record keeping": "SR-08"}

# (description, root cause) per theme; {n} is filled with a number
FINDINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "medication": (
        ("MAR chart gaps were not detected between audits",
         "Audit frequency set when the service was smaller and never reviewed"),
        ("Staff on night shifts had not completed medicines refresher training",
         "Training matrix did not flag lapsed refreshers for bank and night staff"),
        ("PRN protocols were missing for {n} people",
         "No owner for PRN protocols after the last pharmacist review")),
    "safeguarding": (
        ("Concerns were escalated to the safeguarding lead late or not at all",
         "Staff unsure of thresholds for escalation out of hours"),
        ("Safeguarding records lacked times, actions taken and who was informed",
         "Recording template did not prompt for the required fields")),
    "care planning": (
        ("Care plans were not reviewed after changes in need for {n} people",
         "Review dates tracked on paper and missed during staff absence"),
        ("People and families were not involved in reviews",
         "Review meetings booked at times families could not attend")),
    "risk assessment": (
        ("Falls risk assessments were out of date",
         "No trigger to reassess after a fall or a hospital stay"),
        ("Positive risk-taking decisions were not recorded",
         "Staff unsure how to record agreed risks")),
    "staffing": (
        ("Night shifts ran below the agreed staffing level on {n} occasions",
         "Rota built without checking agreed minimum numbers"),
        ("Agency staff started without a local induction",
         "Induction checklist not available out of hours")),
    "infection control": (
        ("Cleaning schedules were incomplete in {n} areas",
         "Schedules not checked by the shift leader"),
        ("Hand hygiene audit scores fell below the standard",
         "Audits stopped when the IPC champion left")),
    "nutrition": (
        ("Weights were not recorded monthly for people at risk",
         "Scales broken for six weeks with no escalation"),
        ("Fluid charts were not totalled at the end of the day",
         "No named person responsible for totalling charts")),
    "record keeping": (
        ("Daily notes were missing or late for {n} people",
         "Handheld devices shared between too many staff"),
        ("Incident records lacked the manager's review",
         "Review step not built into the incident form")),
}
# concrete verbs and a number or frequency, so the credibility rules find nothing to say
ACTIONS: dict[str, tuple[str, ...]] = {
    "medication": (
        "Audit MAR charts weekly for {n} weeks, then monthly",
        "Retrain the night team and bank staff ({n} named staff) in medicines administration",
        "Reassess medicines competency of all {n} senior support workers, then annually",
        "Write PRN protocols for {n} people with the pharmacist"),
    "safeguarding": (
        "Publish an out-of-hours escalation rota and threshold guide in all {n} offices",
        "Run threshold workshops for all {n} care staff across day and night teams",
        "Replace the recording template with one requiring time, action and who was told",
        "Add recording quality to monthly supervision for every care worker"),
    "care planning": (
        "Review all {n} care plans with the person and their family",
        "Set review dates in the electronic system for every care plan, checked monthly",
        "Train {n} keyworkers in person-centred review meetings"),
    "risk assessment": (
        "Reassess falls risk for all {n} people, then after every fall",
        "Add a positive risk-taking record to {n} support plans",
        "Audit risk assessments monthly for {n} months"),
    "staffing": (
        "Recruit {n} permanent night support workers",
        "Check the rota weekly against agreed minimum staffing",
        "Give every agency worker a local induction on their first shift, audited monthly"),
    "infection control": (
        "Audit cleaning schedules weekly for {n} weeks",
        "Appoint and train {n} IPC champions",
        "Run hand hygiene audits monthly on every shift pattern"),
    "nutrition": (
        "Replace the scales and weigh all {n} people at risk monthly",
        "Total fluid charts daily at 22:00 and hand over any shortfall",
        "Train {n} staff in MUST screening"),
    "record keeping": (
        "Buy {n} handheld devices so each shift has its own",
        "Audit daily notes weekly for {n} weeks",
        "Add a manager review step to the incident form, checked monthly"),
}
# (ref, name, unit, direction, baseline range, target)
INDICATORS: dict[str, tuple[tuple[str, str, str, str, tuple[float, float], float], ...]] = {
    "medication": (("mar-complete", "MAR charts fully completed at audit", "%", "up", (70, 85), 95),
                   ("med-errors", "Medication errors reaching people per month", "errors",
                    "down", (4, 9), 1)),
    "safeguarding": (("escalated-24h", "Concerns escalated within 24 hours", "%", "up",
                      (55, 75), 95),
                     ("record-quality", "Safeguarding records meeting the standard", "%", "up",
                      (50, 70), 90)),
    "care planning": (("plans-reviewed", "Care plans reviewed on time", "%", "up", (55, 75), 90),
                      ("people-involved", "Reviews with the person involved", "%", "up",
                       (40, 65), 85)),
    "risk assessment": (("ra-current", "Risk assessments in date", "%", "up", (60, 80), 95),
                        ("falls", "Falls per month", "falls", "down", (5, 10), 2)),
    "staffing": (("shifts-filled", "Shifts at agreed staffing level", "%", "up", (75, 88), 98),
                 ("agency-shifts", "Agency shifts per week", "shifts", "down", (12, 25), 5)),
    "infection control": (("ipc-score", "IPC audit score", "%", "up", (70, 85), 95),
                          ("hand-hygiene", "Hand hygiene audit compliance", "%", "up",
                           (65, 80), 95)),
    "nutrition": (("weights-recorded", "People at risk weighed monthly", "%", "up", (55, 75), 95),
                  ("fluids-totalled", "Fluid charts totalled daily", "%", "up", (50, 70), 90)),
    "record keeping": (("notes-complete", "Daily notes complete and on time", "%", "up",
                        (60, 78), 95),
                       ("incidents-reviewed", "Incidents reviewed by a manager", "%", "up",
                        (45, 70), 90)),
}
REVISION_REASONS = ("Trainer unavailable until later in the quarter",
                    "Waiting for the pharmacy supplier", "Recruitment took longer than planned",
                    "Outbreak restrictions delayed the work", "Scope widened after re-audit")


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Summary:
    """What was written, how long it took and what the benchmark day holds."""

    actions_requested: int
    seed: int
    today: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    actions_per_second: float = 0.0
    peak_rss_mb: float = 0.0
    plans_due: int = 0
    actions_in_due_plans: int = 0
    actions_due_today: int = 0

    def due_line(self) -> str:
        n = max(self.counts.get("action", 0), 1)
        return (f"due on {self.today} 08:00: plans {self.plans_due:,}, actions in due plans "
                f"{self.actions_in_due_plans:,} ({100 * self.actions_in_due_plans / n:.2f} %), "
                f"actions with something due {self.actions_due_today:,} "
                f"({100 * self.actions_due_today / n:.2f} %)")

    def line(self) -> str:
        counts = " ".join(f"{k}={v:,}" for k, v in self.counts.items())
        return (f"portfolio seed={self.seed}: {counts} in {self.seconds:.1f} s "
                f"({self.actions_per_second:,.0f} actions/s), peak RSS {self.peak_rss_mb:.0f} MB")


@dataclass
class _People:
    """Who is who in the group, as ids: enough to pick owners, sponsors and signers."""

    board: list[str]
    seniors: list[str]
    services: list[str]  # names
    managers: list[str]  # one registered manager per service
    staff: list[list[str]]  # per service
    line_manager: dict[str, str]
    groups: dict[str, list[str]]


class _Writer:
    """Buffers rows per table and writes them in chunks, one transaction per chunk.

    With ``background`` the chunks are written by a thread of their own, so PostgreSQL works
    (and the driver waits on its socket, without the GIL) while the next chunk is generated:
    a third faster there. One chunk waits at most, so memory stays flat, and one writer keeps
    the order, so the rows are the same. On SQLite the thread only fights the generator for
    the GIL (measured slower), so chunks are written inline."""

    def __init__(self, db: Database, chunk: int, *, background: bool) -> None:
        self.db, self.chunk = db, chunk
        self.tables: dict[type[Any], Table] = {m: m.__table__ for m in TABLES}
        self.buffers: dict[type[Any], list[dict[str, Any]]] = {m: [] for m in TABLES}
        self.counts: dict[str, int] = {m.__table__.name: 0 for m in TABLES}
        self._queue: queue.Queue[dict[type[Any], list[dict[str, Any]]] | None] = \
            queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="portfolio-writer",
                                            daemon=True)
            self._thread.start()

    def add(self, model: type[Any], row: dict[str, Any]) -> None:
        self.buffers[model].append(row)

    def maybe_flush(self) -> None:
        """Write once a table has a chunk's worth (called between plans, so a plan's rows go
        together)."""
        if any(len(rows) >= self.chunk for rows in self.buffers.values()):
            self.flush()

    def flush(self) -> None:
        """Write everything buffered as one transaction (or hand it to the writer)."""
        if not any(self.buffers.values()):
            return
        batch, self.buffers = self.buffers, {m: [] for m in TABLES}
        if self._thread is None:
            self._write(batch)
            return
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self, *, write: bool = True) -> None:
        """Write what is left (unless giving up) and wait for the writer; raise what it
        raised."""
        if self._thread is None:
            if write:
                self.flush()
        elif self._thread.is_alive():
            if write:
                self.flush()
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so the generating thread is never left blocked
            try:
                self._write(batch)
            except BaseException as exc:  # handed to the generating thread
                self._error = exc

    def _write(self, batch: dict[type[Any], list[dict[str, Any]]]) -> None:
        """One transaction, parents first (foreign keys are on)."""
        with self.db.engine.begin() as conn:
            for model, rows in batch.items():
                if rows:
                    table = self.tables[model]
                    conn.execute(insert(table), rows)
                    self.counts[table.name] += len(rows)


class _Schedule:
    """The engine's schedule, asked once per distinct date. ``Schedule.next_check`` is the
    earliest of independent candidates (per due date, per last update, per plan date), so a
    plan's value is the minimum of the values for each part; asking per part and remembering
    the answers keeps the real thresholds at a fraction of the cost (``exact=True`` asks per
    plan instead, and the tests check the two agree)."""

    def __init__(self, rt: Runtime, now: datetime) -> None:
        self.rt, self.now, self.today = rt, now, now.date() + timedelta(days=1)
        self.empty = SimpleNamespace(next_review_at=None, learning_review_due=None,
                                     monitoring_until=None, reopened_at=None)
        self.neutral_update = 3650  # an update ten years ago crosses nothing any more
        self._due: dict[date, datetime | None] = {}
        self._update: dict[int, datetime | None] = {}
        if self.update_next(self.neutral_update) is not None:
            raise RuntimeError("the rules have a threshold ten years after an update; "
                               "raise _Schedule.neutral_update")

    def _ask(self, plan: Any, facts: list[dict[str, Any]]) -> datetime | None:
        return self.rt.schedule.next_check(plan, facts, self.now)

    def due_next(self, due: date) -> datetime | None:
        if due not in self._due:
            self._due[due] = self._ask(self.empty, [{
                "state": "open", "due_date": due.isoformat(),
                "days_since_update": self.neutral_update}])
        return self._due[due]

    def update_next(self, days_since_update: int) -> datetime | None:
        if days_since_update not in self._update:
            self._update[days_since_update] = self._ask(self.empty, [{
                "state": "open", "due_date": None, "days_since_update": days_since_update}])
        return self._update[days_since_update]

    def plan_next(self, plan: Any) -> datetime | None:
        return self._ask(plan, [])

    def hits(self, moment: datetime | None) -> bool:
        return moment is not None and moment.date() == self.today

    def due_hits(self, due: date) -> bool:
        return self.hits(self.due_next(due))

    def update_hits(self, days_since_update: int) -> bool:
        return self.hits(self.update_next(days_since_update))


class Generator:
    """Fills one database with a portfolio; :func:`generate` is the entry point."""

    def __init__(self, db: Database, actions: int, seed: int, today: date, *,
                 chunk: int = 10_000, due_share: float = 0.01, exact: bool = False) -> None:
        if actions < 5:
            raise InvalidInput("--actions: a portfolio needs at least 5 actions (one plan)")
        self.db, self.total, self.seed, self.today = db, actions, seed, today
        self.started = clock.perf_counter()
        self.rng = random.Random(seed)
        self.exact = exact
        self.now = _at(today - timedelta(days=1), TICK_TIME.hour)  # the day before the tick
        self.yesterday = today - timedelta(days=1)
        self.rt = Runtime(db=db, clock=Clock(self.now))
        self.version = self.rt.rules.version
        self.schedule = _Schedule(self.rt, self.now)
        self.summary = Summary(actions, seed, today.isoformat())
        self.n_services = max(1, round(actions / 60))
        self._defaults: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids: dict[type[Any], int] = dict.fromkeys(NUMBERED, 0)
        # a plan is chosen to be due by systematic sampling, so small portfolios get their share
        self.due_rate = due_share / (1 - STATE_WEIGHTS[0] / sum(STATE_WEIGHTS))
        self.due_credit, self.due_threshold = 0.0, self.rng.random()
        past = [today - timedelta(days=d) for d in range(1, 400)]
        future = [today + timedelta(days=d) for d in range(0, 400)]
        self.past_hits = [d for d in past if self.schedule.due_hits(d)]
        self.future_hits = [d for d in future if self.schedule.due_hits(d)]
        self.writer = _Writer(db, chunk, background=not db.is_sqlite)  # last: may start a thread

    # --- helpers ----------------------------------------------------------------------------

    def _id(self, model: type[Any]) -> int:
        self._ids[model] += 1
        return self._ids[model]

    def _int(self, lo: int, hi: int) -> int:
        """``randint`` at a third of the cost (it matters at a million actions)."""
        return lo + int(self.rng.random() * (hi - lo + 1))

    def _days(self, lo: int, hi: int) -> timedelta:
        return timedelta(days=self._int(lo, hi))

    def _fill(self, template: str) -> str:
        return template.replace("{n}", str(self._int(3, 40)))

    def _criteria_defaults(self, theme: str, source: str) -> dict[str, Any]:
        """The rules' default closure criteria for a theme and source (asked once per pair)."""
        key = (theme, source)
        if key not in self._defaults:
            self._defaults[key] = self.rt.decide.defaults(
                {"plan_id": "QIP-BENCH", "theme": theme, "source_type": source})
        return self._defaults[key]

    # --- the organisation -------------------------------------------------------------------

    def _person(self, pid: str, level: str, role: str, manager: str | None,
                groups: list[str]) -> dict[str, Any]:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        return {"id": pid, "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}.{pid}@care-group.example",
                "role": role, "level": level, "line_manager_id": manager, "groups": groups,
                "digest": level == "operational" and self.rng.random() < 0.05}

    def organisation(self) -> _People:
        """Board, seniors, a registered manager and 3-5 staff per service, groups, risks."""
        groups: dict[str, list[str]] = {}

        def person(pid: str, level: str, role: str, manager: str | None,
                   member_of: list[str]) -> None:
            self.writer.add(Person, self._person(pid, level, role, manager, member_of))
            for g in member_of:
                groups.setdefault(g, []).append(pid)
            self.writer.maybe_flush()

        board = ["board-1", "board-2", "board-3"]
        person("board-1", "board", "Chief Executive", None, [BOARD, QUALITY_COMMITTEE])
        person("board-2", "board", "Chair", None, [BOARD, SAFEGUARDING_GROUP])
        person("board-3", "board", "Non-executive Director", None, [BOARD])
        n_seniors = max(1, -(-self.n_services // 15))
        seniors = [f"sen-{i:04d}" for i in range(1, n_seniors + 1)]
        for i, pid in enumerate(seniors):
            committees = ([SAFEGUARDING_GROUP] if i % 3 == 0 else []) + (
                [QUALITY_COMMITTEE] if i % 2 == 0 else [])
            role = "Director of Quality and Safeguarding" if i % 3 == 0 else "Operations Director"
            person(pid, "senior", role, "board-1", committees)
        names, managers, staff = [], [], []
        line_manager: dict[str, str] = {s: "board-1" for s in seniors}
        for s in range(self.n_services):
            sid = f"svc-{s + 1:05d}"
            combo = s % (len(TREES) * len(PLACES))
            name = f"{TREES[combo % len(TREES)]} {PLACES[combo // len(TREES)]}"
            if s >= len(TREES) * len(PLACES):
                name += f" {s // (len(TREES) * len(PLACES)) + 1}"
            self.writer.add(Service, {"id": sid, "name": name, "kind": self.rng.choice(KINDS)})
            names.append(name)
            senior = seniors[(s // 15) % len(seniors)]
            rm = f"{sid}-rm"
            lead = s % 20 == 0  # a safeguarding lead among the managers
            person(rm, "manager", f"Registered Manager, {name}", senior,
                   [SAFEGUARDING_GROUP] if lead else [])
            line_manager[rm] = senior
            team = [f"{sid}-s{k}" for k in range(1, self._int(3, 5) + 1)]
            for k, pid in enumerate(team):
                role = "Senior Support Worker" if k == 0 else "Support Worker"
                person(pid, "operational", f"{role}, {name}", rm, [])
                line_manager[pid] = rm
            managers.append(rm)
            staff.append(team)
        owners = [*seniors, *board]
        for i, (rid, title) in enumerate(RISKS):
            self.writer.add(Risk, {"id": rid, "title": title, "owner_id": owners[i % len(owners)]})
        self.writer.flush()
        return _People(board, seniors, names, managers, staff, line_manager, groups)

    # --- plans ------------------------------------------------------------------------------

    def plans(self, people: _People) -> None:
        """Plans of 5-15 actions until the requested number of actions is reached."""
        remaining, seq, any_due = self.total, 0, False
        while remaining > 0:
            if remaining <= 15:
                n = remaining
            elif remaining < 20:
                n = remaining - 5
            else:
                n = self._int(5, 15)
            remaining -= n
            seq += 1
            state = self.rng.choices(STATES, STATE_WEIGHTS)[0]
            due = False
            if state != "draft":
                self.due_credit += self.due_rate
                if self.due_credit >= self.due_threshold:
                    due, self.due_threshold = True, self.due_threshold + 1
            if remaining == 0 and not any_due:  # even the smallest portfolio has work to do
                state, due = "in_progress", True
            any_due |= due
            self._plan(people, seq, n, state, due)
            self.writer.maybe_flush()
        self.writer.flush()

    def _timeline(self, state: str) -> tuple[datetime | None, datetime, date | None,
                                             datetime | None, date | None]:
        """Approval, creation, the day the last action was done, closure, step-down."""
        rng, today, y = self.rng, self.today, self.yesterday
        approved: datetime | None = None
        finished: date | None = None
        closed_at: datetime | None = None
        monitoring_start: date | None = None
        ago = {"approved": (0, 13), "in_progress": (30, 330), "sustaining": (150, 360),
               "closure_review": (200, 400), "monitoring": (260, 450),
               "closed": (300, 560)}.get(state)
        if ago:
            approved = _at(y - self._days(*ago), self._int(9, 16), rng.choice((0, 30)))
            created = approved - self._days(7, 45)
        else:
            created = _at(y - self._days(1, 30), self._int(9, 16))
        if state == "sustaining":
            finished = today - self._days(14, 120)
        elif state == "closure_review":
            finished = today - self._days(100, 170)
        elif state == "monitoring":
            monitoring_start = today - self._days(1, 170)
            finished = monitoring_start - self._days(60, 90)
        elif state == "closed":
            closed_at = _at(today - self._days(1, 240), self._int(10, 16))
            finished = closed_at.date() - self._days(90, 150)
        if approved and finished:
            finished = max(finished, approved.date() + timedelta(days=30))
        return approved, created, finished, closed_at, monitoring_start

    def _plan(self, people: _People, seq: int, n: int, state: str, due: bool) -> None:
        rng, today, y = self.rng, self.today, self.yesterday
        theme = rng.choice(STEP_DOWN_THEMES if state == "monitoring" else THEMES)
        source = ("safeguarding" if theme == "safeguarding" and rng.random() < 0.6
                  else rng.choices(SOURCES, SOURCE_WEIGHTS)[0])
        s = rng.randrange(self.n_services)
        service_id, service_name = f"svc-{s + 1:05d}", people.services[s]
        manager, team = people.managers[s], people.staff[s]
        sponsor = people.seniors[(s // 15) % len(people.seniors)]
        approved, created, finished, closed_at, monitoring_start = self._timeline(state)
        plan_id = f"QIP-{(approved or created).year}-{seq:06d}"
        source_date = created.date() - self._days(3, 40)
        reference = {
            "inspection": f"CQC inspection report, {service_name}, Safe key question",
            "audit": f"Internal {theme} audit, {source_date:%B %Y}",
            "complaint": f"Complaint C-{self._int(100, 9999)}",
            "incident": f"Incident report IR-{self._int(1000, 99999)}",
            "safeguarding": f"Local authority safeguarding alert SA-{self._int(100, 9999)}",
            "other": f"Commissioner quality monitoring visit, {source_date:%B %Y}",
        }[source]

        findings = []
        templates = FINDINGS[theme]
        for k in range(1, self._int(1, min(3, len(templates))) + 1):
            description, cause = templates[(k - 1 + seq) % len(templates)]
            findings.append(f"{plan_id}/F{k}")
            causes = [cause] + (["Oversight relied on one person"] if rng.random() < 0.3 else [])
            self.writer.add(Finding, {
                "id": f"{plan_id}/F{k}", "plan_id": plan_id, "ref": f"F{k}",
                "description": self._fill(description),
                "source_reference": f"{reference}, paragraph {self._int(1, 12)}",
                "root_causes": causes})

        indicators = INDICATORS[theme][:self._int(1, 2)]
        own: dict[str, Any] = {
            "success": f"{indicators[0][1]} at {indicators[0][5]:g} {indicators[0][2]} or "
                       "better, sustained",
            "indicators": [i[0] for i in indicators],
            "sustain_days": rng.choice((60, 75, 90, 90, 90, 120)),
            "reaudits": rng.choice((0, 1, 1, 2)),
            "signoff": ({"group": SAFEGUARDING_GROUP} if theme == "safeguarding" else
                        {"group": QUALITY_COMMITTEE} if rng.random() < 0.15 else
                        {"level": "board"} if rng.random() < 0.05 else {"level": "senior"}),
            "learning_required": rng.random() < 0.8,
        }
        criteria = own
        if approved:  # pinned at approval, tightened by the rules' defaults
            criteria = {**tighten(self._criteria_defaults(theme, source), own),
                        "pinned_at": approved.isoformat(), "rules_version": self.version}

        actions = self._actions(plan_id, theme, n, state, approved, created, finished, findings,
                                manager, team, sponsor, due)
        open_actions = [a for a in actions if a["state"] not in DONE]

        last_review: datetime | None = None
        next_review: datetime | None = None
        learning_due: date | None = None
        monitoring_until: datetime | None = None
        learning_days = criteria.get("learning_review_days") or 90
        if approved and state != "closed":
            if state == "approved":
                last_review = approved
            else:
                back = (31, 50) if rng.random() < 0.06 else (0, 29)  # a few reviews overdue
                last_review = max(approved, _at(y - self._days(*back), 10))
            next_review = last_review + timedelta(days=30)
        if closed_at:
            last_review = closed_at - self._days(20, 40)
            learning_due = closed_at.date() + timedelta(days=learning_days)
        if monitoring_start:
            monitoring_until = _at(monitoring_start, 11) + timedelta(
                days=criteria.get("monitoring_days") or 182)
        plan = SimpleNamespace(id=plan_id, state=state, approved_at=approved,
                               next_review_at=next_review, learning_review_due=learning_due,
                               monitoring_until=monitoring_until, reopened_at=None)

        if due and not self._make_due(open_actions, approved):
            # nothing open to remind about: the governance or learning review is what is due
            review = _at(today + timedelta(days=3), 10)
            if next_review is not None and approved and review - timedelta(days=30) >= approved:
                next_review, last_review = review, review - timedelta(days=30)
            elif closed_at is not None:
                learning_due = today + timedelta(days=7)
                closed_at = _at(learning_due - timedelta(days=learning_days), 11)
                last_review = closed_at - timedelta(days=30)
        elif not due:
            for _ in range(30):  # move the plan's own dates off the benchmark day
                if not self.schedule.hits(self.schedule.plan_next(plan)):
                    break
                if next_review is not None and last_review is not None and approved:
                    # a review is never before approval
                    step = timedelta(days=-1 if last_review - timedelta(days=1) >= approved
                                     else 1)
                    next_review, last_review = next_review + step, last_review + step
                if closed_at is not None and learning_due is not None:
                    closed_at -= timedelta(days=1)
                    learning_due -= timedelta(days=1)
                if monitoring_until is not None:
                    monitoring_until -= timedelta(days=1)
                plan.next_review_at, plan.learning_review_due = next_review, learning_due
                plan.monitoring_until = monitoring_until
        plan.next_review_at, plan.learning_review_due = next_review, learning_due

        counts = self._action_history(actions, approved, manager, sponsor, people)
        for a in actions:
            self.writer.add(Action, a)

        # next_check_at as qip_flow.services.assess.reassess leaves it
        live = is_live(self.rt, state)
        next_check: datetime | None = None
        if live or learning_due is not None:
            next_check = self._next_check(plan, actions, counts)
        if self.schedule.hits(next_check):
            self.summary.plans_due += 1
            self.summary.actions_in_due_plans += n
        self.summary.actions_due_today += sum(
            1 for a in open_actions if self.schedule.hits(self._action_next(a)))

        pattern = self._pattern(state)
        deteriorating = False
        for ref, name, unit, direction, (b_lo, b_hi), target in indicators:
            iid = f"{plan_id}/{ref}"
            baseline = float(round(rng.uniform(b_lo, b_hi), 1 if unit == "%" else None))
            self.writer.add(Indicator, {"id": iid, "plan_id": plan_id, "ref": ref, "name": name,
                                        "unit": unit, "direction": direction,
                                        "target": float(target), "baseline": baseline})
            deteriorating |= self._measurements(iid, pattern, direction, baseline, target,
                                                unit, manager)
        if state in ("sustaining", "closure_review", "monitoring", "closed") and \
                rng.random() < 0.5:
            self.writer.add(Evidence, {
                "id": self._id(Evidence), "plan_id": plan_id, "action_id": None,
                "description": f"Re-audit report: {indicators[0][1].lower()}",
                "reference": f"reaudit-{plan_id}.pdf",
                "on": min((finished or y) + self._days(7, 30), y),
                "by_id": manager})

        if approved:
            self._signoff(plan_id, "approval", sponsor, "senior", None, approved,
                          f"{QUALITY_COMMITTEE} {approved:%Y-%m-%d}")
        group = criteria.get("signoff", {}).get("group")
        if monitoring_start or closed_at:
            if group:
                signer = rng.choice(people.groups[group])
            elif criteria.get("signoff", {}).get("level") == "board":
                signer = rng.choice(people.board)
            else:
                signer = sponsor
            level = "board" if signer in people.board else (
                "senior" if signer.startswith("sen-") else "manager")
            if monitoring_start:
                self._signoff(plan_id, "step_down", signer, level, group,
                              _at(monitoring_start, 11), f"Governance meeting {monitoring_start}")
            if closed_at:
                self._signoff(plan_id, "closure", signer, level, group, closed_at,
                              f"Governance meeting {closed_at:%Y-%m-%d}")
                if criteria.get("learning_required"):
                    self.writer.add(LearningSummary, {
                        "id": self._id(LearningSummary), "plan_id": plan_id,
                        "summary": f"What we learned about {theme} at {service_name}",
                        "embedded_in": ["induction", "supervision template"][:self._int(1, 2)],
                        "by_id": manager, "at": closed_at - timedelta(days=2),
                        "review_due": learning_due})

        updated = max([created, *(a["last_update_at"] for a in actions),
                       *(m for m in (approved, last_review, closed_at) if m)])
        self.writer.add(Plan, {
            "id": plan_id, "title": f"{theme.capitalize()} improvement at {service_name}",
            "service_id": service_id, "source_type": source, "source_reference": reference,
            "source_date": source_date, "theme": theme, "owner_id": manager,
            "sponsor_id": sponsor,
            "risk_ids": [THEME_RISKS[theme]] + (["SR-09"] if source == "inspection" else []),
            "review_cadence_days": 30, "state": state,
            "rag": self._rag(state, open_actions, deteriorating, next_review),
            "closure_criteria": criteria, "spec_digest": "", "created_at": created,
            "updated_at": min(updated, _at(y, 23)), "approved_at": approved,
            "closed_at": closed_at, "monitoring_until": monitoring_until,
            "next_review_at": next_review, "last_review_at": last_review,
            "learning_review_due": learning_due, "next_check_at": next_check,
            "check_claimed_by": None, "check_lease_until": None})

    def _actions(self, plan_id: str, theme: str, n: int, state: str, approved: datetime | None,
                 created: datetime, finished: date | None, findings: list[str], manager: str,
                 team: list[str], sponsor: str, due_plan: bool) -> list[dict[str, Any]]:
        """Due dates, states and last updates consistent with each other and with the plan's
        state; in a plan not chosen to be due, nothing open crosses a threshold on the day."""
        rng, today, y, sched = self.rng, self.today, self.yesterday, self.schedule
        start = (approved or created).date()
        if state == "draft":
            lo, hi = today + timedelta(days=14), today + timedelta(days=180)
        elif state == "approved":
            lo = max(start + timedelta(days=14), today + timedelta(days=7))
            hi = min(start + timedelta(days=365), today + timedelta(days=180))
        elif state == "in_progress":
            lo = max(start + timedelta(days=7), today - timedelta(days=180))
            hi = min(start + timedelta(days=365), today + timedelta(days=180))
        else:
            assert finished is not None
            lo, hi = start + timedelta(days=7), finished + timedelta(days=10)
        span = max((hi - lo).days, 0)
        texts = ACTIONS[theme]
        out = []
        for k in range(1, n + 1):
            d = lo + timedelta(days=self._int(0, span))
            if state in ("draft", "approved"):
                st = "open" if state == "draft" or rng.random() < 0.7 else "in_progress"
            elif state == "in_progress":
                if rng.random() < (0.75 if d < today else 0.12):
                    st = rng.choice(DONE)
                else:
                    st = "in_progress" if rng.random() < 0.65 else "open"
            elif state == "sustaining":
                st = "verified" if rng.random() < 0.6 else "completed"
            else:
                st = "verified"
            r = rng.random()
            owner = manager if r < 0.3 else sponsor if r < 0.35 else rng.choice(team)
            completed_at: datetime | None = None
            owner_update: datetime | None = None
            if st in DONE:
                latest = min(d + timedelta(days=10), finished or y, y)
                earliest = min(max(d - timedelta(days=21), start + timedelta(days=1)), latest)
                completed_at = _at(earliest + self._days(0, (latest - earliest).days),
                                   self._int(9, 17), self._int(0, 59))
                update = owner_update = completed_at
            elif approved is None:
                update = created
            else:
                # most updated in the last weeks, a fifth silent since approval (the clock
                # starts at approval)
                when = y - (self._days(0, 45) if state == "in_progress"
                            else self._days(0, max((y - start).days, 0)))
                update = approved if rng.random() < 0.2 else max(
                    approved, _at(when, self._int(9, 17), self._int(0, 59)))
                if not due_plan:
                    step = -1 if d < today else 1
                    if step < 0 and d <= start + timedelta(days=7):
                        step = 1
                    for _ in range(60):
                        if not sched.due_hits(d):
                            break
                        d += timedelta(days=step)
                    for _ in range(60):
                        if not sched.update_hits((y - update.date()).days):
                            break
                        back = update - timedelta(days=1)
                        update = back if back >= approved else update + timedelta(days=1)
                if update > approved and rng.random() < 0.6:
                    owner_update = update
            out.append({
                "id": f"{plan_id}/A{k}", "plan_id": plan_id,
                "finding_id": findings[(k - 1) % len(findings)], "ref": f"A{k}",
                "description": self._fill(texts[(k - 1) % len(texts)]), "owner_id": owner,
                "baseline_due": d, "due": d, "state": st, "systemic": rng.random() < 0.2,
                "created_at": created, "last_update_at": update, "owner_update_at": owner_update,
                "completed_at": completed_at, "verified_by_id": None})
        return out

    def _make_due(self, open_actions: list[dict[str, Any]], approved: datetime | None) -> int:
        """Give 1-3 open actions of a plan chosen to be due a threshold crossed on the day:
        a reminder or an escalation ladder step (by due date), or a month without an update.
        Returns how many were given one."""
        rng, today, y = self.rng, self.today, self.yesterday
        if approved is None or not open_actions:
            return 0
        start = approved.date()
        chosen = rng.sample(open_actions, min(rng.choices((1, 2, 3), (60, 25, 15))[0],
                                              len(open_actions)))
        made = 0
        for a in chosen:
            stalled = y - timedelta(days=29)
            if rng.random() < 0.15 and stalled >= start:
                a["last_update_at"] = max(approved, _at(stalled, 15))
                if a["owner_update_at"] is not None:
                    a["owner_update_at"] = a["last_update_at"]
                made += 1
                continue
            pool = self.past_hits if a["due"] < today else self.future_hits
            pool = [d for d in pool if start + timedelta(days=7) <= d <= start + timedelta(days=365)]
            if pool:
                a["due"] = a["baseline_due"] = rng.choice(pool)
                made += 1
        return made

    def _action_history(self, actions: list[dict[str, Any]], approved: datetime | None,
                        manager: str, sponsor: str, people: _People) -> dict[str, tuple[int, int]]:
        """Revised dates, verification, progress notes and evidence; returns each action's
        (revisions, evidence items)."""
        rng, y = self.rng, self.yesterday
        counts: dict[str, tuple[int, int]] = {}
        for a in actions:
            revisions = evidence = 0
            d, owner = a["due"], a["owner_id"]
            checker = people.line_manager.get(owner, sponsor)
            if checker == owner:
                checker = sponsor if owner != sponsor else people.board[0]
            if approved is not None:
                start = approved.date()
                if (d - start).days >= 45 and rng.random() < 0.10:  # a revised timeline
                    steps = 2 if rng.random() < 0.2 else 1
                    baseline = d - self._days(14, 42) * steps
                    if baseline >= start + timedelta(days=7):
                        a["baseline_due"] = baseline
                        middle = baseline + timedelta(days=(d - baseline).days // 2)
                        chain = [baseline, d] if steps == 1 else [baseline, middle, d]
                        when = start
                        for previous, new in itertools.pairwise(chain):
                            when = min(max(previous - self._days(0, 14), when + timedelta(days=1)),
                                       y)
                            self.writer.add(DueRevision, {
                                "id": self._id(DueRevision), "action_id": a["id"],
                                "previous_due": previous, "new_due": new,
                                "reason": rng.choice(REVISION_REASONS),
                                "approved_by_id": checker, "at": _at(when, 14)})
                            revisions += 1
            if a["state"] in DONE:
                done = a["completed_at"]
                if a["state"] == "verified":
                    a["verified_by_id"] = checker
                for _ in range(1 if rng.random() < 0.9 else 2):
                    evidence += 1
                    self.writer.add(Evidence, {
                        "id": self._id(Evidence), "plan_id": a["plan_id"], "action_id": a["id"],
                        "description": f"Evidence for {a['ref']}: audit sheet and sign-in list",
                        "reference": f"ev-{a['id'].replace('/', '-')}-{evidence}.pdf",
                        "on": done.date(), "by_id": owner})
                if rng.random() < 0.3:
                    self._note(a["id"], owner, done, "Completed; evidence attached")
            elif approved is not None and a["last_update_at"] > approved:
                by = owner if a["owner_update_at"] == a["last_update_at"] else manager
                if rng.random() < 0.3:
                    earlier = approved + (a["last_update_at"] - approved) / 2
                    self._note(a["id"], by, earlier, "Started; first sessions booked")
                self._note(a["id"], by, a["last_update_at"], "Progress: on track with the plan")
                if rng.random() < 0.2:
                    evidence += 1
                    self.writer.add(Evidence, {
                        "id": self._id(Evidence), "plan_id": a["plan_id"], "action_id": a["id"],
                        "description": "Attendance record so far", "reference": "",
                        "on": a["last_update_at"].date(), "by_id": by})
            counts[a["id"]] = (revisions, evidence)
        return counts

    def _note(self, action_id: str, by: str, at: datetime, note: str) -> None:
        self.writer.add(ProgressNote, {"id": self._id(ProgressNote), "action_id": action_id,
                                       "by_id": by, "at": at, "text": note})

    def _signoff(self, plan_id: str, purpose: str, by: str, level: str, group: str | None,
                 at: datetime, meeting: str) -> None:
        self.writer.add(SignOff, {
            "id": self._id(SignOff), "plan_id": plan_id, "purpose": purpose, "by_id": by,
            "level": level, "group": group, "decision": "approved", "on": at.date(),
            "meeting_reference": meeting, "evidence_reviewed": [], "residual_risks": [],
            "learning_embedded": [], "at": at})

    # --- the schedule -----------------------------------------------------------------------

    def _action_next(self, a: dict[str, Any]) -> datetime | None:
        """When an open action next crosses a threshold, from the schedule's answers."""
        days = (self.yesterday - a["last_update_at"].date()).days
        found = [m for m in (self.schedule.due_next(a["due"]), self.schedule.update_next(days))
                 if m is not None]
        return min(found) if found else None

    def _next_check(self, plan: SimpleNamespace, actions: list[dict[str, Any]],
                    counts: dict[str, tuple[int, int]]) -> datetime | None:
        if self.exact:
            facts = [action_facts(SimpleNamespace(**a), plan, self.now,  # type: ignore[arg-type]
                                  revisions=counts[a["id"]][0], evidence=counts[a["id"]][1])
                     for a in actions]
            return self.rt.schedule.next_check(plan, facts, self.now)  # type: ignore[arg-type]
        found = [m for m in (self.schedule.plan_next(plan),
                             *(self._action_next(a) for a in actions if a["state"] not in DONE))
                 if m is not None]
        return min(found) if found else None

    # --- indicators -------------------------------------------------------------------------

    def _pattern(self, state: str) -> str:
        """How the plan's indicators have moved, by how far the plan has come."""
        weights = {
            "draft": (0, 0, 0, 1), "approved": (0, 0, 1, 3),
            "in_progress": (25, 15, 45, 15), "sustaining": (80, 5, 15, 0),
            "closure_review": (90, 5, 5, 0), "monitoring": (97, 3, 0, 0), "closed": (1, 0, 0, 0),
        }[state]
        return self.rng.choices(("sustained", "deteriorating", "improving", "flat"), weights)[0]

    def _measurements(self, indicator_id: str, pattern: str, direction: str, baseline: float,
                      target: float, unit: str, by: str) -> bool:
        """6-12 monthly measurements; returns whether the last fell off a reached target."""
        rng, up = self.rng, direction == "up"
        k = self._int(6, 12)
        last = self.yesterday - self._days(0, 27)

        def between(f: float) -> float:  # a value on the way from the baseline to the target
            v = baseline + (target - baseline) * f
            return round(v, 1) if up else float(-(-v // 1) if v > target else target + 1)

        def on() -> float:
            if up:
                return round(min(100.0, target + rng.uniform(0, max(0.0, min(4.0, 100 - target)))),
                             1)
            return float(max(0, int(target) - self._int(0, int(target))))

        def off() -> float:
            gap = abs(target - baseline)
            if up:
                return round(target - rng.uniform(max(1.0, gap * 0.15), max(1.0, gap * 0.7)), 1)
            return float(target + self._int(1, max(1, round(gap * 0.6))))

        values: list[float] = []
        run: list[int] = []
        if pattern in ("sustained", "deteriorating"):
            ramp = self._int(1, 2)
            values = [between(0.1 + 0.35 * j) for j in range(ramp)]
            hold = k - ramp if pattern == "sustained" else self._int(2, k - ramp - 1)
            run = list(range(len(values), len(values) + hold))
            values += [on() for _ in range(hold)]
            values += [off() for _ in range(k - len(values))]
        elif pattern == "improving":
            values = [between(min(0.9, 0.05 + 0.8 * j / (k - 1) + rng.uniform(-0.05, 0.05)))
                      for j in range(k)]
        else:
            values = [between(rng.uniform(-0.1, 0.25)) for _ in range(k)]
        reaudits = set(rng.sample(run[1:], min(len(run) - 1, self._int(0, 2)))) if run else set()
        for j, value in enumerate(values):
            on_day = last - timedelta(days=30 * (k - 1 - j) + (self._int(-2, 2) if j < k - 1
                                                               else 0))
            self.writer.add(Measurement, {
                "id": self._id(Measurement), "indicator_id": indicator_id, "on": on_day,
                "value": value, "source": "re-audit" if j in reaudits else "monthly audit",
                "reaudit": j in reaudits, "recorded_by_id": by, "at": _at(on_day, 16)})
        return pattern == "deteriorating"

    def _rag(self, state: str, open_actions: list[dict[str, Any]], deteriorating: bool,
             next_review: datetime | None) -> str | None:
        """A rough rating as the rules last gave it (the first tick corrects any difference);
        measured for what it costs the tick, not for the board report."""
        if not is_live(self.rt, state):
            return "green" if state == "closed" else None
        today = self.today
        overdue = [a for a in open_actions if a["due"] < today]
        if len(overdue) >= 3 or deteriorating or any((today - a["due"]).days >= 28
                                                      for a in overdue):
            return "red"
        if overdue or any(a["due"] > a["baseline_due"] for a in open_actions) or (
                next_review is not None and next_review.date() < today):
            return "amber"
        return "green"

    # --- the whole run ----------------------------------------------------------------------

    def run(self) -> Summary:
        try:
            self.db.init(simulation=True, at=self.now)
            with self.db.engine.connect() as conn:
                if conn.execute(select(func.count()).select_from(Plan.__table__)).scalar():
                    raise InvalidInput(f"--db: {self.db.url} already holds plans; generate "
                                       "into an empty database (a new file or schema)")
            self.plans(self.organisation())
        except BaseException:
            self.writer.close(write=False)
            raise
        self.writer.close()
        self._settle()
        seconds = clock.perf_counter() - self.started
        s = self.summary
        s.counts = dict(self.writer.counts)
        s.seconds = round(seconds, 2)
        s.actions_per_second = round(self.total / seconds, 1)
        s.peak_rss_mb = round(peak_rss_mb(), 1)
        return s

    def _settle(self) -> None:
        """Move PostgreSQL's id sequences past the ids we assigned, and gather planner
        statistics so the benchmark's queries are planned as on a live database."""
        with self.db.engine.begin() as conn:
            if self.db.dialect == "postgresql":
                for model in NUMBERED:
                    last = self._ids[model]
                    if last:
                        conn.execute(text("select setval(pg_get_serial_sequence(:t, 'id'), :n)"),
                                     {"t": model.__tablename__, "n": last})
            conn.execute(text("analyze"))


def generate(target: str | Database, actions: int, seed: int, *, today: date = DEFAULT_TODAY,
             chunk: int = 10_000, due_share: float = 0.01, exact: bool = False) -> Summary:
    """Create or upgrade the schema of ``target`` (a URL or an open database) and fill it with
    a portfolio of ``actions`` actions."""
    db = Database(target) if isinstance(target, str) else target
    try:
        return Generator(db, actions, seed, today, chunk=chunk, due_share=due_share,
                         exact=exact).run()
    finally:
        if isinstance(target, str):
            db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="database URL or SQLite file path")
    parser.add_argument("--actions", type=int, required=True, help="how many actions (≥ 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--today", default=DEFAULT_TODAY.isoformat(),
                        help="the benchmark day: its 08:00 tick finds the due plans")
    parser.add_argument("--chunk", type=int, default=10_000, help="actions per transaction")
    parser.add_argument("--due-share", type=float, default=0.01,
                        help="share of all actions in the plans due on --today")
    parser.add_argument("--exact-schedule", action="store_true",
                        help="ask the schedule per plan with every action's facts (slower)")
    parser.add_argument("--json", action="store_true", help="end with the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.db, args.actions, args.seed,
                           today=parse_day(args.today, field="--today"), chunk=args.chunk,
                           due_share=args.due_share, exact=args.exact_schedule)
    except QipError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(summary.due_line())
    print(summary.line())
    if args.json:
        print(json.dumps(asdict(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
