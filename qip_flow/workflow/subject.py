"""What an event is fired on: a plain object wrapping one database row, with the inputs the
person gave. ``transitions`` reads and writes ``subject.state``; guards and effects read the
row, the inputs and the open session, and ask the rules through ``judge``. (Attaching SQLModel
rows to a machine directly is refused by ``transitions`` and is quadratic: see DESIGN.md.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from qip_flow.store.models import LEVELS, Action, Person, Plan

if TYPE_CHECKING:
    from qip_flow.config.workflow import WorkflowDef
    from qip_flow.decide.judge import Judge


@dataclass
class EvidenceItem:
    """What shows the work was done; ``file`` describes an uploaded file (``sha256``, ``size``,
    ``media_type``, ``filename``) kept outside the database."""

    description: str
    reference: str = ""
    on: date | None = None
    file: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """How the audit trail names it (and how ``qip audit verify --deep`` matches it)."""
        return self.description + (f" ({self.reference})" if self.reference else "")


@dataclass
class SignoffInput:
    """What a sign-off records beyond who and when."""

    purpose: str
    group: str | None = None
    meeting_reference: str = ""
    evidence_reviewed: list[str] = field(default_factory=list)  # free-text notes
    evidence_ids: list[int] = field(default_factory=list)  # chosen from the plan's evidence
    residual_risks: list[str] = field(default_factory=list)  # "risk :: how monitored"
    no_residual_risk: bool = False
    learning_embedded: list[str] = field(default_factory=list)

    def missing(self, parts: list[str]) -> list[str]:
        """The parts of ``parts`` (closure rules `signoff.record`) this record lacks."""
        have = {"meeting": bool(self.meeting_reference.strip()),
                "evidence_reviewed": bool(self.evidence_ids),
                "residual_risks": bool(self.residual_risks) or self.no_residual_risk,
                "learning_embedded": bool(self.learning_embedded)}
        return [part for part in parts if not have.get(part, False)]


@dataclass
class EventInputs:
    by: Person
    now: datetime
    note: str | None = None
    reason: str | None = None
    due: date | None = None
    evidence: list[EvidenceItem] = field(default_factory=list)
    signoff: SignoffInput | None = None
    variation: dict[str, Any] = field(default_factory=dict)
    # how the person reached us, for the record: {"door": "web", "signin": "email-link"}
    via: dict[str, str] = field(default_factory=dict)

    def has(self, need: str) -> bool:
        return bool(getattr(self, need))

    def as_detail(self) -> dict[str, Any]:
        """The inputs as they go into the audit trail."""
        detail: dict[str, Any] = {}
        if self.note:
            detail["note"] = self.note
        if self.due:
            detail["due"] = self.due.isoformat()
        if self.evidence:
            detail["evidence"] = [e.label for e in self.evidence]
            if any(e.file for e in self.evidence):
                detail["files"] = [e.file for e in self.evidence]
        if self.signoff:
            detail["signoff"] = {**{k: v for k, v in vars(self.signoff).items() if v},
                                 "level": self.by.level}
        if self.variation:
            detail["variation"] = self.variation
        if self.via:
            detail["via"] = self.via
        return detail


def level_rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else -1


class Subject:
    """One plan or action, as the state machine sees it."""

    def __init__(
        self,
        kind: str,
        row: Plan | Action,
        session: Session,
        inputs: EventInputs,
        judge: Judge,
    ) -> None:
        self.kind = kind
        self.row = row
        self.session = session
        self.inputs = inputs
        self.judge = judge  # the rules' facts and decisions, handed in by the services
        self.definition: WorkflowDef | None = None  # the workflow firing it (set by fire)
        self.refusals: list[str] = []
        self.refused_by: list[str] = []  # the guard behind each refusal
        self.decisions: dict[str, Any] = {}  # explanations kept in the audit event

    @property
    def state(self) -> str:
        return self.row.state

    @state.setter
    def state(self, value: str) -> None:
        self.row.state = value

    @property
    def label(self) -> str:
        return f"{self.kind} {self.row.id}"
