"""Governance reports — the board pack, a plan's closure report and the commissioner's
assurance pack — as self-contained HTML (charts inline), Markdown or PDF, and the full export
for an inspector. Reports only read: :mod:`qip_flow.reports.data` gathers everything in one
read transaction and nothing here writes to the database.

The package itself imports nothing heavy: matplotlib (the charts) and Jinja (the templates)
load when a report is gathered or rendered, not when a command merely names a period."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qip_flow.errors import InvalidInput

if TYPE_CHECKING:
    from qip_flow.runtime import Runtime

FORMATS = ("html", "md", "pdf")
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".pdf": "pdf"}


def gather(rt: Runtime, kind: str, *, period: str | None = None, service: str | None = None,
           plan_id: str | None = None) -> Any:
    """The report's data: ``board``, ``commissioner`` or ``plan``."""
    from qip_flow.reports import data, periods

    if kind == "plan":
        if not plan_id:
            raise InvalidInput("the closure report needs a plan id, e.g. QIP-2026-014")
        return data.closure_report(rt, plan_id)
    window = periods.parse_period(period, rt.clock.today(),
                                  year_starts=rt.rules.reporting.year_starts)
    if kind == "board":
        return data.board_pack(rt, period=window, service=service)
    if kind == "commissioner":
        return data.commissioner_pack(rt, period=window, service=service)
    raise InvalidInput(f"unknown report '{kind}'; reports: board, plan, commissioner")


def resolve_format(fmt: str | None, out: Path | None) -> str:
    """``--format`` as given, else from ``--out``'s suffix, else Markdown (to stdout)."""
    if fmt:
        chosen = "md" if fmt.lower() == "markdown" else fmt.lower()
        if chosen not in FORMATS:
            raise InvalidInput(f"--format: '{fmt}' is not a report format; use html, md or pdf")
    elif out is None:
        chosen = "md"
    elif out.suffix.lower() in SUFFIXES:
        chosen = SUFFIXES[out.suffix.lower()]
    else:
        raise InvalidInput(f"--out: cannot tell the format of '{out.name}'; end it in .html, "
                           ".md or .pdf, or give --format html|md|pdf")
    if chosen == "pdf" and out is None:
        raise InvalidInput("--format pdf needs --out FILE.pdf")
    return chosen


def text(kind: str, report: Any, fmt: str) -> str:
    """The report as HTML or Markdown text."""
    from qip_flow.reports import render

    return render.html(kind, report) if fmt in ("html", "pdf") else render.markdown(kind, report)


def write(kind: str, report: Any, fmt: str, out: Path, *, force: bool = False,
          database: Path | None = None) -> Path:
    """Write the report to ``out`` (HTML, Markdown or, through Chromium, PDF) — never over the
    database, nor over a file qip did not write unless ``force`` (see :mod:`.outputs`)."""
    from qip_flow.reports import outputs

    outputs.check_file(out, force=force, database=database)
    body = text(kind, report, fmt)
    if fmt == "pdf":
        from qip_flow.reports.pdf import html_to_pdf

        return outputs.write_file(out, lambda path: html_to_pdf(body, path), force=force,
                                  database=database)
    return outputs.write_file(out, lambda path: path.write_text(body, encoding="utf-8"),
                              force=force, database=database)


def write_demo_reports(rt: Runtime, folder: Path) -> list[Path]:
    """The demo's reports, as HTML in ``folder/reports/``: the board pack, and a closure report
    for each plan that is closed or before the governance group in closure review."""
    from qip_flow.reports import data

    target = folder / "reports"
    target.mkdir(parents=True, exist_ok=True)
    board = gather(rt, "board")
    written = [write("board", board, "html", target / "board-pack.html")]
    flow = data.Flow.of(rt)
    for plan in board.plans:
        if plan.state in flow.closed_states | flow.review_states:
            report = data.closure_report(rt, plan.id)
            written.append(write("plan", report, "html", target / f"closure-{plan.id}.html"))
    return written


__all__ = ["FORMATS", "gather", "resolve_format", "text", "write", "write_demo_reports"]
