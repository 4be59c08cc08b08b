"""The ``qip`` command: a thin layer over the services. Exit codes: 0 done, 1 refused (a guard,
a rule, missing authority), 2 bad input (unknown id, bad file, bad arguments)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from qip_flow.cli import render
from qip_flow.cli.notify import register as register_notify_commands
from qip_flow.cli.reports import register as register_report_commands
from qip_flow.cli.rules import rules_app
from qip_flow.cli.state import State, state_of
from qip_flow.clock import parse_day
from qip_flow.errors import InvalidInput, QipError
from qip_flow.runtime import config_folder
from qip_flow.services import assess, lifecycle, loading, queries
from qip_flow.store import audit as audit_trail

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  rich_markup_mode="rich",
                  help="qip_flow: Quality Improvement Plans that commissioners and CQC can trust.")
workflow_app = typer.Typer(no_args_is_help=True, help="Show and check the workflow files.")
app.add_typer(workflow_app, name="workflow")
app.add_typer(rules_app, name="rules")
register_notify_commands(app)
register_report_commands(app)


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(envvar="QIP_DATABASE_URL",
                                           help="Database URL or SQLite file (default: ./qip.db)")] = None,
    config: Annotated[str | None, typer.Option(envvar="QIP_CONFIG",
                                               help="Folder holding workflows/ and rules/.")] = None,
    now: Annotated[str | None, typer.Option(envvar="QIP_NOW",
                                            help="Pretend it is this date or date-time (ISO).")] = None,
    channels: Annotated[str | None, typer.Option(
        envvar="QIP_CHANNELS", help="Apprise YAML channels file (default: "
        "CONFIG/channels.yaml, else a local file beside the database)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    ctx.obj = State(db, config, now, json_out, channels)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database schema, or upgrade it to this version."""
    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    before, after = rt.db.init()
    if st.json:
        render.emit_json({"database": rt.db.url, "from": before, "to": after})
    elif before == after:
        render.console.print(f"{rt.db.url}: schema is up to date ({after})")
    else:
        render.console.print(f"{rt.db.url}: schema {before or 'empty'} → {after}")


@app.command()
def load(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="YAML files or folders of them.")],
    by: Annotated[str | None, typer.Option(help="Who is loading (for the audit trail).")] = None,
) -> None:
    """Load people, services, risks and plans: all files or none; loading again is harmless."""
    st = state_of(ctx)
    report = loading.load_files(st.runtime(), paths, actor=by or _user())
    if st.json:
        render.emit_json([{"file": f, "record": r, "outcome": o} for f, r, o in report.changes])
        return
    render.table(None, ["file", "record", "outcome"], [list(c) for c in report.changes])
    render.console.print(f"{report.count('added')} added, {report.count('updated')} updated, "
                         f"{report.count('unchanged')} unchanged")


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
    with st.runtime().db.read() as session:
        rows = queries.list_plans(session, state=state, service=service, theme=theme, rag=rag)
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
        render.console.print(f"{result.entity_id}: {move.event.name} recorded ({move.dest})")
    else:
        render.console.print(f"{result.entity_id}: {move.event.name}: {move.source} → "
                             f"[bold]{move.dest}[/bold]")


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
        st.runtime(), entity_id, event, by=by, note=note, reason=reason,
        due=parse_day(due, field="--due") if due else None, evidence=evidence or [])
    _moved(st, result)


@app.command()
def signoff(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    purpose: Annotated[str, typer.Option("--for", help="approval, closure or step_down.")],
    by: Annotated[str, typer.Option(help="Who signs off (their id).")],
    group: Annotated[str | None, typer.Option(help="The governance group signing.")] = None,
    meeting: Annotated[str, typer.Option(help="Meeting reference, e.g. 'Board 2026-02-10'.")] = "",
    evidence_reviewed: Annotated[list[str] | None, typer.Option(help="Repeatable.")] = None,
    residual_risk: Annotated[list[str] | None, typer.Option(
        help="A residual risk and how it is monitored (repeatable).")] = None,
    learning: Annotated[list[str] | None, typer.Option(
        help="Where learning was embedded (repeatable).")] = None,
    note: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Record a sign-off and make the move it authorises (approve, close, step down)."""
    st = state_of(ctx)
    result = lifecycle.sign_off(
        st.runtime(), plan_id, purpose, by=by, group=group, meeting=meeting,
        evidence_reviewed=evidence_reviewed or [], residual_risks=residual_risk or [],
        learning_embedded=learning or [], note=note)
    _moved(st, result)


@app.command()
def measure(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    indicator: Annotated[str, typer.Argument(help="The indicator id within the plan.")],
    value: Annotated[float, typer.Argument()],
    by: Annotated[str, typer.Option(help="Who recorded it (their id).")],
    on: Annotated[str | None, typer.Option(help="Date measured (default: today).")] = None,
    source: Annotated[str, typer.Option(help="Where the value comes from.")] = "",
    reaudit: Annotated[bool, typer.Option(help="This value is a re-audit.")] = False,
) -> None:
    """Record an indicator measurement."""
    st = state_of(ctx)
    m = lifecycle.record_measurement(st.runtime(), plan_id, indicator, value,
                                     on=parse_day(on, field="--on") if on else None,
                                     source=source, reaudit=reaudit, by=by)
    if st.json:
        render.emit_json(queries.row_dict(m))
    else:
        render.console.print(f"{plan_id}/{indicator}: {value} on {m.on}")


@app.command()
def audit(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(
        metavar="[ID|verify]", help="A plan or action id, or 'verify' to check the chain.")] = None,
    last: Annotated[int, typer.Option(help="How many recent events to list.")] = 50,
) -> None:
    """List the audit trail (of one plan or action), or `qip audit verify` the hash chain."""
    st = state_of(ctx)
    rt = st.runtime()
    if target == "verify":
        with rt.db.read() as session:
            check = audit_trail.verify(session)
        if st.json:
            render.emit_json({"ok": check.ok, "events": check.events, "broken_at": check.broken_at,
                              "problem": check.problem})
        elif check.ok:
            render.console.print(f"audit trail intact: {check.events} events verified")
        if not check.ok:
            render.errors.print(f"audit trail broken: {check.problem}; "
                                f"{check.events} events before it verify")
            raise typer.Exit(1)
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


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="organisation, plan, workflow or rules")]
           ) -> None:
    """Print the JSON Schema of a file format (for editor completion)."""
    from qip_flow.config import formats
    from qip_flow.config.workflow import workflow_file_schema
    from qip_flow.decide.tooling import rules_schema

    schemas: dict[str, Any] = {k: m.model_json_schema() for k, m in formats.SCHEMAS.items()}
    schemas["workflow"] = workflow_file_schema()
    schemas["rules"] = rules_schema()
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
        render.console.print(f"{wf.path}: ok ({len(wf.states)} states, {len(wf.events)} events, "
                             f"version {wf.version})")


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
    meeting: Annotated[str, typer.Option(help="Meeting reference.")] = "",
    evidence_reviewed: Annotated[list[str] | None, typer.Option(help="Repeatable.")] = None,
    residual_risk: Annotated[list[str] | None, typer.Option(
        help="A residual risk and how it is monitored (repeatable).")] = None,
    learning: Annotated[list[str] | None, typer.Option(
        help="Where learning was embedded (repeatable).")] = None,
) -> None:
    """Close a plan: only if every closure criterion holds and the person has the authority;
    otherwise exit 1 with every unmet criterion, and nothing changes."""
    st = state_of(ctx)
    result = lifecycle.sign_off(
        st.runtime(), plan_id, "closure", by=by, meeting=meeting,
        evidence_reviewed=evidence_reviewed or [], residual_risks=residual_risk or [],
        learning_embedded=learning or [])
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
    row = assess.record_learning(st.runtime(), plan_id, by=by, summary=summary,
                                 embedded_in=embedded_in or [])
    if st.json:
        render.emit_json(queries.row_dict(row))
    else:
        render.console.print(f"{plan_id}: learning summary recorded "
                             f"(embedded in {', '.join(row.embedded_in) or 'nowhere yet'})")


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
    plan_id: Annotated[str, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option(help="Who signs the variation.")],
    set_: Annotated[list[str], typer.Option("--set", help="field=value, e.g. sustain_days=120, "
                                            "signoff.group=Board (repeatable).")],
    reason: Annotated[str, typer.Option(help="Why the criteria change.")],
    meeting: Annotated[str, typer.Option(help="Meeting reference.")] = "",
) -> None:
    """Change pinned closure criteria: a variation signed off like closure."""
    st = state_of(ctx)
    result = lifecycle.sign_off(st.runtime(), plan_id, "variation", by=by, meeting=meeting,
                                reason=reason, variation=assess.parse_variation(set_))
    _moved(st, result)


@app.command()
def reassess(
    ctx: typer.Context,
    plan_ids: Annotated[list[str] | None, typer.Argument(metavar="[PLAN]...")] = None,
) -> None:
    """Re-rate live plans for --now (RAG, reopening on deterioration)."""
    st = state_of(ctx)
    results = assess.reassess_all(st.runtime(), plan_ids or None)
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


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept ``--json`` anywhere on the line (people type ``qip explain PLAN --json``); it is a
    global option, so it moves before the command."""
    if "--json" not in argv:
        return argv
    cut = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:cut] if a != "--json"]
    return ["--json", *head, *argv[cut:]]


def main() -> None:
    """Entry point: map qip_flow errors to exit codes and readable messages."""
    try:
        code = app(args=hoist_global_flags(sys.argv[1:]), prog_name="qip",
                   standalone_mode=False)
    except QipError as exc:
        label = "[bold red]error:[/bold red]" if exc.exit_code == 2 else \
            "[bold yellow]refused:[/bold yellow]"
        render.errors.print(f"{label} {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        # Usage errors: click's, or the copies typer vendors (not subclasses of click's).
        if callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)
