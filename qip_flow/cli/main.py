"""The ``qip`` command: a thin layer over the services. Exit codes: 0 done, 1 refused (a guard,
a rule, missing authority), 2 bad input (unknown id, bad file, bad arguments)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from qip_flow.cli import render
from qip_flow.clock import Clock, parse_day, parse_when
from qip_flow.errors import InvalidInput, QipError
from qip_flow.runtime import Runtime, config_folder
from qip_flow.services import lifecycle, loading, queries
from qip_flow.store import audit as audit_trail
from qip_flow.store.db import Database

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  rich_markup_mode="rich",
                  help="qip_flow: Quality Improvement Plans that commissioners and CQC can trust.")
workflow_app = typer.Typer(no_args_is_help=True, help="Show and check the workflow files.")
app.add_typer(workflow_app, name="workflow")


class State:
    """Global options, turned into a Runtime when a command first needs one."""

    def __init__(self, db: str | None, config: str | None, now: str | None, json_out: bool):
        self.db_url, self.config, self.now, self.json = db, config, now, json_out
        self._rt: Runtime | None = None

    def runtime(self, *, schema_required: bool = True) -> Runtime:
        if self._rt is None:
            clock = Clock(parse_when(self.now) if self.now else None)
            self._rt = Runtime(db=Database(self.db_url), clock=clock,
                               config_dir=config_folder(self.config))
        if schema_required:
            self._rt.db.require_schema()
        return self._rt


def _state(ctx: typer.Context) -> State:
    return ctx.ensure_object(State)


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(envvar="QIP_DATABASE_URL",
                                           help="Database URL or SQLite file [default: ./qip.db]")] = None,
    config: Annotated[str | None, typer.Option(envvar="QIP_CONFIG",
                                               help="Folder holding workflows/ and rules/.")] = None,
    now: Annotated[str | None, typer.Option(envvar="QIP_NOW",
                                            help="Pretend it is this date or date-time (ISO).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    ctx.obj = State(db, config, now, json_out)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database schema, or upgrade it to this version."""
    st = _state(ctx)
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
    st = _state(ctx)
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
    st = _state(ctx)
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
    st = _state(ctx)
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
    st = _state(ctx)
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
    st = _state(ctx)
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
    on: Annotated[str | None, typer.Option(help="Date measured [default: today].")] = None,
    source: Annotated[str, typer.Option(help="Where the value comes from.")] = "",
    reaudit: Annotated[bool, typer.Option(help="This value is a re-audit.")] = False,
    by: Annotated[str | None, typer.Option(help="Who recorded it.")] = None,
) -> None:
    """Record an indicator measurement."""
    st = _state(ctx)
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
    st = _state(ctx)
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
def schema(kind: Annotated[str, typer.Argument(help="organisation, plan or workflow")]) -> None:
    """Print the JSON Schema of a file format (for editor completion)."""
    from qip_flow.config import formats
    from qip_flow.config.workflow import WorkflowDef

    schemas: dict[str, Any] = {k: m.model_json_schema() for k, m in formats.SCHEMAS.items()}
    schemas["workflow"] = WorkflowDef.model_json_schema(by_alias=True)
    if kind not in schemas:
        raise InvalidInput(f"unknown kind '{kind}'; kinds: {', '.join(sorted(schemas))}")
    render.emit_json(schemas[kind])


@workflow_app.command("show")
def workflow_show(ctx: typer.Context,
                  kind: Annotated[str, typer.Argument(help="plan or action")]) -> None:
    """Print the workflow as a Mermaid state diagram, drawn from its YAML file."""
    from qip_flow.workflow.diagram import mermaid

    st = _state(ctx)
    rt = st.runtime(schema_required=False)
    if kind not in rt.workflows.defs:
        raise InvalidInput(f"unknown workflow '{kind}'; use plan or action")
    sys.stdout.write(mermaid(rt.workflows.defs[kind]) + "\n")


@workflow_app.command("check")
def workflow_check(ctx: typer.Context) -> None:
    """Check the workflow files in --config; errors name the file and line."""
    st = _state(ctx)
    rt = st.runtime(schema_required=False)
    for wf in rt.workflows.defs.values():
        render.console.print(f"{wf.path}: ok ({len(wf.states)} states, {len(wf.events)} events, "
                             f"version {wf.version})")


@app.command()
def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Option("--dir", help="Where to build the demo.")] = Path("."),
) -> None:
    """Play the seeds' scenarios on a simulated clock in a fresh SQLite database."""
    from qip_flow.services.demo import run_demo

    st = _state(ctx)
    run_demo(folder, config_dir=config_folder(st.config), out=render.console)


def main() -> None:
    """Entry point: map qip_flow errors to exit codes and readable messages."""
    try:
        app(standalone_mode=False)
    except QipError as exc:
        render.errors.print(f"[bold red]error:[/bold red] {exc}" if exc.exit_code == 2
                            else f"[bold yellow]refused:[/bold yellow] {exc}", markup=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors come here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
    sys.exit(0)


