"""The API's request and response bodies, as its OpenAPI document describes them. Responses
allow more fields than they name (a client ignores what it does not know), never fewer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qip_flow.config.limits import MAX_NUMBER, MAX_TEXT
from qip_flow.notify.webhooks import EVENTS

KEY = Field(min_length=1, max_length=200, description="Your unique id for this measurement (a "
            "UUID, or its id in the system it comes from): a push retried with the same key "
            "is recorded once", examples=["emar-2026-03-31-maple-house"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class MeasurementIn(_In):
    indicator: str = Field(min_length=3, max_length=140, description="PLAN/INDICATOR",
                           examples=["QIP-2026-014/mar-complete"])
    value: float = Field(ge=-MAX_NUMBER, le=MAX_NUMBER, allow_inf_nan=False)
    date: dt.date | None = Field(None, description="The day it was measured (default: today); "
                              "never in the future")
    reaudit: bool = Field(False, description="This value is a re-audit")
    source: str = Field("", max_length=200, description="Where the value comes from")
    reason: str | None = Field(None, max_length=MAX_TEXT, description="Why it is recorded "
                               "late: needed when the date is further back than the rules allow")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        description="Your unique id for it (or the "
                                        "Idempotency-Key header, for a single measurement)")


class MeasurementBatch(_In):
    measurements: list[MeasurementIn] = Field(min_length=1, max_length=1000,
                                              description="Each with its own idempotency_key")


class MeasurementOut(_Out):
    id: int
    indicator: str
    on: str
    value: float
    reaudit: bool
    source: str
    backdated: bool
    recorded_at: str
    recorded_by: str | None
    idempotency_key: str | None
    replayed: bool = Field(description="True: an earlier push with this key recorded it")


class MeasurementsOut(_Out):
    recorded: int
    replayed: int
    measurements: list[MeasurementOut]


class PlanRow(_Out):
    id: str
    title: str
    service: str
    theme: str
    state: str
    rag: str | None
    actions: int
    actions_done: int


class PlanPage(_Out):
    items: list[PlanRow]
    next_cursor: str | None = Field(description="Give it as `cursor` for the next page; "
                                    "null on the last page")


class PlanDetail(_Out):
    id: str
    title: str
    state: str
    rag: str | None
    version: int
    rag_reason: str
    actions: list[dict[str, Any]]
    indicators: list[dict[str, Any]]
    closure: dict[str, Any]


class ActionDetail(_Out):
    id: str
    plan_id: str
    state: str
    owner_id: str | None
    can: dict[str, Any]


class SignoffState(_Out):
    plan: str
    state: str
    version: int
    signoffs: list[dict[str, Any]]
    waiting_for: list[dict[str, Any]]
    closure_met: bool
    unmet: list[dict[str, Any]]


class AuditPage(_Out):
    items: list[dict[str, Any]]
    next_cursor: str | None


class ProgressIn(_In):
    note: str = Field(min_length=1, max_length=MAX_TEXT)
    expected_version: int | None = Field(None, ge=0, le=2**31, description="The plan's version "
                                         "you saw: refused with 409 if it changed since")


class CompleteIn(_In):
    note: str | None = Field(None, max_length=MAX_TEXT)
    evidence: list[str] = Field(default_factory=list, max_length=50,
                                description="'description|reference' for each item")
    expected_version: int | None = Field(None, ge=0, le=2**31)


class DateRequestIn(_In):
    new_due: dt.date
    reason: str = Field(min_length=1, max_length=MAX_TEXT)
    expected_version: int | None = Field(None, ge=0, le=2**31)


class EventOut(_Out):
    id: str
    event: str
    source: str
    to: str
    version: int = Field(description="The plan's version after the change")


class DateRequestOut(_Out):
    id: int
    action: str
    new_due: str
    reason: str
    state: str


class EvidenceOut(_Out):
    action: str
    sha256: str
    bytes: int
    type: str
    filename: str


class WebhookIn(_In):
    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str = Field(min_length=8, max_length=2000, examples=["https://bi.example/qip-events"])
    events: list[str] | None = Field(None, description=f"Any of {', '.join(EVENTS)}; "
                                     "none: every event")
    plans: list[str] | None = Field(None, max_length=50, description="'service:NAME', "
                                    "'plan:ID' or 'all' (default)")


class WebhookOut(_Out):
    name: str
    url: str
    events: list[str]
    plans: list[str]
    source: str


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (Standard Webhooks), shown this once")


class WebhookList(_Out):
    items: list[WebhookOut]


class Me(_Out):
    kind: str = Field(description="'service account' (a token) or 'person'")
    name: str
    scopes: list[str]
    plans: str
