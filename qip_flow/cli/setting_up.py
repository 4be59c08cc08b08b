"""The commands that set a database up: ``qip init``, ``load``, ``schema``, ``demo`` and
``workflow show|check``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from qip_flow.cli import render
from qip_flow.cli.state import login_name, state_of
from qip_flow.errors import InvalidInput
from qip_flow.runtime import config_folder

workflow_app = typer.Typer(no_args_is_help=True, help="Show and check the workflow files.")


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
    from qip_flow.store import keys
    from qip_flow.store.governance import published

    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    files = None
    if rt.config_dir is not None:
        rt.rules  # noqa: B018  (parsed now: a bad folder is refused before anything is kept)
        files = rt.files
    before, after = rt.db.init(simulation=simulation, publish=files, by=by or login_name(),
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


def load(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="YAML files or folders of them.")],
    by: Annotated[str | None, typer.Option(help="Who is loading (for the audit trail).")] = None,
) -> None:
    """Load people, services, risks and plans: all files or none; loading again is harmless."""
    from qip_flow.services import loading, queries

    st = state_of(ctx)
    report = loading.load_files(st.runtime(writes=True), paths, actor=by or login_name())
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


def json_schemas() -> dict[str, Any]:
    """The JSON Schema of every file format, by kind."""
    from qip_flow.config import formats
    from qip_flow.config.workflow import workflow_file_schema
    from qip_flow.decide.tooling import rules_schema

    schemas: dict[str, Any] = {k: m.model_json_schema() for k, m in formats.SCHEMAS.items()}
    schemas["workflow"] = workflow_file_schema()
    schemas["rules"] = rules_schema()
    return schemas


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


def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Option("--dir", help="Where to build the demo.")] = Path("."),
) -> None:
    """Play the seeds' scenarios on a simulated clock in a fresh SQLite database."""
    from qip_flow.services.demo import run_demo

    st = state_of(ctx)
    run_demo(folder, config_dir=config_folder(st.config), out=render.console)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(load)
    app.command()(schema)
    app.command()(demo)
    app.add_typer(workflow_app, name="workflow")
