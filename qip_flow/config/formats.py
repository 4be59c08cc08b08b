"""The data-file formats a governance lead writes by hand: the organisation (people, services,
strategic risks) and plans (findings, actions, indicators, closure criteria). ``qip schema KIND``
prints each as JSON Schema for editor completion."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qip_flow.config.limits import (
    MAX_COUNT,
    MAX_DAYS,
    MAX_ID,
    MAX_TEXT,
    Day,
    Name,
    Number,
    ShortText,
    Text,
)

Level = Literal["operational", "manager", "senior", "board"]
Role = Literal["administrator", "governance_lead", "guest"]
SourceType = Literal["inspection", "audit", "complaint", "incident", "safeguarding", "other"]
IdText = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_ID)

CADENCES = {"weekly": 7, "fortnightly": 14, "monthly": 30, "quarterly": 91}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=MAX_TEXT,
                              defer_build=True)


class PersonSpec(_Strict):
    id: str = IdText
    name: Name
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    role: ShortText = ""
    level: Level = "operational"
    line_manager: str | None = Field(None, description="The id of this person's line manager.")
    groups: list[str] = Field(default_factory=list, description="Governance groups, e.g. 'Board'.")
    roles: list[Role] = Field(
        default_factory=list,
        description="What this person may do to qip_flow itself: 'administrator' may change "
                    "people's level, groups and roles with `qip load --by`; 'governance_lead' "
                    "sees every plan, runs reports and previews rules; 'guest' (a commissioner, "
                    "an inspector) only reads the plans of the services named in `services:`, "
                    "until `expires:`.")
    services: list[str] = Field(default_factory=list, description=(
        "A guest's scope: the ids of the services whose plans they may read."))
    expires: Day | None = Field(None, description="The last day a guest may sign in.")
    digest: bool = Field(False, description="Weekly digest instead of single reminders.")

    @model_validator(mode="after")
    def _guest_scope(self) -> PersonSpec:
        if "guest" in self.roles:
            if not self.services or self.expires is None:
                raise ValueError("a guest needs `services:` (the services they may read) and "
                                 "`expires:` (the last day of their access)")
            if len(self.roles) > 1 or self.level != "operational" or self.groups:
                raise ValueError("a guest only reads: give them no other role, level or group")
        elif self.services or self.expires is not None:
            raise ValueError("`services:` and `expires:` scope a guest: add `roles: [guest]` or "
                             "leave them out")
        return self


class ServiceSpec(_Strict):
    id: str = IdText
    name: Name
    kind: ShortText = Field("", description="e.g. supported living, residential, domiciliary.")
    managers: list[str] = Field(default_factory=list, description=(
        "Ids of the service's managers: they receive the learning summaries of its plans."))


class RiskSpec(_Strict):
    id: str = IdText
    title: Name
    owner: str | None = None


class OrganisationFile(_Strict):
    """MessageContext, services and strategic risks; any of the three lists may be left out."""

    people: list[PersonSpec] = Field(default_factory=list)
    services: list[ServiceSpec] = Field(default_factory=list)
    risks: list[RiskSpec] = Field(default_factory=list)


class SourceSpec(_Strict):
    type: SourceType
    reference: ShortText = Field("", description="e.g. the inspection report or incident number.")
    date: Day | None = None


class FindingSpec(_Strict):
    id: str = IdText
    description: Text = Field(min_length=1)
    source_reference: ShortText = ""
    root_causes: list[Text] = Field(default_factory=list)


class ActionSpec(_Strict):
    id: str = IdText
    finding: str | None = Field(None, description="The id of the finding this action answers.")
    description: Text = Field(min_length=1)
    owner: str | None = Field(None, description="The id of the named person who owns it.")
    due: Day | None = None
    systemic: bool = Field(
        False, description="Changes a system (policy, training, audit cycle), not one instance."
    )
    risks: list[str] = Field(default_factory=list, description=(
        "Strategic risk ids this action addresses; the plan's risks are its own and its "
        "actions'."))


class IndicatorSpec(_Strict):
    id: str = IdText
    name: Name
    unit: str = Field("", max_length=20)
    direction: Literal["up", "down"] = Field(
        "up", description="Which way is better: up (e.g. % on time) or down (e.g. errors)."
    )
    target: Number
    baseline: Number | None = None
    owner: str | None = Field(None, description=(
        "Who measures it (a person id); reminded when a measurement due in monitoring is "
        "missing. The plan's accountable owner when not given."))


class SignoffAuthority(_Strict):
    level: Level | None = None
    group: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SignoffAuthority:
        if not self.level and not self.group:
            raise ValueError("name a level (e.g. senior) or a group (e.g. Board)")
        return self


class ClosureSpec(_Strict):
    """What success looks like, which indicators show it, for how long, who signs off."""

    success: Text = Field("", description="What success looks like in practice.")
    indicators: list[str] = Field(
        default_factory=list, description="Ids of indicators that must be on target."
    )
    sustain_days: int | None = Field(
        None, ge=0, le=MAX_DAYS, description="How long the indicators must stay on target.")
    reaudits: int | None = Field(None, ge=0, le=MAX_COUNT, description="How many re-audits must confirm it.")
    reaudit_gap_days: int | None = Field(
        None, ge=1, le=MAX_DAYS, description="Days re-audits must be apart to count as separate "
                                             "intervals (default 28); closer entries count once.")
    signoff: SignoffAuthority | None = None
    learning_required: bool | None = None
    monitoring_days: int | None = Field(
        None, ge=1, le=MAX_DAYS, description="Length of a step-down monitoring period.")


class PlanFile(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_ID,
                    description="e.g. QIP-2026-014")
    title: Name
    service: str
    source: SourceSpec
    theme: Name = Field(description="e.g. medication, safeguarding, care planning")
    owner: str = Field(description="The accountable owner (a person id).")
    sponsor: str = Field(description="The senior sponsor (a person id).")
    risks: list[str] = Field(default_factory=list, description="Linked strategic risk ids.")
    review_cadence: str | int | None = Field(
        None, description="weekly, fortnightly, monthly, quarterly, or a number of days."
    )
    findings: list[FindingSpec] = Field(default_factory=list)
    actions: list[ActionSpec] = Field(default_factory=list)
    indicators: list[IndicatorSpec] = Field(default_factory=list)
    closure: ClosureSpec | None = None

    @field_validator("review_cadence")
    @classmethod
    def _cadence(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and value not in CADENCES:
            raise ValueError(f"use one of {', '.join(CADENCES)} or a number of days")
        if isinstance(value, int) and not 1 <= value <= MAX_DAYS:
            raise ValueError(f"a review cadence is 1 to {MAX_DAYS} days")
        return value

    def cadence_days(self) -> int | None:
        value = self.review_cadence
        return CADENCES[value] if isinstance(value, str) else value


class ResidualRiskSpec(_Strict):
    risk: str = Field(min_length=1, description="The risk that remains.")
    monitored: str = Field(min_length=1, description="How it is monitored, and by whom.")


class SignoffRecordFile(_Strict):
    """A sign-off record written before the meeting ends (`qip close --record FILE.yaml`)."""

    meeting: str = Field("", description="The meeting reference, e.g. 'Board 2026-07-28'.")
    evidence: list[int] = Field(default_factory=list,
                                description="Ids of the plan's recorded evidence reviewed "
                                            "(`qip show PLAN` lists them).")
    evidence_note: list[str] = Field(default_factory=list,
                                     description="Free-text notes on other evidence reviewed; "
                                                 "count only beside a chosen item.")
    residual_risks: list[ResidualRiskSpec] = Field(default_factory=list)
    no_residual_risk: bool = Field(False, description="State that no residual risk remains.")
    learning_embedded: list[str] = Field(default_factory=list,
                                         description="Where the learning is embedded.")


SCHEMAS: dict[str, type[BaseModel]] = {
    "organisation": OrganisationFile,
    "plan": PlanFile,
    "signoff-record": SignoffRecordFile,
}


def json_schema(kind: str) -> dict[str, Any]:
    return SCHEMAS[kind].model_json_schema()
