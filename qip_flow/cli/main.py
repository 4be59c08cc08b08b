"""The ``qip`` command: a thin layer over the services. Exit codes: 0 done, 1 refused (a guard,
a rule, missing authority), 2 bad input (unknown id, bad file, bad arguments), 3 unavailable
(the database is locked or out of reach: try again), 4 a bug."""

from __future__ import annotations

import getpass
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from qip_flow import __version__, logs, settings
from qip_flow.cli import help as command_help
from qip_flow.cli import render
from qip_flow.cli.notify import register as register_notify_commands
from qip_flow.cli.operate import register as register_operate_commands
from qip_flow.cli.reports import register as register_report_commands
from qip_flow.cli.rules import rules_app
from qip_flow.cli.serve import register as register_serve_commands
from qip_flow.cli.state import State, state_of
from qip_flow.cli.tokens import register as register_token_commands
from qip_flow.clock import parse_day
from qip_flow.config.limits import check_text
from qip_flow.errors import InvalidInput, QipError, Unavailable
from qip_flow.runtime import config_folder
from qip_flow.services import assess, integrity, lifecycle, loading, policy, queries
from qip_flow.store import checkpoints, keys
from qip_flow.store.db import mask_secrets
from qip_flow.store.governance import published

INTERNAL_ERROR = 4

app = typer.Typer(add_completion=True, pretty_exceptions_enable=False, no_args_is_help=True,
                  rich_markup_mode="rich",
                  help="qip_flow: Quality Improvement Plans that commissioners and CQC can trust.")
workflow_app = typer.Typer(no_args_is_help=True, help="Show and check the workflow files.")
app.add_typer(workflow_app, name="workflow")
app.add_typer(rules_app, name="rules")
register_notify_commands(app)
register_report_commands(app)
register_operate_commands(app)
register_serve_commands(app)
register_token_commands(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"qip_flow {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(metavar="URL", envvar="QIP_DATABASE_URL",
                                           help="Database URL or SQLite file (default: ./qip.db)")] = None,
    config: Annotated[str | None, typer.Option(metavar="DIR", envvar="QIP_CONFIG",
                                               help="Folder holding workflows/ and rules/.")] = None,
    now: Annotated[str | None, typer.Option(metavar="WHEN", envvar="QIP_NOW",
                                            help="Pretend it is this date or date-time (ISO).")] = None,
    channels: Annotated[str | None, typer.Option(
        metavar="FILE", envvar="QIP_CHANNELS", help="Apprise YAML channels file (default: "
        "CONFIG/channels.yaml, else a local file beside the database)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    log_format: Annotated[str | None, typer.Option(
        metavar="text|json", envvar="QIP_LOG_FORMAT", help="Log lines as text or JSON.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log everything.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only errors.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print qip_flow's version and exit.")] = False,
) -> None:
    given = {"database": db, "config": config, "now": now, "channels": channels,
             "log_format": log_format}
    names = {"database": "db"}
    in_force = settings.resolve({
        key: (value, getattr(ctx.get_parameter_source(names.get(key, key)), "name", "") == "COMMANDLINE")
        for key, value in given.items()})
    logs.configure(in_force["log_format"].value, in_force["log_level"].value,
                   verbose=verbose, quiet=quiet)
    ctx.obj = State(in_force["database"].value, in_force["config"].value, in_force["now"].value,
                    json_out, in_force["channels"].value)
    ctx.obj.settings = in_force


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


@app.command()
def init(
    ctx: typer.Context,
    simulation: Annotated[bool, typer.Option(
        "--simulation", help="Create a database for simulation: only there may --now write "
        "(demos, tests, training); every report is marked SIMULATION.")] = False,
    by: Annotated[str | None, typer.Option(help="Who initialises (recorded with the first "
                                                "publication of the rules).")] = None,
) -> None:
    """Create the database schema, or upgrade it to this version; a new database gets the
    rules and workflows (--config's, else the shipped ones) published."""
    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    files = None
    if rt.config_dir is not None:
        rt.rules  # noqa: B018  (parsed now: a bad folder is refused before anything is kept)
        files = rt.files
    before, after = rt.db.init(simulation=simulation, publish=files, by=by or _user(),
                               at=rt.clock.now())
    created = keys.ensure_key(rt.db)
    with rt.db.read() as session:
        row = published(session)
    kind = "simulation" if rt.db.is_simulation() else "real record"
    version = row.version if row else "none"
    if st.json:
        render.emit_json({"database": rt.db.shown_url, "from": before, "to": after,
                          "kind": kind, "published": version,
                          "key_file_created": str(created) if created else None})
        return
    if before == after:
        render.console.print(f"{render.esc(rt.db.shown_url)}: schema is up to date ({after})")
    else:
        render.console.print(f"{render.esc(rt.db.shown_url)}: schema {before or 'empty'} → {after}")
    render.console.print(f"{kind}; rules and workflows in force: {version}")
    if created:
        render.console.print(f"secret key written to {escape(str(created))} (owner-only; keep "
                             "it out of backups of the database)")


@app.command()
def load(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="YAML files or folders of them.")],
    by: Annotated[str | None, typer.Option(help="Who is loading (for the audit trail).")] = None,
) -> None:
    """Load people, services, risks and plans: all files or none; loading again is harmless."""
    st = state_of(ctx)
    report = loading.load_files(st.runtime(writes=True), paths, actor=by or _user())
    if st.json:
        render.emit_json([{"file": f, "record": r, "outcome": o} for f, r, o in report.changes])
        return
    render.table(None, ["file", "record", "outcome"], [list(c) for c in report.changes])
    render.console.print(f"{report.count('added')} added, {report.count('updated')} updated, "
                         f"{report.count('unchanged')} unchanged")
    rt = st.runtime()
    added = [record for _, record, outcome in report.changes if outcome == "added"]
    with rt.db.read() as session:
        past = queries.actions_due_in_the_past(session, added, rt.clock.today())
    for plan_id, (count, earliest) in sorted(past.items()):
        render.errors.print(
            f"note: {plan_id} has {count} action(s) due before today (the earliest "
            f"{earliest:%d %B %Y}): is the file dated for another year? The shipped examples are "
            "dated 2026 for `qip demo`, which plays them on its own clock.")


@app.command()
def plans(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only plans in this state.")] = None,
    service: Annotated[str | None, typer.Option(help="Only plans of this service.")] = None,
    theme: Annotated[str | None, typer.Option(help="Only plans of this theme.")] = None,
    rag: Annotated[str | None, typer.Option(help="Only plans rated red, amber or green.")] = None,
) -> None:
    """List plans."""
    st = state_of(ctx)
    rt = st.runtime()
    with rt.db.read() as session:
        rows = queries.list_plans(session, state=state, service=service, theme=theme, rag=rag,
                                  states=rt.workflows.defs["plan"].state_names())
    if st.json:
        render.emit_json(rows)
        return
    render.table(None, ["plan", "title", "service", "source", "theme", "state", "RAG", "actions done"],
                 [[r["id"], r["title"], r["service"], r["source"], r["theme"], r["state"],
                   render.rag(r["rag"]), f"{r['actions_done']}/{r['actions']}"] for r in rows])


@app.command()
def show(ctx: typer.Context, entity_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show a plan (QIP-2026-014) or an action (QIP-2026-014/A1) with its history."""
    st = state_of(ctx)
    with st.runtime().db.read() as session:
        detail = queries.show(session, entity_id)
    if st.json:
        render.emit_json(detail)
    elif detail["kind"] == "plan":
        render.show_plan(detail)
    else:
        render.show_action(detail)


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


@app.command("do")
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


@app.command()
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
    st = state_of(ctx)
    rt = st.runtime(writes=True)
    policy.check_command_line(rt, by, policy.Act.SIGN_OFF, [plan_id])
    result = lifecycle.sign_off(
        rt, plan_id, purpose, by=by, group=group, meeting=meeting,
        evidence_ids=evidence or [], evidence_reviewed=evidence_note or [],
        residual_risks=residual_risk or [], no_residual_risk=no_residual_risk,
        learning_embedded=learning_embedded or [], record_file=record, note=note)
    _moved(st, result)


@app.command()
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
    from qip_flow.services import measurements
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


@app.command()
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
    st = state_of(ctx)
    rt = st.runtime()
    if target == "verify":
        _verify_audit(st, integrity.verify(rt, deep=deep, after_restore=after_restore,
                                           by=by or _user()))
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


def json_schemas() -> dict[str, Any]:
    """The JSON Schema of every file format, by kind."""
    from qip_flow.config import formats
    from qip_flow.config.workflow import workflow_file_schema
    from qip_flow.decide.tooling import rules_schema

    schemas: dict[str, Any] = {k: m.model_json_schema() for k, m in formats.SCHEMAS.items()}
    schemas["workflow"] = workflow_file_schema()
    schemas["rules"] = rules_schema()
    return schemas


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="organisation, plan, workflow or rules")]
           ) -> None:
    """Print the JSON Schema of a file format (for editor completion)."""
    schemas = json_schemas()
    if kind not in schemas:
        raise InvalidInput(f"unknown kind '{kind}'; kinds: {', '.join(sorted(schemas))}")
    render.emit_json(schemas[kind])


@workflow_app.command("show")
def workflow_show(ctx: typer.Context,
                  kind: Annotated[str, typer.Argument(help="plan or action")]) -> None:
    """Print the workflow as a Mermaid state diagram, drawn from its YAML file."""
    from qip_flow.workflow.diagram import mermaid

    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    if kind not in rt.workflows.defs:
        raise InvalidInput(f"unknown workflow '{kind}'; use plan or action")
    sys.stdout.write(mermaid(rt.workflows.defs[kind]) + "\n")


@workflow_app.command("check")
def workflow_check(ctx: typer.Context) -> None:
    """Check the workflow files in --config; errors name the file and line."""
    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    for wf in rt.workflows.defs.values():
        render.console.print(render.esc(f"{wf.path}: ok ({len(wf.states)} states, "
                                         f"{len(wf.events)} events, version {wf.version})"))


@app.command()
def explain(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str | None, typer.Option(help="Judge the sign-off criteria for this person.")] = None,
) -> None:
    """Each closure criterion met or unmet, with the facts and the rule behind it."""
    st = state_of(ctx)
    result = assess.explain(st.runtime(), plan_id, signer=by)
    if st.json:
        render.emit_json(result)
        return
    render.explanation(result)


@app.command()
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
    st = state_of(ctx)
    rt = st.runtime(writes=True)
    policy.check_command_line(rt, by, policy.Act.SIGN_OFF, [plan_id])
    result = lifecycle.sign_off(
        rt, plan_id, "closure", by=by, meeting=meeting,
        evidence_ids=evidence or [], evidence_reviewed=evidence_note or [],
        residual_risks=residual_risk or [], no_residual_risk=no_residual_risk,
        learning_embedded=learning_embedded or [], record_file=record)
    _moved(st, result)


@app.command()
def lint(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PLAN-or-FILE")],
) -> None:
    """Credibility checks from rules/credibility.yaml; exit 1 while an error remains."""
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


@app.command("learning")
def learning_summary(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who wrote it.")],
    summary: Annotated[str, typer.Option(help="What was learned.")],
    embedded_in: Annotated[list[str] | None, typer.Option(
        help="Where it is embedded: induction, supervision, training … (repeatable).")] = None,
) -> None:
    """Record the plan's learning summary and where the learning is embedded."""
    st = state_of(ctx)
    row = assess.record_learning(st.runtime(writes=True), plan_id, by=by, summary=summary,
                                 embedded_in=embedded_in or [])
    if st.json:
        render.emit_json(queries.row_dict(row))
    else:
        render.console.print(render.esc(f"{plan_id}: learning summary recorded (embedded in "
                                         f"{', '.join(row.embedded_in) or 'nowhere yet'})"))


@app.command("learning-review")
def learning_review(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who led the review (their id).")],
    found: Annotated[str, typer.Option(help="What the review found: is the learning alive?")],
) -> None:
    """Record a post-closure learning review and what it found; the next one falls due at
    the next interval the rules set."""
    st = state_of(ctx)
    result = lifecycle.fire_event(st.runtime(), plan_id, "review_learning", by=by, note=found)
    _moved(st, result)


@app.command("add-action")
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
    from qip_flow.services import growth

    st = state_of(ctx)
    row = growth.add_action(st.runtime(), plan_id, by=by, title=title, owner=owner,
                            due=parse_day(due, field="--due"), finding=finding,
                            risks=risk or [], systemic=systemic, action_id=action_id)
    if st.json:
        render.emit_json(queries.row_dict(row))
    else:
        render.console.print(f"{row.id}: added ({row.state}), owner {row.owner_id}, due {row.due}")


@app.command()
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


@app.command()
def reassess(
    ctx: typer.Context,
    plan_ids: Annotated[list[str] | None, typer.Argument(metavar="[PLAN]...")] = None,
) -> None:
    """Re-rate live plans for --now (RAG, reopening on deterioration)."""
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


@app.command()
def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Option("--dir", help="Where to build the demo.")] = Path("."),
) -> None:
    """Play the seeds' scenarios on a simulated clock in a fresh SQLite database."""
    from qip_flow.services.demo import run_demo

    st = state_of(ctx)
    run_demo(folder, config_dir=config_folder(st.config), out=render.console)


command_help.apply(app)

GLOBAL_FLAGS = ("--json", "--verbose", "-v", "--quiet", "-q")
GLOBAL_OPTIONS = ("--db", "--config", "--now", "--channels", "--log-format")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept the global options anywhere on the line (people type ``qip explain PLAN --json``
    or ``qip plans --db riverside.db``): they move before the command. ``--`` ends the search."""
    cut = argv.index("--") if "--" in argv else len(argv)
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < cut:
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS or (name in GLOBAL_OPTIONS and "=" in arg):
            hoisted.append(arg)
        elif arg in GLOBAL_OPTIONS and i + 1 < cut:
            hoisted += [arg, argv[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return [*hoisted, *rest, *argv[cut:]]


def refuse_overlong_arguments(argv: list[str]) -> None:
    """No argument longer than any text qip_flow keeps (a note, a reason): refused before any
    command runs, naming the option it was given to."""
    for i, arg in enumerate(argv):
        field = argv[i - 1] if i and argv[i - 1].startswith("--") else f"argument {i + 1}"
        check_text(arg, field=field)


def expected_failure(exc: BaseException) -> QipError | None:
    """The clear message for a failure that is not a bug — a database that is locked or out of
    reach, a file that cannot be written — or None for a bug."""
    from sqlalchemy.exc import DatabaseError

    from qip_flow.store.db import database_problem

    if isinstance(exc, DatabaseError):
        return database_problem(exc)
    if isinstance(exc, OSError):
        name = exc.filename or "a file"
        reason = exc.strerror or str(exc)
        if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError,
                            NotADirectoryError, FileExistsError)):
            return InvalidInput(f"{name}: {reason}; check the path and its permissions")
        return Unavailable(f"{name}: {reason}; nothing was changed: fix it and try again")
    return None


def main() -> None:
    """Entry point: map qip_flow errors to exit codes and readable messages. 0 done, 1 refused,
    2 bad input, 3 unavailable (try again), 4 a bug (with its traceback, to report)."""
    argv = hoist_global_flags(sys.argv[1:])
    as_json = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    try:
        refuse_overlong_arguments(argv)
        code = app(args=argv, prog_name="qip", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:
        # Usage errors: click's, or the copies typer vendors (not subclasses of click's).
        if not isinstance(exc, QipError) and callable(getattr(exc, "show", None)) \
                and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        error = exc if isinstance(exc, QipError) else expected_failure(exc)
        if as_json:  # a script reads the error as it reads the result
            kind = {1: "refused", 3: "unavailable"}.get(getattr(error, "exit_code", 0), "error")
            sys.stderr.write(json.dumps({
                kind: mask_secrets(error.message if error else f"internal error: {exc!r}"),
                "details": [mask_secrets(d) for d in error.details] if error else [],
                "type": type(error or exc).__name__,
                "exit_code": error.exit_code if error else INTERNAL_ERROR}) + "\n")
            sys.exit(error.exit_code if error else INTERNAL_ERROR)
        if error is None:
            render.errors.print("[bold red]internal error:[/bold red] this is a bug in qip_flow; "
                                "nothing was changed. Please report it with the trace below.")
            render.errors.print(escape(mask_secrets("".join(traceback.format_exception(exc)))))
            sys.exit(INTERNAL_ERROR)
        label = {1: "[bold yellow]refused:[/bold yellow]",
                 3: "[bold yellow]unavailable:[/bold yellow]"}.get(error.exit_code,
                                                                 "[bold red]error:[/bold red]")
        render.errors.print(f"{label} {escape(mask_secrets(str(error)))}")
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
