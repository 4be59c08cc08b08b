"""Setting up and running qip_flow: ``qip new``, ``qip config show``, ``qip health``,
``qip backup`` and ``qip restore``."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from qip_flow import SHIPPED_CONFIG
from qip_flow.cli import render
from qip_flow.cli.notify import parse_every
from qip_flow.cli.state import state_of
from qip_flow.errors import InvalidInput, QipError

new_app = typer.Typer(no_args_is_help=True, help="Start a provider's own governance folder, or a "
                      "new plan file.")
config_app = typer.Typer(no_args_is_help=True, help="The settings in force and where each came from.")

SCAFFOLD = resources.files("qip_flow") / "scaffold"
def _schema_line(schema_file: str) -> str:
    return f"# yaml-language-server: $schema={schema_file}\n"


def _write_schemas(folder: Path) -> None:
    """The JSON Schema of each format, for editors that complete and check YAML as you type."""
    from qip_flow.cli.setting_up import json_schemas

    (folder / "schemas").mkdir(parents=True, exist_ok=True)
    for kind, schema in json_schemas().items():
        (folder / "schemas" / f"{kind}.json").write_text(json.dumps(schema, indent=2) + "\n")


def _with_schema(text: str, schema_file: str) -> str:
    lines = [line for line in text.splitlines(keepends=True)
             if not line.startswith("# yaml-language-server:")]
    return _schema_line(schema_file) + "".join(lines)


@new_app.command("config")
def new_config(folder: Annotated[Path, typer.Argument(metavar="DIR",
                                                       help="A new (or empty) folder.")]) -> None:
    """Write a provider's own governance folder: the workflows and rules to edit, a commented
    channels file, an organisation file to fill in, a plan template, qip.toml and the JSON
    Schemas that editors use to check each file as you type."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InvalidInput(f"{folder}: exists and is not empty; name a new folder")
    for part, kind in (("workflows", "workflow"), ("rules", "rules")):
        for source in sorted((SHIPPED_CONFIG / part).glob("*.yaml")):
            target = folder / part / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_with_schema(source.read_text(encoding="utf-8"),
                                           f"../schemas/{kind}.json"), encoding="utf-8")
    organisation = (SCAFFOLD / "organisation.yaml").read_text(encoding="utf-8")
    (folder / "organisation.yaml").write_text(_with_schema(organisation, "schemas/organisation.json"))
    for name in ("channels.yaml", "qip.toml"):
        (folder / name).write_text((SCAFFOLD / name).read_text(encoding="utf-8"))
    (folder / "plans").mkdir()
    _write_schemas(folder)
    render.console.print(
        f"wrote {folder}: workflows/, rules/, organisation.yaml, channels.yaml, qip.toml, plans/ "
        "and schemas/.\nNext: fill in organisation.yaml, then `qip init`, `qip load "
        "organisation.yaml`, and `qip new plan --service … --source …` (docs/getting-started.md).")


def _next_plan_id(ctx: typer.Context, year: int) -> str:
    """The next free ``QIP-YEAR-NNN`` in the database, if there is one, else ``…-001``."""
    from sqlmodel import col, select

    from qip_flow.store.models import Plan

    st = state_of(ctx)
    try:
        rt = st.runtime()
    except QipError:  # no database yet: a template is still useful
        return f"QIP-{year}-001"
    with rt.db.read() as session:
        ids = session.exec(select(Plan.id).where(col(Plan.id).startswith(f"QIP-{year}-"))).all()
    numbers = [int(m.group(1)) for i in ids if (m := re.fullmatch(rf"QIP-{year}-(\d+)", i))]
    return f"QIP-{year}-{max(numbers, default=0) + 1:03d}"


@new_app.command("plan")
def new_plan(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(metavar="ID", help="The service id, as in the "
                                         "organisation file.")],
    source: Annotated[str, typer.Option(metavar="KIND", help="inspection, audit, complaint, "
                                        "incident or safeguarding.")],
    plan_id: Annotated[str | None, typer.Option("--id", metavar="ID",
                                                help="Default: the next free QIP-YEAR-NNN.")] = None,
    out: Annotated[Path | None, typer.Option(metavar="FILE",
                                             help="Default: plans/ID.yaml")] = None,
) -> None:
    """Scaffold a plan file dated today, with every part a credible plan needs."""
    from jinja2 import Template

    from qip_flow.config.formats import SourceType

    allowed = SourceType.__args__  # type: ignore[attr-defined]
    if source not in allowed:
        raise InvalidInput(f"--source: '{source}' is not one of: {', '.join(allowed)}")
    today = state_of(ctx).runtime(schema_required=False).clock.today()
    chosen = plan_id or _next_plan_id(ctx, today.year)
    target = out or Path("plans") / f"{chosen}.yaml"
    if target.exists():
        raise InvalidInput(f"{target}: already exists; name another file with --out")
    schema = Path("schemas/plan.json")
    schema_ref = str(Path(*[".."] * (len(target.parent.parts))) / schema) if target.parent.parts \
        else str(schema)
    text = Template((SCAFFOLD / "plan.yaml.j2").read_text(encoding="utf-8"),
                    keep_trailing_newline=True).render(
        schema=schema_ref, file=target, plan_id=chosen, service=service, source=source,
        today=today.isoformat(), due=(today + timedelta(days=42)).isoformat())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    render.console.print(f"wrote {target}: fill in every '…', then `qip lint {target}`")


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Each setting in force and where it came from (command line, environment, qip.toml or
    the default); secrets and passwords are masked."""
    from qip_flow import settings

    st = state_of(ctx)
    rows = [{"setting": v.setting.key, "value": settings.masked(v), "from": v.source,
             "default": v.setting.default, "flag": v.setting.flag or "", "environment": v.setting.env}
            for v in st.settings.values()]
    if st.json:
        render.emit_json(rows)
        return
    render.table(None, ["setting", "value", "from", "flag", "environment"],
                 [[r["setting"], r["value"] or f"({r['default'] or 'not set'})", r["from"], r["flag"],
                   r["environment"]] for r in rows])


def health(
    ctx: typer.Context,
    stale_after: Annotated[str, typer.Option(metavar="PERIOD", help="A tick or dispatch older "
                                             "than this is stale, e.g. 1h.")] = "1h",
    waiting_after: Annotated[str, typer.Option(metavar="PERIOD", help="A message waiting longer "
                                               "than this is a problem.")] = "1h",
) -> None:
    """Database, schema version, the last successful tick and dispatch, and the outbox's oldest
    waiting message; exit 1 when anything is stale or wrong (for a monitor or a container)."""
    from qip_flow.services import health as checks

    st = state_of(ctx)
    report = checks.check(st.runtime(schema_required=False),
                          stale_after=timedelta(seconds=parse_every(stale_after)),
                          waiting_after=timedelta(seconds=parse_every(waiting_after)))
    if st.json:
        render.emit_json(report.as_dict())
    else:
        render.console.print(f"database {report.database}: schema {report.schema or 'missing'}"
                             f" (this version: {report.schema_expected or '?'})")
        for job, info in report.jobs.items():
            render.console.print(f"{job}: last succeeded {info['last_ok'] or 'never'}")
        render.console.print("outbox: oldest waiting message "
                             f"{report.oldest_waiting.isoformat() if report.oldest_waiting else 'none'}")
        for problem in report.problems:
            render.errors.print(f"problem: {escape(problem)}")
        render.console.print("healthy" if report.healthy else "NOT healthy")
    if not report.healthy:
        raise typer.Exit(1)


def backup(ctx: typer.Context,
           folder: Annotated[Path, typer.Argument(metavar="DIR", help="A new folder.")]) -> None:
    """Copy the SQLite database (online, while qip_flow runs), the evidence folder and the audit
    checkpoints into DIR with a manifest of hashes, then verify the audit chain on the copy."""
    from qip_flow.services.backup import backup as take

    st = state_of(ctx)
    result = take(st.runtime(schema_required=False), folder)
    if st.json:
        render.emit_json(result.as_dict())
    else:
        render.console.print(f"backed up to {folder}: {len(result.files)} files; audit trail on "
                             f"the copy: {result.audit_events} events, hash chain intact")


def restore(ctx: typer.Context,
            folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder made by "
                                                   "`qip backup`.")],
            force: Annotated[bool, typer.Option("--force", help="Replace the database that "
                                                "--db names.")] = False) -> None:
    """Put a backup back: every file checked against the manifest and the copy's audit chain
    verified first; the database named by --db is replaced only with --force."""
    from qip_flow.services.backup import restore as put_back

    st = state_of(ctx)
    result = put_back(st.runtime(schema_required=False), folder, force=force)
    if st.json:
        render.emit_json(result.as_dict())
    else:
        render.console.print(f"restored {folder}: audit trail {result.audit_events} events, hash "
                             "chain intact. Run `qip audit verify --after-restore --by YOUR-ID` "
                             "to record the restore in the audit trail.")


def register(app: typer.Typer) -> None:
    app.add_typer(new_app, name="new")
    app.add_typer(config_app, name="config")
    app.command()(health)
    app.command()(backup)
    app.command()(restore)
