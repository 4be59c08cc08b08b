"""The workflow file format (``workflows/plan.yaml``, ``workflows/action.yaml``): states,
events, the states each event leaves from and goes to, named guards and effects. A file is
checked whole — unknown states, unreachable states, undefined guards or effects — and refused
with every problem named by file and line."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from qip_flow.config.cache import cached
from qip_flow.config.source import YamlDocument, parse_yaml, read_yaml, validate
from qip_flow.errors import InvalidDefinition

Need = Literal["note", "reason", "evidence", "due"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False,
                              defer_build=True)


class StateDef(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Lower-case state name.")
    description: str = ""
    final: bool = Field(False, description="No event leaves a final state except reopen-style ones.")


class GuardRef(_Strict):
    """A guard named in an event, with the parameters the file gives it."""

    name: str
    params: dict[str, Any] = {}


class EventDef(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    source: list[str] = Field(alias="from", min_length=1, description="States the event leaves from.")
    dest: str | None = Field(
        None, alias="to", description="The state it goes to; leave out to stay in the same state."
    )
    guards: list[GuardRef] = Field(
        default_factory=list,
        description="Named conditions that must all hold; each refusal says why. A guard is a "
        "name, or a one-key mapping of name to parameters.",
    )
    effects: list[str] = Field(default_factory=list, description="Named effects run after the move.")
    needs: list[Need] = Field(default_factory=list, description="Inputs the event must be given.")
    signoff: str | None = Field(
        None,
        description="This event is a sign-off of that purpose: it is fired by `qip signoff` "
        "(or `qip close`), which records who signed, at what level, and what they reviewed.",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("guards", mode="before")
    @classmethod
    def _guard_refs(cls, value: Any) -> Any:
        refs = []
        for item in value or []:
            if isinstance(item, str):
                refs.append({"name": item})
            elif isinstance(item, dict) and len(item) == 1:
                name, params = next(iter(item.items()))
                refs.append({"name": name, "params": params or {}})
            else:
                refs.append(item)
        return refs


class WorkflowDef(_Strict):
    workflow: Literal["plan", "action"] = Field(description="Which entity this file governs.")
    description: str = ""
    initial: str
    states: list[StateDef] = Field(min_length=1)
    events: list[EventDef] = Field(min_length=1)
    path: SkipJsonSchema[str] = Field("", exclude=True)
    version: SkipJsonSchema[str] = Field("", exclude=True)

    def state_names(self) -> list[str]:
        return [s.name for s in self.states]

    def event(self, name: str) -> EventDef | None:
        return next((e for e in self.events if e.name == name), None)

    def signoff_event(self, purpose: str) -> EventDef | None:
        return next((e for e in self.events if e.signoff == purpose), None)


class GuardSpec(Protocol):
    """What the checker needs to know of a guard: the parameters it accepts."""

    params: Mapping[str, Collection[Any] | None]  # name → allowed values (None: any)


def _semantic_problems(
    wf: WorkflowDef, doc: YamlDocument, guards: Mapping[str, GuardSpec], effects: Collection[str]
) -> list[str]:
    problems: list[str] = []
    names = wf.state_names()

    def bad(loc: list[str | int], message: str) -> None:
        problems.append(f"{doc.where(loc)}: {message}")

    seen: set[str] = set()
    for i, state in enumerate(wf.states):
        if state.name in seen:
            bad(["states", i, "name"], f"state '{state.name}' is declared twice")
        seen.add(state.name)
    if wf.initial not in names:
        bad(["initial"], f"unknown state '{wf.initial}'; declared states: {', '.join(names)}")
        return problems  # every state would look unreachable
    event_names: set[str] = set()
    purposes: dict[str, str] = {}
    for i, ev in enumerate(wf.events):
        if ev.signoff and ev.signoff in purposes:
            bad(["events", i, "signoff"], f"'{ev.signoff}' is already the sign-off of event "
                f"'{purposes[ev.signoff]}'; each sign-off purpose fires one event")
        if ev.signoff:
            purposes.setdefault(ev.signoff, ev.name)
        if ev.name in event_names:
            bad(["events", i, "name"], f"event '{ev.name}' is declared twice")
        event_names.add(ev.name)
        for j, src in enumerate(ev.source):
            if src not in names:
                bad(["events", i, "from", j], f"unknown state '{src}' in event '{ev.name}'")
        if ev.dest is not None and ev.dest not in names:
            bad(["events", i, "to"], f"unknown state '{ev.dest}' in event '{ev.name}'")
        for j, g in enumerate(ev.guards):
            if g.name not in guards:
                bad(["events", i, "guards", j],
                    f"undefined guard '{g.name}'; guards for {wf.workflow}s: {', '.join(sorted(guards))}")
                continue
            accepted = guards[g.name].params
            for name, value in g.params.items():
                if name not in accepted:
                    bad(["events", i, "guards", j, g.name, name],
                        f"guard '{g.name}' has no parameter '{name}'; it takes "
                        f"{', '.join(accepted) or 'none'}")
                elif accepted[name] is not None and value not in accepted[name]:
                    bad(["events", i, "guards", j, g.name, name],
                        f"'{value}' is not a {name}; use one of "
                        f"{', '.join(str(v) for v in accepted[name])}")
        for j, e in enumerate(ev.effects):
            if e not in effects:
                bad(["events", i, "effects", j],
                    f"undefined effect '{e}'; effects for {wf.workflow}s: {', '.join(sorted(effects))}")
    reachable = {wf.initial}
    changed = True
    while changed:
        changed = False
        for ev in wf.events:
            if ev.dest and ev.dest not in reachable and reachable.intersection(ev.source):
                reachable.add(ev.dest)
                changed = True
    for i, state in enumerate(wf.states):
        if state.name not in reachable and state.name in names:
            bad(["states", i, "name"],
                f"state '{state.name}' is unreachable: no event leads to it from '{wf.initial}'")
    return problems


def load_workflow(
    path: Path,
    *,
    kind: str,
    guards: Mapping[str, GuardSpec],
    effects: Collection[str],
    text: str | None = None,
) -> WorkflowDef:
    """Read and check one workflow file (or its ``text``, already read) against the guards
    (with the parameters each takes) and effects the engine knows."""
    if text is None:
        return _load_workflow(path, kind=kind, guards=guards, effects=effects, text=text)
    known = repr([sorted((name, sorted((p, None if allowed is None else sorted(map(repr, allowed)))
                                       for p, allowed in spec.params.items()))
                         for name, spec in guards.items()), sorted(effects)])
    return cached("workflow", [str(path), kind, text, known],
                  lambda: _load_workflow(path, kind=kind, guards=guards, effects=effects, text=text))


def _load_workflow(path: Path, *, kind: str, guards: Mapping[str, GuardSpec],
                   effects: Collection[str], text: str | None) -> WorkflowDef:
    doc = (read_yaml(path, error=InvalidDefinition) if text is None
           else parse_yaml(path, text, error=InvalidDefinition))
    wf = validate(doc, WorkflowDef, error=InvalidDefinition, what="workflow file")
    if wf.workflow != kind:
        raise InvalidDefinition(f"{doc.where(['workflow'])}: this file must say "
                                f"`workflow: {kind}`")
    problems = _semantic_problems(wf, doc, guards, effects)
    if problems:
        raise InvalidDefinition(f"{path}: this workflow file has errors", details=problems)
    wf.path, wf.version = str(path), f"{wf.workflow}@{doc.digest}"
    return wf


def workflow_file_schema() -> dict[str, Any]:
    """The JSON Schema as a governance lead writes the file: ``from`` may be one state or a
    list, a guard a name or a one-key mapping of name to parameters."""
    schema = WorkflowDef.model_json_schema(by_alias=True)
    event = schema["$defs"]["EventDef"]["properties"]
    event["from"] = {"description": event["from"].get("description", ""),
                     "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                    "minItems": 1}]}
    event["guards"] = {"description": event["guards"].get("description", ""), "type": "array",
                       "items": {"anyOf": [{"type": "string"},
                                          {"type": "object", "minProperties": 1,
                                           "maxProperties": 1,
                                           "additionalProperties": {"type": "object"}}]}}
    schema["$defs"].pop("GuardRef", None)
    return schema
