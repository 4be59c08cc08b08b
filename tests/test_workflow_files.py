"""The workflow files are governance data: a lead who breaks one is told the file, the line
and what is wrong, by the loader and by `qip workflow check`; the shipped files load and
`qip workflow show` draws them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import line_with

from qip_flow import SHIPPED_CONFIG
from qip_flow.errors import InvalidDefinition
from qip_flow.workflow.diagram import mermaid
from qip_flow.workflow.machines import Workflows

PLAN_FILE = SHIPPED_CONFIG / "workflows" / "plan.yaml"
SHIPPED_PLAN = yaml.safe_load(PLAN_FILE.read_text())
SHIPPED_ACTION = yaml.safe_load((SHIPPED_CONFIG / "workflows" / "action.yaml").read_text())


def event_index(name: str) -> int:
    return [e["name"] for e in SHIPPED_PLAN["events"]].index(name)


def qip(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `qip` command; a wide terminal so messages are not wrapped."""
    env = {**os.environ, "COLUMNS": "1000"}
    env.pop("QIP_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "qip_flow", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def break_plan(config: Path, old: str, new: str) -> tuple[Path, str]:
    """Replace ``old`` (unique) by ``new`` in the copied plan.yaml."""
    path = config / "workflows" / "plan.yaml"
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not unique in plan.yaml"
    text = text.replace(old, new)
    path.write_text(text)
    return path, text


def test_shipped_workflow_files_load() -> None:
    """The shipped plan and action workflows load, with every state and event the files
    declare and a content-hash version."""
    workflows = Workflows.from_folder(SHIPPED_CONFIG / "workflows")
    plan, action = workflows.defs["plan"], workflows.defs["action"]
    assert plan.state_names() == [s["name"] for s in SHIPPED_PLAN["states"]]
    assert [e.name for e in plan.events] == [e["name"] for e in SHIPPED_PLAN["events"]]
    assert action.state_names() == ["open", "in_progress", "completed", "verified"]
    assert (plan.initial, action.initial) == ("draft", "open")
    assert plan.version.startswith("plan@") and action.version.startswith("action@")
    assert plan.signoff_event("approval").name == "approve"


BREAKAGES = {
    # case: (old, new, marker on the line the message must name, expected path and problem)
    "unknown state in from": (
        "    from: draft\n    to: approved\n", "    from: drafted\n    to: approved\n",
        "from: drafted",
        f"events[{event_index('approve')}].from[0]: unknown state 'drafted' in event 'approve'"),
    "unknown state in to": (
        "    from: approved\n    to: in_progress\n", "    from: approved\n    to: in_progess\n",
        "to: in_progess",
        f"events[{event_index('start')}].to: unknown state 'in_progess' in event 'start'"),
    "unreachable state": (
        "\nevents:\n", "  - name: parked\n    description: No event leads here.\n\nevents:\n",
        "name: parked",
        f"states[{len(SHIPPED_PLAN['states'])}].name: state 'parked' is unreachable: no event "
        "leads to it from 'draft'"),
    "undefined guard": (
        "      - has_source\n", "      - has_sauce\n", "has_sauce",
        f"events[{event_index('approve')}].guards[0]: undefined guard 'has_sauce'; guards for "
        "plans: "),
    "undefined effect": (
        "effects: [mark_closed]", "effects: [mark_shut]", "mark_shut",
        f"events[{event_index('close')}].effects[0]: undefined effect 'mark_shut'; effects for "
        "plans: "),
    "unknown key": (
        "    description: Delivery begins.\n", "    descripton: Delivery begins.\n", "descripton",
        f"events[{event_index('start')}].descripton: unknown field"),
    "unknown initial state": (
        "initial: draft\n", "initial: drafts\n", "initial: drafts",
        "initial: unknown state 'drafts'; declared states: draft, approved"),
    "file for another workflow": (
        "workflow: plan\n", "workflow: action\n", "workflow: action",
        "workflow: this file must say `workflow: plan`"),
}


@pytest.mark.parametrize("case", list(BREAKAGES), ids=list(BREAKAGES))
def test_a_broken_plan_workflow_is_refused_naming_file_and_line(config: Path, case: str) -> None:
    """Each way of breaking plan.yaml is refused whole with ``file:LINE path: problem``."""
    old, new, marker, expected = BREAKAGES[case]
    path, text = break_plan(config, old, new)
    with pytest.raises(InvalidDefinition) as refused:
        Workflows.from_folder(config / "workflows")
    assert f"{path}:{line_with(text, marker)} {expected}" in str(refused.value)


def test_bad_yaml_in_a_workflow_names_line_and_column(config: Path) -> None:
    """A YAML mistake in plan.yaml is reported at its line and column."""
    path, text = break_plan(config, "    from: draft\n    to: approved\n",
                            "    from: draft\n    to: approved: yes\n")
    with pytest.raises(InvalidDefinition) as refused:
        Workflows.from_folder(config / "workflows")
    line = line_with(text, "to: approved: yes")
    assert (f"{path}:{line}:17: not valid YAML (mapping values are not allowed here)"
            in str(refused.value))


def test_every_problem_of_a_workflow_file_is_listed(config: Path) -> None:
    """Two mistakes in one file are both named, each on its own line."""
    path, text = break_plan(config, "      - has_source\n", "      - has_sauce\n")
    path.write_text(text.replace("effects: [mark_closed]", "effects: [mark_shut]"))
    with pytest.raises(InvalidDefinition) as refused:
        Workflows.from_folder(config / "workflows")
    assert len(refused.value.details) == 2
    assert "undefined guard 'has_sauce'" in refused.value.details[0]
    assert "undefined effect 'mark_shut'" in refused.value.details[1]


def test_a_missing_workflow_file_is_refused(config: Path) -> None:
    """Both workflows must be defined."""
    (config / "workflows" / "action.yaml").unlink()
    with pytest.raises(InvalidDefinition) as refused:
        Workflows.from_folder(config / "workflows")
    assert str(refused.value) == (f"{config / 'workflows' / 'action.yaml'}: missing; the action "
                                  "workflow must be defined")


@pytest.mark.parametrize("guard", ["signoff_authority: {level: seniour}",
                                   "signoff_authority: {levle: senior}"])
def test_a_misspelt_guard_parameter_is_refused(config: Path, guard: str) -> None:
    """A typo in a guard's parameters must not silently switch the guard off (with it, an
    operational worker could approve a plan): the file is refused at that line."""
    path, text = break_plan(config, "      - signoff_authority: {level: senior}\n",
                            f"      - {guard}\n")
    with pytest.raises(InvalidDefinition) as refused:
        Workflows.from_folder(config / "workflows")
    assert f"{path}:{line_with(text, guard)} " in str(refused.value)


def test_workflow_check_command_names_file_and_line(config: Path) -> None:
    """`qip --config DIR workflow check` refuses a broken copy with exit 2 and the file, line
    and problem (the shipped files load: see above)."""
    path, text = break_plan(config, "      - has_source\n", "      - has_sauce\n")
    broken = qip("--config", str(config), "workflow", "check")
    assert broken.returncode == 2
    assert (f"{path}:{line_with(text, 'has_sauce')} events[{event_index('approve')}].guards[0]: "
            "undefined guard 'has_sauce'") in broken.stderr
    assert broken.stdout == ""


def test_workflow_show_draws_every_event_as_mermaid() -> None:
    """`qip workflow show plan` prints a Mermaid state diagram with each state and event of
    plan.yaml; the action diagram is drawn the same way."""
    shown = qip("workflow", "show", "plan")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == ["stateDiagram-v2", "    [*] --> draft"]
    for event in SHIPPED_PLAN["events"]:
        sources = event["from"] if isinstance(event["from"], list) else [event["from"]]
        for source in sources:
            dest = event.get("to", source)
            assert any(line.startswith(f"    {source} --> {dest} : {event['name']}")
                       for line in lines), (source, event["name"])
    assert "    closed --> [*]" in lines and "    withdrawn --> [*]" in lines

    action = mermaid(Workflows.from_folder(SHIPPED_CONFIG / "workflows").defs["action"])
    assert "    completed --> verified : verify [not_the_completer]" in action.splitlines()
    assert all(f" : {e['name']}" in action for e in SHIPPED_ACTION["events"])
