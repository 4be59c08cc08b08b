"""``qip audit verify --deep``: replay the audit trail and compare what it says with the
tables. The hash chain proves the trail was not edited; this proves the tables were not edited
behind its back — a state set by hand, a sign-off re-attributed, evidence or a measurement
changed — and names every difference (table, id, field, what the trail says, what the table
says).

What the trail records, and so what is derived:

- plan and action states: the last workflow move of each (``to``), else the workflow's initial
  state; the plan's RAG: the last ``rag changed``;
- action due dates: the plan file's dates (``plan added``/``plan updated``), then each
  ``revise_due``; the revisions themselves (table duerevision);
- who verified an action: the actor of the last event whose effects include
  ``mark_verified`` (cleared by ``clear_completion``);
- sign-offs (who, level, purpose, group, day, meeting, evidence reviewed, residual risks,
  learning), evidence (what, by whom, on which day, the SHA-256 of an uploaded file) and
  measurements, one row per event."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.runtime import Runtime
from qip_flow.store import audit
from qip_flow.store.models import (
    Action,
    AuditEvent,
    DueRevision,
    Evidence,
    Measurement,
    Plan,
    SignOff,
)
from qip_flow.workflow.subject import EvidenceItem

RAG_CHANGED = "rag changed"
MEASUREMENT_RECORDED = "measurement recorded"
PLAN_FILE_EVENTS = ("plan added", "plan updated")


@dataclass(frozen=True)
class Difference:
    """One field where the tables and the trail disagree."""

    table: str
    id: str
    field: str
    trail: Any
    table_says: Any

    def describe(self) -> str:
        return (f"{self.table} {self.id}, {self.field}: the trail says {_shown(self.trail)}, "
                f"the table says {_shown(self.table_says)}")

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "id": self.id, "field": self.field,
                "trail": _plain(self.trail), "table_says": _plain(self.table_says)}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _shown(value: Any) -> str:
    return "nothing" if value is None else repr(_plain(value))


@dataclass
class Replay:
    """What the replay found: differences, and what it could not derive (older trails)."""

    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: int = 0


@dataclass
class _Derived:
    """The record as the trail tells it."""

    states: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, id) → state
    rag: dict[str, str | None] = field(default_factory=dict)
    due: dict[str, date | None] = field(default_factory=dict)
    undated_plans: set[str] = field(default_factory=set)  # loaded before due dates were kept
    verified_by: dict[str, str | None] = field(default_factory=dict)
    revisions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    signoffs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    evidence: dict[tuple[str, str | None], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list))
    measurements: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list))
    levels_missing_before: int = 0


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _derive(rt: Runtime, session: Session, replay: Replay) -> _Derived:
    effects = {kind: {e.name: set(e.effects) for e in wf.events}
               for kind, wf in rt.workflows.defs.items()}
    d = _Derived()
    for event in audit.iter_events(session):
        replay.events += 1
        detail, kind, entity = event.detail or {}, event.entity_type, event.entity_id
        if kind == "plan" and event.what in PLAN_FILE_EVENTS:
            if "due" in detail:
                d.due.update({a: _day(v) for a, v in detail["due"].items()})
            else:
                d.undated_plans.add(entity)
        elif kind == "plan" and event.what == RAG_CHANGED:
            d.rag[entity] = event.to_state
        elif kind == "indicator" and event.what == MEASUREMENT_RECORDED:
            d.measurements[entity].append({
                "on": _day(detail.get("on")), "value": detail.get("value"),
                "source": detail.get("source", ""), "reaudit": detail.get("reaudit", False),
                # a token's service account is named in the trail, and no person recorded it
                "recorded_by_id": None if event.actor == "system" or detail.get("token")
                else event.actor})
        elif kind in ("plan", "action") and event.to_state is not None:
            _move(d, event, effects[kind].get(event.what, set()))
    return d


def _move(d: _Derived, event: AuditEvent, effects: set[str]) -> None:
    """A workflow move and the inputs it recorded."""
    detail, kind, entity, day = event.detail or {}, event.entity_type, event.entity_id, \
        event.at.date()
    d.states[(kind, entity)] = event.to_state or ""
    if kind == "action":
        if "record_due_revision" in effects and detail.get("due"):
            d.revisions[entity].append({"previous_due": d.due.get(entity),
                                        "new_due": _day(detail["due"]), "reason": event.reason,
                                        "approved_by_id": event.actor, "at": event.at})
            d.due[entity] = _day(detail["due"])
        if "mark_verified" in effects:
            d.verified_by[entity] = event.actor
        if "clear_completion" in effects:
            d.verified_by[entity] = None
    plan_id = entity if kind == "plan" else entity.rsplit("/", 1)[0]
    action_id = entity if kind == "action" else None
    files = detail.get("files") or []
    for i, label in enumerate(detail.get("evidence", [])):
        file = files[i] if i < len(files) and isinstance(files[i], dict) else {}
        d.evidence[(plan_id, action_id)].append({"label": label, "by_id": event.actor,
                                                 "on": day, "sha256": file.get("sha256")})
    signoff = detail.get("signoff")
    if signoff:
        if "level" not in signoff:
            d.levels_missing_before = event.seq or 0
        d.signoffs[entity].append({
            "by_id": event.actor, "level": signoff.get("level"), "purpose": signoff["purpose"],
            "group": signoff.get("group"), "on": day,
            "meeting_reference": signoff.get("meeting_reference", ""),
            "evidence_reviewed": signoff.get("evidence_reviewed", []),
            "residual_risks": signoff.get("residual_risks", []),
            "learning_embedded": signoff.get("learning_embedded", [])})


def _compare_rows(out: list[Difference], table: str, key: str, trail: list[dict[str, Any]],
                  rows: list[dict[str, Any]], row_id: Callable[[dict[str, Any], int], str]
                  ) -> None:
    """Row by row, in the order written: the n-th event against the n-th row."""
    for i in range(max(len(trail), len(rows))):
        said = trail[i] if i < len(trail) else None
        held = rows[i] if i < len(rows) else None
        if said is None or held is None:
            out.append(Difference(table, row_id(held or {}, i) if held else f"{key} #{i + 1}",
                                  "row", "a row" if said else None, "a row" if held else None))
            continue
        out += [Difference(table, row_id(held, i), name, value, held.get(name))
                for name, value in said.items()
                if value is not None or name != "level"
                if held.get(name) != value]


def replay(rt: Runtime, session: Session) -> Replay:
    """Compare the tables with the trail; every difference named."""
    result = Replay()
    d = _derive(rt, session, result)
    out = result.differences
    plan_initial, action_initial = rt.workflows.initial("plan"), rt.workflows.initial("action")

    for plan in session.exec(select(Plan).order_by(col(Plan.id))).all():
        said = d.states.get(("plan", plan.id), plan_initial)
        if said != plan.state:
            out.append(Difference("plan", plan.id, "state", said, plan.state))
        if d.rag.get(plan.id) != plan.rag:
            out.append(Difference("plan", plan.id, "rag", d.rag.get(plan.id), plan.rag))
    for action in session.exec(select(Action).order_by(col(Action.id))).all():
        said = d.states.get(("action", action.id), action_initial)
        if said != action.state:
            out.append(Difference("action", action.id, "state", said, action.state))
        if action.id in d.due and d.due[action.id] != action.due:
            out.append(Difference("action", action.id, "due", d.due[action.id], action.due))
        verifier = d.verified_by.get(action.id)
        if verifier != action.verified_by_id:
            out.append(Difference("action", action.id, "verified_by_id", verifier,
                                  action.verified_by_id))

    def grouped(model: Any, key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
        groups: dict[Any, list[Any]] = defaultdict(list)
        for row in session.exec(select(model).order_by(col(model.id))).all():
            groups[key(row)].append(row)
        return groups

    def by_id(row: dict[str, Any], _i: int) -> str:
        return str(row["id"])

    revisions = grouped(DueRevision, lambda r: r.action_id)
    for action_id in sorted(set(revisions) | set(d.revisions)):
        _compare_rows(out, "duerevision", action_id, d.revisions.get(action_id, []),
                      [r.model_dump() for r in revisions.get(action_id, [])], by_id)
    signoffs = grouped(SignOff, lambda r: r.plan_id)
    for plan_id in sorted(set(signoffs) | set(d.signoffs)):
        _compare_rows(out, "signoff", plan_id, d.signoffs.get(plan_id, []),
                      [r.model_dump() for r in signoffs.get(plan_id, [])], by_id)
    evidence = grouped(Evidence, lambda r: (r.plan_id, r.action_id))
    for key in sorted(set(evidence) | set(d.evidence), key=repr):
        rows = [{**r.model_dump(), "label": EvidenceItem(r.description, r.reference).label}
                for r in evidence.get(key, [])]
        _compare_rows(out, "evidence", key[1] or key[0], d.evidence.get(key, []), rows, by_id)
    measurements = grouped(Measurement, lambda r: r.indicator_id)
    for indicator in sorted(set(measurements) | set(d.measurements)):
        _compare_rows(out, "measurement", indicator, d.measurements.get(indicator, []),
                      [r.model_dump() for r in measurements.get(indicator, [])], by_id)

    if d.undated_plans:
        result.notes.append(
            "the due dates of actions of " + ", ".join(sorted(d.undated_plans)) + " were loaded "
            "before the trail kept them: only their revisions are checked")
    if d.levels_missing_before:
        result.notes.append(f"sign-off levels are not derivable for events before "
                            f"#{d.levels_missing_before + 1}: the trail did not keep them then")
    return result
