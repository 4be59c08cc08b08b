"""``qip rules``: check, test, show and document the rules files in --config. The rules
tooling (and the engine behind it) is imported by the command that runs, not by ``qip --help``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qip_flow.cli import render
from qip_flow.cli.state import state_of

rules_app = typer.Typer(no_args_is_help=True, help="Check, test and show the rules files.")


@rules_app.command("check")
def rules_check(ctx: typer.Context) -> None:
    """Validate every rules file: schema, unknown facts or outcomes, wrong types, rules that
    can never fire or that contradict each other (errors name the file and line; exit 2)."""
    from qip_flow.decide import tooling

    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    book = rt.rules
    untested = tooling.rules_without_examples(book)
    if st.json:
        render.emit_json({"ok": True, "version": book.version, "files": [f.path for f in book.files],
                          "rules": len(book.rules), "rules_without_examples": untested})
        return
    for rf in book.files:
        render.console.print(f"{render.esc(rf.path)}: ok ({len(rf.rules)} rules, "
                             f"{len(rf.examples)} examples)")
    render.console.print(f"rules version {book.version}")
    for rid in untested:
        render.console.print(f"[yellow]note:[/yellow] no example shows rule {render.esc(rid)} firing")


@rules_app.command("test")
def rules_test(ctx: typer.Context) -> None:
    """Run every example in the rules files through the engine; exit 1 on any failure."""
    from qip_flow.decide import tooling

    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    results = tooling.run_examples(rt.rules, rt.decide.engine)
    failed = [r for r in results if not r.passed]
    if st.json:
        render.emit_json([{"file": r.file, "example": r.name, "passed": r.passed,
                           "expected": r.expected, "fired": r.fired} for r in results])
    else:
        for r in results:
            mark = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
            render.console.print(f"{mark} {render.esc(Path(r.file).name)}: {render.esc(r.name)}")
            if not r.passed:
                if r.missing:
                    render.console.print("     expected to fire but did not: "
                                         + render.esc(", ".join(r.missing)))
                if r.unexpected:
                    render.console.print("     fired but not expected: "
                                         + render.esc(", ".join(r.unexpected)))
        render.console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@rules_app.command("show")
def rules_show(ctx: typer.Context) -> None:
    """The rules in force, as a table, with their version."""
    from qip_flow.decide import tooling

    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    rows = tooling.rules_table(rt.rules)
    if st.json:
        render.emit_json({"version": rt.rules.version, "rules": rows})
        return
    render.table(f"Rules in force ({rt.rules.version})", ["id", "about", "when", "then", "description"],
                 [[r["id"], r["about"], r["when"],
                   r["then"] + "".join(f" {k}={v}" for k, v in r["params"].items()),
                   r["description"]] for r in rows])


@rules_app.command("docs")
def rules_docs(out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None
               ) -> None:
    """Print (or write) docs/rules.md, generated from the fact vocabulary and outcomes."""
    from qip_flow.decide import tooling

    text = tooling.docs_markdown()
    if out:
        out.write_text(text + "\n", encoding="utf-8")
    else:
        render.console.out(text, highlight=False)


@rules_app.command("publish")
def rules_publish(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder holding workflows/ and "
                                           "rules/ to put in force.")],
    by: Annotated[str, typer.Option(help="Who publishes (the level a variation needs).")],
) -> None:
    """Put DIR's rules and workflows in force for every change from now on: checked whole,
    signed at the variation level of the rules in force, kept in the database and the audit
    trail."""
    from qip_flow.services.publishing import publish

    st = state_of(ctx)
    done = publish(st.runtime(), folder, by=by)
    if st.json:
        render.emit_json({"version": done.version, "previous": done.previous,
                          "changed_files": done.changed_files,
                          "already_in_force": done.already_in_force})
    elif done.already_in_force:
        render.console.print(f"{folder}: already in force ({done.version}); nothing published")
    else:
        render.console.print(f"published {done.version} (was {done.previous or 'none'}): "
                             f"{', '.join(done.changed_files)}")
        render.console.print("run `qip reassess` to re-rate live plans under them now")


@rules_app.command("preview")
def rules_preview(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder holding workflows/ and "
                                           "rules/ to compare with the published ones.")],
) -> None:
    """List the live plans whose RAG, messages due, next check or closure decision would
    change under DIR's rules, compared with the published ones (as at --now). Changes
    nothing."""
    from qip_flow.services.publishing import preview

    st = state_of(ctx)
    published, candidate, lines = preview(st.runtime(), folder)
    if st.json:
        render.emit_json({"published": published, "preview": candidate,
                          "plans": [{"plan": ln.plan_id, "state": ln.state,
                                     "changes": {k: {"published": a, "preview": b}
                                                 for k, (a, b) in ln.changes.items()}}
                                    for ln in lines]})
        return
    render.table(f"{folder} ({candidate}) against the published {published}",
                 ["plan", "state", "what", "published", "preview"],
                 [[ln.plan_id, ln.state, what, _shown(a), _shown(b)]
                  for ln in lines for what, (a, b) in ln.changes.items()])
    render.console.print(f"{len(lines)} live plan(s) would change")


def _shown(value: object) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) or "none"
    return "–" if value is None else str(value)


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
