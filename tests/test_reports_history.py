"""Reports true as at any date. A board pack run with an earlier ``--now`` shows the portfolio as
it stood then — states, RAG, actions and their dates, indicators, sign-offs — rebuilt from the
audit trail and the dated rows, and says so on its first page; never today's figures under an
earlier heading.

The proof: as the demo year plays (the shared demo of tests/test_reports.py), a scenario
beside it records the board pack, the commissioner's pack and two closure reports on three days
(``HISTORY``); here each is rebuilt from the finished database as at that day and must equal
what was recorded then, figure for figure and line for line. Then the commissioner's pack's
step-down rows and recurrence window, the financial-year periods, and the rebuild on
PostgreSQL as well as SQLite."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from test_reports import (
    HISTORY,
    NOW,
    WATCHED,
    DemoReports,
    build_demo_reports,
    md_row,
    qip,
    query,
    recorded,
    runtime,
)

from qip_flow import SHIPPED_CONFIG, reports
from qip_flow.errors import InvalidDefinition, NotFound
from qip_flow.reports import as_at, periods
from qip_flow.runtime import Runtime
from qip_flow.services import pinning
from qip_flow.services.demo import Timeline, board_oversight, care_planning, play
from qip_flow.workflow.effects import EFFECTS

__all__ = ["qip"]  # the in-process `qip` command on the demo database, from test_reports
# the demo is played once per process, by whichever test of the group asks first: one worker
pytestmark = pytest.mark.xdist_group("demo-reports")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoReports:
    return build_demo_reports(tmp_path_factory.getbasetemp())


def rebuilt(db: Path, day: str, kind: str, **options: str) -> Any:
    rt = runtime(db, day)
    try:
        return reports.gather(rt, kind, **options)
    finally:
        rt.db.dispose()


# --- as at three days of the demo year ------------------------------------------------------


@pytest.mark.parametrize("day", HISTORY)
@pytest.mark.parametrize(("key", "kind", "options"), WATCHED, ids=[w[0] for w in WATCHED])
def test_a_report_as_at_a_past_day_is_what_the_demo_read_that_day(
        demo: DemoReports, day: str, key: str, kind: str, options: dict[str, str]) -> None:
    then = demo.history[f"{day} {key}"]
    report = rebuilt(demo.db, day, kind, **options)
    assert report.header.history, "rebuilt, and the page says so"
    text = reports.text(kind, report, "md")
    assert f"Rebuilt as at {date.fromisoformat(day).day} " in text
    assert recorded(report) == then["data"]
    report.header.history = []
    assert reports.text(kind, report, "md") == then["md"]


def test_the_board_pack_of_22_june_shows_june_not_november(demo: DemoReports) -> None:
    """The issue's example: on 22 June nothing had closed, Cedar Court was AMBER on its revised
    timeline (RED only from 28 July), and the care planning plan was in its first monitoring
    period, to 3 November."""
    pack = rebuilt(demo.db, "2026-06-22", "board")
    plans = {p.id: (p.state, p.rag) for p in pack.plans}
    assert plans == {"QIP-2026-009": ("monitoring", "green"),
                     "QIP-2026-014": ("sustaining", "green"),
                     "QIP-2026-017": ("in_progress", "amber"),
                     "QIP-2026-021": ("sustaining", "green")}
    now = dict(query(demo.db, "select id, state from plan"))
    assert now["QIP-2026-014"] == now["QIP-2026-021"] == "closed"  # what November says
    [monitoring] = pack.verdicts("monitoring")
    assert monitoring.monitoring_until == date(2026, 11, 3)
    assert [c.plan.id for c in pack.verdicts("blocked")] == ["QIP-2026-014", "QIP-2026-021"]
    [sg] = [c for c in pack.closure if c.plan.id == "QIP-2026-021"]
    assert [c.name for c in sg.unmet] == ["sustained", "re-audits"]
    # measurements recorded after the day are not on the charts
    for series in pack.indicators:
        assert all(p.recorded <= date(2026, 6, 22) for p in series.points)
    assert pack.header.audit_events == query(
        demo.db, "select max(seq) from auditevent where at <= '2026-06-22 09:00:00.000000'")[0][0]


def test_the_replay_knows_every_workflow_effect() -> None:
    """A new effect changes the record in a way the rebuild must learn to set back
    (qip_flow/reports/as_at.py, _Replay): until it does, this fails."""
    assert {kind: set(effects) for kind, effects in EFFECTS.items()} == {
        kind: set(names) for kind, names in as_at.REPLAYED.items()}


def test_a_report_of_today_reads_the_record_as_it_is(demo: DemoReports) -> None:
    assert rebuilt(demo.db, NOW, "board").header.history == []


def test_a_plan_not_loaded_yet_is_said_so(demo: DemoReports) -> None:
    with pytest.raises(NotFound, match=r"QIP-2026-009 was loaded on 15 Jan 2026.*after 10 Jan"):
        rebuilt(demo.db, "2026-01-10", "plan", plan_id="QIP-2026-009")
    assert rebuilt(demo.db, "2026-01-10", "board").plans == []


def test_qip_now_report_board_is_rebuilt(qip: Any) -> None:
    done = qip("--now", "2026-06-22", "report", "board")
    assert done.returncode == 0, done.stderr
    assert "> Rebuilt as at 22 Jun 2026 10:00 BST from the audit trail" in done.stdout
    row = re.search(r"^\| QIP-2026-017 \|.*$", done.stdout, re.M)
    assert row and "**AMBER**" in row[0] and "in progress" in row[0]
    assert md_row(done.stdout, "Live plans") == "4 of 4"


# --- the commissioner's pack: step-down rows and the recurrence window ------------------------


def test_each_step_down_row_has_its_own_monitoring_period(demo: DemoReports) -> None:
    """QIP-2026-009 stepped down twice: each row's monitoring runs from its own sign-off (the
    days its step-down rule gave), and the first says it ended when the plan was reopened."""
    pack = rebuilt(demo.db, NOW, "commissioner", period="FY2026")
    expected = []
    for at, detail in query(demo.db, "select at, detail from auditevent where what = "
                                     "'step_down' order by seq"):
        days = json.loads(detail)["decisions"]["step_down"]["monitoring_days"]
        expected.append((datetime.fromisoformat(at).date(),
                         (datetime.fromisoformat(at) + timedelta(days=days)).date()))
    assert expected == [(date(2026, 5, 5), date(2026, 11, 3)), (date(2026, 11, 4), date(2027, 5, 5))]
    assert [(x.on, x.monitoring_until) for x in pack.stepped_down] == expected
    reopened = reopened_on(demo.db)
    assert [(x.ended_on, x.ended_by) for x in pack.stepped_down] == [
        (reopened, "reopened"), (None, "")]
    text = reports.text("commissioner", pack, "md")
    assert (f"| 5 May 2026 | Ruth Mensah | 3 Nov 2026 (ended {reopened.day} {reopened:%b %Y}: "
            "reopened) |") in text
    assert "| 4 Nov 2026 | Ruth Mensah | 5 May 2027 |" in text


def reopened_on(db: Path) -> date:
    """The day the demo's rules reopened QIP-2026-009 (a special cause of concern in August's
    audit, after its first step-down)."""
    (at,), = query(db, "select at from auditevent where what = 'reopen' "
                       "and entity_id = 'QIP-2026-009'")
    day = datetime.fromisoformat(at).date()
    assert date(2026, 8, 1) <= day <= date(2026, 8, 31)
    return day


@pytest.mark.parametrize(("period", "since", "reopened"), [
    ("2026", "2026-01-01", True), ("FY2026", "2026-04-01", True),
    # the year to the day before the reopening's anniversary starts on the reopening day ...
    ("anniversary-1", "reopen", True),
    # ... and the year to its anniversary starts the day after: a year, not a year and a day
    ("anniversary", "reopen+1", False)])
def test_recurrence_looks_over_the_year_to_the_period_end(
        demo: DemoReports, period: str, since: str, reopened: bool) -> None:
    day = reopened_on(demo.db)
    anniversary = day.replace(year=day.year + 1)
    if period.startswith("anniversary"):
        end = anniversary - timedelta(days=1) if period.endswith("-1") else anniversary
        period = f"{end.replace(day=1).isoformat()}:{end.isoformat()}"
        since = (day + timedelta(days=since.endswith("+1"))).isoformat()
    pack = rebuilt(demo.db, NOW, "commissioner", period=period)
    assert pack.recurrence_since == date.fromisoformat(since)
    found = {(x.plan_id, x.kind) for x in pack.recurrence}
    assert (("QIP-2026-009", "reopened") in found) == reopened
    text = reports.text("commissioner", pack, "md")
    start, end = pack.recurrence_since, pack.header.period.end
    assert f"In the year {start.day} {start:%b %Y} to {end.day} {end:%b %Y}:" in text


# --- financial years ----------------------------------------------------------------------


def test_the_financial_year_start_is_a_rules_setting(demo: DemoReports, tmp_path: Path) -> None:
    folder = tmp_path / "config"
    shutil.copytree(SHIPPED_CONFIG, folder)
    defaults = folder / "rules" / "defaults.yaml"
    shipped = defaults.read_text()
    defaults.write_text(shipped.replace("recording:", "reporting:\n  financial_year_starts: "
                                        "october\n\nrecording:", 1))
    rt = runtime(demo.db)
    rt.config_dir = folder
    assert rt.rules.reporting.year_starts == 10
    pack = reports.gather(rt, "commissioner", period="FY2026-Q1")
    assert (pack.header.period.start, pack.header.period.end) == (date(2026, 10, 1),
                                                                  date(2026, 12, 31))
    assert pack.header.period.label == "Q1 2026/27"
    rt.db.dispose()
    defaults.write_text(shipped.replace("recording:", "reporting:\n  financial_year_starts: "
                                        "Sept\n\nrecording:", 1))
    rt = runtime(demo.db)
    rt.config_dir = folder
    with pytest.raises(InvalidDefinition) as refused:
        reports.gather(rt, "board")
    problems = " ".join(refused.value.details or [refused.value.message])
    assert "defaults.yaml" in problems and "financial_year_starts" in problems
    assert "'april'" in problems
    rt.db.dispose()


def test_the_default_start_is_april_and_a_bare_quarter_is_refused(demo: DemoReports) -> None:
    assert runtime(demo.db).rules.reporting.financial_year_starts == "april"
    pack = rebuilt(demo.db, NOW, "board", period="FY2026-Q3")
    assert (pack.header.period.start, pack.header.period.end) == (date(2026, 10, 1),
                                                                  date(2026, 12, 31))
    assert "period **Q3 2026/27** (1 Oct 2026 to 31 Dec 2026)" in reports.text("board", pack, "md")
    with pytest.raises(Exception, match=r"write FY2026-Q3 for Q3 2026/27, 1 Oct 2026 to 31 Dec "
                                        r"2026.*or CY2026-Q3 for the calendar quarter 1 Jul"):
        periods.parse_period("2026-Q3", date(2026, 11, 21))


# --- the rebuild on both databases ----------------------------------------------------------


class Quiet(Timeline):
    """The demo's stories without the scheduler's mornings: only their own steps."""

    def run_days(self, until: date) -> None:
        return


def test_reports_are_rebuilt_on_either_database(loaded: Runtime) -> None:
    """The care planning and Cedar Court stories on SQLite and PostgreSQL: their packs read on
    three days (one after a variation of Cedar Court's pinned criteria) equal the packs
    rebuilt afterwards as at those days."""
    rt = loaded
    seen: dict[str, dict[str, Any]] = {}
    days = ("2026-05-05", "2026-06-22", "2026-08-15")

    def watch(t: Timeline) -> Iterator[str]:
        for day in days:
            yield day
            for kind, options in (("board", {}), ("commissioner", {"period": "FY2026"}),
                                  ("plan", {"plan_id": "QIP-2026-017"})):
                seen[f"{day} {kind}"] = recorded(reports.gather(t.rt, kind, **options))

    def vary(t: Timeline) -> Iterator[str]:
        yield "2026-07-01"
        pinning.vary_plans(t.rt, ["QIP-2026-017"], by="hwright", changes={"sustain_days": 120},
                           reason="Board wants four months", meeting="Board 2026-07-01")

    t = Quiet(rt, Console(file=io.StringIO()))
    t.at("2026-01-15")
    play(t, (care_planning, board_oversight, watch, vary), date(2026, 8, 15))
    t.at("2026-11-21")
    spec = reports.gather(rt, "plan", plan_id="QIP-2026-017").criteria_spec
    assert spec["sustain_days"] == 120
    for day in days:
        rt.clock.set(day)
        for kind, options in (("board", {}), ("commissioner", {"period": "FY2026"}),
                              ("plan", {"plan_id": "QIP-2026-017"})):
            report = reports.gather(rt, kind, **options)
            assert report.header.history
            assert recorded(report) == seen[f"{day} {kind}"], (day, kind)
    assert seen["2026-06-22 plan"]["criteria_spec"]["sustain_days"] == 90
