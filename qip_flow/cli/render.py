"""Printing: Rich tables for people, JSON for programs (``--json``). Text from the database or
from files is never read as Rich markup nor as emoji codes: :func:`table` shows every cell that
is not :class:`Styled` as plain text, and every message escapes the data it shows with
:func:`esc`."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# emoji=False: a ":name:" in a note or a title is printed as typed, never as an emoji
console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 132)
errors = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)  # never break a path

RAG_STYLE = {"red": "bold red", "amber": "bold yellow", "green": "bold green"}


class Styled(str):
    """Markup written here (a coloured RAG, a severity), which a table shows styled."""


def esc(value: Any) -> str:
    """Data shown inside a message: its ``[…]`` printed as typed, never read as markup."""
    return escape("" if value is None else str(value))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def rag(value: str | None) -> Styled:
    if not value:
        return Styled("[dim]–[/dim]")
    return Styled(f"[{RAG_STYLE.get(value, '')}]{esc(value.upper())}[/]")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """The first column holds ids: never wrapped; the others fold."""
    t = Table(title=esc(title) if title else None, title_justify="left", show_lines=False)
    for i, c in enumerate(columns):
        t.add_column(c, overflow="fold", no_wrap=i == 0)
    for r in rows:  # data as Text: printed as typed, and no markup to parse for each cell
        t.add_row(*[v if isinstance(v, Styled) else Text("" if v is None else str(v))
                    for v in r])
    console.print(t)


def plain(value: Any) -> str:
    """A value as a person reads it: no Python reprs (``['a']``, ``{'level': …}``, ``None``)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set):
        return ", ".join(plain(v) for v in value) or "–"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {plain(v)}" for k, v in value.items()) or "–"
    return str(value)


def history(events: list[dict[str, Any]]) -> None:
    rows = []
    for e in events:
        move = f"{plain(e['from'])} → {plain(e['to'])}" if e["from"] or e["to"] else ""
        why = e["reason"] or e["detail"].get("note", "")
        rows.append([e["seq"], e["at"][:16].replace("T", " "), e["actor"], e["entity"],
                     e["what"], move, why])
    table("History", ["#", "when", "who", "what on", "event", "move", "why / note"], rows)


def show_plan(d: dict[str, Any]) -> None:
    console.print(f"[bold]{esc(d['id'])}[/bold] {esc(d['title'])}")
    console.print(f"  state [bold]{esc(d['state'])}[/bold]  RAG {rag(d['rag'])}  service "
                  f"{esc(d['service_id'])}  theme {esc(d['theme'])}")
    console.print(f"  source {esc(d['source_type'])}: {esc(d['source_reference'])} "
                  f"({esc(d['source_date'] or '?')})")
    console.print(f"  accountable owner {esc(d['owner_name'])}  senior sponsor "
                  f"{esc(d['sponsor_name'])}  risks {esc(', '.join(d['risk_ids']) or '–')}")
    crit = d["closure_criteria"]
    if crit:
        console.print("  closure criteria " + ("(pinned)" if crit.get("pinned_at") else "(draft)")
                      + ": " + esc("; ".join(f"{k.replace('_', ' ')} {plain(v)}"
                                             for k, v in crit.items() if k != "pinned_at")))
    table("Findings", ["id", "finding", "root causes"],
          [[f["ref"], f["description"], "; ".join(f["root_causes"])] for f in d["findings"]])
    table("Actions", ["id", "action", "owner", "due", "state", "revisions", "evidence"],
          [[a["ref"], a["description"], a["owner_name"], a["due"], a["state"],
            len(a["revisions"]), len(a["evidence"])] for a in d["actions"]])
    if d["indicators"]:
        table("Indicators", ["id", "name", "target", "baseline", "latest"],
              [[i["ref"], i["name"], f"{'≥' if i['direction'] == 'up' else '≤'} {i['target']}",
                i["baseline"], (f"{i['measurements'][-1]['value']} on {i['measurements'][-1]['on']}"
                                if i["measurements"] else "–")] for i in d["indicators"]])
    if d["recorded_evidence"]:
        table("Recorded evidence (ids for a sign-off's --evidence)",
              ["id", "on", "what", "reference", "action", "by"],
              [[e["id"], e["on"], e["description"], e["reference"],
                (e["action_id"] or "").rpartition("/")[2], e["by_id"]]
               for e in d["recorded_evidence"]])
    if d["signoffs"]:
        table("Sign-offs", ["purpose", "by", "level", "group", "on", "meeting", "evidence",
                            "residual risks", "learning embedded"],
              [[s["purpose"], s["by_id"], s["level"], s["group"], s["on"], s["meeting_reference"],
                ", ".join([*map(str, s["evidence_ids"]), *s["evidence_reviewed"]]),
                "none" if s["no_residual_risk"] else "; ".join(s["residual_risks"]),
                "; ".join(s["learning_embedded"])] for s in d["signoffs"]])
    history(d["history"])


def show_action(d: dict[str, Any]) -> None:
    console.print(f"[bold]{esc(d['id'])}[/bold] {esc(d['description'])}")
    console.print(f"  state [bold]{esc(d['state'])}[/bold]  owner {esc(d['owner_name'])}  due "
                  f"{esc(d['due'])} (baseline {esc(d['baseline_due'])})")
    if d["revisions"]:
        table("Due-date revisions", ["from", "to", "reason", "approved by", "when"],
              [[r["previous_due"], r["new_due"], r["reason"], r["approved_by_id"], r["at"][:10]]
               for r in d["revisions"]])
    if d["evidence"]:
        table("Evidence", ["on", "what", "reference", "by"],
              [[e["on"], e["description"], e["reference"], e["by_id"]] for e in d["evidence"]])
    history(d["history"])


def severity(value: str) -> Styled:
    style = {"error": "bold red", "warning": "yellow", "info": "dim"}.get(value, "")
    return Styled(f"[{style}]{esc(value)}[/]")


def explanation(result: dict[str, Any]) -> None:
    closure = result["closure"]
    pinned = "pinned at approval" if result["criteria_pinned"] else "not yet pinned (draft)"
    console.print(f"[bold]{esc(result['plan'])}[/bold] ({esc(result['state'])}), rules "
                  f"{esc(result['rules_version'])}; closure criteria {pinned}")
    console.print(f"Closure test {esc(result['closure_rules_version'])}: "
                  f"{esc(result['closure_rules_note'])}")
    rows = []
    for c in closure["criteria"]:
        rows.append([Styled("[green]met[/green]" if c["met"] else "[red]unmet[/red]"),
                     c["criterion"], c["description"], "; ".join(c["why_not"]), c["rule"]])
    table("Closure criteria", ["", "criterion", "what it asks", "why not", "rule"], rows)
    verdict = ("[green]every criterion is met[/green]" if closure["all_met"]
               else f"[red]{sum(1 for c in closure['criteria'] if not c['met'])} criteria unmet[/red]")
    console.print(f"Closure: {verdict}")
    rag_ = result["rag"]
    console.print(f"RAG: {rag(rag_['rating'])} — {esc(rag_['reason'])}")
    if result["step_down_preferred"]:
        rules = ", ".join(result["step_down_preferred"])
        console.print(f"The rules prefer step-down into monitoring ({esc(rules)}).")
