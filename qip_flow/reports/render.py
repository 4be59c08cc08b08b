"""Reports rendered from Jinja2 templates: a self-contained HTML page (styles inline, charts as
inline SVG, no external URL, laid out for A4) or Markdown (the same figures as tables; the
charts' readings as text)."""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from qip_flow import escaping
from qip_flow.escaping import markdown_cell
from qip_flow.reports import charts
from qip_flow.reports.data import (
    ROWS,
    BoardPack,
    ClosureReport,
    CommissionerPack,
    IndicatorSeries,
)

KINDS = {"board": BoardPack, "plan": ClosureReport, "commissioner": CommissionerPack}


def day(value: date | datetime | str | None) -> str:
    """UK style: 21 Nov 2026."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value else \
            date.fromisoformat(value)
    return f"{value.day} {value:%b %Y}"


def label(value: Any) -> str:
    """``in_progress`` → ``in progress``."""
    return str(value or "").replace("_", " ")


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    shown = f"{value:g}"
    return f"{shown}%" if unit == "%" else f"{shown} {unit}".rstrip()


def count(value: Any) -> str:
    """Whole numbers with thousands separators (3,940); anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def reading(series: IndicatorSeries) -> str:
    """An indicator's chart in one sentence, for Markdown and for screen readers: the
    target, the on-target run the closure criteria count, and what the XmR chart says."""
    if not series.points:
        return "no measurements recorded yet"
    last = series.latest
    assert last is not None
    sign = "≥" if series.direction == "up" else "≤"
    parts = [f"latest {number(last.value, series.unit)} on {day(last.on)}",
             f"target {sign} {number(series.target, series.unit)}"]
    if series.baseline is not None:
        kind = "baseline median" if series.baseline_derived else "baseline"
        parts.append(f"{kind} {number(series.baseline, series.unit)}")
    if series.run_points:
        needs = f"; {series.required_days} needed" if series.required_days else ""
        parts.append(f"on target since {day(series.run_start)} ({series.run_days} days{needs}, "
                     f"{series.reaudits_in_run} re-audit(s))")
    else:
        parts.append("off target")
    if series.spc_shift:
        parts.append("a sustained shift from the baseline")
    parts.append(charts.finding(series))
    return "; ".join(parts)


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("qip_flow.reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=escaping.finalize,  # Markdown templates: people's text shown as typed
    )
    env.filters.update(day=day, label=label, number=number, cell=markdown_cell, reading=reading,
                       count=count)
    env.globals.update(ROWS=ROWS)
    return env


def _charts(kind: str, report: Any) -> dict[str, Markup]:
    """Every chart the HTML page shows, drawn once, keyed for the template."""
    out: dict[str, Markup] = {}
    series: list[IndicatorSeries] = []
    if isinstance(report, BoardPack):
        if report.live:
            by_service = report.rag_by_service()
            title = "Live plans by service and RAG" if len(by_service) == report.live_services \
                else f"The {len(by_service)} services with most RED, of {report.live_services:,}"
            out["rag_by_service"] = Markup(charts.rag_by_group(by_service, title=title,
                                                               key="rag-service"))
            out["rag_trend"] = Markup(charts.rag_then_and_now(
                report.rag_counts(at_start=True), report.rag_counts(),
                start_label=day(report.header.period.start) if report.header.period else "start",
                key="rag-trend"))
        series = report.indicators
    elif isinstance(report, CommissionerPack):
        if report.by_source.rows:
            out["by_source"] = Markup(charts.counts_by_state(
                report.by_source.rows, report.by_source.states, title="Plans by source and state",
                key="by-source", order=report.states))
        series = [s for c in report.closed for s in c.indicators]
    elif isinstance(report, ClosureReport):
        series = report.indicators
    portfolio = not isinstance(report, ClosureReport)
    for s in series:
        out[s.id] = Markup(charts.xmr_chart(s, key=f"xmr-{s.id}", with_plan=portfolio))
    return out


def html(kind: str, report: Any) -> str:
    """The report as one self-contained HTML page."""
    return environment().get_template(f"{kind}.html.j2").render(
        r=report, charts=_charts(kind, report), kind=kind)


def markdown(kind: str, report: Any) -> str:
    return environment().get_template(f"{kind}.md.j2").render(r=report, kind=kind)
