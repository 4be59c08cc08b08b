"""The commands that look: ``qip plans``, ``show``, ``explain``, ``lint`` and ``audit``. Each
imports the services it uses when it runs, so listing plans never loads the rules engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from qip_flow.cli import render
from qip_flow.cli.state import State, login_name, state_of
from qip_flow.errors import InvalidInput

if TYPE_CHECKING:
    from qip_flow.services import integrity


#: Plans a table shows unless asked for more: a portfolio has thousands, a terminal a page.
PAGE = 100


def plans(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only plans in this state.")] = None,
    service: Annotated[str | None, typer.Option(help="Only plans of this service.")] = None,
    theme: Annotated[str | None, typer.Option(help="Only plans of this theme.")] = None,
    rag: Annotated[str | None, typer.Option(help="Only plans rated red, amber or green.")] = None,
    limit: Annotated[int | None, typer.Option(
        min=1, metavar="N", help=f"Show at most N plans (default {PAGE} in the table; --json "
        "gives every plan unless --limit is given).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Show every plan.")] = False,
) -> None:
    """List plans, in id order."""
    from qip_flow.services import queries

    st = state_of(ctx)
    rt = st.runtime()
    shown = None if every or (st.json and limit is None) else limit or PAGE
    filters = {"state": state, "service": service, "theme": theme, "rag": rag}
    with rt.db.read() as session:
        rows = queries.list_plans(
            session, **filters, limit=shown,
            states=rt.workflows.defs["plan"].state_names() if state is not None else ())
        total = (queries.count_plans(session, **filters)
                 if shown is not None and len(rows) == shown else len(rows))
    if st.json:
        render.emit_json(rows)
        return
    render.table(None, ["plan", "title", "service", "source", "theme", "state", "RAG", "actions done"],
                 [[r["id"], r["title"], r["service"], r["source"], r["theme"], r["state"],
                   render.rag(r["rag"]), f"{r['actions_done']}/{r['actions']}"] for r in rows])
    if total > len(rows):
        render.console.print(f"{len(rows):,} of {total:,} plans shown: --all lists every one, "
                             "--limit N as many as you ask; --state, --service, --theme and "
                             "--rag narrow the list")


def show(ctx: typer.Context, entity_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show a plan (QIP-2026-014) or an action (QIP-2026-014/A1) with its history."""
    from qip_flow.services import queries

    st = state_of(ctx)
    with st.runtime().db.read() as session:
        detail = queries.show(session, entity_id)
    if st.json:
        render.emit_json(detail)
    elif detail["kind"] == "plan":
        render.show_plan(detail)
    else:
        render.show_action(detail)


def audit(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(
        metavar="[ID|verify|checkpoint]",
        help="A plan or action id; 'verify' to check the trail; 'checkpoint' to write a "
             "checkpoint now.")] = None,
    last: Annotated[int, typer.Option(help="How many recent events to list.")] = 50,
    deep: Annotated[bool, typer.Option(
        "--deep", help="verify: also replay the trail and compare it with the tables.")] = False,
    after_restore: Annotated[bool, typer.Option(
        "--after-restore", help="verify: record that the database was restored from a backup "
        "older than the newest checkpoint.")] = False,
    by: Annotated[str | None, typer.Option(
        help="Who restored the database (--after-restore; default: your login name).")] = None,
) -> None:
    """List the audit trail (of one plan or action); `qip audit verify [--deep]` checks that it
    is complete and unaltered; `qip audit checkpoint` writes a keyed checkpoint."""
    from qip_flow.services import queries

    st = state_of(ctx)
    rt = st.runtime()
    if target in ("verify", "checkpoint"):
        from qip_flow.services import integrity
        from qip_flow.store import checkpoints
    if target == "verify":
        _verify_audit(st, integrity.verify(rt, deep=deep, after_restore=after_restore,
                                           by=by or login_name()))
        return
    if deep or after_restore:
        raise InvalidInput("--deep and --after-restore go with `qip audit verify`")
    if target == "checkpoint":
        written = integrity.checkpoint(rt)
        if st.json:
            render.emit_json(written.body())
        else:
            render.console.print(f"checkpoint written to {escape(str(checkpoints.checkpoint_file(rt.db)))}: "
                                 f"{written.events} events, last hash {written.hash}")
        return
    with rt.db.read() as session:
        if target:
            queries.show(session, target)  # unknown ids are refused with a clear message
            events = queries.entity_history(session, target)
        else:
            events = queries.all_audit(session, last)
    if st.json:
        render.emit_json(events)
    else:
        render.history(events)


def _verify_audit(st: State, found: integrity.Verification) -> None:
    """Print what `qip audit verify` found; exit 1 unless the trail holds."""
    if st.json:
        render.emit_json(found.as_dict())
    else:
        for line in found.notes + (found.deep.notes if found.deep else []):
            render.console.print(f"note: {escape(line)}")
        if found.restore:
            render.console.print(f"restore recorded: trail at {found.restore.restored_events} "
                                 f"events, newest checkpoint said {found.restore.newest_said}; "
                                 f"new checkpoint at {found.restore.events} events")
        if found.ok:
            newest = found.newest
            held = (f"; {len(found.checked)} checkpoint(s) match, the newest "
                    f"{newest.at[:16].replace('T', ' ')} at {newest.events} events"
                    if newest else "")
            deep = "; the tables agree with it" if found.deep else ""
            render.console.print(f"audit trail intact: {found.chain.events} events verified"
                                 f"{held}{deep}")
        for problem in found.problems + found.behind:
            render.errors.print(f"audit trail broken: {escape(problem)}")
        for difference in found.deep.differences if found.deep else []:
            render.errors.print(f"differs from the trail: {escape(difference.describe())}")
    if not found.ok:
        raise typer.Exit(1)


def explain(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str | None, typer.Option(help="Judge the sign-off criteria for this person.")] = None,
) -> None:
    """Each closure criterion met or unmet, with the facts and the rule behind it."""
    from qip_flow.services import assess

    st = state_of(ctx)
    result = assess.explain(st.runtime(), plan_id, signer=by)
    if st.json:
        render.emit_json(result)
        return
    render.explanation(result)


def lint(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PLAN-or-FILE")],
) -> None:
    """Credibility checks from rules/credibility.yaml; exit 1 while an error remains."""
    from qip_flow.services import assess

    st = state_of(ctx)
    rt = st.runtime()
    path = Path(target)
    findings = (assess.lint_file(rt, path) if path.suffix in (".yaml", ".yml")
                else assess.lint_plan(rt, target))
    if st.json:
        render.emit_json([f.as_dict() for f in findings])
    else:
        render.table(f"Credibility of {target}", ["severity", "about", "finding", "rule"],
                     [[render.severity(f.severity), f.subject_id, f.message, f.rule.id]
                      for f in findings])
        errors = sum(1 for f in findings if f.severity == "error")
        render.console.print(f"{errors} error(s), {len(findings) - errors} other finding(s)")
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(plans)
    app.command()(show)
    app.command()(audit)
    app.command()(explain)
    app.command()(lint)
