"""The documentation cannot silently drift from the code: every named guard and effect the
engine registers is in the table of docs/workflows.md (with every parameter a guard takes),
every field of every file format is described in the section of docs/formats.md (or
docs/workflows.md) that documents it, and every `qip` command has its section in docs/cli.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from pydantic import BaseModel

from qip_flow.cli.main import app
from qip_flow.config import formats
from qip_flow.config.workflow import EventDef, StateDef, WorkflowDef
from qip_flow.workflow.effects import EFFECTS
from qip_flow.workflow.guards import GUARDS

DOCS = Path(__file__).resolve().parent.parent / "docs"
MARKER = re.compile(r"<!--\s*model:\s*(\w+)\s*-->")

FORMAT_MODELS: list[type[BaseModel]] = [
    formats.OrganisationFile,
    formats.PersonSpec,
    formats.ServiceSpec,
    formats.RiskSpec,
    formats.PlanFile,
    formats.SourceSpec,
    formats.FindingSpec,
    formats.ActionSpec,
    formats.IndicatorSpec,
    formats.ClosureSpec,
    formats.SignoffAuthority,
]
WORKFLOW_MODELS: list[type[BaseModel]] = [WorkflowDef, StateDef, EventDef]


def read(name: str) -> str:
    path = DOCS / name
    assert path.is_file(), f"{path} is missing"
    return path.read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """The text after each ``<!-- model: Name -->`` marker, up to the next marker or the next
    heading of level one or two: the part of the page that documents that model."""
    out: dict[str, str] = {}
    marks = list(MARKER.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        heading = re.search(r"^#{1,2} ", text[mark.end():end], re.MULTILINE)
        if heading:
            end = mark.end() + heading.start()
        out[mark.group(1)] = text[mark.end():end]
    return out


def file_keys(model: type[BaseModel]) -> list[str]:
    """The keys a governance lead writes in YAML for ``model`` (aliases such as ``from``)."""
    return [info.alias or name for name, info in model.model_fields.items() if not info.exclude]


def missing_fields(doc: str, models: list[type[BaseModel]]) -> list[str]:
    found = sections(read(doc))
    problems = []
    for model in models:
        part = found.get(model.__name__)
        if part is None:
            problems.append(f"{doc} has no `<!-- model: {model.__name__} -->` section")
            continue
        problems += [f"{doc}, section {model.__name__}: field `{key}` is not described"
                     for key in file_keys(model) if f"`{key}`" not in part]
    return problems


def test_formats_doc_describes_every_field_of_every_data_file_format() -> None:
    assert missing_fields("formats.md", FORMAT_MODELS) == []


def test_workflows_doc_describes_every_field_of_the_workflow_file_format() -> None:
    assert missing_fields("workflows.md", WORKFLOW_MODELS) == []


def table_row(text: str, name: str, applies_to: str) -> str | None:
    """The line of the guard or effect table that starts ``| `name` | applies_to |``."""
    row = re.compile(rf"^\|\s*`{re.escape(name)}`\s*\|\s*{applies_to}\s*\|.*$", re.MULTILINE)
    found = row.search(text)
    return found.group(0) if found else None


@pytest.mark.parametrize(("kind", "registry"), [("guard", GUARDS), ("effect", EFFECTS)])
def test_workflows_doc_lists_every_registered_guard_and_effect(
    kind: str, registry: dict[str, dict[str, object]]
) -> None:
    text = read("workflows.md")
    missing = []
    for applies_to, named in registry.items():
        for name in sorted(named):
            if table_row(text, name, applies_to) is None:
                missing.append(f"{kind} `{name}` ({applies_to}) has no row "
                               f"'| `{name}` | {applies_to} | …' in workflows.md")
    assert missing == []


def test_workflows_doc_names_every_parameter_a_guard_takes() -> None:
    text = read("workflows.md")
    missing = []
    for applies_to, named in GUARDS.items():
        for name, guard in sorted(named.items()):
            row = table_row(text, name, applies_to) or ""
            missing += [f"guard `{name}`: parameter `{param}` is not in its row"
                        for param in getattr(guard, "params", {}) if f"`{param}`" not in row]
    assert missing == []


def test_workflows_doc_lists_no_guard_or_effect_that_does_not_exist() -> None:
    text = read("workflows.md")
    known = {name for registry in (GUARDS, EFFECTS) for named in registry.values() for name in named}
    rows = re.findall(r"^\|\s*`([a-z_]+)`\s*\|\s*(?:plan|action)\s*\|", text, re.MULTILINE)
    assert sorted(set(rows) - known) == []


def command_paths() -> list[str]:
    """Every `qip` command as typed, sub-commands included (``rules check``)."""
    def walk(command: object, prefix: list[str]) -> list[str]:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return [" ".join(prefix)]
        out = [" ".join(prefix)] if prefix and getattr(command, "invoke_without_command", False) \
            else []
        for name, sub in subcommands.items():
            out += walk(sub, [*prefix, name])
        return out

    return sorted(p for p in walk(typer.main.get_command(app), []) if p)


def test_cli_doc_has_a_section_for_every_command() -> None:
    text = read("cli.md")
    missing = [path for path in command_paths()
               if not re.search(rf"^### `qip {re.escape(path)}`\s*$", text, re.MULTILINE)]
    assert missing == [], f"docs/cli.md has no '### `qip …`' section for: {', '.join(missing)}"
