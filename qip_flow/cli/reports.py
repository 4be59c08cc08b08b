"""``qip report board|plan|commissioner`` and ``qip export``: governance reports and the
inspector's export. They only read the database."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from qip_flow.cli import render
from qip_flow.cli.state import state_of
from qip_flow.reports.periods import PERIOD_HELP

report_app = typer.Typer(no_args_is_help=True, help="Governance reports: the board pack, a "
                         "plan's closure report, the commissioner's assurance pack. With an "
                         "earlier --now, each is the record as it stood then, rebuilt from the "
                         "audit trail.")

Format = Annotated[str | None, typer.Option(
    "--format", help="html, md or pdf (default: from --out's suffix, else Markdown).")]
Out = Annotated[Path | None, typer.Option(
    "--out", help="Write to this file (default: print Markdown).")]
PeriodOption = Annotated[str | None, typer.Option(
    help=f"The reporting period: {PERIOD_HELP}. Default: the last 90 days.")]
ServiceOption = Annotated[str | None, typer.Option(help="Only plans of this service id.")]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace an --out file qip did not write (never the database).")]


def _deliver(ctx: typer.Context, kind: str, fmt: str | None, out: Path | None, *,
             period: str | None = None, service: str | None = None,
             plan_id: str | None = None, force: bool = False) -> None:
    """Gather, render, and print or write one report."""
    from qip_flow import reports

    st = state_of(ctx)
    chosen = reports.resolve_format(fmt, out)
    report = reports.gather(st.runtime(), kind, period=period, service=service, plan_id=plan_id)
    if out is None:
        sys.stdout.write(reports.text(kind, report, chosen))
        return
    written = reports.write(kind, report, chosen, out, force=force,
                            database=st.runtime().db.sqlite_file())
    if st.json:
        render.emit_json({"report": kind, "format": chosen, "out": str(written),
                          "bytes": written.stat().st_size})
    else:
        render.console.print(render.esc(f"{report.header.title} written to {written} "
                                         f"({chosen.upper()}, {written.stat().st_size // 1024 + 1} KB)"))


@report_app.command("board")
def board(ctx: typer.Context, period: PeriodOption = None, service: ServiceOption = None,
          fmt: Format = None, out: Out = None, force: Force = False) -> None:
    """The board pack: the portfolio by service, source, theme and state; RAG and its trend;
    slipped actions and revised timelines; escalations; closure; run charts; strategic risks;
    learning reviews."""
    _deliver(ctx, "board", fmt, out, period=period, service=service, force=force)


@report_app.command("plan")
def plan(ctx: typer.Context,
         plan_id: Annotated[str, typer.Argument(metavar="ID", help="A plan id, e.g. QIP-2026-014.")],
         fmt: Format = None, out: Out = None, force: Force = False) -> None:
    """A plan's closure report for the governance group: findings, actions and evidence,
    indicator charts, every closure criterion, residual risks, learning and sign-offs."""
    _deliver(ctx, "plan", fmt, out, plan_id=plan_id, force=force)


@report_app.command("commissioner")
def commissioner(ctx: typer.Context, period: PeriodOption = None, service: ServiceOption = None,
                 fmt: Format = None, out: Out = None, force: Force = False) -> None:
    """The commissioner's assurance pack: plans by source, overdue actions, what closed in the
    period with the evidence behind it, and recurrence."""
    _deliver(ctx, "commissioner", fmt, out, period=period, service=service, force=force)


def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="A new folder, or a file ending in .zip.")],
    fmt: Annotated[str, typer.Option("--format", help="csv, json or both.")] = "both",
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a folder or over a zip qip did not write (never the "
        "database).")] = False,
) -> None:
    """Export the full record and the audit trail for an inspector: a CSV per table, one
    JSON file and the uploaded evidence files, with the audit chain and every file's hash
    checked."""
    from qip_flow.reports.export import export as run_export

    st = state_of(ctx)
    result = run_export(st.runtime(), out, fmt, force=force)
    if st.json:
        render.emit_json(result.as_dict())
    else:
        rows = sum(result.rows.values())
        chain = ("intact" if result.chain_ok else f"BROKEN: {result.chain_problem}")
        files = sum(1 for f in result.files if f.startswith("evidence/"))
        render.console.print(render.esc(
            f"exported {rows} rows from {len(result.rows)} tables to {out} "
            f"({', '.join(result.files[:3])}{', …' if len(result.files) > 3 else ''}); "
            f"{files} evidence file{'s' * (files != 1)}; "
            f"audit trail {result.audit_events} events, hash chain {chain}"))
        for problem in result.missing_files:
            render.errors.print(render.esc(problem))
    if not result.chain_ok or result.missing_files:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
    app.command()(export)
