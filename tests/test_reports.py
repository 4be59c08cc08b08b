"""Governance reports from the demo database: the board pack, the closure reports and the
commissioner's pack, in HTML and Markdown, with the numbers checked against the database (read
with the standard library, not through the code under test), the closure criteria against
`qip explain`, the charts embedded, and the database file byte-for-byte unchanged afterwards.

The demo is played once per test session into a shared folder (``demo_reports``); the browser
tests open the same HTML files."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import io
import json
import re
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from qip_flow import SHIPPED_CONFIG, reports
from qip_flow.cli import render as cli_render
from qip_flow.cli.main import main
from qip_flow.clock import Clock
from qip_flow.errors import InvalidInput
from qip_flow.reports import charts, pdf, periods
from qip_flow.reports.export import export
from qip_flow.reports.outputs import MANIFEST
from qip_flow.runtime import Runtime
from qip_flow.services import assess, loading
from qip_flow.services.demo import DEMO_ACTOR, EXAMPLES, Timeline, prepare_database, run_demo, safeguarding
from qip_flow.store.db import Database

# the demo is played once per process and read by test_reports_browser too: one worker
pytestmark = pytest.mark.xdist_group("demo-reports")
NOW = "2026-11-21"
TODAY = NOW
LIVE = ("approved", "in_progress", "sustaining", "closure_review", "monitoring")
#: Days of the demo year on which the demo, as it plays, records the reports as they read then
#: (tests/test_reports_history.py rebuilds them from the finished database and compares):
#: Cedar Court just RED; two plans sustaining, the care planning plan in its first monitoring
#: period; two plans closed and the care planning plan reopened.
HISTORY = ("2026-04-30", "2026-06-22", "2026-08-15")
#: The reports recorded on those days: key, kind, options.
WATCHED: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("board", "board", {}), ("commissioner", "commissioner", {"period": "FY2026"}),
    ("plan-009", "plan", {"plan_id": "QIP-2026-009"}),
    ("plan-021", "plan", {"plan_id": "QIP-2026-021"}))
DONE = ("completed", "verified")


@dataclass
class DemoReports:
    """The demo database and every report written from it."""

    folder: Path
    db: Path
    html: dict[str, str]
    md: dict[str, str]
    demo_files: list[Path]
    digest_before: str
    digest_after: str
    # "DAY KEY" → the report's data (as plain JSON, its notes left out) and Markdown, recorded
    # by the demo on that day of the year
    history: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def digest(db: Path) -> str:
    """The database file and any WAL beside it, byte for byte."""
    h = hashlib.sha256()
    for path in (db, Path(f"{db}-wal")):
        h.update(path.read_bytes() if path.exists() else b"-")
    return h.hexdigest()


def recorded(report: Any) -> dict[str, Any]:
    """A report's data as plain JSON, without the notes a rebuilt report carries about itself
    (the one way a report rebuilt as at a day may differ from the one read on the day)."""
    out = json.loads(json.dumps(dataclasses.asdict(report), default=str))
    out["header"].pop("history")
    return out


def watching(seen: dict[str, dict[str, Any]]) -> Callable[[Timeline], Iterator[str]]:
    """A scenario played beside the demo's: on each day of HISTORY, after that day's steps,
    it reads the WATCHED reports as they stand."""
    def watch(t: Timeline) -> Iterator[str]:
        for day in HISTORY:
            yield day
            for key, kind, options in WATCHED:
                report = reports.gather(t.rt, kind, **options)
                seen[f"{day} {key}"] = {"data": recorded(report),
                                        "md": reports.text(kind, report, "md")}
    return watch


def runtime(db: Path, now: str = NOW) -> Runtime:
    rt = Runtime(db=Database(f"sqlite:///{db}"), clock=Clock(), config_dir=SHIPPED_CONFIG)
    rt.clock.set(now)
    return rt


def build_demo_reports(base: Path) -> DemoReports:
    """Play the demo into ``base`` (once per session: a later caller finds it built), then
    write every report from it with one runtime that only reads."""
    folder = base / "qip-reports-demo"
    marker = folder / "reports.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        return DemoReports(folder, folder / "qip.db", saved["html"], saved["md"],
                           [Path(p) for p in saved["demo_files"]], saved["before"],
                           saved["after"], saved["history"])
    history: dict[str, dict[str, Any]] = {}
    rt = run_demo(folder, config_dir=SHIPPED_CONFIG, out=Console(file=io.StringIO()),
                  also=(watching(history),))
    rt.db.dispose()  # checkpoint the WAL, so only reading follows
    db = folder / "qip.db"
    before = digest(db)
    rt = runtime(db)
    pages: dict[str, str] = {}
    texts: dict[str, str] = {}
    for key, kind, kwargs in (
            ("board", "board", {}), ("board-2026", "board", {"period": "2026"}),
            ("commissioner", "commissioner", {"period": "2026"}),
            ("plan-014", "plan", {"plan_id": "QIP-2026-014"}),
            ("plan-017", "plan", {"plan_id": "QIP-2026-017"}),
            ("plan-009", "plan", {"plan_id": "QIP-2026-009"}),
            ("plan-021", "plan", {"plan_id": "QIP-2026-021"})):
        report = reports.gather(rt, kind, **kwargs)
        pages[key] = reports.write(kind, report, "html", folder / f"{key}.html").read_text()
        texts[key] = reports.text(kind, report, "md")
    demo_files = reports.write_demo_reports(rt, folder)
    export(rt, folder / "export", "both")
    export(rt, folder / "export.zip", "both")
    rt.db.dispose()
    after = digest(db)
    marker.write_text(json.dumps({"html": pages, "md": texts, "before": before, "after": after,
                                  "demo_files": [str(p) for p in demo_files],
                                  "history": history}))
    return DemoReports(folder, db, pages, texts, demo_files, before, after, history)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoReports:
    return build_demo_reports(tmp_path_factory.getbasetemp())


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def scalar(db: Path, sql: str, *args: Any) -> Any:
    return query(db, sql, *args)[0][0]


def metric(page: str, name: str) -> str:
    """The figure of a tile on an HTML page (``data-metric``)."""
    found = re.search(rf'data-metric="{re.escape(name)}"[^>]*><b>([^<]*)</b>', page)
    assert found, f"no tile {name}"
    return found[1].replace(",", "")


def table(page: str, name: str) -> str:
    found = re.search(rf'<table data-table="{re.escape(name)}">(.*?)</table>', page, re.S)
    assert found, f"no table {name}"
    return found[1]


def md_row(page: str, label: str) -> str:
    """The value cell of a two-column Markdown summary row."""
    found = re.search(rf"^\| {re.escape(label)} \| (.*?) \|$", page, re.M)
    assert found, f"no row {label}"
    return found[1].strip("*")


def live_in(db: Path, sql_where: str = "1=1") -> int:
    marks = ",".join("?" * len(LIVE))
    return scalar(db, f"select count(*) from plan where state in ({marks}) and {sql_where}", *LIVE)


# --- the board pack ----------------------------------------------------------------------


def test_board_pack_counts_plans_by_state_as_the_database_does(demo: DemoReports) -> None:
    by_state = dict(query(demo.db, "select state, count(*) from plan group by state"))
    totals = table(demo.html["board"], "by-service").split('data-row="all"')[1]
    shown = dict(re.findall(r'data-state="(\w+)">(\d+)<', totals))
    assert {k: int(v) for k, v in shown.items()} == by_state
    assert sum(by_state.values()) == 4
    by_source = dict(query(demo.db, "select source_type, count(*) from plan group by source_type"))
    for source, n in by_source.items():
        row = re.search(rf'data-row="{source}">.*?</tr>', table(demo.html["board"], "by-source"))
        assert row and row[0].endswith(f'<td class="num">{n}</td></tr>')


def test_board_pack_rag_tiles_overdue_and_escalations_match_the_database(
        demo: DemoReports) -> None:
    page, md = demo.html["board"], demo.md["board"]
    for rating in ("red", "amber", "green"):
        n = live_in(demo.db, f"rag = '{rating}'")
        assert int(metric(page, f"rag-{rating}")) == n
        assert int(md_row(md, f"Live plans rated {rating.upper()}")) == n
    overdue = scalar(demo.db, f"""select count(*) from action join plan on plan.id = action.plan_id
        where action.state not in {DONE} and action.due < ? and plan.state in {LIVE}""", TODAY)
    assert overdue == 1
    assert int(metric(page, "overdue-actions")) == overdue == int(md_row(md, "Actions overdue"))
    assert 'data-action="QIP-2026-017/A2"' in table(page, "overdue")
    slipped = scalar(demo.db, f"""select count(*) from action join plan on plan.id = action.plan_id
        where action.state not in {DONE} and action.due > action.baseline_due
        and plan.state in {LIVE}""")
    assert int(metric(page, "slipped-actions")) == slipped == 1
    # the recruitment action is still open, so its board escalation is still open
    latest = query(demo.db, """select entity_id, reason from auditevent where what = 'escalated'
        and entity_id = 'QIP-2026-017/A2' order by seq desc limit 1""")[0]
    assert int(metric(page, "open-escalations")) == 1
    assert html.escape(latest[1]) in table(page, "escalations")
    times = scalar(demo.db, "select count(*) from auditevent where what = 'escalated' and "
                            "entity_id = 'QIP-2026-017/A2'")
    assert f'<td class="num">{times}</td>' in table(page, "escalations")


def test_board_pack_rag_trend_comes_from_the_audit_trail(demo: DemoReports) -> None:
    """The care planning plan was AMBER at the start of the last 90 days (one July audit below
    target, within the process limits: common cause, so not RED) and is AMBER now (its review
    is overdue): the same. Cedar Court was RED and still is."""
    start = date.fromisoformat(TODAY).toordinal() - 90
    start_day = date.fromordinal(start).isoformat()
    then = dict(query(demo.db, """select entity_id, to_state from auditevent where seq in (
        select max(seq) from auditevent where what = 'rag changed' and at < ?
        group by entity_id)""", start_day))
    now = dict(query(demo.db, "select id, rag from plan"))
    rows = table(demo.html["board"], "rag")
    for plan_id, expected in (("QIP-2026-009", "same"), ("QIP-2026-017", "same")):
        row = re.search(rf'data-plan="{plan_id}">(.*?)</tr>', rows, re.S)
        assert row, plan_id
        ratings = re.findall(r'data-rag="(\w*)"', row[1])
        assert ratings == [then[plan_id], now[plan_id]]
        assert f'data-trend="{expected}"' in row[1]


def test_board_pack_revisions_name_who_approved_them(demo: DemoReports) -> None:
    rows = query(demo.db, """select r.action_id, p.name from duerevision r
        join person p on p.id = r.approved_by_id where r.at >= '2026-01-01' order by r.id""")
    assert len(rows) == 2
    page = table(demo.html["board-2026"], "revisions")
    assert page.count("<tr data-action=") == len(rows)
    for action_id, approver in rows:
        assert f'data-action="{action_id}"' in page and approver in page
    assert int(metric(demo.html["board-2026"], "slipped-actions")) == 1


def test_board_pack_closure_learning_and_risks(demo: DemoReports) -> None:
    page = demo.html["board"]
    closure = table(page, "closure")
    assert re.search(r'data-plan="QIP-2026-009" data-verdict="monitoring"', closure)
    assert int(metric(page, "stepped-down")) == 1
    assert int(metric(page, "ready-to-close")) == 0 and int(metric(page, "blocked")) == 0
    due = scalar(demo.db, "select count(*) from plan where learning_review_due <= date(?, '+30 day')",
                 TODAY)
    assert int(metric(page, "learning-due")) == due == 2
    assert "overdue 33 days" in table(page, "learning")  # QIP-2026-014, due 19 Oct
    risks = table(page, "risks")
    for risk_id, in query(demo.db, "select id from risk"):
        assert f'data-risk="{risk_id}"' in risks
    sr04 = re.search(r'data-risk="SR-04">(.*?)</tr>', risks, re.S)
    assert sr04 and "QIP-2026-017" in sr04[1] and 'data-rag="red"' in sr04[1]


def test_board_pack_embeds_an_xmr_chart_for_each_indicator_of_a_live_plan(
        demo: DemoReports) -> None:
    page = demo.html["board"]
    indicators = [r[0] for r in query(demo.db, f"""select i.id from indicator i
        join plan p on p.id = i.plan_id where p.state in {LIVE}""")]
    assert len(indicators) == 3
    assert page.count("<svg") == len(indicators) + 2  # and the two RAG charts
    for indicator_id in indicators:
        assert f'data-indicator="{indicator_id}"' in page
    # the chart says the figures: target, baseline and the latest value, as text
    care = re.search(r'data-indicator="QIP-2026-009/plan-audit">(.*?)</figure>', page, re.S)
    assert care and "target ≥ 90%" in care[1] and "baseline 62%" in care[1] and "94%" in care[1]
    assert "on target 28 days of 90 needed" in care[1]
    # the XmR chart (Making Data Count): 84, 91, 93, 94, 92, 86, 62, 91, 94 have mean 787 / 9 =
    # 87.4 and moving ranges adding to 74 over 8, 9.25: limits 87.4 ± 24.6 = 62.8 and 112.05;
    # the 62 of August lies below the lower limit, the one special cause (of concern)
    svg, caption = care[1].split("<figcaption>")
    for text in ("UPL 112%", "mean 87.4%", "LPL 62.8%", ">Common cause<", ">Hit and miss<",
                 "special cause: concern"):
        assert text in svg, text
    alt = re.search(r'<svg[^>]*aria-label="([^"]*)"', svg)
    assert alt and alt[1].startswith("XmR chart of plan-audit, Care plans meeting the audit "
                                     "standard: mean 87.4%, process limits 62.8% to 112%")
    assert "the latest value, 94%, is common cause variation" in alt[1]
    assert "1 of 9 points are special causes" in caption
    assert svg.count(charts.SPC_COLOURS["concern"]) == 2  # the August point and its legend
    assert svg.count(charts.SPC_COLOURS["improvement"]) == 0


def test_html_reports_are_self_contained(demo: DemoReports) -> None:
    """No stylesheet, script, image or font is fetched from anywhere: the file is the report."""
    for page in demo.html.values():
        assert not re.search(r'<(link|script|img|iframe)\b', page)
        urls = set(re.findall(r'https?://[^\s"\'<>)]+', page))
        assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
        assert "@import" not in page
        ids = re.findall(r'\bid="([^"]+)"', page)
        assert len(ids) == len(set(ids)), "every id on the page is unique"


# --- the closure reports -------------------------------------------------------------------


def statuses(page: str) -> dict[str, bool]:
    rows = re.findall(r'data-criterion="([^"]+)" data-met="(true|false)"', table(page, "criteria"))
    return {name: met == "true" for name, met in rows}


@pytest.mark.parametrize("plan", ["QIP-2026-017", "QIP-2026-009"])
def test_closure_report_criteria_are_what_qip_explain_says(demo: DemoReports, plan: str) -> None:
    explained = assess.explain(runtime(demo.db), plan)["closure"]["criteria"]
    page = demo.html[f"plan-{plan[-3:]}"]
    assert statuses(page) == {c["criterion"]: c["met"] for c in explained}
    for c in explained:
        row = re.search(rf'data-criterion="{re.escape(c["criterion"])}"[^>]*>(.*?)</tr>',
                        page, re.S)
        assert row and c["rule"] in row[1]
    md = demo.md[f"plan-{plan[-3:]}"]
    for c in explained:
        status = "met" if c["met"] else r"(at sign-off|\*\*unmet\*\*)"
        assert re.search(rf"^\| {status} \| {re.escape(c['criterion'])} \|", md, re.M), c



@pytest.mark.parametrize("plan", ["QIP-2026-014", "QIP-2026-021"])
def test_closure_report_of_a_closed_plan_shows_the_criteria_as_judged_at_closure(
        demo: DemoReports, plan: str) -> None:
    detail = json.loads(query(demo.db, """select detail from auditevent where entity_id = ?
        and what = 'close' order by seq desc limit 1""", plan)[0][0])
    recorded = detail["decisions"]["closure"]["criteria"]
    page = demo.html[f"plan-{plan[-3:]}"]
    assert statuses(page) == {c["criterion"]: c["met"] for c in recorded}
    assert all(c["met"] for c in recorded)
    assert int(metric(page, "criteria-met").split(" of ")[0]) == len(recorded)
    signoff = query(demo.db, """select residual_risks, evidence_reviewed, meeting_reference,
        evidence_ids from signoff where plan_id = ? and purpose = 'closure'""", plan)[0]
    risks = [r.replace(" :: ", " — monitored by: ") for r in json.loads(signoff[0])]
    for text in [*risks, *json.loads(signoff[1]), signoff[2]]:
        assert html.escape(text) in page
    chosen = json.loads(signoff[3])
    assert chosen  # the evidence items reviewed, each shown by what it is
    for evidence_id in chosen:
        description = scalar(demo.db, "select description from evidence where id = ?",
                             evidence_id)
        assert html.escape(description) in page
    summary = scalar(demo.db, "select summary from learningsummary where plan_id = ?", plan)
    assert html.escape(summary) in page and summary in demo.md[f"plan-{plan[-3:]}"]


def test_closure_report_holds_findings_actions_evidence_and_charts(demo: DemoReports) -> None:
    page = demo.html["plan-021"]
    for description, in query(demo.db, "select description from finding where plan_id = 'QIP-2026-021'"):
        assert html.escape(description) in page
    actions = query(demo.db, "select id, state from action where plan_id = 'QIP-2026-021'")
    for action_id, state in actions:
        assert f'data-action="{action_id}" data-state="{state}"' in page
    for reference, in query(demo.db, "select reference from evidence where plan_id = 'QIP-2026-021'"):
        assert html.escape(reference) in page
    n = scalar(demo.db, "select count(*) from indicator where plan_id = 'QIP-2026-021'")
    assert n == 3 and page.count("<svg") == n
    assert int(metric(page, "actions-verified").split(" of ")[0]) == len(actions)


# --- the commissioner's pack --------------------------------------------------------------


def test_commissioner_pack_matches_the_database(demo: DemoReports) -> None:
    page, md = demo.html["commissioner"], demo.md["commissioner"]
    closed = [r[0] for r in query(demo.db, """select id from plan where state = 'closed'
        and closed_at >= '2026-01-01' order by closed_at""")]
    assert closed == ["QIP-2026-014", "QIP-2026-021"]
    assert int(metric(page, "closed")) == len(closed) == int(md_row(md, "Plans closed in the period"))
    assert re.findall(r'data-closed="([^"]+)"', page) == closed
    for plan in closed:
        for reference, in query(demo.db, "select reference from evidence where plan_id = ?", plan):
            assert html.escape(reference) in page
    assert int(metric(page, "overdue-actions")) == 1 == int(md_row(md, "Actions overdue"))
    by_source = dict(query(demo.db, "select source_type, count(*) from plan group by source_type"))
    rows = table(page, "by-source")
    for source, n in by_source.items():
        assert re.search(rf'data-row="{source}">.*?<td class="num">{n}</td></tr>', rows)
    reopened = query(demo.db, "select entity_id from auditevent where what = 'reopen'")
    assert reopened == [("QIP-2026-009",)]
    assert 'data-plan="QIP-2026-009"' in table(page, "recurrence")
    stepped = scalar(demo.db, "select count(*) from auditevent where what = 'step_down'")
    assert int(metric(page, "stepped-down")) == stepped == 2
    assert page.count("<svg") == 1 + scalar(
        demo.db, "select count(*) from indicator where plan_id in (?, ?)", *closed)


def test_commissioner_pack_for_one_service(demo: DemoReports) -> None:
    rt = runtime(demo.db)
    pack = reports.gather(rt, "commissioner", period="2026", service="maple-house")
    assert {p.id for p in pack.plans} == {"QIP-2026-009", "QIP-2026-014"}
    assert [c.plan.id for c in pack.closed] == ["QIP-2026-014"]
    assert pack.overdue_total == 0
    assert "Maple House" in reports.text("commissioner", pack, "md")
    rt.db.dispose()


# --- reports only read --------------------------------------------------------------------


def test_reports_and_export_leave_the_database_file_unchanged(demo: DemoReports) -> None:
    assert demo.digest_after == demo.digest_before


def test_the_demo_writes_the_board_pack_and_a_closure_report_per_closed_plan(
        demo: DemoReports) -> None:
    names = sorted(p.name for p in demo.demo_files)
    closed = [r[0] for r in query(demo.db, "select id from plan where state in "
                                           "('closed', 'closure_review') order by id")]
    assert names == sorted(["board-pack.html", *(f"closure-{p}.html" for p in closed)])
    for path in demo.demo_files:
        assert path.parent == demo.folder / "reports" and "<svg" in path.read_text()


# --- the export ----------------------------------------------------------------------------


def test_export_holds_every_table_as_csv_and_json(demo: DemoReports) -> None:
    folder = demo.folder / "export"
    tables = [r[0] for r in query(demo.db, "select name from sqlite_master where type = 'table' "
                                           "and name not like 'sqlite_%' and name != 'alembic_version'")]
    dumped = json.loads((folder / "qip-export.json").read_text())
    with zipfile.ZipFile(demo.folder / "export.zip") as z:
        assert sorted(z.namelist()) == sorted(p.name for p in folder.iterdir()
                                              if p.name != MANIFEST)  # qip's own record
        zipped = json.loads(z.read("qip-export.json"))
    assert zipped["tables"] == dumped["tables"]
    for name in tables:
        n = scalar(demo.db, f'select count(*) from "{name}"')
        with (folder / f"{name}.csv").open(newline="") as handle:
            assert len(list(csv.reader(handle))) == n + 1, name
        assert len(dumped["tables"][name]) == n, name
    events = scalar(demo.db, "select count(*) from auditevent")
    head = query(demo.db, "select seq, hash from audithead")[0]
    assert dumped["export"]["audit"] == {"events": head[0], "last_hash": head[1],
                                         "chain_intact": True, "problem": ""}
    assert head[0] == events
    first = dumped["tables"]["auditevent"][0]
    assert first["seq"] == 1 and first["prev_hash"] == "genesis"


def test_export_refuses_to_overwrite(demo: DemoReports, tmp_path: Path) -> None:
    """Never over files qip did not write; its own earlier export is replaced."""
    rt = runtime(demo.db)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="qip did not write"):
        export(rt, tmp_path / "theirs", "csv")
    (tmp_path / "theirs.zip").write_text("mine")
    with pytest.raises(InvalidInput, match="qip did not write"):
        export(rt, tmp_path / "theirs.zip", "csv")
    assert (tmp_path / "theirs.zip").read_text() == "mine"
    for _ in range(2):
        export(rt, tmp_path / "ours", "csv")
        export(rt, tmp_path / "ours.zip", "csv")
    with pytest.raises(InvalidInput, match="csv, json or both"):
        export(rt, demo.folder / "elsewhere", "xml")
    rt.db.dispose()


# --- ready and blocked, on the safeguarding plan's way to closure ----------------------------


@pytest.fixture(scope="module")
def safeguarding_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Any]]:
    """The safeguarding QIP played day by day: the test stops it where it likes."""
    db = prepare_database(tmp_path_factory.mktemp("safeguarding"))
    rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
    t = Timeline(rt, Console(file=io.StringIO()))
    t.at("2026-01-15")
    loading.load_files(rt, [EXAMPLES], actor=DEMO_ACTOR)
    steps = safeguarding(t)
    yield rt, steps
    db.dispose()


def play_to(rt: Runtime, steps: Any, day: str) -> None:
    """Run the scenario's steps up to (not including) those of ``day``."""
    while True:
        following = next(steps)
        rt.clock.set(following)
        if following >= day:
            return


def test_board_pack_says_why_a_plan_is_blocked_and_when_it_is_ready(
        safeguarding_db: tuple[Runtime, Any]) -> None:
    rt, steps = safeguarding_db
    play_to(rt, steps, "2026-06-23")  # two months on target, one re-audit
    board = reports.gather(rt, "board")
    [line] = [c for c in board.closure if c.plan.id == "QIP-2026-021"]
    explained = assess.explain(rt, "QIP-2026-021")["closure"]["criteria"]
    assert {c.name: c.met for c in line.criteria} == {c["criterion"]: c["met"] for c in explained}
    assert line.verdict == "blocked"
    assert [c.name for c in line.unmet] == ["sustained", "re-audits"]
    facts = assess.explain(rt, "QIP-2026-021")["facts"]
    page = reports.text("board", board, "html")
    row = re.search(r'data-plan="QIP-2026-021" data-verdict="blocked">(.*?)</tr>', page, re.S)
    assert row and (f"on target for only {facts['sustained_days']} days of the 90 required"
                    in row[1])
    assert "re-audits confirm it at only 1 distinct interval of the 2 required" in row[1]
    assert facts["reaudit_intervals_in_run"] == 1
    assert metric(page, "blocked") == "1"
    assert "QIP-2026-021</b> cannot close yet: sustained, re-audits unmet." in page

    play_to(rt, steps, "2026-07-28")  # three months and two re-audits
    board = reports.gather(rt, "board")
    [line] = [c for c in board.closure if c.plan.id == "QIP-2026-021"]
    assert line.verdict == "ready" and line.unmet == []
    assert line.signoff_needed == "Safeguarding governance group"
    assert metric(reports.text("board", board, "html"), "ready-to-close") == "1"


# --- periods, formats and the command ------------------------------------------------------


@pytest.mark.parametrize(("text", "start", "end", "label"), [
    ("FY2026-Q3", "2026-10-01", "2026-12-31", "Q3 2026/27"),
    ("fy2026q1", "2026-04-01", "2026-06-30", "Q1 2026/27"),
    ("FY2026", "2026-04-01", "2027-03-31", "2026/27"),
    ("2026/27", "2026-04-01", "2027-03-31", "2026/27"),
    ("2025/26-Q4", "2026-01-01", "2026-03-31", "Q4 2025/26"),
    ("CY2026-Q3", "2026-07-01", "2026-09-30", "calendar Q3 2026"),
    ("2026-02", "2026-02-01", "2026-02-28", "2026-02"), ("2026", "2026-01-01", "2026-12-31", "2026"),
    ("CY2026", "2026-01-01", "2026-12-31", "2026"),
    ("2026-07-01:2026-09-30", "2026-07-01", "2026-09-30", "2026-07-01 to 2026-09-30"),
    (None, "2026-08-23", "2026-11-21", "last 90 days")])
def test_periods(text: str | None, start: str, end: str, label: str) -> None:
    """Financial years start in April (FY2026 is 2026/27); calendar quarters say so."""
    period = periods.parse_period(text, date(2026, 11, 21))
    assert (period.start.isoformat(), period.end.isoformat(), period.label) == (start, end, label)


@pytest.mark.parametrize("text", ["2026-Q5", "Q3", "2026-13", "2026-09-30:2026-07-01", "soon",
                                  "FY2026-Q5", "2026/28", "2026-Q3"])
def test_bad_periods_say_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidInput, match="--period"):
        periods.parse_period(text, date(2026, 11, 21))


def test_format_comes_from_the_option_or_the_file_name() -> None:
    assert reports.resolve_format(None, None) == "md"
    assert reports.resolve_format(None, Path("b.html")) == "html"
    assert reports.resolve_format(None, Path("b.PDF")) == "pdf"
    assert reports.resolve_format("html", Path("b.txt")) == "html"
    for fmt, out, message in (("docx", None, "not a report format"),
                              (None, Path("b.txt"), "cannot tell the format"),
                              ("pdf", None, "needs --out")):
        with pytest.raises(InvalidInput, match=message):
            reports.resolve_format(fmt, out)


def test_pdf_without_chromium_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(pdf.shutil, "which", lambda name: None)
    with pytest.raises(InvalidInput, match=r"needs Chromium.*--format html"):
        pdf.html_to_pdf("<p>x</p>", tmp_path / "x.pdf")
    assert not (tmp_path / "x.pdf").exists()


@pytest.fixture
def qip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], demo: DemoReports
        ) -> Any:
    return qip_on(demo.db, monkeypatch, capsys)


def qip_on(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`qip ARGS` on the database ``db`` (the demo's), in this process."""
    for console in (cli_render.console, cli_render.errors):
        monkeypatch.setattr(console, "width", 1000)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("QIP_DATABASE_URL", f"sqlite:///{db}")
        monkeypatch.setenv("QIP_NOW", NOW)
        monkeypatch.delenv("QIP_CONFIG", raising=False)
        monkeypatch.setattr(sys, "argv", ["qip", *args])
        with pytest.raises(SystemExit) as done:
            main()
        out, err = capsys.readouterr()
        code = done.value.code
        return subprocess.CompletedProcess(list(args), code if isinstance(code, int) else 1, out, err)

    return run


def test_report_commands(qip: Any, demo: DemoReports, tmp_path: Path) -> None:
    done = qip("report", "board")
    assert done.returncode == 0 and done.stdout == demo.md["board"]
    done = qip("--json", "report", "plan", "QIP-2026-021", "--out", str(tmp_path / "p.html"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["format"] == "html"
    assert (tmp_path / "p.html").read_text() == demo.html["plan-021"]
    done = qip("report", "commissioner", "--period", "2026", "--format", "md", "--out",
               str(tmp_path / "c.md"))
    assert done.returncode == 0 and "written to" in done.stdout
    assert (tmp_path / "c.md").read_text() == demo.md["commissioner"]
    for args, message in ((("report", "plan", "QIP-2026-099"), "unknown plan"),
                          (("report", "plan", "QIP-2026-017/A2"), "is an action"),
                          (("report", "board", "--period", "2026-Q9"), "--period"),
                          (("report", "board", "--service", "nowhere"), "unknown service"),
                          (("report", "board", "--out", str(tmp_path / "b.docx")), "format")):
        done = qip(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    done = qip("export", "--out", str(tmp_path / "x.zip"), "--format", "csv")
    assert done.returncode == 0 and "hash chain intact" in done.stdout
    assert "auditevent.csv" in zipfile.ZipFile(tmp_path / "x.zip").namelist()


def test_report_command_runs_as_a_program(demo: DemoReports, tmp_path: Path) -> None:
    out = tmp_path / "board.html"
    done = subprocess.run([sys.executable, "-m", "qip_flow", "--db", str(demo.db), "--now", NOW,
                           "report", "board", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == demo.html["board"]


def test_the_demo_year_reopens_care_planning_on_a_special_cause_not_on_one_point(
        demo: DemoReports) -> None:
    """Making Data Count in the demo year: the July audit of the care planning plan (86, below
    the 90 target but within the process limits) leaves it in monitoring, AMBER; the August
    audit (62, below the lower process limit 67.4) is a special cause of concern: the rules
    reopen the plan, turn it RED and escalate to the sponsor, each naming the indicator, its
    value, the limits and the test that fired."""
    rows = query(demo.db, """select substr(at, 1, 10), what, to_state, reason from auditevent
        where entity_id = 'QIP-2026-009' and at >= '2026-07-29' and at < '2026-08-27'
        and what in ('rag changed', 'reopen', 'escalated') order by seq""")
    finding = ("plan-audit (Care plans meeting the audit standard) shows special cause variation "
               "of concern: 62%, below the lower process limit (process limits 67.4% to 104.6%)")
    assert [(day, what, state) for day, what, state, _ in rows] == [
        ("2026-07-29", "rag changed", "amber"), ("2026-08-26", "escalated", None),
        ("2026-08-26", "reopen", "in_progress"), ("2026-08-26", "rag changed", "red")]
    assert rows[2][3] == finding
    assert rows[1][3] == ("QIP-2026-009: plan-audit (Care plans meeting the audit standard) at "
                          "62%, below the lower process limit (process limits 67.4% to 104.6%) "
                          "on Wed 26 August")  # the way messages write dates (UK, no ISO)
    assert scalar(demo.db, "select count(*) from auditevent where what = 'reopen'") == 1
