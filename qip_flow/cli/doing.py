"""The commands that change a plan: ``qip do``, ``signoff``, ``close``, ``measure``,
``learning``, ``learning-review``, ``add-action``, ``vary`` and ``reassess``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from qip_flow.cli import render
from qip_flow.cli.state import State, state_of
from qip_flow.clock import parse_day
from qip_flow.errors import InvalidInput

if TYPE_CHECKING:
    from qip_flow.services import lifecycle


def _moved(st: State, result: lifecycle.EventResult) -> None:
    move = result.move
    if st.json:
        render.emit_json({"id": result.entity_id, "event": move.event.name, "from": move.source,
                          "to": move.dest, "workflow": move.version})
    elif move.source == move.dest:
        render.console.print(render.esc(f"{result.entity_id}: {move.event.name} recorded ({move.dest})"))
    else:
        render.console.print(render.esc(f"{result.entity_id}: {move.event.name}: {move.source} → ")
                             + f"[bold]{render.esc(move.dest)}[/bold]")


def do_event(
    ctx: typer.Context,
    entity_id: Annotated[str, typer.Argument(metavar="ID", help="A plan or action id.")],
    event: Annotated[str, typer.Argument(help="A workflow event, e.g. start, complete, verify.")],
    by: Annotated[str, typer.Option(help="The person doing it (their id).")],
    note: Annotated[str | None, typer.Option(help="A progress or meeting note.")] = None,
    evidence: Annotated[list[str] | None, typer.Option(
        help="Evidence as 'description|reference' (repeatable).")] = None,
    due: Annotated[str | None, typer.Option(help="New due date (revise_due).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (revise_due, reopen, withdraw).")] = None,
) -> None:
    """Fire a workflow event on a plan or an action."""
    from qip_flow.services import lifecycle

    st = state_of(ctx)
    result = lifecycle.fire_event(
        st.runtime(writes=True), entity_id, event, by=by, note=note, reason=reason,
        due=parse_day(due, field="--due") if due else None, evidence=evidence or [])
    _moved(st, result)


Meeting = Annotated[str, typer.Option(help="Meeting reference, e.g. 'Board 2026-02-10'.")]
EvidenceIds = Annotated[list[int] | None, typer.Option(
    "--evidence", help="Id of an item of the plan's recorded evidence that was reviewed "
    "(`qip show PLAN` lists them; repeatable).")]
EvidenceNotes = Annotated[list[str] | None, typer.Option(
    "--evidence-note", "--evidence-reviewed",
    help="Other evidence reviewed, in words; counts only beside an --evidence item "
    "(repeatable).")]
ResidualRisks = Annotated[list[str] | None, typer.Option(
    "--residual-risk", help="'risk :: how it is monitored' (repeatable).")]
NoResidualRisk = Annotated[bool, typer.Option(
    "--no-residual-risk", help="State that no residual risk remains.")]
LearningEmbedded = Annotated[list[str] | None, typer.Option(
    "--learning-embedded", "--learning", help="Where learning is embedded (repeatable).")]
RecordFile = Annotated[Path | None, typer.Option(
    "--record", help="A sign-off record YAML file (`qip schema signoff-record`); options add "
    "to it.")]


def signoff(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    purpose: Annotated[str, typer.Option("--for", help="approval, closure or step_down.")],
    by: Annotated[str, typer.Option(help="Who signs off (their id).")],
    group: Annotated[str | None, typer.Option(help="The governance group signing.")] = None,
    meeting: Meeting = "",
    evidence: EvidenceIds = None,
    evidence_note: EvidenceNotes = None,
    residual_risk: ResidualRisks = None,
    no_residual_risk: NoResidualRisk = False,
    learning_embedded: LearningEmbedded = None,
    record: RecordFile = None,
    note: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Record a sign-off and make the move it authorises (approve, close, step down). Closure
    and step-down sign-offs record the meeting, the evidence reviewed, residual risks and (for
    closure) where learning is embedded, as the closure rules ask."""
    from qip_flow.services import lifecycle, policy

    st = state_of(ctx)
    rt = st.runtime(writes=True)
    policy.check_command_line(rt, by, policy.Act.SIGN_OFF, [plan_id])
    result = lifecycle.sign_off(
        rt, plan_id, purpose, by=by, group=group, meeting=meeting,
        evidence_ids=evidence or [], evidence_reviewed=evidence_note or [],
        residual_risks=residual_risk or [], no_residual_risk=no_residual_risk,
        learning_embedded=learning_embedded or [], record_file=record, note=note)
    _moved(st, result)


def measure(
    ctx: typer.Context,
    plan_id: Annotated[str | None, typer.Argument(metavar="PLAN")] = None,
    indicator: Annotated[str | None, typer.Argument(
        help="The indicator id within the plan.")] = None,
    value: Annotated[float | None, typer.Argument()] = None,
    by: Annotated[str, typer.Option(help="Who recorded it (their id).")] = "",
    from_file: Annotated[Path | None, typer.Option(
        "--from", metavar="FILE", help="A sheet (.csv or .xlsx) with the columns indicator, "
        "date, value and optionally reaudit, source, reason, idempotency_key, plan; PLAN, if "
        "given, is the plan of indicators named without one. All rows are checked before any "
        "is recorded; the same sheet twice records each row once.")] = None,
    on: Annotated[str | None, typer.Option(help="Date measured (default: today).")] = None,
    source: Annotated[str, typer.Option(help="Where the value comes from.")] = "",
    reaudit: Annotated[bool, typer.Option(help="This value is a re-audit.")] = False,
    reason: Annotated[str | None, typer.Option(
        help="Why it is recorded late: needed when --on is further back than the rules allow "
        "(14 days by default); the value is flagged in the closure report.")] = None,
) -> None:
    """Record an indicator measurement (never dated in the future), or every row of a sheet."""
    from qip_flow.services import lifecycle, queries

    st = state_of(ctx)
    if not by:
        raise InvalidInput("--by: say who records the measurement (their id)")
    if from_file is not None:
        _measure_sheet(st, from_file, plan_id, by, extra=[indicator, value, on, reason])
        return
    if plan_id is None or indicator is None or value is None:
        raise InvalidInput("give PLAN INDICATOR VALUE, or --from FILE.csv|.xlsx")
    m = lifecycle.record_measurement(st.runtime(writes=True), plan_id, indicator, value,
                                     on=parse_day(on, field="--on") if on else None,
                                     source=source, reaudit=reaudit, by=by, reason=reason)
    if st.json:
        render.emit_json(queries.row_dict(m))
    else:
        render.console.print(render.esc(f"{plan_id}/{indicator}: {value} on {m.on}"))


def _measure_sheet(st: State, path: Path, plan_id: str | None, by: str,
                   extra: list[object]) -> None:
    from qip_flow.services import measurements, policy
    from qip_flow.services.lifecycle import get_person

    if any(x is not None for x in extra):
        raise InvalidInput("--from: the sheet gives indicator, date, value (and reason); give "
                           "only PLAN beside it")
    kind = {".csv": "csv", ".xlsx": "xlsx"}.get(path.suffix.lower())
    if kind is None:
        raise InvalidInput(f"--from: '{path.name}' is neither .csv nor .xlsx")
    rt = st.runtime(writes=True)
    sheet = measurements.read_sheet(path.read_bytes(), kind, plan_id=plan_id, name=str(path))
    with rt.db.read() as session:
        actor = policy.Actor.command_line(get_person(session, by))
    outcomes = measurements.record_many(rt, actor, sheet.pushes, found=sheet.problems,
                                        most=measurements.MAX_SHEET_ROWS)
    recorded = sum(1 for o in outcomes if not o.replayed)
    if st.json:
        render.emit_json({"recorded": recorded, "replayed": len(outcomes) - recorded,
                          "measurements": [o.as_dict() for o in outcomes]})
    else:
        render.console.print(render.esc(f"{path}: {recorded} measurement(s) recorded, "
                                         f"{len(outcomes) - recorded} already recorded earlier"))


def close(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who signs closure (their id).")],
    meeting: Meeting = "",
    evidence: EvidenceIds = None,
    evidence_note: EvidenceNotes = None,
    residual_risk: ResidualRisks = None,
    no_residual_risk: NoResidualRisk = False,
    learning_embedded: LearningEmbedded = None,
    record: RecordFile = None,
) -> None:
    """Close a plan: only if every closure criterion holds, the person has the authority and
    the sign-off record is complete; otherwise exit 1 naming every unmet criterion and every
    missing part of the record, and nothing changes."""
    from qip_flow.services import lifecycle, policy

    st = state_of(ctx)
    rt = st.runtime(writes=True)
    policy.check_command_line(rt, by, policy.Act.SIGN_OFF, [plan_id])
    result = lifecycle.sign_off(
        rt, plan_id, "closure", by=by, meeting=meeting,
        evidence_ids=evidence or [], evidence_reviewed=evidence_note or [],
        residual_risks=residual_risk or [], no_residual_risk=no_residual_risk,
        learning_embedded=learning_embedded or [], record_file=record)
    _moved(st, result)


def learning_summary(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who wrote it.")],
    summary: Annotated[str, typer.Option(help="What was learned.")],
    embedded_in: Annotated[list[str] | None, typer.Option(
        help="Where it is embedded: induction, supervision, training … (repeatable).")] = None,
) -> None:
    """Record the plan's learning summary and where the learning is embedded."""
    from qip_flow.services import assess, queries

    st = state_of(ctx)
    row = assess.record_learning(st.runtime(writes=True), plan_id, by=by, summary=summary,
                                 embedded_in=embedded_in or [])
    if st.json:
        render.emit_json(queries.row_dict(row))
    else:
        render.console.print(render.esc(f"{plan_id}: learning summary recorded (embedded in "
                                         f"{', '.join(row.embedded_in) or 'nowhere yet'})"))


def learning_review(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who led the review (their id).")],
    found: Annotated[str, typer.Option(help="What the review found: is the learning alive?")],
) -> None:
    """Record a post-closure learning review and what it found; the next one falls due at
    the next interval the rules set."""
    from qip_flow.services import lifecycle

    st = state_of(ctx)
    result = lifecycle.fire_event(st.runtime(), plan_id, "review_learning", by=by, note=found)
    _moved(st, result)


def add_action(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who adds it (their id).")],
    title: Annotated[str, typer.Option(help="What will be done: specific and measurable.")],
    owner: Annotated[str, typer.Option(help="The named owner (a person id).")],
    due: Annotated[str, typer.Option(help="Due date (YYYY-MM-DD).")],
    finding: Annotated[str, typer.Option(help="The id of the finding it answers.")],
    risk: Annotated[list[str] | None, typer.Option(
        help="A strategic risk it addresses (repeatable).")] = None,
    systemic: Annotated[bool, typer.Option(
        help="It changes a system (policy, training, audit cycle).")] = False,
    action_id: Annotated[str | None, typer.Option(
        "--id", help="The action's id in the plan (default: the next A-number).")] = None,
) -> None:
    """Add an action to an approved or reopened plan: more must be done."""
    from qip_flow.services import growth, queries

    st = state_of(ctx)
    row = growth.add_action(st.runtime(), plan_id, by=by, title=title, owner=owner,
                            due=parse_day(due, field="--due"), finding=finding,
                            risks=risk or [], systemic=systemic, action_id=action_id)
    if st.json:
        render.emit_json(queries.row_dict(row))
    else:
        render.console.print(f"{row.id}: added ({row.state}), owner {row.owner_id}, due {row.due}")


def vary(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="Who signs the variation.")],
    reason: Annotated[str, typer.Option(help="Why the criteria change.")],
    plan_ids: Annotated[list[str] | None, typer.Argument(metavar="[PLAN]...")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="field=value, e.g. sustain_days=120, signoff.group=Board "
        "(repeatable).")] = None,
    adopt_rules: Annotated[bool, typer.Option(
        "--adopt-rules", help="Pin the closure rules in force now (criteria and sign-off "
        "settings) in place of the ones pinned at approval.")] = False,
    all_pinned_to: Annotated[str | None, typer.Option(
        "--all-pinned-to", metavar="VERSION", help="Every live plan pinned to these closure "
        "rules (`qip explain PLAN` names the version; 'unpinned' for plans approved before "
        "whole tests were pinned).")] = None,
    meeting: Annotated[str, typer.Option(help="Meeting reference.")] = "",
) -> None:
    """Change pinned closure criteria, or adopt the closure rules in force, on one plan or
    many: a variation signed with each plan's authority (its approval level when the sign-off
    or the rules change); all plans are varied or none."""
    from qip_flow.services import assess, policy
    from qip_flow.services.pinning import vary_plans

    st = state_of(ctx)
    rt = st.runtime(writes=True)
    policy.check_command_line(rt, by, policy.Act.SIGN_OFF, plan_ids or [])
    varied = vary_plans(rt, plan_ids or [], by=by, reason=reason,
                        changes=assess.parse_variation(set_ or []), adopt_rules=adopt_rules,
                        meeting=meeting, all_pinned_to=all_pinned_to)
    if st.json:
        render.emit_json({"varied": varied})
    else:
        render.console.print(f"varied {len(varied)} plan(s): {', '.join(varied)}")


def reassess(
    ctx: typer.Context,
    plan_ids: Annotated[list[str] | None, typer.Argument(metavar="[PLAN]...")] = None,
) -> None:
    """Re-rate live plans for --now (RAG, reopening on deterioration)."""
    from qip_flow.services import assess

    st = state_of(ctx)
    results = assess.reassess_each(st.runtime(writes=True), plan_ids or None)
    rows = [{"plan": r.plan_id, "rag": r.rag.rating if r.rag else None, "changed": r.rag_changed,
             "reason": r.rag.reason if r.rag else "", "reopened": r.reopened} for r in results]
    if st.json:
        render.emit_json(rows)
        return
    render.table(None, ["plan", "RAG", "changed", "why", "reopened"],
                 [[r["plan"], render.rag(r["rag"]), "yes" if r["changed"] else "", r["reason"],
                   r["reopened"] or ""] for r in rows])


def register(app: typer.Typer) -> None:
    app.command("do")(do_event)
    app.command()(signoff)
    app.command()(measure)
    app.command()(close)
    app.command("learning")(learning_summary)
    app.command("learning-review")(learning_review)
    app.command("add-action")(add_action)
    app.command()(vary)
    app.command()(reassess)
