"""``qip rules``: check, test, show and document the rules files in --config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qip_flow.cli import render
from qip_flow.cli.state import state_of
from qip_flow.decide.tooling import (
    docs_markdown,
    rules_table,
    rules_without_examples,
    run_examples,
)

rules_app = typer.Typer(no_args_is_help=True, help="Check, test and show the rules files.")


@rules_app.command("check")
def rules_check(ctx: typer.Context) -> None:
    """Validate every rules file: schema, unknown facts or outcomes, wrong types, rules that
    can never fire or that contradict each other (errors name the file and line; exit 2)."""
    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    book = rt.rules
    untested = rules_without_examples(book)
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
    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    results = run_examples(rt.rules, rt.decide.engine)
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
    st = state_of(ctx)
    rt = st.runtime(schema_required=False)
    rows = rules_table(rt.rules)
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
    text = docs_markdown()
    if out:
        out.write_text(text + "\n", encoding="utf-8")
    else:
        render.console.out(text, highlight=False)
