"""One ``transitions`` machine per workflow file, built from its definition. Events are fired
on a :class:`Subject` without attaching it to the machine; every guard of a transition is
evaluated so a refusal lists all its reasons, not just the first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transitions import EventData, Machine, MachineError

from qip_flow.config.workflow import EventDef, WorkflowDef, load_workflow
from qip_flow.errors import InvalidDefinition, InvalidInput, Refused
from qip_flow.workflow.effects import EFFECTS
from qip_flow.workflow.guards import GUARDS
from qip_flow.workflow.subject import Subject

NEED_FLAGS = {"note": "--note", "reason": "--reason", "evidence": "--evidence", "due": "--due"}


@dataclass
class Move:
    """What an event did."""

    event: EventDef
    source: str
    dest: str
    version: str


def _check(kind: str, event: EventDef) -> Any:
    def check(data: EventData) -> bool:
        subject: Subject = data.model
        for ref in event.guards:
            reason = GUARDS[kind][ref.name](subject, ref.params)
            if reason:
                subject.refusals.append(reason)
                subject.refused_by.append(ref.name)
        return not subject.refusals

    return check


def _effects(kind: str, event: EventDef) -> Any:
    def run(data: EventData) -> None:
        for name in event.effects:
            EFFECTS[kind][name](data.model)

    return run


def build_machine(wf: WorkflowDef) -> Machine:
    transitions = [
        {
            "trigger": ev.name,
            "source": ev.source,
            "dest": ev.dest,
            "conditions": [_check(wf.workflow, ev)],
            "after": [_effects(wf.workflow, ev)],
        }
        for ev in wf.events
    ]
    return Machine(
        model=None,
        states=wf.state_names(),
        initial=wf.initial,
        transitions=transitions,
        auto_transitions=False,
        send_event=True,
    )


class Workflows:
    """The plan and action workflows in force."""

    def __init__(self, defs: dict[str, WorkflowDef]) -> None:
        self.defs = defs
        self.machines = {kind: build_machine(wf) for kind, wf in defs.items()}

    @classmethod
    def from_folder(cls, folder: Path, texts: dict[Path, str] | None = None) -> Workflows:
        """``plan.yaml`` and ``action.yaml`` from ``folder``, or from ``texts`` already read
        (path → text, e.g. the published files)."""
        defs = {}
        for kind in ("plan", "action"):
            path = folder / f"{kind}.yaml"
            if not (path in texts if texts is not None else path.exists()):
                raise InvalidDefinition(f"{path}: missing; the {kind} workflow must be defined")
            defs[kind] = load_workflow(path, kind=kind, guards=GUARDS[kind], effects=EFFECTS[kind],
                                       text=texts[path] if texts is not None else None)
        return cls(defs)

    def initial(self, kind: str) -> str:
        return self.defs[kind].initial

    def fire(self, subject: Subject, event_name: str) -> Move:
        """Fire one event; raise ``Refused`` with every reason if it may not happen."""
        wf = self.defs[subject.kind]
        event = wf.event(event_name)
        if event is None:
            raise InvalidInput(
                f"'{event_name}' is not an event of the {subject.kind} workflow; events: "
                + ", ".join(e.name for e in wf.events)
            )
        if subject.state not in event.source:
            raise Refused(
                f"Can't {event_name} {subject.label} when it is {subject.state}: "
                f"'{event_name}' leaves only from {', '.join(event.source)}"
            )
        if event.signoff and subject.inputs.signoff is None:
            raise Refused(f"{event_name} is a sign-off: record it with `qip signoff "
                          f"{subject.row.id} --for {event.signoff} --by PERSON`"
                          + (" (or `qip close`)" if event.signoff == "closure" else ""))
        missing = [NEED_FLAGS[n] for n in event.needs if not subject.inputs.has(n)]
        if missing:
            raise InvalidInput(f"{event_name} needs {' and '.join(missing)}")
        source = subject.state
        subject.definition = wf
        try:
            moved = self.machines[subject.kind].events[event_name].trigger(subject)
        except MachineError as exc:
            raise Refused(f"Can't {event_name} {subject.label}: {exc.value}") from None
        if not moved:
            raise Refused(f"Can't {event_name} {subject.label}", details=subject.refusals,
                          guards=subject.refused_by)
        return Move(event, source, subject.state, wf.version)
