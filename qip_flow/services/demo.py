"""``qip demo``: the seeds' operational examples played on a simulated clock, through the same
services the commands use, printed as a timeline of what happened and why.

- the post-inspection medication QIP (MAR audit frequency, named staff retraining, competency
  reassessment, monthly governance review);
- the safeguarding QIP, closed by the safeguarding governance group after sustained improvement;
- the care planning QIP, stepped down into routine monitoring;
- board oversight: actions mapped to strategic risks, slipped actions given revised timelines.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlmodel import col, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.config.files import GovernanceFiles
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import assess, lifecycle, loading, notifications
from qip_flow.services.assess import RULES_ACTOR
from qip_flow.store import audit, checkpoints, keys
from qip_flow.store.db import Database
from qip_flow.store.models import Delivery, Evidence, Notification, Person

DEMO_ACTOR = "demo"
EXAMPLES = SHIPPED_CONFIG / "examples"


class Timeline:
    """Runs the story one dated step at a time and prints each outcome, and what the rules
    decided on their own (RAG changes, reopening) as it happens."""

    def __init__(self, rt: Runtime, out: Console) -> None:
        self.rt, self.out = rt, out
        self.seen = 0
        self.told = 0
        self.sent = 0
        self.mornings_done = date.min

    def run_days(self, until: date) -> None:
        """Each morning up to and including ``until``, before that day's 09:00 events: the
        scheduler's tick and dispatch, and what went out."""
        day = self.mornings_done + timedelta(days=1)
        while day <= until:
            self.rt.clock.set(datetime.combine(day, time(8, 0), tzinfo=UTC))
            notifications.tick(self.rt, worker="demo")
            self.sent += notifications.dispatch(self.rt, worker="demo").sent
            self.rules_said()
            self.went_out()
            self.mornings_done = day
            day += timedelta(days=1)

    def dispatch(self) -> None:
        """Send what is due now and print it."""
        self.sent += notifications.dispatch(self.rt, worker="demo").sent
        self.went_out()

    def went_out(self) -> None:
        """Print the deliveries sent since the last call, in the order they went."""
        with self.rt.db.read() as session:
            rows = session.exec(
                select(Delivery, Notification).join(Notification,
                                                    Notification.id == Delivery.notification_id)
                .where(col(Delivery.id) > self.told, Delivery.state == "sent")
                .order_by(col(Delivery.sent_at), col(Delivery.id))).all()
            names = {p.id: p.name for p in session.exec(select(Person)).all()}
        for delivery, n in rows:
            icon = {"escalation": "[red]⚑ escalation[/red]", "digest": "☰ digest",
                    "learning": "✉ learning"}.get(n.kind, "✉ reminder")
            subject = n.subject.split(": ", 1)[1] if n.kind != "digest" and ": " in n.subject \
                else n.subject  # the kind is in the icon
            self.say(f"{icon} → {names.get(n.recipient_id or '', 'operators')}: {subject}")
            self.told = max(self.told, delivery.id or 0)

    def rules_said(self) -> None:
        with self.rt.db.read() as session:
            events = [e for e in audit.history(session) if (e.seq or 0) > self.seen]
        for e in events:
            if e.actor == RULES_ACTOR:
                if e.what == "escalated":
                    continue
                if e.what == "rag changed":
                    self.say(f"{e.entity_id}  RAG {e.from_state or 'unrated'} → "
                             f"[bold]{(e.to_state or '').upper()}[/bold]  — {e.reason}")
                else:
                    self.say(f"{e.entity_id}  [red]{e.what}[/red] by the rules: {e.from_state} → "
                             f"{e.to_state}  — {e.reason}")
        if events:
            self.seen = events[-1].seq or self.seen

    def at(self, day: str) -> Timeline:
        self.rt.clock.set(day)
        return self

    def say(self, text: str) -> None:
        self.out.print(f"[dim]{self.rt.clock.today()}[/dim]  {text}")

    def heading(self, text: str) -> None:
        self.out.print(f"\n[bold underline]{text}[/bold underline]")

    def do(self, entity: str, event: str, *, by: str, why: str = "", **inputs: Any) -> None:
        self._run(entity, lambda: lifecycle.fire_event(self.rt, entity, event, by=by, **inputs),
                  why)

    def sign(self, plan: str, purpose: str, *, by: str, why: str = "", **inputs: Any) -> None:
        self._run(plan, lambda: lifecycle.sign_off(self.rt, plan, purpose, by=by, **inputs), why)

    def expect_refusal(self, entity: str, action: Callable[[], Any], why: str) -> None:
        try:
            action()
        except Refused as exc:
            self.say(f"[yellow]refused[/yellow] {entity}: {why}")
            for detail in exc.details or [exc.message]:
                self.out.print(f"             [yellow]↳ {detail}[/yellow]")
            self.rules_said()
        else:  # the story depends on this refusal
            raise AssertionError(f"demo: expected {entity} to be refused")

    def measure(self, plan: str, values: dict[str, float], *, reaudit: bool = False,
                by: str | None = None) -> None:
        for indicator, value in values.items():
            lifecycle.record_measurement(self.rt, plan, indicator, value, reaudit=reaudit,
                                         source="re-audit" if reaudit else "monthly audit", by=by)
        shown = ", ".join(f"{k} {v:g}" for k, v in values.items())
        self.say(f"{plan}  {'re-audit' if reaudit else 'measured'}: {shown}")
        self.rules_said()

    def month(self, plan: str, day: str, values: dict[str, float], *, by: str,
              reaudit: bool = False) -> Iterator[str]:
        """A monthly governance meeting: progress reviewed, the month's audit recorded."""
        yield day
        self.do(plan, "review", by=by, note=f"Monthly governance review {day}")
        self.measure(plan, values, reaudit=reaudit)

    def evidence(self, plan: str) -> list[int]:
        """Every item of evidence recorded on the plan: what the meeting reviewed."""
        with self.rt.db.read() as session:
            return list(session.exec(select(Evidence.id).where(Evidence.plan_id == plan)
                                     .order_by(col(Evidence.id))).all())

    def learn(self, plan: str, *, by: str, summary: str, embedded_in: list[str]) -> None:
        assess.record_learning(self.rt, plan, by=by, summary=summary, embedded_in=embedded_in)
        self.say(f"{plan}  learning summary recorded; embedded in {', '.join(embedded_in)}")

    def explain(self, plan: str) -> None:
        result = assess.explain(self.rt, plan)
        for c in result["closure"]["criteria"]:
            mark = "[green]met[/green]  " if c["met"] else "[red]unmet[/red]"
            self.out.print(f"             {mark} {c['criterion']}")

    def variation(self, plan: str) -> None:
        """What the closure indicators' XmR charts say now, as the rules read them."""
        facts = assess.explain(self.rt, plan)["facts"]
        if facts["special_cause_concern"]:
            self.say(f"{plan}  special cause of concern: {facts['concern_indicator']} at "
                     f"{facts['concern_value']}, {facts['concern_test']}")
        elif facts.get("indicators_off_target"):
            self.say(f"{plan}  below target but within the process limits: common cause "
                     "variation, so monitoring goes on (one point is not a trend)")

    def _run(self, entity: str, action: Callable[[], lifecycle.EventResult], why: str) -> None:
        result = action()
        move = result.move
        what = (f"{move.event.name}: {move.source} → [bold]{move.dest}[/bold]"
                if move.source != move.dest else f"{move.event.name} recorded")
        self.say(f"{entity}  {what}" + (f"  — {why}" if why else ""))
        self.rules_said()


def prepare_database(folder: Path, files: GovernanceFiles | None = None) -> Database:
    """A fresh simulation ``qip.db`` in ``folder`` with ``files`` (the shipped ones by default)
    published; an existing one is replaced only if the demo made it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "qip.db"
    if path.exists():
        db = Database(f"sqlite:///{path}")
        try:
            with db.read() as session:
                first = audit.history(session)[:1]
        except Exception:
            first = []
        finally:
            db.dispose()
        if not first or first[0].actor != DEMO_ACTOR:
            raise InvalidInput(f"{path} exists and was not made by the demo; run the demo in "
                               "another folder with --dir")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        (folder / checkpoints.CHECKPOINT_FILE_NAME).unlink(missing_ok=True)
    db = Database(f"sqlite:///{path}")
    db.init(simulation=True, publish=files, by=DEMO_ACTOR)
    keys.ensure_key(db)
    return db


def medication(t: Timeline) -> Iterator[str]:
    p = "QIP-2026-014"
    yield "2026-01-22"
    t.expect_refusal(
        p, lambda: lifecycle.sign_off(t.rt, p, "approval", by="jpatel"),
        "the registered manager cannot approve her own plan")
    t.sign(p, "approval", by="dadeyemi", meeting="Quality committee 2026-01-22",
           why="approved at senior level; closure criteria pinned")
    t.do(p, "start", by="jpatel")
    yield "2026-01-23"
    t.measure(p, {"mar-complete": 80})
    yield "2026-02-12"
    t.do(f"{p}/A1", "complete", by="jpatel",
                          evidence=["Weekly MAR audit schedule|policies/mar-audit-v3.pdf"],
                          why="MAR audits now weekly")
    yield "2026-02-16"
    t.do(f"{p}/A1", "verify", by="cevans", why="checked by the quality lead")
    yield from t.month(p, "2026-02-20", {"mar-complete": 91}, by="jpatel")
    yield "2026-03-02"
    t.do(f"{p}/A2", "revise_due", by="jpatel", due=date(2026, 4, 10),
                          reason="External trainer cancelled; new course date booked",
                          why="slippage recorded with reason and approver")
    yield from t.month(p, "2026-03-20", {"mar-complete": 96}, by="jpatel")
    yield "2026-03-25"
    t.do(f"{p}/A3", "complete", by="mjones",
                          evidence=["Competency records for 6 senior support workers|HR/comp-2026"])
    t.do(f"{p}/A3", "verify", by="jpatel")
    yield "2026-04-09"
    t.do(f"{p}/A2", "complete", by="anowak",
                          evidence=["Attendance sheets, 14 of 14 staff|L&D/med-refresh-0409"])
    t.do(f"{p}/A2", "verify", by="jpatel")
    t.do(p, "begin_sustaining", by="jpatel", why="all actions complete")
    for day, value in (("2026-04-17", 97), ("2026-05-15", 96), ("2026-06-12", 98),
                       ("2026-07-10", 97)):
        yield from t.month(p, day, {"mar-complete": value}, by="jpatel",
                reaudit=day in ("2026-05-15", "2026-07-10"))
    yield "2026-07-21"
    t.do(p, "request_closure", by="jpatel")
    t.expect_refusal(p, lambda: lifecycle.sign_off(t.rt, p, "closure", by="dadeyemi"),
                     "a closure sign-off with no record: no meeting, evidence, residual risks "
                     "or learning — and no learning summary yet")
    t.learn(p, by="jpatel", summary="Audit frequency must follow risk, not habit; competency "
            "is reassessed, not assumed", embedded_in=["Medicines induction",
                                                      "Senior support worker supervision"])
    t.sign(p, "closure", by="dadeyemi", meeting="Quality committee 2026-07-21",
           evidence_ids=t.evidence(p),
           evidence_reviewed=["Weekly and monthly MAR audits Jan–Jul, two re-audits"],
           residual_risks=["New starters not yet assessed :: competency check in medicines "
                           "induction, reported to the quality committee monthly"],
           learning_embedded=["Medicines induction", "Senior support worker supervision"],
           why="closed with evidence, residual risks and learning recorded")


def safeguarding(t: Timeline) -> Iterator[str]:
    p = "QIP-2026-021"
    yield "2026-01-27"
    t.sign(p, "approval", by="dadeyemi",
                            meeting="Safeguarding governance group 2026-01-27")
    t.do(p, "start", by="tbrennan")
    t.measure(p, {"escalated-24h": 62, "record-quality": 55, "repeat-alerts": 3})
    steps = [("A1", "lokafor", "2026-02-05", "Rota and threshold guide in every office|SG/rota-v1"),
             ("A3", "tbrennan", "2026-02-19", "New recording template live|SG/template-v2")]
    for ref, owner, day, evidence in steps:
        yield day
        t.do(f"{p}/{ref}", "complete", by=owner, evidence=[evidence])
        t.do(f"{p}/{ref}", "verify", by="dadeyemi")
    yield from t.month(p, "2026-02-24", {"escalated-24h": 74, "record-quality": 68, "repeat-alerts": 2},
            by="tbrennan")
    steps = [("A2", "lokafor", "2026-03-05", "Workshop attendance 32/32|L&D/sg-workshops"),
             ("A4", "tbrennan", "2026-03-19", "Supervision template with recording check|HR/sv-4")]
    for ref, owner, day, evidence in steps:
        yield day
        t.do(f"{p}/{ref}", "complete", by=owner, evidence=[evidence])
        t.do(f"{p}/{ref}", "verify", by="dadeyemi")
    t.do(p, "begin_sustaining", by="tbrennan", why="every action complete and verified")
    months = [("2026-03-24", 88, 80, 1, False), ("2026-04-21", 96, 91, 0, True),
              ("2026-05-19", 97, 93, 0, False), ("2026-06-16", 98, 94, 0, False)]
    for day, esc, rec, rep, reaudit in months:
        yield from t.month(p, day, {"escalated-24h": esc, "record-quality": rec, "repeat-alerts": rep},
                by="tbrennan", reaudit=reaudit)
    yield "2026-06-22"
    t.learn(p, by="lokafor", summary="Escalation fails when thresholds are "
                             "unclear out of hours", embedded_in=["Induction",
                                                                  "Supervision framework"])
    yield "2026-06-23"
    t.do(p, "request_closure", by="tbrennan",
                          why="closure report after two months on target")
    closure_record = {"meeting": "Safeguarding governance group 2026-06-23",
                      "evidence_ids": t.evidence(p),
                      "residual_risks": ["Agency night staff unfamiliar with thresholds :: "
                                         "threshold guide in the agency induction pack, "
                                         "spot-checked monthly"],
                      "learning_embedded": ["Induction", "Supervision framework"]}
    t.expect_refusal(p, lambda: lifecycle.sign_off(t.rt, p, "closure", by="lokafor",
                                                   **closure_record),
                     "two months is not three, and only one re-audit so far")
    t.explain(p)
    t.do(p, "send_back", by="lokafor", reason="Sustain for three months; re-audit in July")
    yield from t.month(p, "2026-07-21", {"escalated-24h": 97, "record-quality": 95, "repeat-alerts": 0},
            by="tbrennan", reaudit=True)
    yield "2026-07-28"
    t.do(p, "request_closure", by="tbrennan",
                          why="closure report to the safeguarding governance group")
    closure_record["meeting"] = "Safeguarding governance group 2026-07-28"
    t.expect_refusal(p, lambda: lifecycle.sign_off(t.rt, p, "closure", by="rmensah",
                                                   **closure_record),
                     "a senior manager outside the group cannot close it")
    t.sign(p, "closure", by="lokafor", **closure_record,
           evidence_reviewed=["Safeguarding record re-audits April and July",
                              "Incident panel outcomes"],
           why="the safeguarding governance group signed off closure")


def care_planning(t: Timeline) -> Iterator[str]:
    p = "QIP-2026-009"
    yield "2026-01-21"
    t.sign(p, "approval", by="rmensah", meeting="Quality committee 2026-01-21")
    t.do(p, "start", by="jpatel")
    yield "2026-01-29"
    t.do(f"{p}/A1", "complete", by="jpatel",
                          evidence=["Discharge and incident procedures v5|policies/cp-trigger"])
    t.do(f"{p}/A1", "verify", by="cevans")
    yield from t.month(p, "2026-02-18", {"plan-audit": 84}, by="jpatel")
    yield "2026-02-26"
    t.do(f"{p}/A2", "complete", by="mjones",
                          evidence=["20 reviewed care plans, signed by people and families|CP/rev"])
    t.do(f"{p}/A2", "verify", by="jpatel")
    t.do(p, "begin_sustaining", by="jpatel")
    for day, value in (("2026-03-18", 91), ("2026-04-15", 93)):
        yield from t.month(p, day, {"plan-audit": value}, by="jpatel")
    yield "2026-05-05"
    t.sign(p, "step_down", by="rmensah", meeting="Quality committee 2026-05-05",
           evidence_ids=t.evidence(p),
           residual_risks=["Care plans not reviewed after a change :: standing monthly care "
                           "plan audit for six months, deterioration escalated to the quality "
                           "committee"],
           why="care planning becomes a standing audit theme for six months")
    for day, value in (("2026-06-03", 94), ("2026-07-01", 92)):
        yield from t.month(p, day, {"plan-audit": value}, by="jpatel")
    yield from t.month(p, "2026-07-29", {"plan-audit": 86}, by="jpatel")
    t.variation(p)  # one audit below target, within the process limits: monitoring goes on
    yield from t.month(p, "2026-08-26", {"plan-audit": 62}, by="jpatel")  # back to the baseline
    yield "2026-08-28"
    t.do(p, "review", by="jpatel",
                          note="Deterioration traced to agency staff missing the review trigger")
    yield "2026-09-01"
    t.do(p, "begin_sustaining", by="jpatel",
                          why="trigger added to the agency induction pack")
    for day, value in (("2026-09-23", 91), ("2026-10-21", 94)):
        yield from t.month(p, day, {"plan-audit": value}, by="jpatel")
    yield "2026-11-04"
    t.sign(p, "step_down", by="rmensah", meeting="Quality committee 2026-11-04",
           evidence_ids=t.evidence(p), evidence_reviewed=["Audits July to October"],
           residual_risks=["Agency staff missing the review trigger :: trigger in the agency "
                           "induction pack; monthly audit"],
           why="back to routine monitoring for six months")


def board_oversight(t: Timeline) -> Iterator[str]:
    p = "QIP-2026-017"
    yield "2026-01-28"
    t.sign(p, "approval", by="hwright", meeting="Board 2026-01-28",
                            why="board sign-off; actions linked to SR-03 and SR-04")
    t.do(p, "start", by="skaur")
    t.measure(p, {"ra-in-date": 72, "short-nights": 8})
    yield "2026-02-26"
    t.do(f"{p}/A1", "complete", by="skaur",
                          evidence=["18 risk assessments on the electronic record|ER/export"])
    t.do(f"{p}/A1", "verify", by="cevans")
    yield "2026-05-01"
    t.do(p, "review", by="hwright",
                          note="Quarterly board review: A2 recruitment slipped; board agreed "
                               "revised timeline and funding for a recruitment campaign")
    t.do(f"{p}/A2", "revise_due", by="hwright", due=date(2026, 6, 30),
         reason="Recruitment slipped; board required a revised timeline and added resources",
         why="revised timeline approved by the board")
    t.measure(p, {"ra-in-date": 100, "short-nights": 3})


#: A story played on the demo's calendar: it yields each day it acts on, then acts.
Scenario = Callable[[Timeline], Iterator[str]]
SCENARIOS: tuple[Scenario, ...] = (medication, safeguarding, care_planning, board_oversight)
DEMO_END = date(2026, 11, 21)


def play(t: Timeline, scenarios: tuple[Scenario, ...], until: date) -> None:
    """Run the scenarios side by side on one calendar, the scheduler ticking every morning."""
    queue: list[tuple[str, int, Iterator[str]]] = []
    for i, scenario in enumerate(scenarios):
        steps = scenario(t)
        first = next(steps, None)
        if first:
            heapq.heappush(queue, (first, i, steps))
    while queue:
        day, i, steps = heapq.heappop(queue)
        t.run_days(date.fromisoformat(day))
        t.at(day)
        following = next(steps, None)
        t.dispatch()  # what the day's events decided goes out now, as `qip run` would send it
        if following:
            heapq.heappush(queue, (following, i, steps))
    t.run_days(until)


def run_demo(folder: Path, *, config_dir: Path | None, out: Console,
             also: tuple[Scenario, ...] = ()) -> Runtime:
    """Play the demo on a new simulation database, under ``config_dir``'s files (published
    there first) or the shipped ones; ``also`` plays more scenarios on the same calendar
    (a test watching the year, say, reading reports on the days it chooses)."""
    files = GovernanceFiles.from_folder(config_dir or SHIPPED_CONFIG)
    db = prepare_database(folder, files)
    rt = Runtime(db=db, clock=Clock())
    t = Timeline(rt, out)
    out.print(f"[bold]qip_flow demo[/bold] — Riverside Care, 2026, database {db.shown_url}")
    t.at("2026-01-15")
    t.mornings_done = t.rt.clock.today()
    report = loading.load_files(rt, [EXAMPLES], actor=DEMO_ACTOR)
    t.say(f"loaded {report.count('added')} records from {EXAMPLES}: people, services, strategic "
          "risks and four draft plans")
    out.print("Four plans, played together on one calendar; the scheduler ticks every morning:\n"
              "  QIP-2026-014  post-inspection medication QIP at Maple House\n"
              "  QIP-2026-021  safeguarding QIP at Willow Lodge, closed by the safeguarding group\n"
              "  QIP-2026-009  care planning QIP, stepped down into monitoring\n"
              "  QIP-2026-017  Cedar Court under board oversight: risks, RAG, revised timelines\n")
    play(t, (*SCENARIOS, *also), DEMO_END)
    with db.read() as session:
        check = audit.verify(session)
    with db.read() as session:
        tally = notifications.counts(session, ("sent", "failed", "queued"))
    out.print(f"\nNotifications: {tally['sent']} sent, {tally['failed']} failed, "
              f"{tally['queued']} waiting; written to {rt.outbox_file()} "
              "(configure email and Teams in channels.yaml: docs/notifications.md).")
    out.print(f"Audit trail: {check.events} events, hash chain "
              f"{'intact' if check.ok else 'BROKEN: ' + check.problem}.")
    from qip_flow.reports import write_demo_reports

    written = write_demo_reports(rt, folder)
    out.print(f"Reports: the board pack and {len(written) - 1} closure reports in "
              f"{folder.resolve() / 'reports'}:")
    for path in written:
        out.print(f"  {path}")
    out.print(f"Explore: [bold]qip --db {folder / 'qip.db'} plans[/bold], "
              "[bold]qip show QIP-2026-021[/bold], [bold]qip audit QIP-2026-014/A2[/bold]")
    out.print(f"In a browser: [bold]qip --db {folder / 'qip.db'} serve --dev-login[/bold] (or "
              "[bold]python3 dev.py serve[/bold]), then open http://127.0.0.1:8000/ and choose "
              "a demo person")
    return rt
